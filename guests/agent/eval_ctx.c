/* Eval contexts: run directory, per-context lock, starting the driver, connecting, killing. */
#include "eval_ctx.h"
#include "exec.h"
#include "io.h"
#include "log.h"
#include "mem.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* The run directory leaves room for "/py-<name>.sock" in a sockaddr_un (108 bytes). */
#define EVAL_DIR_MAX (108 - (int)sizeof("/py-.sock") - AGENT_MAX_CONTEXT_NAME)
/* How long a killed or vanished interpreter of ours gets to become reapable. */
#define EVAL_REAP_MS 2000

/* The driver, eval_driver.py as a C array (mk/extra-agent.mk generates the .inc). */
static const char driver_src[] = {
#include "eval_driver.inc"
};

/* Where the default run directory may go, in order: the first writable one is used. */
static const char *const default_bases[] = { "/tmp", "/run", "/dev/shm" };

static struct {
	bool ready;
	bool default_dir;	/* <base>/forkvm-agent.<pid>: removed at teardown */
	pid_t listener;		/* the agent's pid, which names the default directory */
	char dir[EVAL_DIR_MAX + 1];
	int lifeline[2];
	const char *python;
	char why[256];		/* why eval is unavailable */
} ev = { .lifeline = { -1, -1 } };

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/* ------------------------------------------------------------------------- setup */

int eval_setup(const struct agent_config *cfg)
{
	ev.python = cfg->python ? cfg->python : "python3";
	if (cfg->run_dir && (int)strlen(cfg->run_dir) > EVAL_DIR_MAX) {
		snprintf(ev.why, sizeof(ev.why), "--run-dir %.64s... is longer than %d bytes",
			 cfg->run_dir, EVAL_DIR_MAX);
		return log_errno(-ENAMETOOLONG, "eval: --run-dir %s", cfg->run_dir);
	}
	/* The listener's pid: the same in every connection process and, the VM being forked
	 * whole, in every clone. */
	ev.listener = getpid();
	ev.default_dir = !cfg->run_dir;
	if (cfg->run_dir)
		snprintf(ev.dir, sizeof(ev.dir), "%s", cfg->run_dir);
	if (pipe2(ev.lifeline, O_CLOEXEC) < 0) {
		int err = errno;

		snprintf(ev.why, sizeof(ev.why), "create the lifeline pipe: %s", strerror(err));
		return log_errno(-err, "eval: create the lifeline pipe");
	}
	ev.ready = true;
	return 0;
}

static void default_dir_at(size_t i)
{
	snprintf(ev.dir, sizeof(ev.dir), "%s/forkvm-agent.%d", default_bases[i], (int)ev.listener);
}

/* Create ev.dir if needed; one that exists must be ours and private (-EPERM otherwise). */
static int make_private_dir(struct fvm_err *e)
{
	struct stat sb;

	if (mkdir(ev.dir, 0700) == 0)
		return 0;
	if (errno != EEXIST)
		return errmsg(e, -errno, "eval run directory %s: %s", ev.dir, strerror(errno));
	if (lstat(ev.dir, &sb) < 0)
		return errmsg(e, -errno, "eval run directory %s: %s", ev.dir, strerror(errno));
	if (!S_ISDIR(sb.st_mode) || sb.st_uid != geteuid() || (sb.st_mode & 077))
		return errmsg(e, -EPERM,
				  "eval run directory %s is not a private directory of this user", ev.dir);
	return 0;
}

/* The run directory, made on first use: --run-dir, or the first default base that works. */
static int ensure_dir(struct fvm_err *e)
{
	int ret = -ENOENT;

	if (!ev.default_dir)
		return make_private_dir(e);
	for (size_t i = 0; i < sizeof(default_bases) / sizeof(default_bases[0]); i++) {
		default_dir_at(i);
		ret = make_private_dir(e);
		if (ret == 0 || ret == -EPERM)
			return ret;
	}
	return errmsg(e, ret, "no writable /tmp, /run or /dev/shm for the eval sockets (%s); "
			  "start the agent with --run-dir", strerror(-ret));
}

