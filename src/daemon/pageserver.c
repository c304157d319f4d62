/*
 * forkvmd's page server (daemon_impl.h, docs/DAEMON.md "Lazy restores"): the one
 * `forkvm pageserver` on STATE_DIR/run/pageserver.sock that serves every sandbox created with
 * backing uffd (docs/UFFD.md). It is started on demand, as a child in a session of its own
 * with its log next to the socket; a server that already answers there is adopted instead.
 * Nothing here ever stops it: VMs restored through it stop when it goes, so it outlives the
 * daemon (a restarted daemon adopts it), and one that died is started again by the next uffd
 * create. Its status feeds /v1/metrics under a short deadline for the whole exchange, so a
 * stuck server reads as down instead of holding a scrape.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon/daemon_impl.h"
#include "util/clock.h"
#include "util/errmsg.h"
#include "util/log.h"
#include "util/log_tail.h"
#include "util/unix_sock.h"

#define PS_PROBE_MS 5000	 /* a create's check that the server answers (it may be busy) */
#define PS_START_MS 20000	 /* a started server's first answer */
#define PS_POLL_MS 50		 /* between checks while it starts */
#define PS_METRICS_MS 1000	 /* a scrape's whole status exchange */
#define PS_REPLY_MAX (64u << 20) /* the status of many VMs (as forkvm pageserver --status) */
#define PS_TAIL_LINES 3		 /* log lines quoted in an error (the message holds 1 KiB) */
#define PS_PATH_MAX (DAEMON_STATE_DIR_MAX + 40)

const struct pageserver_counter pageserver_counters[PSC_COUNT] = {
	[PSC_DEMAND_FAULTS] = { "demand_faults", "Page faults of restored VMs that the page server "
			       "filled on demand" },
	[PSC_ZERO_FAULTS] = { "zero_faults", "Demand faults on holes of a snapshot's memory file, "
			     "answered with zero pages" },
	[PSC_PAGES_PREFETCHED] = { "pages_prefetched", "Pages the page server installed ahead of "
				  "any fault (hot set, access log)" },
	[PSC_BYTES_COPIED] = { "bytes_copied", "Bytes the page server copied into guest RAM" },
	[PSC_EEXIST] = { "eexist", "Copies that found the page already present (a race, "
			"answered with a wake)" },
	[PSC_EAGAIN] = { "eagain", "Copies retried because the VM's mapping was changing" },
};

const char *const pageserver_vm_states[PSV_COUNT] = {
	[PSV_HOT] = "hot", [PSV_BACKGROUND] = "background", [PSV_IDLE] = "idle",
	[PSV_LOADING] = "loading", [PSV_GONE] = "gone",
};

/* The server's lifecycle, one per process: forkvmd runs one daemon (daemon_run) per process. */
static struct {
	pthread_mutex_t lock; /* serializes checks and starts: many creates start one server */
	pid_t child;	      /* a server this daemon started and has not reaped yet, or 0 */
	int pid;	      /* the server last seen answering (started or adopted), or 0 */
} ps = { .lock = PTHREAD_MUTEX_INITIALIZER };

/*
 * Totals that only grow while one server runs: the server keeps the counters of its live VMs
 * and of its last 256 dropped ones, so a VM that leaves its list has its last counters added
 * to retired here (those seen by a scrape at least once).
 */
struct vm_seen {
	int id;
	uint64_t c[PSC_COUNT];
};

static struct {
	pthread_mutex_t lock;
	int pid;	       /* the server these are of: another one starts from zero */
	struct vm_seen *seen;  /* its VMs at the last scrape, by id */
	size_t nseen;
	uint64_t retired[PSC_COUNT];
} tot = { .lock = PTHREAD_MUTEX_INITIALIZER };

static void ps_paths(struct daemon *d, char *sock, size_t scap, char *log, size_t lcap)
{
	snprintf(sock, scap, "%s/pageserver.sock", d->run_dir);
	snprintf(log, lcap, "%s/pageserver.log", d->run_dir);
}

/* Nobody listens: no socket file, or one that a dead server left. */
static bool ps_absent(int err)
{
	return err == -ENOENT || err == -ECONNREFUSED;
}

