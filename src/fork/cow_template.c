/* The cow template process: frozen image holder, child factory, and its control socket. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "util/errmsg.h"
#include "util/evloop.h"
#include "util/log.h"
#include "util/unix_sock.h"
#include "util/thread.h"
#include "fork/cow.h"
#include "fork/fd_hygiene.h"
#include "jail/cgroup.h"
#include "net/net.h"
#include "jail/seccomp.h"

static void report(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void report(int fd, const char *fmt, ...)
{
	char line[4096];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(line) - 1)
		n = (int)sizeof(line) - 1;
	/* The report goes to a pipe and replies to a socket: plain write() serves both. */
	for (int off = 0; fd >= 0 && off < n;) {
		ssize_t w = write(fd, line + off, (size_t)(n - off));
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			break;
		off += (int)w;
	}
}

static json_t *children_json(const struct branch_child *c, int n)
{
	json_t *list = json_array();

	for (int i = 0; i < n; i++)
		json_array_append_new(list, json_pack("{s:s,s:i,s:s}", "name", c[i].name, "pid",
						      (int)c[i].pid, "socket", c[i].socket));
	return list;
}

/* A client that connects and then says nothing may hold the (single-threaded) template
 * this long, no longer. */
#define TEMPLATE_RECV_TIMEOUT_S 10

/* One request per connection: status, spawn {count, paused, no_agent_sync}, stop. */
static bool template_request(struct cow_template *t, int fd)
{
	struct branch_child *kids = NULL;
	char buf[4096];
	struct fvm_err err = FVM_ERR_INIT;
	json_t *req, *reply;
	const char *cmd;
	bool stop = false;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);

	if (n <= 0)
		return false;
	buf[n] = '\0';
	req = json_loads(buf, JSON_DISABLE_EOF_CHECK, NULL);
	cmd = req ? json_string_value(json_object_get(req, "cmd")) : NULL;
	if (!cmd) {
		reply = json_pack("{s:b,s:s}", "ok", 0, "error", "request must be {\"cmd\": ...}");
	} else if (strcmp(cmd, "status") == 0) {
		reply = json_pack("{s:b,s:i,s:i,s:b,s:I}", "ok", 1, "pid", (int)getpid(), "live",
				  t->live, "source_alive", t->source_alive, "mem_bytes",
				  (json_int_t)t->mem.size);
	} else if (strcmp(cmd, "spawn") == 0) {
		json_t *jc = json_object_get(req, "count");
		int count = json_is_integer(jc) ? (int)json_integer_value(jc) : 1;
		kids = calloc(BRANCH_MAX_CHILDREN, sizeof(*kids));
		if (!kids || (jc && !json_is_integer(jc)) ||
		    cow_spawn(t, count, json_is_true(json_object_get(req, "paused")),
			      json_is_true(json_object_get(req, "no_agent_sync")), kids, &err) < 0)
			reply = json_pack("{s:b,s:s}", "ok", 0, "error",
					  kids ? err.msg : "bad count");
		else
			reply = json_pack("{s:b,s:o}", "ok", 1, "children", children_json(kids, count));
	} else if (strcmp(cmd, "stop") == 0) {
		reply = json_pack("{s:b}", "ok", 1);
		stop = true;
	} else {
		reply = json_pack("{s:b,s:s}", "ok", 0, "error", "unknown template command");
	}
	char *text = json_dumps(reply, JSON_COMPACT);
	if (text) {
		report(fd, "%s\n", text);
		free(text);
	}
	json_decref(reply);
	json_decref(req);
	free(kids);
	return stop;
}

/* A child killed by a signal could not remove its socket: its template does. */
static void reap(struct cow_template *t)
{
	int status;
	pid_t pid;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		t->live--;
		/* A child that exits leaves and removes its cgroup; a killed one cannot. */
		for (int i = 0; i < t->nkids; i++)
			if (t->kids[i].pid == pid && t->kids[i].cgroup[0])
				rmdir(t->kids[i].cgroup);
		for (int i = 0; WIFSIGNALED(status) && i < t->nkids; i++)
			if (t->kids[i].pid == pid) {
				char how[64];
				jail_describe_wait(status, how, sizeof(how));
				log_warn("child %s (pid %d) %s", t->kids[i].socket, (int)pid, how);
				unlink(t->kids[i].socket);
				snap_disks_remove_leftovers(t->kids[i].socket);
			}
	}
}

struct serve {
	struct cow_template *t;
	struct evloop loop;
	int sig_fd, source_id;
	bool stop;
};