/* A context file: "py-<name><suffix>". */
static bool is_ctx_file(const char *name, const char *suffix)
{
	size_t n = strlen(name), k = strlen(suffix);

	return n > 3 + k && !strncmp(name, "py-", 3) && !strcmp(name + n - k, suffix);
}

/* True for the names eval puts in the run directory. */
static bool ours(const char *name)
{
	return !strcmp(name, "spawn.lock") || is_ctx_file(name, ".sock") ||
	       is_ctx_file(name, ".lock");
}

/* Remove what eval put into ev.dir, and the directory itself when it is a default one. */
static void clean_dir(void)
{
	struct dirent *de;
	DIR *d = opendir(ev.dir);

	if (!d)
		return;
	while ((de = readdir(d)))
		if (ours(de->d_name) && unlinkat(dirfd(d), de->d_name, 0) < 0 && errno != ENOENT)
			log_errno(-errno, "eval: remove %s/%s", ev.dir, de->d_name);
	closedir(d);
	if (ev.default_dir && rmdir(ev.dir) < 0)
		log_errno(-errno, "eval: remove %s", ev.dir);
}

void eval_teardown(void)
{
	if (!ev.ready)
		return;
	if (!ev.default_dir)
		clean_dir();
	for (size_t i = 0; ev.default_dir && i < sizeof(default_bases) / sizeof(default_bases[0]);
	     i++) {
		struct stat sb;

		default_dir_at(i);
		/* Only a directory of ours: another user may own a stale one of that name. */
		if (lstat(ev.dir, &sb) == 0 && S_ISDIR(sb.st_mode) && sb.st_uid == geteuid())
			clean_dir();
	}
	close_fd(&ev.lifeline[0]);
	close_fd(&ev.lifeline[1]);
	ev.ready = false;
}

/* ------------------------------------------------------------------------- files */

static void ctx_path(char *buf, size_t len, const char *context, const char *suffix)
{
	snprintf(buf, len, "%s/py-%s%s", ev.dir, context, suffix);
}

static void forget_socket(const char *context)
{
	char path[PATH_MAX];

	ctx_path(path, sizeof(path), context, ".sock");
	if (unlink(path) < 0 && errno != ENOENT)
		log_errno(-errno, "eval: remove %s", path);
}

/* flock the context's lock file; a lock file unlinked by eval_close meanwhile is retried. */
static int lock_context(const char *context, int *out, struct fvm_err *e)
{
	char path[PATH_MAX];
	struct stat held, now;

	ctx_path(path, sizeof(path), context, ".lock");
	for (int tries = 0; tries < 16; tries++) {
		int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);

		if (fd < 0)
			return errmsg(e, -errno, "open %s: %s", path, strerror(errno));
		if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
			int err = errno;

			close(fd);
			if (err == EWOULDBLOCK)
				return errmsg(e, -EBUSY,
						  "context '%s' is busy: another eval is running in it",
						  context);
			return errmsg(e, -err, "lock %s: %s", path, strerror(err));
		}
		if (fstat(fd, &held) == 0 && stat(path, &now) == 0 && held.st_ino == now.st_ino &&
		    held.st_dev == now.st_dev) {
			*out = fd;
			return 0;
		}
		close(fd);
	}
	return errmsg(e, -EAGAIN, "lock %s: it keeps being replaced", path);
}

/* Live contexts: the sockets in the run directory. */
static int count_contexts(void)
{
	struct dirent *de;
	int n = 0;
	DIR *d = opendir(ev.dir);

	if (!d)
		return -errno;
	while ((de = readdir(d)))
		if (is_ctx_file(de->d_name, ".sock"))
			n++;
	closedir(d);
	return n;
}

/* Connect to the context's socket: 0, -ENOENT (none), -ECONNREFUSED (its interpreter died). */
static int connect_context(const char *context, int *out)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	int fd, ret;

	ctx_path(addr.sun_path, sizeof(addr.sun_path), context, ".sock");
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		ret = -errno;
		close(fd);
		return ret;
	}
	*out = fd;
	return 0;
}

/* ------------------------------------------------------------------------- the driver */

static __attribute__((noreturn)) void child_fail(int status_fd)
{
	int err = errno;

	if (write(status_fd, &err, sizeof(err)) < 0)
		_exit(127);
	_exit(127);
}