/*
 * {"cmd":"status"} on sock, the whole exchange (connect, request, the reply line) within
 * timeout_ms. 0 with *reply (its "ok" true); -ENOENT or -ECONNREFUSED: nobody listens there;
 * -EAGAIN (its backlog is full) or -ETIMEDOUT: no whole reply in time; -ECONNRESET, -EPROTO:
 * closed early, not a status. err says which.
 */
static int ps_status(const char *sock, int timeout_ms, json_t **reply, struct fvm_err *err)
{
	static const char req[] = "{\"cmd\":\"status\"}\n";
	uint64_t deadline = deadline_after_ms(timeout_ms);
	size_t cap = 1 << 16, len = 0, sent = 0;
	json_error_t jerr;
	char *buf = NULL;
	int fd, ret = 0;

	*reply = NULL;
	fd = unix_connect(sock, SOCK_NONBLOCK);
	if (fd < 0) {
		return errmsg(err, fd, "connecting to %s: %s", sock,
			 fd == -EAGAIN ? "its backlog is full (the server is stuck)" : strerror(-fd));
	}
	buf = malloc(cap);
	if (!buf) {
		ret = -ENOMEM;
		errf(err, "the status of %s: out of memory", sock);
		goto out;
	}
	for (;;) {
		bool sending = sent < sizeof(req) - 1;
		struct pollfd p = { .fd = fd, .events = sending ? POLLOUT : POLLIN };
		int left = deadline_ms_left(deadline);
		int n = left > 0 ? poll(&p, 1, left) : 0;
		ssize_t k;

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			ret = n < 0 ? -errno : -ETIMEDOUT;
			if (n < 0)
				errf(err, "the status of %s: %s", sock, strerror(errno));
			else
				errf(err, "the status of %s: no whole reply within %d ms",
					 sock, timeout_ms);
			goto out;
		}
		if (sending) {
			k = send(fd, req + sent, sizeof(req) - 1 - sent, MSG_NOSIGNAL);
			if (k < 0 && errno != EAGAIN && errno != EINTR) {
				ret = -errno;
				errf(err, "asking %s for its status: %s", sock,
					 strerror(errno));
				goto out;
			}
			sent += k > 0 ? (size_t)k : 0;
			continue;
		}
		if (len == cap) {
			char *grown = cap < PS_REPLY_MAX ? realloc(buf, cap * 2) : NULL;
			if (!grown) {
				ret = -E2BIG;
				errf(err, "the status of %s: above %zu bytes", sock, cap);
				goto out;
			}
			buf = grown;
			cap *= 2;
		}
		k = recv(fd, buf + len, cap - len, 0);
		if (k < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (k <= 0) {
			ret = k < 0 ? -errno : -ECONNRESET;
			errf(err, "the status of %s: %s", sock,
				 k < 0 ? strerror(errno) : "the server closed the connection");
			goto out;
		}
		char *nl = memchr(buf + len, '\n', (size_t)k);
		len += (size_t)k;
		if (nl) {
			len = (size_t)(nl - buf);
			break;
		}
	}
	*reply = json_loadb(buf, len, 0, &jerr);
	if (!*reply || !json_is_true(json_object_get(*reply, "ok")) ||
	    !json_is_array(json_object_get(*reply, "vms"))) {
		ret = -EPROTO;
		errf(err, "the status of %s: %s", sock,
			 *reply ? "not a page server's status" : jerr.text);
		json_decref(*reply);
		*reply = NULL;
	}
out:
	free(buf);
	close(fd);
	return ret;
}