static void on_signal(void *arg, uint32_t events)
{
	struct serve *sv = arg;
	struct signalfd_siginfo si;

	(void)events;
	if (read(sv->sig_fd, &si, sizeof(si)) == sizeof(si) && si.ssi_signo != SIGCHLD)
		sv->stop = true;
	else
		reap(sv->t);
}

/* The source's pidfd: readable once the source process has exited. */
static void on_source_gone(void *arg, uint32_t events)
{
	struct serve *sv = arg;

	(void)events;
	sv->t->source_alive = false;
	ev_del(&sv->loop, sv->source_id);
	sv->source_id = -1;
}

static void on_request(void *arg, uint32_t events)
{
	struct serve *sv = arg;
	/* Only our euid and root: others are closed unheard (logged once per uid). */
	int fd = unix_accept(sv->t->listen_fd, SOCK_CLOEXEC, "template socket");
	struct timeval tv = { .tv_sec = TEMPLATE_RECV_TIMEOUT_S };

	(void)events;
	if (fd < 0)
		return;
	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0)
		log_warn("template socket: SO_RCVTIMEO: %s", strerror(errno));
	if (template_request(sv->t, fd))
		sv->stop = true;
	close(fd);
}

/* Serve until asked to stop, or until the source is gone and no child is left. */
static void template_serve(struct cow_template *t, int sig_fd, int source_fd)
{
	struct serve sv = { .t = t, .sig_fd = sig_fd, .source_id = -1 };
	int ret = ev_init(&sv.loop, "cow template");

	if (!ret && (ret = ev_add(&sv.loop, sig_fd, EPOLLIN, EV_LATER, on_signal, &sv)) >= 0)
		ret = ev_add(&sv.loop, t->listen_fd, EPOLLIN, EV_LATER, on_request, &sv);
	if (ret >= 0 && t->source_alive)
		ret = sv.source_id = ev_add(&sv.loop, source_fd, EPOLLIN, EV_LATER, on_source_gone,
					    &sv);
	while (ret >= 0 && !sv.stop && (t->source_alive || t->live > 0))
		ret = ev_run_once(&sv.loop, -1);
	if (ret < 0)
		log_err("cow template: serving stopped: %s", strerror(-ret));
	ev_fini(&sv.loop);
}

static int decode_state(struct cow_template *t, struct snap_buf *state)
{
	struct snapshot snap = { .dir = "(cow branch)" };
	struct fvm_err err = FVM_ERR_INIT;
	int ret = snap_state_parse(state->data, state->len, &snap.state, &err);

	state->data = NULL; /* the parser owns it now */
	if (!ret)
		ret = snap_decode(&snap, &t->machine, &err);
	/* Parsed once here, not in every child (a child touches as little memory as it can). */
	if (!ret)
		ret = cpuid_policy_parse(&t->cpuid_policy, t->machine.config.cpu_features, &err);
	if (ret)
		log_err("decoding the captured state: %s", err.msg);
	snap_state_free(&snap.state);
	return ret;
}

/* Remove the template's disk directory (links to sealed layers; children keep them open). */
static void remove_disk_dir(const char *path)
{
	struct dirent *de;
	DIR *d = opendir(path);

	if (!d)
		return;
	while ((de = readdir(d)) != NULL)
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			unlinkat(dirfd(d), de->d_name, 0);
	closedir(d);
	rmdir(path);
}

/*
 * The source's sealed disk layers, linked into a directory of the template's own while their
 * fds are still open (before the fd hygiene): children open their chains there, each with a
 * new private top, and it outlives the source.
 */
static int export_disks(struct vm *vm, const struct branch_opts *o, char *dir, size_t len)
{
	int fd, ret;

	dir[0] = '\0';
	if (vm->nblk == 0)
		return 0;
	snprintf(dir, len, "%s/%s.template.disks", o->run_dir, o->prefix);
	remove_disk_dir(dir); /* a stale one of an earlier template with this prefix */
	if (mkdir(dir, 0700) < 0)
		return log_errno(-errno, "creating %s", dir);
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return log_errno(-errno, "opening %s", dir);
	ret = snap_disks_export(vm, fd, dir);
	if (!ret && fsync(fd) < 0)
		ret = log_errno(-errno, "fsync %s", dir);
	close(fd);
	return ret;
}

static void *noop_thread(void *arg)
{
	return arg;
}

/*
 * Create and join one thread before the first child. After fork() the stacks of the source's
 * threads sit in glibc's stack cache, and the first pthread_create that reuses one calls into
 * ld.so through a PLT entry libc resolves lazily: the resolution writes libc's GOT and ld.so's
 * data, two pages each child would copy when it starts its vCPU threads. Done once here, the
 * children inherit it resolved (docs/PERFORMANCE.md, "Private memory per idle child").
 */
