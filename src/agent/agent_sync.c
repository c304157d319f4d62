/* The clone fix-up through the guest agent: reseed + clock, retried within one deadline. */
#include "agent/agent_sync.h"

#include <errno.h>
#include <jansson.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "agent/agent_client.h"
#include "util/base64.h"
#include "util/errmsg.h"
#include "util/log.h"
#include "util/clock.h"

#define SEED_BYTES 64

enum { STEP_RESEED = 1u << 0, STEP_CLOCK = 1u << 1, STEPS_ALL = STEP_RESEED | STEP_CLOCK };

static int reseed(int fd, uint64_t deadline_ns, int cancel_fd, struct agent_sync_stats *st,
		  struct fvm_err *err)
{
	uint8_t seed[SEED_BYTES];
	char b64[((SEED_BYTES + 2) / 3) * 4 + 1];
	json_t *req = NULL, *reply = NULL, *flag;
	const char *why;
	int ret;

	if (getrandom(seed, sizeof(seed), 0) != (ssize_t)sizeof(seed))
		return errmsg(err, errno ? -errno : -EIO, "getrandom %d bytes: %s", SEED_BYTES,
			      strerror(errno ? errno : EIO));
	base64_encode(seed, sizeof(seed), b64);
	req = json_pack("{s:s,s:s}", "op", "reseed_entropy", "data", b64);
	if (!req)
		return errmsg(err, -ENOMEM, "reseed_entropy: building the request: %s",
			      strerror(ENOMEM));
	ret = agent_request(fd, req, &reply, deadline_ns, cancel_fd, err);
	if (ret)
		goto out;
	flag = json_object_get(reply, "crng_reseeded");
	why = json_string_value(json_object_get(reply, "crng_reseed_error"));
	if (json_is_false(flag)) {
		ret = errmsg(err, -EIO,
			     "reseed_entropy: the agent added the entropy but the guest kernel did not "
			     "reseed its CRNG (%s): the clone would repeat its siblings' random numbers",
			     why ? why : "no reason given");
		goto out;
	}
	st->crng_reseeded = json_is_true(flag);
	if (!flag)
		log_warn("the guest agent does not say whether its CRNG was reseeded (an agent older "
			 "than RNDRESEEDCRNG support): rebuild the guest image (forkvm image build)");
out:
	json_decref(reply);
	json_decref(req);
	return ret;
}

static int set_clock(int fd, uint64_t deadline_ns, int cancel_fd, struct agent_sync_stats *st,
		     struct fvm_err *err)
{
	struct timespec now;
	json_t *req, *reply = NULL, *prev;
	int64_t host_ns;
	int ret;

	/* Read now, not at the first attempt: a retry sets the clock to the time of the retry. */
	if (clock_gettime(CLOCK_REALTIME, &now) < 0)
		return errmsg(err, -errno, "clock_gettime CLOCK_REALTIME: %s", strerror(errno));
	host_ns = (int64_t)now.tv_sec * 1000000000LL + now.tv_nsec;
	req = json_pack("{s:s,s:I}", "op", "set_clock", "time_ns", (json_int_t)host_ns);
	if (!req)
		return errmsg(err, -ENOMEM, "set_clock: building the request: %s",
			      strerror(ENOMEM));
	ret = agent_request(fd, req, &reply, deadline_ns, cancel_fd, err);
	prev = ret ? NULL : json_object_get(reply, "previous_time_ns");
	if (json_is_integer(prev))
		st->clock_step_ns = host_ns - (int64_t)json_integer_value(prev);
	json_decref(reply);
	json_decref(req);
	return ret;
}

/* One connection: the steps not done yet. *retry says whether a failure is transient. */
static int attempt(const char *path, int port, unsigned *done, uint64_t deadline_ns,
		   int cancel_fd, struct agent_sync_stats *st, bool *retry, struct fvm_err *err)
{
	int fd = agent_vsock_open(path, err), ret;

	/* No socket, or the VMM no longer listens: the clone is gone; retrying cannot help. */
	*retry = fd == -EAGAIN;
	if (fd < 0)
		return fd;
	ret = agent_vsock_connect(fd, path, port, deadline_ns, cancel_fd, err);
	if (!ret && !(*done & STEP_RESEED)) {
		ret = reseed(fd, deadline_ns, cancel_fd, st, err);
		if (!ret)
			*done |= STEP_RESEED;
	}
	if (!ret && !(*done & STEP_CLOCK)) {
		ret = set_clock(fd, deadline_ns, cancel_fd, st, err);
		if (!ret)
			*done |= STEP_CLOCK;
	}
	close(fd);
	*retry = ret == -ECONNREFUSED || ret == -ECONNRESET || ret == -EPIPE;
	return ret;
}