/* api_fail with "; the page server's log LOG ends: <its last lines>" after the message. */
static int ps_fail(struct api_err *e, int http, const char *code, const char *log,
		   const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static int ps_fail(struct api_err *e, int http, const char *code, const char *log,
		   const char *fmt, ...)
{
	char what[384], tail[600] = "";
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	int n = log_tail_append(log, PS_TAIL_LINES, tail, sizeof(tail));
	return api_fail(e, http, code, "%s; the page server's log %s ends:%s", what, log,
			n < 0 ? " (unreadable)" : n == 0 ? " (empty)" : tail);
}

/* "exited with status N" / "was killed by signal S" */
static void describe_exit(int status, char *out, size_t cap)
{
	if (WIFEXITED(status))
		snprintf(out, cap, "exited with status %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(out, cap, "was killed by signal %d (%s)", WTERMSIG(status),
			 strsignal(WTERMSIG(status)));
	else
		snprintf(out, cap, "ended (wait status %#x)", status);
}

/* A server we started that has exited: collected (with ps.lock held). */
static void reap_locked(void)
{
	char how[96];
	int status;

	if (ps.child <= 0)
		return;
	pid_t w = waitpid(ps.child, &status, WNOHANG);
	if (w == 0)
		return;
	if (w < 0) {
		log_warn("daemon: collecting the page server (pid %d): %s", (int)ps.child,
			 strerror(errno));
	} else {
		describe_exit(status, how, sizeof(how));
		log_warn("daemon: the page server (pid %d) %s; the next uffd create starts another",
			 (int)ps.child, how);
	}
	if (ps.pid == ps.child)
		ps.pid = 0;
	ps.child = 0;
}

/* A server that answered: remembered, and said once when it is not the one we knew. */
static void note_server(json_t *st, const char *sock, const char *how)
{
	int pid = (int)json_integer_value(json_object_get(st, "pid"));

	if (pid != ps.pid)
		log_info("daemon: page server pid %d on %s %s", pid, sock, how);
	ps.pid = pid;
}

/* posix_spawn `forkvm pageserver --socket SOCK`: its own session, its output into log. */
static int ps_spawn(struct daemon *d, const char *sock, const char *log, pid_t *pid,
		    struct api_err *e)
{
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	sigset_t none, defaults;
	char envbuf[PATH_MAX * 2];
	char **env = NULL;
	/* Confined like the VMMs, unless the daemon runs --no-jail (docs/SECURITY.md). */
	char *const argv[] = { d->exe, "pageserver", "--socket", (char *)sock,
			       d->o.no_jail ? "--no-jail" : "--jail", NULL };
	int fd, ret;

	fd = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return api_fail(e, 500, "pageserver_failed", "starting the page server: opening its "
				"log %s: %s", log, strerror(errno));
	if (dprintf(fd, "forkvmd (pid %d): starting the page server on %s\n", (int)getpid(),
		    sock) < 0)
		log_warn("daemon: writing to the page server's log %s: %s", log, strerror(errno));
	/* Its signals are the defaults (the daemon blocks its stop signals and ignores SIGPIPE),
	 * and no terminal's or supervisor's process-group signal meant for the daemon reaches
	 * it: VMs depend on it after the daemon is gone. Only stdio is inherited. */
	spawn_signal_sets(&none, &defaults);
	if ((ret = posix_spawn_file_actions_init(&fa))) {
		close(fd);
		return api_fail(e, 500, "pageserver_failed", "starting the page server: %s",
				strerror(ret));
	}
	if ((ret = posix_spawnattr_init(&attr))) {
		posix_spawn_file_actions_destroy(&fa);
		close(fd);
		return api_fail(e, 500, "pageserver_failed", "starting the page server: %s",
				strerror(ret));
	}
	if (!(ret = posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0)) &&
	    !(ret = posix_spawn_file_actions_adddup2(&fa, fd, STDOUT_FILENO)) &&
	    !(ret = posix_spawn_file_actions_adddup2(&fa, fd, STDERR_FILENO)) &&
	    !(ret = posix_spawn_file_actions_addclosefrom_np(&fa, STDERR_FILENO + 1)) &&
	    !(ret = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
							   POSIX_SPAWN_SETSID)) &&
	    !(ret = posix_spawnattr_setsigmask(&attr, &none)) &&
	    !(ret = posix_spawnattr_setsigdefault(&attr, &defaults))) {
		vmm_env(d, &env, envbuf, sizeof(envbuf));
		ret = posix_spawn(pid, d->exe, &fa, &attr, argv, env);
		if (env != environ)
			free(env);
	}
	posix_spawnattr_destroy(&attr);
	posix_spawn_file_actions_destroy(&fa);
	close(fd);
	if (ret)
		return ps_fail(e, 500, "pageserver_failed", log, "starting the page server (%s "
			       "pageserver --socket %s): %s", d->exe, sock, strerror(ret));
	return 0;
}