static void warm_thread_start(void)
{
	pthread_t th;
	int err = thread_start(&th, noop_thread, NULL);

	if (err)
		log_warn("template: a warm-up thread: %s (children start their threads cold)",
			 strerror(err));
	else
		pthread_join(th, NULL);
}

void cow_template_main(struct vm *vm, struct snap_buf *state, const struct branch_opts *o,
		       int report_fd, pid_t source, struct cgroup_slot *cg)
{
	struct cow_template t = { .source_alive = true, .timeout_ms = o->timeout_ms,
				  .serve = o->serve, .child_tap = o->child_tap, .net_arg = o->net_arg };
	struct branch_child *kids = calloc((size_t)o->count, sizeof(*kids));
	/* ... and a jailed source's network broker: the children ask it for their networks. */
	int keep[4] = { vm->kvm.fd, report_fd, cg->fd, net_broker_fd() }, sig_fd, source_fd;
	char path[700];
	struct fvm_err err = FVM_ERR_INIT;
	sigset_t sigs;
	uint64_t up_ns = monotonic_ns();

	setsid();
	prctl(PR_SET_NAME, "forkvm-template");
	if (export_disks(vm, o, t.disk_dir, sizeof(t.disk_dir)) < 0) {
		report(report_fd, "error template setup failed: linking the source's disk layers into "
		       "%s/%s.template.disks\n", o->run_dir, o->prefix);
		remove_disk_dir(t.disk_dir);
		_exit(1);
	}
	fds_close_except(keep, 4);
	vm_forget_kvm(vm);
	t.mem = vm->mem;
	t.kvm = vm->kvm;
	vm = NULL; /* nothing below may use the source's struct vm (cow.h) */
	snprintf(t.prefix, sizeof(t.prefix), "%s", o->prefix);
	snprintf(t.run_dir, sizeof(t.run_dir), "%s", o->run_dir);
	snprintf(t.socket, sizeof(t.socket), "%s/%s.template.sock", o->run_dir, o->prefix);
	snprintf(path, sizeof(path), "%s.log", t.socket);
	int logfd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (logfd >= 0) {
		dup2(logfd, STDERR_FILENO);
		close(logfd);
	}
	log_set_prefix("template");
	/* Out of the source's cgroup (which goes when the source does), into one of its own,
	 * without the source's limits (a pids.max could stop it forking children); the
	 * children get them. */
	const struct cgroup_opts *src_cg = jail_cgroup_opts();
	if (src_cg) {
		t.cg = *src_cg;
		t.have_cg = true;
	}
	snprintf(path, sizeof(path), "%s-template", o->prefix);
	if (jail_cgroup_adopt(cg, path, 0, &(struct cgroup_opts){ .no_cgroup = t.cg.no_cgroup }) < 0) {
		report(report_fd, "error template setup failed: its cgroup (see %s.log)\n", t.socket);
		_exit(1);
	}
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGCHLD);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	sigprocmask(SIG_BLOCK, &sigs, NULL);
	sig_fd = signalfd(-1, &sigs, SFD_CLOEXEC);
	source_fd = (int)syscall(SYS_pidfd_open, source, 0);
	t.listen_fd = unix_listen(t.socket, 64, SOCK_NONBLOCK, "template socket");
	if (!kids || sig_fd < 0 || t.listen_fd < 0 || decode_state(&t, state) < 0) {
		report(report_fd, "error template setup failed (see %s.log)\n", t.socket);
		remove_disk_dir(t.disk_dir);
		_exit(1);
	}
	warm_thread_start();
	if (cow_spawn(&t, o->count, o->paused, o->no_agent_sync, kids, &err) < 0) {
		report(report_fd, "error %s\n", err.msg);
		unlink(t.socket);
		remove_disk_dir(t.disk_dir);
		_exit(1);
	}
	for (int i = 0; i < o->count; i++)
		report(report_fd, "child %s %d %s\n", kids[i].name, (int)kids[i].pid, kids[i].socket);
	report(report_fd, "stamps %llu %llu %llu %llu\n", (unsigned long long)up_ns,
	       (unsigned long long)t.first_fork_ns, (unsigned long long)t.last_fork_ns,
	       (unsigned long long)t.ready_ns);
	report(report_fd, "ok %s\n", t.socket);
	close(report_fd);
	free(kids);
	template_serve(&t, sig_fd, source_fd);
	unlink(t.socket);
	remove_disk_dir(t.disk_dir);
	jail_cgroup_leave();
	_exit(0);
}
