/* Accept loop with a signalfd: forks a process per connection and reaps them. */
#include "server.h"
#include "conn.h"
#include "io.h"
#include "log.h"
#include "mem.h"
#include "reply.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct server {
	int listen_fd, sig_fd;
	const struct agent_config *cfg;
	uint64_t start_ms;
	pid_t *conns;		/* live connection processes, 0 = free slot */
	unsigned int active;
	bool stopping;
};

static void forget_conn(struct server *s, pid_t pid, int status)
{
	for (unsigned int i = 0; i < s->cfg->max_conns; i++) {
		if (s->conns[i] != pid)
			continue;
		s->conns[i] = 0;
		s->active--;
		mem_slot_clear(i); /* a process killed while holding memory gives it back here */
		if (WIFEXITED(status) && WEXITSTATUS(status) == AGENT_EXIT_SHUTDOWN)
			s->stopping = true;
		else if (WIFEXITED(status) && WEXITSTATUS(status) != 0)
			/* Connections end with 0 even on client errors; anything else (e.g. a
			 * sanitizer report) is an agent bug worth a console line. */
			log_warn("connection process %d exited with status %d", (int)pid,
				 WEXITSTATUS(status));
		else if (WIFSIGNALED(status))
			log_warn("connection process %d killed by signal %d", (int)pid,
				 WTERMSIG(status));
		return;
	}
	/* Not ours: an orphan reparented to us (the agent may run as PID 1). */
}

static int handle_signals(struct server *s)
{
	struct signalfd_siginfo si;
	int status;
	pid_t pid;

	for (;;) {
		ssize_t n = read(s->sig_fd, &si, sizeof(si));

		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			break;
		if (n != (ssize_t)sizeof(si))
			return log_errno(n < 0 ? -errno : -EIO, "read signalfd");
		if (si.ssi_signo != SIGCHLD) {
			log_info("signal %u: stopping", si.ssi_signo);
			s->stopping = true;
		}
	}
	/* SIGCHLDs coalesce, so reap everything that is ready. */
	while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
		forget_conn(s, pid, status);
	return 0;
}

static __attribute__((noreturn)) void run_conn(struct server *s, int fd, unsigned int slot)
{
	sigset_t none;
	int status;

	mem_conn_enter(slot);
	close(s->listen_fd);
	close(s->sig_fd);
	sigemptyset(&none);
	if (sigprocmask(SIG_SETMASK, &none, NULL) < 0)
		log_errno(-errno, "unblock signals in connection process");
	status = conn_serve(fd, s->cfg, s->start_ms);
	close(fd);
	free(s->conns);
	exit(status);
}

static int accept_one(struct server *s)
{
	unsigned int slot;
	int fd;
	pid_t pid;

	fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0) {
		if (errno == EINTR || errno == EAGAIN || errno == ECONNABORTED || errno == EPROTO)
			return 0;
		if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
			/* Transient exhaustion: back off rather than spin on a ready listener. */
			log_errno(-errno, "accept");
			nanosleep(&(struct timespec){ .tv_nsec = 100 * 1000 * 1000 }, NULL);
			return 0;
		}
		return log_errno(-errno, "accept on listening socket");
	}
	if (s->active >= s->cfg->max_conns) {
		io_send_reply(fd, reply_error(NULL, "too many connections"));
		close(fd);
		return 0;
	}
	for (slot = 0; s->conns[slot]; slot++)
		;
	pid = fork();
	if (pid < 0) {
		log_errno(-errno, "fork connection process");
		io_send_reply(fd, reply_error(NULL, "agent cannot fork a connection process"));
	} else if (pid == 0) {
		run_conn(s, fd, slot);
	} else {
		s->conns[slot] = pid;
		s->active++;
	}
	close(fd);
	return 0;
}

/* Stop the remaining connection processes and wait for them. */
static void stop_conns(struct server *s)
{
	int status;

	for (unsigned int i = 0; i < s->cfg->max_conns; i++)
		if (s->conns[i] && kill(s->conns[i], SIGTERM) < 0 && errno != ESRCH)
			log_errno(-errno, "stop connection process %d", (int)s->conns[i]);
	for (unsigned int i = 0; i < s->cfg->max_conns; i++) {
		if (!s->conns[i])
			continue;
		while (waitpid(s->conns[i], &status, 0) < 0 && errno == EINTR)
			;
		s->conns[i] = 0;
	}
}

int server_run(int listen_fd, const struct agent_config *cfg)
{
	struct server s = { .listen_fd = listen_fd, .sig_fd = -1, .cfg = cfg };
	sigset_t mask;
	int ret = 0;

	s.start_ms = io_now_ms();
	s.conns = calloc(cfg->max_conns, sizeof(*s.conns));
	if (!s.conns)
		return log_errno(-ENOMEM, "allocate connection table");
	/* Without the shared table connections run unbudgeted; say so, but serve. */
	if (mem_setup(cfg) < 0)
		log_warn("no memory budget: connections are bounded only by the request limits");
	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0) {
		ret = log_errno(-errno, "block signals");
		goto out;
	}
	s.sig_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (s.sig_fd < 0) {
		ret = log_errno(-errno, "create signalfd");
		goto out;
	}
	while (!s.stopping) {
		struct pollfd fds[2] = {
			{ .fd = s.sig_fd, .events = POLLIN },
			{ .fd = listen_fd, .events = POLLIN },
		};

		if (poll(fds, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			ret = log_errno(-errno, "poll listening socket");
			break;
		}
		if (fds[0].revents)
			ret = handle_signals(&s);
		if (ret == 0 && !s.stopping && fds[1].revents)
			ret = accept_one(&s);
		if (ret < 0)
			break;
	}
	stop_conns(&s);
out:
	if (s.sig_fd >= 0)
		close(s.sig_fd);
	free(s.conns);
	return ret;
}