/* In the forked child: a session of its own, SIGINT ignored until the driver installs its
 * handler, 0/1 on /dev/null (2 stays the console), the socket on 3, the lifeline on 4. */
static __attribute__((noreturn)) void driver_child(int listen_fd, int status_fd)
{
	const char *argv[] = { ev.python, "-c", driver_src, "3", "4", NULL };
	int lfd, life, devnull;
	sigset_t none;

	status_fd = fcntl(status_fd, F_DUPFD_CLOEXEC, 10);
	lfd = fcntl(listen_fd, F_DUPFD_CLOEXEC, 10);
	life = fcntl(ev.lifeline[0], F_DUPFD_CLOEXEC, 10);
	if (status_fd < 0)
		_exit(127);
	if (lfd < 0 || life < 0 || setsid() < 0)
		child_fail(status_fd);
	sigemptyset(&none);
	if (sigprocmask(SIG_SETMASK, &none, NULL) < 0 || signal(SIGINT, SIG_IGN) == SIG_ERR ||
	    signal(SIGPIPE, SIG_DFL) == SIG_ERR)
		child_fail(status_fd);
	/* The interpreter outlives this connection: the agent's limit, not the connection's. */
	errno = -mem_child_restore();
	if (errno)
		child_fail(status_fd);
	devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (devnull < 0 || dup2(devnull, 0) < 0 || dup2(devnull, 1) < 0 || dup2(lfd, 3) < 0 ||
	    dup2(life, 4) < 0)
		child_fail(status_fd);
	exec_cloexec_from(5);
	execvp(argv[0], (char *const *)argv);
	child_fail(status_fd);
}

/* Wait for the child to exec (the status pipe closes) or report why it could not. */
static int await_exec(pid_t pid, int status_fd, struct fvm_err *e)
{
	ssize_t n;
	int err;

	do
		n = read(status_fd, &err, sizeof(err));
	while (n < 0 && errno == EINTR);
	if (n == 0)
		return 0;
	if (n != (ssize_t)sizeof(err))
		err = n < 0 ? errno : EPROTO;
	while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
		;
	if (err == ENOENT)
		return errmsg(e, -ENOENT, "%s is not installed in the guest (exec %s: %s)",
				  ev.python, ev.python, strerror(err));
	return errmsg(e, -err, "start %s for eval: %s", ev.python, strerror(err));
}

/* Bind the context's socket, then fork and exec the driver on it. */
static int start_driver(const char *context, struct fvm_err *e)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	int lfd = -1, status[2] = { -1, -1 }, ret;
	pid_t pid;

	ctx_path(addr.sun_path, sizeof(addr.sun_path), context, ".sock");
	if (unlink(addr.sun_path) < 0 && errno != ENOENT)
		return errmsg(e, -errno, "remove %s: %s", addr.sun_path, strerror(errno));
	lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(lfd, 8) < 0 ||
	    pipe2(status, O_CLOEXEC) < 0) {
		ret = errmsg(e, -errno, "eval socket %s: %s", addr.sun_path, strerror(errno));
		goto out;
	}
	pid = fork();
	if (pid < 0) {
		ret = errmsg(e, -errno, "fork for %s: %s", ev.python, strerror(errno));
		goto out;
	}
	if (pid == 0)
		driver_child(lfd, status[1]);
	close_fd(&status[1]);
	ret = await_exec(pid, status[0], e);
	if (ret == 0)
		log_debug("eval: context '%s': %s started, pid %d", context, ev.python, (int)pid);
out:
	if (ret < 0 && lfd >= 0)
		unlink(addr.sun_path);
	close_fd(&lfd);
	close_fd(&status[0]);
	close_fd(&status[1]);
	return ret;
}

/* Start the context's interpreter under the spawn lock, which makes the context count exact. */
static int spawn_context(const char *context, struct fvm_err *e)
{
	char path[PATH_MAX];
	int fd, n, ret;

	snprintf(path, sizeof(path), "%s/spawn.lock", ev.dir);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return errmsg(e, -errno, "open %s: %s", path, strerror(errno));
	if (flock(fd, LOCK_EX) < 0) {
		ret = errmsg(e, -errno, "lock %s: %s", path, strerror(errno));
		goto out;
	}
	n = count_contexts();
	if (n < 0)
		ret = errmsg(e, n, "list %s: %s", ev.dir, strerror(-n));
	else if (n >= AGENT_MAX_EVAL_CONTEXTS)
		ret = errmsg(e, -EMFILE,
				 "too many eval contexts (%d live, the limit); close one with eval_close",
				 n);
	else
		ret = start_driver(context, e);
out:
	close(fd);
	return ret;
}