/* Start a server and wait for its first status (ps.lock held). */
static int ps_start(struct daemon *d, const char *sock, const char *log, struct api_err *e)
{
	uint64_t deadline = deadline_after_ms(PS_START_MS);
	char how[96];
	struct fvm_err err = FVM_ERR_INIT;
	json_t *st = NULL;
	pid_t pid = -1;
	int status;

	reap_locked();
	if (ps_spawn(d, sock, log, &pid, e))
		return -1;
	ps.child = pid;
	for (;;) {
		pid_t w = waitpid(pid, &status, WNOHANG);
		if (w == pid || w < 0) {
			ps.child = 0;
			if (w < 0)
				snprintf(how, sizeof(how), "could not be waited for (%s)",
					 strerror(errno));
			else
				describe_exit(status, how, sizeof(how));
			return ps_fail(e, 500, "pageserver_failed", log, "the page server (pid %d) %s "
				       "before it answered on %s", (int)pid, how, sock);
		}
		if (!ps_status(sock, PS_POLL_MS * 10, &st, &err))
			break;
		if (deadline_ms_left(deadline) <= 0) {
			/* Nothing was restored through it yet: it is ours to end. */
			kill(pid, SIGKILL);
			while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
				;
			ps.child = 0;
			return ps_fail(e, 504, "pageserver_failed", log, "the page server (pid %d) did "
				       "not answer on %s within %d ms (%s): killed", (int)pid, sock,
				       PS_START_MS, err_text(&err));
		}
		usleep(PS_POLL_MS * 1000);
	}
	/* Another server may have won the socket (one started by hand): it serves all the same,
	 * and ours exits (the reaper collects it). */
	note_server(st, sock, (int)json_integer_value(json_object_get(st, "pid")) == pid
			? "started" : "answered (started elsewhere): adopted");
	json_decref(st);
	return 0;
}

int pageserver_ensure(struct daemon *d, char *sock, size_t cap, struct api_err *e)
{
	char log[PS_PATH_MAX];
	struct fvm_err err = FVM_ERR_INIT;
	json_t *st = NULL;
	int ret;

	ps_paths(d, sock, cap, log, sizeof(log));
	pthread_mutex_lock(&ps.lock);
	ret = ps_status(sock, PS_PROBE_MS, &st, &err);
	if (!ret) {
		note_server(st, sock, "adopted");
		json_decref(st);
	} else if (ps_absent(ret)) {
		ret = ps_start(d, sock, log, e);
	} else {
		/* Alive but not answering: VMs may depend on it, so it is neither killed nor
		 * replaced (its socket stays in use); the operator decides. */
		ret = ps_fail(e, 502, "pageserver_unreachable", log, "checking the page server: %s; "
			      "it is left running (restored VMs may depend on it)", err_text(&err));
	}
	pthread_mutex_unlock(&ps.lock);
	return ret ? -1 : 0;
}

void pageserver_explain(struct daemon *d, struct api_err *e)
{
	char sock[PS_PATH_MAX], log[PS_PATH_MAX], tail[600] = "", suffix[720];

	ps_paths(d, sock, sizeof(sock), log, sizeof(log));
	if (log_tail_append(log, PS_TAIL_LINES, tail, sizeof(tail)) <= 0)
		return;
	int n = snprintf(suffix, sizeof(suffix), "; the page server's log %s ends:%s", log, tail);
	if (n < 0 || (size_t)n >= sizeof(suffix))
		return;
	/* The VMM's own output comes first; it is cut where both would not fit. */
	size_t len = strnlen(e->msg, sizeof(e->msg) - 1);
	if (len + (size_t)n >= sizeof(e->msg))
		len = sizeof(e->msg) - 1 - (size_t)n;
	memcpy(e->msg + len, suffix, (size_t)n + 1);
}

void pageserver_adopt(struct daemon *d)
{
	char sock[PS_PATH_MAX], log[PS_PATH_MAX];
	struct fvm_err err = FVM_ERR_INIT;
	json_t *st = NULL;

	ps_paths(d, sock, sizeof(sock), log, sizeof(log));
	pthread_mutex_lock(&ps.lock);
	int ret = ps_status(sock, PS_PROBE_MS, &st, &err);
	if (!ret) {
		note_server(st, sock, "adopted: the VMs restored through it keep being served");
		json_decref(st);
	} else if (!ps_absent(ret)) {
		log_warn("daemon: a page server on %s does not answer (%s): uffd creates fail until "
			 "it does or it is gone", sock, err_text(&err));
	}
	pthread_mutex_unlock(&ps.lock);
}