/*
 * One attempt may not use the whole deadline: a connection the guest dropped without telling
 * the host (a transport reset it handled after accepting) never answers. The first attempt
 * gets AGENT_SYNC_ATTEMPT_FIRST_MS, each later one twice the one before.
 */
static uint64_t attempt_deadline(uint64_t deadline_ns, uint64_t budget_ms)
{
	uint64_t until = monotonic_ns() + budget_ms * 1000000ULL;

	return deadline_ns && deadline_ns < until ? deadline_ns : until;
}

/* Sleep ms unless cancelled: 0 or -ECANCELED. */
static int backoff_sleep(int ms, int cancel_fd)
{
	struct pollfd p = { .fd = cancel_fd, .events = POLLIN };
	uint64_t until = deadline_after_ms(ms);

	for (;;) {
		int left = deadline_ms_left(until), r;
		if (left == 0)
			return 0;
		r = poll(&p, cancel_fd >= 0 ? 1 : 0, left);
		if (r < 0 && errno != EINTR)
			return -errno;
		if (r > 0 && (p.revents & POLLIN))
			return -ECANCELED;
	}
}

int agent_sync(const char *path, int port, uint64_t deadline_ns, int cancel_fd,
	       struct agent_sync_stats *stats, struct fvm_err *err)
{
	struct agent_sync_stats local;
	struct agent_sync_stats *st = stats ? stats : &local;
	uint64_t t0 = monotonic_ns(), backoff_ms = AGENT_SYNC_BACKOFF_FIRST_MS;
	uint64_t budget_ms = AGENT_SYNC_ATTEMPT_FIRST_MS;
	char before[512] = "";
	struct fvm_err why = { .msg = "no attempt was made" };
	const char *how;
	unsigned done = 0;
	bool retry = false, cut;
	int ret = 0;

	memset(st, 0, sizeof(*st));
	for (;;) {
		uint64_t now, left_ms, sleep_ms;
		uint64_t until = deadline_ns ? attempt_deadline(deadline_ns, budget_ms) : 0;

		st->attempts++;
		ret = attempt(path, port, &done, until, cancel_fd, st, &retry, &why);
		/* Only this attempt's time ran out: the guest may have dropped the connection. */
		if (ret == -ETIMEDOUT && until < deadline_ns)
			retry = true;
		budget_ms *= 2;
		if (!ret || !retry || !deadline_ns)
			break;
		/* Kept in case the deadline cuts the next attempt short: the real story. */
		memcpy(before, why.msg, sizeof(before));
		/* Another attempt only with AGENT_SYNC_MIN_TRY_MS left after the backoff. */
		now = monotonic_ns();
		left_ms = now < deadline_ns ? (deadline_ns - now) / 1000000 : 0;
		if (left_ms < AGENT_SYNC_MIN_TRY_MS) {
			ret = -ETIMEDOUT;
			break;
		}
		sleep_ms = backoff_ms < left_ms - AGENT_SYNC_MIN_TRY_MS ? backoff_ms
								     : left_ms - AGENT_SYNC_MIN_TRY_MS;
		ret = backoff_sleep((int)sleep_ms, cancel_fd);
		if (ret)
			break;
		backoff_ms = backoff_ms * 2 > AGENT_SYNC_BACKOFF_MAX_MS ? AGENT_SYNC_BACKOFF_MAX_MS
									: backoff_ms * 2;
	}
	st->elapsed_ns = monotonic_ns() - t0;
	if (!ret)
		return 0;
	/* An attempt cut short by the deadline: say so, and what made the one before fail. */
	cut = before[0] && (ret == -ETIMEDOUT || ret == -ECANCELED) && !retry &&
	      strcmp(before, why.msg) != 0;
	how = ret == -ECANCELED ? "canceled"
	      : ret == -ETIMEDOUT ? "gave up at the deadline"
	      : retry		  ? "stopped (no deadline to retry within)"
				  : "stopped (not a transient error, so not retried)";
	return errmsg(err, ret,
		      "agent fix-up (reseed_entropy + set_clock) through %s, vsock port %d: %s after "
		      "%d attempt%s in %.0f ms; last error: %s%s%s",
		      path, port, how, st->attempts, st->attempts == 1 ? "" : "s",
		      (double)st->elapsed_ns / 1e6, why.msg,
		      cut ? " (cut short); the attempt before failed: " : "", cut ? before : "");
}