/* ------------------------------------------------------------------------- I/O */

int eval_recv(struct eval_stream *st, uint64_t deadline_ms, int watch_fd, uint8_t **payload,
	      size_t *len)
{
	for (;;) {
		struct pollfd p[2] = { { .fd = st->fd, .events = POLLIN }, { .fd = watch_fd } };
		int wait_ms = -1, ready, ret;
		ssize_t n;

		while (st->pos < st->len) {
			size_t used;

			ret = frame_decoder_feed(&st->dec, st->buf + st->pos, st->len - st->pos, &used);
			st->pos += used;
			if (ret < 0)
				return ret;
			if (ret == FRAME_READY) {
				*payload = frame_decoder_take(&st->dec, len);
				return 0;
			}
		}
		if (deadline_ms) {
			uint64_t now = io_now_ms();

			wait_ms = now >= deadline_ms ? 0
			       : deadline_ms - now > INT_MAX ? INT_MAX : (int)(deadline_ms - now);
		}
		ready = poll(p, 2, wait_ms);
		if (ready < 0 && errno == EINTR)
			continue;
		if (ready < 0)
			return -errno;
		/* Only when nothing is ready: a reply that made it in time is taken. */
		if (ready == 0 && deadline_ms && io_now_ms() >= deadline_ms)
			return -ETIMEDOUT;
		if (p[1].revents & (POLLHUP | POLLERR))
			return -EPIPE;
		if (!p[0].revents)
			continue;
		n = read(st->fd, st->buf, sizeof(st->buf));
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n == 0 || (n < 0 && errno == ECONNRESET))
			return -ECONNRESET;
		if (n < 0)
			return -errno;
		st->pos = 0;
		st->len = (size_t)n;
	}
}

/* ------------------------------------------------------------------------- sessions */

static void stream_reset(struct eval_stream *st)
{
	close_fd(&st->fd);
	frame_decoder_free(&st->dec);
	frame_decoder_init(&st->dec, AGENT_EVAL_META_MAX);
	st->pos = st->len = 0;
}

static int read_hello(struct eval_session *s, int conn_fd, struct fvm_err *e)
{
	uint8_t *payload = NULL;
	size_t len;
	int ret;

	ret = eval_recv(&s->st, io_now_ms() + s->start_ms, conn_fd, &payload, &len);
	if (ret == -ETIMEDOUT)
		return errmsg(e, ret, "the interpreter of context '%s' did not answer within %u ms",
				  s->context, s->start_ms);
	if (ret == -EPIPE)
		return errmsg(e, -ECONNRESET, "client hung up while the interpreter started");
	if (ret == -ECONNRESET)
		return ret; /* the caller knows what a vanished interpreter means here */
	if (ret < 0)
		return errmsg(e, ret, "receive the interpreter's hello: %s", strerror(-ret));
	ret = evalp_parse_hello(payload, len, &s->hello, e);
	free(payload);
	return ret;
}

/* Reap pid if it is a child of this process (it is when this connection started it). */
static int reap_if_ours(pid_t pid)
{
	uint64_t until = io_now_ms() + EVAL_REAP_MS;
	int status;

	for (;;) {
		pid_t r = waitpid(pid, &status, WNOHANG);

		if (r == pid)
			return status;
		if (r < 0 && errno != EINTR)
			return -1; /* ECHILD: another process's child, reaped elsewhere */
		if (io_now_ms() >= until)
			return -1;
		nanosleep(&(struct timespec){ .tv_nsec = 5 * 1000 * 1000 }, NULL);
	}
}

int eval_session_open(const char *context, int conn_fd, uint32_t start_ms,
		      struct eval_session *s, struct fvm_err *e)
{
	int ret;