void pageserver_reap(struct daemon *d)
{
	(void)d;
	/* A start in progress holds the lock for seconds: the next tick collects instead. */
	if (pthread_mutex_trylock(&ps.lock))
		return;
	reap_locked();
	pthread_mutex_unlock(&ps.lock);
}

static int by_id(const void *a, const void *b)
{
	const struct vm_seen *x = a, *y = b;

	return (x->id > y->id) - (x->id < y->id);
}

/* The status's VMs into now (sorted by id) and the state gauges. */
static size_t read_vms(json_t *vms, struct vm_seen *now, struct pageserver_metrics *m)
{
	size_t i, n = 0;
	json_t *v;

	json_array_foreach(vms, i, v) {
		const char *state = json_string_value(json_object_get(v, "state"));
		for (int s = 0; state && s < PSV_COUNT; s++)
			m->vms[s] += strcmp(state, pageserver_vm_states[s]) == 0;
		now[n].id = (int)json_integer_value(json_object_get(v, "id"));
		for (int c = 0; c < PSC_COUNT; c++) {
			const char *key = pageserver_counters[c].key;
			json_int_t x = json_integer_value(json_object_get(v, key));
			now[n].c[c] = x > 0 ? (uint64_t)x : 0;
		}
		n++;
	}
	qsort(now, n, sizeof(*now), by_id);
	return n;
}

void pageserver_metrics(struct daemon *d, struct pageserver_metrics *m)
{
	char sock[PS_PATH_MAX], log[PS_PATH_MAX];
	struct fvm_err err = FVM_ERR_INIT;
	json_t *st = NULL;

	memset(m, 0, sizeof(*m));
	ps_paths(d, sock, sizeof(sock), log, sizeof(log));
	int ret = ps_status(sock, PS_METRICS_MS, &st, &err);
	if (ret) {
		if (!ps_absent(ret))
			log_warn("daemon: metrics: the page server: %s", err_text(&err));
		return;
	}
	m->up = true;
	json_t *vms = json_object_get(st, "vms");
	int pid = (int)json_integer_value(json_object_get(st, "pid"));
	size_t n = json_array_size(vms);
	struct vm_seen *now = calloc(n ? n : 1, sizeof(*now));

	pthread_mutex_lock(&tot.lock);
	if (pid != tot.pid) { /* another server: its counters start from zero */
		free(tot.seen);
		tot.seen = NULL;
		tot.nseen = 0;
		memset(tot.retired, 0, sizeof(tot.retired));
		tot.pid = pid;
	}
	if (!now) {
		/* Out of memory: the totals stay as the last scrape had them. */
		log_warn("daemon: metrics: the page server's %zu VMs: out of memory", n);
		for (int c = 0; c < PSC_COUNT; c++)
			m->total[c] = tot.retired[c];
		for (size_t k = 0; k < tot.nseen; k++)
			for (int c = 0; c < PSC_COUNT; c++)
				m->total[c] += tot.seen[k].c[c];
	} else {
		n = read_vms(vms, now, m);
		/* Both sorted by id: a VM seen last time and missing now has left the list. */
		for (size_t a = 0, b = 0; a < tot.nseen; a++) {
			while (b < n && now[b].id < tot.seen[a].id)
				b++;
			if (b < n && now[b].id == tot.seen[a].id)
				continue;
			for (int c = 0; c < PSC_COUNT; c++)
				tot.retired[c] += tot.seen[a].c[c];
		}
		for (int c = 0; c < PSC_COUNT; c++) {
			m->total[c] = tot.retired[c];
			for (size_t k = 0; k < n; k++)
				m->total[c] += now[k].c[c];
		}
		free(tot.seen);
		tot.seen = now;
		tot.nseen = n;
	}
	pthread_mutex_unlock(&tot.lock);
	json_decref(st);
}
