/* Small ops: ping, set_clock, reseed_entropy, shutdown. */
#include "ops.h"
#include "io.h"
#include "log.h"
#include "reply.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/random.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int op_ping(const struct op_ctx *ctx, json_t *reply, struct fvm_err *e)
{
	int ret;

	ret = reply_set(reply, "version", json_string(AGENT_VERSION));
	if (ret == 0)
		ret = reply_set(reply, "uptime_ms",
				json_integer((json_int_t)(io_now_ms() - ctx->agent_start_ms)));
	if (ret < 0)
		return errmsg(e, ret, "build ping reply: %s", strerror(-ret));
	return 0;
}

int op_set_clock(int64_t time_ns, json_t *reply, struct fvm_err *e)
{
	struct timespec ts = { .tv_sec = time_ns / 1000000000, .tv_nsec = time_ns % 1000000000 };
	struct timespec old;
	int ret;

	/* Reported so the host can see how far the guest had drifted (e.g. after a fork). */
	if (clock_gettime(CLOCK_REALTIME, &old) < 0)
		return errmsg(e, -errno, "clock_gettime CLOCK_REALTIME: %s", strerror(errno));
	if (clock_settime(CLOCK_REALTIME, &ts) < 0)
		return errmsg(e, -errno, "clock_settime CLOCK_REALTIME to %lld ns: %s",
				  (long long)time_ns, strerror(errno));
	ret = reply_set(reply, "previous_time_ns",
			json_integer((json_int_t)old.tv_sec * 1000000000 + old.tv_nsec));
	if (ret < 0)
		return errmsg(e, ret, "build set_clock reply: %s", strerror(-ret));
	return 0;
}

/* Older uapi headers lack it (Linux 4.17+); the kernel decides whether it exists. */
#ifndef RNDRESEEDCRNG
#define RNDRESEEDCRNG _IO('R', 0x07)
#endif

int op_reseed_entropy(const struct reseed_request *r, json_t *reply, struct fvm_err *e)
{
	static const char dev[] = "/dev/urandom";
	struct rand_pool_info *info;
	char why[160];
	bool reseeded;
	int fd = -1, ret;

	info = calloc(1, sizeof(*info) + r->len + sizeof(info->buf[0]));
	if (!info)
		return errmsg(e, -ENOMEM, "allocate entropy buffer: %s", strerror(ENOMEM));
	info->entropy_count = r->entropy_bits;
	info->buf_size = (int)r->len;
	memcpy(info->buf, r->data, r->len);
	/* Forked VMs share the parent's pool state; mixing fresh bytes makes them diverge. */
	fd = open(dev, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		ret = errmsg(e, -errno, "open %s: %s", dev, strerror(errno));
		goto out;
	}
	if (ioctl(fd, RNDADDENTROPY, info) < 0) {
		ret = errmsg(e, -errno, "ioctl RNDADDENTROPY on %s: %s", dev, strerror(errno));
		goto out;
	}
	/*
	 * RNDADDENTROPY mixes the bytes into the input pool, but the CRNG that serves
	 * getrandom() and /dev/urandom keeps its key until its next scheduled reseed (up to a
	 * minute): clones would go on drawing the same numbers. Reseed it now. A kernel that
	 * refuses (before 4.17, or a CRNG not yet initialised) is reported, not hidden.
	 */
	reseeded = ioctl(fd, RNDRESEEDCRNG) == 0;
	if (!reseeded)
		snprintf(why, sizeof(why), "ioctl RNDRESEEDCRNG on %s: %s", dev, strerror(errno));
	ret = reply_set(reply, "bytes", json_integer((json_int_t)r->len));
	if (ret == 0)
		ret = reply_set(reply, "entropy_bits", json_integer(r->entropy_bits));
	if (ret == 0)
		ret = reply_set(reply, "crng_reseeded", json_boolean(reseeded));
	if (ret == 0 && !reseeded)
		ret = reply_set(reply, "crng_reseed_error", json_string(why));
	if (ret < 0)
		errmsg(e, ret, "build reseed_entropy reply: %s", strerror(-ret));
out:
	if (fd >= 0)
		close(fd);
	free(info);
	return ret;
}

/* True when this process holds CAP_SYS_BOOT in its effective set. */
static int have_cap_sys_boot(void)
{
	struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];

	if (syscall(SYS_capget, &hdr, data) < 0)
		return -errno;
	return !!(data[CAP_TO_INDEX(CAP_SYS_BOOT)].effective & CAP_TO_MASK(CAP_SYS_BOOT));
}

int op_shutdown_check(const struct op_ctx *ctx, bool restart, json_t *reply,
		      struct fvm_err *e)
{
	int ret;

	ret = reply_set(reply, "mode", json_string(restart ? "reboot" : "poweroff"));
	if (ret == 0)
		ret = reply_set(reply, "simulated", json_boolean(ctx->cfg->no_reboot));
	if (ret < 0)
		return errmsg(e, ret, "build shutdown reply: %s", strerror(-ret));
	if (ctx->cfg->no_reboot)
		return 0;
	ret = have_cap_sys_boot();
	if (ret < 0)
		return errmsg(e, ret, "capget: %s", strerror(-ret));
	if (!ret)
		return errmsg(e, -EPERM, "reboot: %s (CAP_SYS_BOOT missing)", strerror(EPERM));
	return 0;
}

int op_shutdown_finish(const struct op_ctx *ctx, bool restart)
{
	if (ctx->cfg->no_reboot) {
		log_info("shutdown (%s) requested; --no-reboot: stopping the agent only",
			 restart ? "reboot" : "poweroff");
		return AGENT_EXIT_SHUTDOWN;
	}
	log_info("shutdown requested: syncing, then %s", restart ? "reboot" : "power off");
	/* Give the reply a moment to leave the socket before the machine disappears. */
	shutdown(ctx->conn_fd, SHUT_WR);
	sync();
	if (reboot(restart ? RB_AUTOBOOT : RB_POWER_OFF) < 0)
		return log_errno(-errno, "reboot(%s)", restart ? "RB_AUTOBOOT" : "RB_POWER_OFF");
	return 0; /* not reached */
}