	*s = (struct eval_session){ .context = context, .lock_fd = -1, .st.fd = -1,
				    .start_ms = start_ms > AGENT_EVAL_START_MS ? start_ms :
						AGENT_EVAL_START_MS };
	frame_decoder_init(&s->st.dec, AGENT_EVAL_META_MAX);
	if (!ev.ready)
		return errmsg(e, -ENOTSUP, "eval is unavailable: %s", ev.why);
	ret = ensure_dir(e);
	if (ret == 0)
		ret = lock_context(context, &s->lock_fd, e);
	if (ret < 0)
		return ret;
	ret = connect_context(context, &s->st.fd);
	if (ret == 0) {
		ret = read_hello(s, conn_fd, e);
		if (ret != -ECONNRESET)
			return ret;
		stream_reset(&s->st);
	}
	if (ret != -ENOENT && ret != -ECONNREFUSED && ret != -ECONNRESET)
		return errmsg(e, ret, "connect to the interpreter of context '%s': %s", context,
				  strerror(-ret));
	/* A socket without a live interpreter: it died (killed, crashed, os._exit). */
	s->state_lost = ret != -ENOENT;
	if (s->state_lost)
		forget_socket(context);
	ret = spawn_context(context, e);
	if (ret < 0)
		return ret;
	s->started = true;
	ret = connect_context(context, &s->st.fd);
	if (ret < 0)
		return errmsg(e, ret, "connect to the new interpreter of context '%s': %s",
				  context, strerror(-ret));
	ret = read_hello(s, conn_fd, e);
	if (ret == -ECONNRESET) {
		forget_socket(context);
		return errmsg(e, -ECHILD,
			      "%s exited at once for context '%s' (see the agent's log)",
				  ev.python, context);
	}
	return ret;
}

void eval_session_close(struct eval_session *s)
{
	stream_reset(&s->st);
	frame_decoder_free(&s->st.dec);
	close_fd(&s->lock_fd);
}

void eval_session_kill(struct eval_session *s)
{
	pid_t pid = s->hello.pid;

	if (pid > 1) {
		/* The driver leads its own session: its group holds what the code started. */
		if (kill(-pid, SIGKILL) < 0 && errno != ESRCH)
			log_errno(-errno, "eval: kill process group %d", (int)pid);
		kill(pid, SIGKILL);
		reap_if_ours(pid);
	}
	forget_socket(s->context);
	stream_reset(&s->st);
}

int eval_session_lost(struct eval_session *s)
{
	int status = s->hello.pid > 1 ? reap_if_ours(s->hello.pid) : -1;

	forget_socket(s->context);
	stream_reset(&s->st);
	return status;
}

int eval_context_close(const char *context, bool *closed, struct fvm_err *e)
{
	struct eval_session s;
	char path[PATH_MAX];
	int ret;

	*closed = false;
	s = (struct eval_session){ .context = context, .lock_fd = -1, .st.fd = -1,
				 .start_ms = AGENT_EVAL_START_MS };
	frame_decoder_init(&s.st.dec, AGENT_EVAL_META_MAX);
	if (!ev.ready)
		return errmsg(e, -ENOTSUP, "eval is unavailable: %s", ev.why);
	ret = ensure_dir(e);
	if (ret == 0)
		ret = lock_context(context, &s.lock_fd, e);
	if (ret < 0)
		goto out;
	ret = connect_context(context, &s.st.fd);
	if (ret == 0) {
		ret = read_hello(&s, -1, e);
		if (ret < 0 && ret != -ECONNRESET)
			goto out; /* e.g. no hello in time: leave it, say why */
		if (ret == 0) {
			eval_session_kill(&s);
			*closed = true;
		}
	} else if (ret != -ENOENT && ret != -ECONNREFUSED) {
		ret = errmsg(e, ret, "connect to the interpreter of context '%s': %s", context,
				 strerror(-ret));
		goto out;
	}
	/* No interpreter, or a dead one: only its socket is left. */
	if (!*closed)
		forget_socket(context);
	ret = 0;
	/* Unlinked while held: lock_context notices and takes the new file. */
	ctx_path(path, sizeof(path), context, ".lock");
	if (unlink(path) < 0 && errno != ENOENT)
		log_errno(-errno, "eval: remove %s", path);
out:
	eval_session_close(&s);
	return ret;
}
