/* forkvmd's operations on sandboxes and snapshots (daemon_impl.h, docs/DAEMON.md). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent/agent_client.h"
#include "image/image.h"
#include "jail/cgroup.h"
#include "net/net.h"
#include "daemon/daemon_impl.h"
#include "util/base64.h"
#include "util/clock.h"
#include "util/ctl_call.h"
#include "util/errmsg.h"
#include "util/fileio.h"
#include "util/log.h"
#include "util/log_tail.h"
#include "util/unix_sock.h"

extern char **environ;

#define SPAWN_TIMEOUT_MS 120000	 /* forkvm run --detach: until the control socket answers */
#define CTL_TIMEOUT_MS 10000
#define STATUS_NET_MS 2000
#define RECONCILE_BUSY_WAIT_MS 60000 /* at start: adopted VMs finishing a dead daemon's branch */	 /* a GET's status call for the network (a busy VMM: none shown) */
#define BRANCH_TIMEOUT_MS 600000
#define STOP_WAIT_MS 10000	 /* a stopped VMM has this long to exit before SIGKILL */
#define AGENT_CONNECT_MS 30000
#define AGENT_READY_MS 240000	 /* a Linux guest's boot to its agent (generous: nested hosts) */
#define MAX_COUNT 100		 /* children per branch request */
#define SPAWN_OUT_MAX 16384
#define IMAGE_OUT_MAX (256 << 10)	 /* what an image build prints, kept for its error */
#define IMAGE_BUILD_MS (3600 * 1000)

int api_fail(struct api_err *e, int http, const char *code, const char *fmt, ...)
{
	va_list ap;

	e->http = http;
	e->code = code;
	va_start(ap, fmt);
	vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
	va_end(ap);
	return -1;
}

static double now_unix(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int new_id(char *out, size_t cap)
{
	uint8_t r[6];

	if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r))
		return -errno;
	snprintf(out, cap, "sb-%02x%02x%02x%02x%02x%02x", r[0], r[1], r[2], r[3], r[4], r[5]);
	return 0;
}

/*
 * /proc/PID/stat field 22 (starttime, clock ticks after boot); 0 when the pid is gone or a
 * zombie (a VMM killed while nobody has reaped it yet is dead all the same).
 */
static uint64_t proc_start_ticks(int pid)
{
	char path[64], buf[1024];
	unsigned long long ticks = 0;
	int fd, n;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	n = (int)read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	char *p = strrchr(buf, ')'); /* comm may hold spaces and parentheses */
	if (!p)
		return 0;
	/* after ") " come fields 3 (state), 4, ...: skip 19 of them to reach field 22 */
	if (p[1] != ' ' || p[2] == 'Z' || p[2] == 'X')
		return 0;
	p++;
	for (int field = 2; field < 21 && p; field++)
		p = strchr(p + 1, ' ');
	if (!p || sscanf(p, " %llu", &ticks) != 1)
		return 0;
	return ticks;
}

/* Our VMM is still running: the pid exists and started when the one we recorded did. */
bool vmm_alive(const struct sandbox_rec *r)
{
	return r->pid > 0 && r->start_ticks && proc_start_ticks(r->pid) == r->start_ticks;
}

/* What a VMM leaves next to its socket; with_log: its log too (kept for a VM that died). */
static void remove_vm_files(const char *socket, bool with_log)
{
	static const char *const suffix[] = { "", ".vsock", ".console", ".log" };
	char path[STORE_PATH_MAX + 16];

	for (size_t i = 0; i < sizeof(suffix) / sizeof(suffix[0]) - !with_log; i++) {
		snprintf(path, sizeof(path), "%s%s", socket, suffix[i]);
		if (unlink(path) < 0 && errno != ENOENT)
			log_warn("daemon: removing %s: %s", path, strerror(errno));
	}
}

static bool socket_answers(const char *path)
{
	int fd = unix_connect(path, 0);

	if (fd < 0)
		return false;
	close(fd);
	return true;
}

/* The roots VMMs may write snapshots and children under: ours first, then the usual ones. */
void vmm_env(struct daemon *d, char ***envp, char *buf, size_t cap)
{
	size_t n = 0;

	while (environ[n])
		n++;
	char **env = calloc(n + 2, sizeof(*env));
	if (!env) {
		*envp = environ;
		return;
	}
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		if (strncmp(environ[i], "FORKVM_SNAPSHOT_ROOTS=", 22) != 0)
			env[k++] = environ[i];
	snprintf(buf, cap, "FORKVM_SNAPSHOT_ROOTS=%s:%s", d->o.state_dir, path_snapshot_roots());
	env[k++] = buf;
	env[k] = NULL;
	*envp = env;
}

/*
 * Run the forkvm binary with argv (stdout and stderr on one pipe into out, trailing newlines
 * cut) and wait for it, at most timeout_ms. *status: its wait status. What names the step in
 * errors ("the VMM", "snapshot verify").
 */
static int run_forkvm(struct daemon *d, char *const argv[], const char *what, int timeout_ms,
		      char *out, size_t cap, int *status, struct api_err *e)
{
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	sigset_t none, defaults;
	char envbuf[PATH_MAX * 2];
	char **env = NULL;
	size_t len = 0;
	int p[2], ret = -1;
	pid_t child = -1;

	if (pipe2(p, O_CLOEXEC) < 0)
		return api_fail(e, 500, "internal", "starting %s: pipe: %s", what, strerror(errno));
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, p[1], STDOUT_FILENO);
	posix_spawn_file_actions_adddup2(&fa, p[1], STDERR_FILENO);
	posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
	/* The daemon blocks its stop signals and ignores SIGPIPE; a VMM starts from the defaults. */
	spawn_signal_sets(&none, &defaults);
	posix_spawnattr_init(&attr);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
	posix_spawnattr_setsigmask(&attr, &none);
	posix_spawnattr_setsigdefault(&attr, &defaults);
	vmm_env(d, &env, envbuf, sizeof(envbuf));
	int err = posix_spawn(&child, d->exe, &fa, &attr, argv, env);
	posix_spawnattr_destroy(&attr);
	posix_spawn_file_actions_destroy(&fa);
	if (env != environ)
		free(env);
	close(p[1]);
	if (err) {
		close(p[0]);
		return api_fail(e, 500, "internal", "starting %s (%s): %s", what, d->exe,
				strerror(err));
	}
	uint64_t deadline = deadline_after_ms(timeout_ms);
	for (;;) {
		struct pollfd pfd = { .fd = p[0], .events = POLLIN };
		int left = deadline_ms_left(deadline);
		if (left <= 0 || poll(&pfd, 1, left) <= 0) {
			kill(child, SIGKILL);
			api_fail(e, 504, "timeout", "%s did not finish within %d ms", what, timeout_ms);
			goto out;
		}
		ssize_t n = read(p[0], out + len, cap - 1 - len);
		if (n <= 0)
			break;
		len += (size_t)n;
		if (len == cap - 1)
			break;
	}
	out[len] = '\0';
	while (waitpid(child, status, 0) < 0 && errno == EINTR)
		;
	child = -1;
	while (len > 0 && (out[len - 1] == '\n' || out[len - 1] == ' '))
		out[--len] = '\0';
	ret = 0;
out:
	if (child > 0)
		waitpid(child, NULL, 0);
	close(p[0]);
	return ret;
}

void spawn_signal_sets(sigset_t *none, sigset_t *defaults)
{
	sigemptyset(none);
	sigemptyset(defaults);
	sigaddset(defaults, SIGPIPE);
	sigaddset(defaults, SIGTERM);
	sigaddset(defaults, SIGINT);
	sigaddset(defaults, SIGHUP);
}

/* `forkvm run --detach ...` (argv): its "PID SOCKET" line, or its output as the error. */
static int spawn_vmm(struct daemon *d, char *const argv[], int *pid, struct api_err *e)
{
	char out[SPAWN_OUT_MAX];
	int status = 0;

	if (run_forkvm(d, argv, "the VMM", SPAWN_TIMEOUT_MS, out, sizeof(out), &status, e))
		return -1;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		return api_fail(e, 500, "vm_start_failed", "the VM did not start: %s",
				out[0] ? out : "(no output)");
	const char *last = strrchr(out, '\n');
	if (sscanf(last ? last + 1 : out, "%d ", pid) != 1 || *pid <= 0)
		return api_fail(e, 500, "vm_start_failed", "the VMM reported no pid: %s", out);
	return 0;
}

/*
 * A control request to the VM at socket, whose server must be the process pid (-1: any) of
 * uid (-1: any): a jailed VM owns the directory its socket is in and could swap the socket
 * for a link to another VM's (unix_peer_check).
 */
static int ctl_as(const char *socket, int pid, int uid, json_t *req, json_t **reply,
		  int timeout_ms, struct api_err *e, const char *what)
{
	struct fvm_err err = FVM_ERR_INIT;
	json_t *r = NULL;
	int ret = ctl_call_peer(socket, pid, uid, req, &r, timeout_ms, &err);

	json_decref(req);
	if (ret)
		return api_fail(e, 502, "vm_unreachable", "%s: %s", what, err_text(&err));
	if (!json_is_true(json_object_get(r, "ok"))) {
		const char *msg = json_string_value(json_object_get(r, "error"));
		api_fail(e, 409, "vm_refused", "%s: %s", what, msg ? msg : "refused");
		json_decref(r);
		return -1;
	}
	if (reply)
		*reply = r;
	else
		json_decref(r);
	return 0;
}

static int proc_uid(int pid);

/*
 * Who must answer on r's sockets. A jailed VMM (not root) owns the directory its sockets
 * are in and could swap one for a link to another VM's: only its own process answers
 * (pid). An unjailed one runs as root, and so does whatever serves its paths (root's
 * directory; the tests' stand-in agents): uid 0.
 */
static void vm_peer(const struct sandbox_rec *r, int *pid, int *uid)
{
	int vm_uid = proc_uid(r->pid);

	*pid = vm_uid != 0 ? r->pid : -1;
	*uid = vm_uid == 0 ? 0 : -1;
}

/* A control request to r's VMM, which must be the one that answers (vm_peer). */
static int ctl(const struct sandbox_rec *r, json_t *req, json_t **reply, int timeout_ms,
	       struct api_err *e, const char *what)
{
	int pid, uid;

	vm_peer(r, &pid, &uid);
	return ctl_as(r->socket, pid, uid, req, reply, timeout_ms, e, what);
}

static int load(struct daemon *d, const char *id, struct sandbox_rec *r, struct api_err *e)
{
	struct fvm_err err = FVM_ERR_INIT;
	int ret = store_get_sandbox(d->store, id, r, &err);

	if (ret == -ENOENT)
		return api_fail(e, 404, "not_found", "no sandbox %s", id);
	if (ret)
		return api_fail(e, 500, "state", "%s", err_text(&err));
	return 0;
}

static int save(struct daemon *d, const struct sandbox_rec *r, struct api_err *e)
{
	struct fvm_err err = FVM_ERR_INIT;

	if (store_put_sandbox(d->store, r, &err))
		return api_fail(e, 500, "state", "recording sandbox %s: %s", r->id, err_text(&err));
	return 0;
}

/* A live sandbox, or 409 naming its state. */
static int load_live(struct daemon *d, const char *id, struct sandbox_rec *r, struct api_err *e)
{
	if (load(d, id, r, e))
		return -1;
	if (strcmp(r->state, "dead") == 0 || !vmm_alive(r))
		return api_fail(e, 409, "not_running", "sandbox %s is not running (%s)", id,
				r->end_reason[0] ? r->end_reason : r->state);
	return 0;
}

/* A sandbox as the API shows it: the record, and whether its VMM is jailed. */
static json_t *sb_json(const struct daemon *d, const struct sandbox_rec *r)
{
	char dir[JAIL_DIR_MAX];
	uid_t uid;
	json_t *o = sandbox_rec_json(r);

	if (o)
		json_object_set_new(o, "jailed", json_boolean(!sb_jail_dir(d, r, dir, sizeof(dir),
									   &uid)));
	return o;
}

/* Field checks: every body is an object of known fields with the right types. */
static int check_fields(json_t *body, const char *const *known, struct api_err *e)
{
	const char *key;
	json_t *v;

	if (!json_is_object(body))
		return api_fail(e, 400, "bad_request", "the request body must be a JSON object");
	json_object_foreach(body, key, v) {
		bool ok = false;
		for (int i = 0; known[i] && !ok; i++)
			ok = strcmp(known[i], key) == 0;
		if (!ok)
			return api_fail(e, 400, "unknown_field", "unknown field '%s'", key);
	}
	return 0;
}

static int get_uint(json_t *body, const char *key, uint64_t def, uint64_t min, uint64_t max,
		    uint64_t *out, struct api_err *e)
{
	json_t *v = json_object_get(body, key);

	if (!v || json_is_null(v)) {
		*out = def;
		return 0;
	}
	if (!json_is_integer(v) || json_integer_value(v) < (json_int_t)min ||
	    (uint64_t)json_integer_value(v) > max)
		return api_fail(e, 400, "bad_request", "field '%s' must be an integer from %llu to %llu",
				key, (unsigned long long)min, (unsigned long long)max);
	*out = (uint64_t)json_integer_value(v);
	return 0;
}

static int get_str(json_t *body, const char *key, const char **out, struct api_err *e)
{
	json_t *v = json_object_get(body, key);

	*out = NULL;
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_string(v) || !json_string_length(v))
		return api_fail(e, 400, "bad_request", "field '%s' must be a non-empty string", key);
	*out = json_string_value(v);
	return 0;
}

/* Field 'metadata' (an object, default {}) as compact sorted JSON text into out[cap]. */
static int get_metadata(json_t *body, char *out, size_t cap, struct api_err *e)
{
	json_t *meta = json_object_get(body, "metadata");

	if (meta && !json_is_null(meta) && !json_is_object(meta))
		return api_fail(e, 400, "bad_request", "field 'metadata' must be an object");
	char *text = meta && !json_is_null(meta) ? json_dumps(meta, JSON_COMPACT | JSON_SORT_KEYS)
						 : strdup("{}");
	size_t len = text ? strlen(text) : cap;
	if (len < cap)
		memcpy(out, text, len + 1);
	free(text);
	if (len >= cap)
		return api_fail(e, 400, "bad_request", "field 'metadata' is larger than %zu bytes",
				cap - 1);
	return 0;
}

/*
 * A Linux sandbox is ready when its agent answers a ping: the VMM's socket comes up long
 * before the guest's userspace (boot), and a restored clone's agent after its fix-up.
 */
static int wait_agent(const struct sandbox_rec *r, int timeout_ms, struct api_err *e)
{
	char path[STORE_PATH_MAX + 16], tail[2048] = "";
	struct fvm_err why = FVM_ERR_INIT;
	uint64_t deadline = deadline_after_ms(timeout_ms);

	snprintf(path, sizeof(path), "%s.vsock", r->socket);
	while (deadline_ms_left(deadline) > 0) {
		json_t *req = json_pack("{s:s}", "op", "ping");
		int fd = agent_connect(path, AGENT_VSOCK_PORT, deadline, -1, &why);
		/* the VM's own vsock socket, not one swapped in its directory (vm_peer) */
		int ppid, puid;
		vm_peer(r, &ppid, &puid);
		int ret = fd < 0 ? fd : unix_peer_check(fd, ppid, puid, path, &why);
		if (!ret)
			ret = agent_request(fd, req, NULL, deadline, -1, &why);
		json_decref(req);
		if (fd >= 0)
			close(fd);
		if (!ret)
			return 0;
		if (!vmm_alive(r))
			break;
		usleep(200 * 1000);
	}
	snprintf(path, sizeof(path), "%s.log", r->socket);
	log_tail_append(path, LOG_TAIL_LINES, tail, sizeof(tail));
	return api_fail(e, vmm_alive(r) ? 504 : 500, "agent_not_ready",
			"sandbox %s: %s within %d ms (%s); its log %s ends:%s", r->id,
			vmm_alive(r) ? "the guest agent did not answer" : "the VM ended before its agent answered",
			timeout_ms, why.msg[0] ? why.msg : "no answer", path, tail[0] ? tail : " (empty)");
}

/* The argv of `forkvm run` holds the fixed options plus every network entry. */
#define SB_ARGV_MAX (40 + 2 * (1 + 2 * NET_MAX_CIDRS + NET_MAX_PUBLISH))

/*
 * The body's "network" ({mode, allow, deny, publish}, docs/DAEMON.md) as `forkvm run` options
 * appended to argv (strings borrowed from the body), each value checked by the VMM's own
 * parsers first so a bad one is a 400 that names it. NULL: no network.
 */
static int network_args(json_t *net, const char **argv, int *n, struct api_err *e)
{
	static const char *const known[] = { "mode", "allow", "deny", "publish", NULL };
	static const char *const lists[] = { "allow", "deny", "publish" };
	struct net_opts o;
	const char *mode;
	struct fvm_err err = FVM_ERR_INIT;
	size_t i;
	json_t *v;

	if (!net || json_is_null(net))
		return 0;
	if (!json_is_object(net))
		return api_fail(e, 400, "bad_request", "field 'network' must be an object {mode, "
				"allow, deny, publish}");
	if (check_fields(net, known, e) || get_str(net, "mode", &mode, e))
		return -1;
	net_opts_init(&o);
	if (mode && net_opts_mode(&o, mode, &err))
		return api_fail(e, 400, "bad_request", "network.mode: %s", err_text(&err));
	if (mode) {
		argv[(*n)++] = "--net";
		argv[(*n)++] = mode;
	}
	for (size_t l = 0; l < sizeof(lists) / sizeof(lists[0]); l++) {
		json_t *list = json_object_get(net, lists[l]);
		bool publish = l == 2;

		if (list && !json_is_array(list))
			return api_fail(e, 400, "bad_request", "network.%s must be an array of strings",
					lists[l]);
		json_array_foreach(list, i, v) {
			const char *text = json_string_value(v);
			int ret;

			if (!text)
				return api_fail(e, 400, "bad_request", "network.%s[%zu] must be a string",
						lists[l], i);
			ret = publish ? net_opts_publish(&o, text, &err)
				      : net_opts_cidr(&o, l == 0, text, &err);
			if (ret)
				return api_fail(e, 400, "bad_request", "network.%s[%zu]: %s", lists[l], i,
						err_text(&err));
			argv[(*n)++] = publish ? "--publish" : l == 0 ? "--allow" : "--deny";
			argv[(*n)++] = text;
		}
	}
	if (net_opts_finish(&o, &err))
		return api_fail(e, 400, "bad_request", "network: %s", err_text(&err));
	return 0;
}

/* A sandbox's answer with its VMM's network (addresses, published ports) when it has one. */
static json_t *with_network(json_t *out, const struct sandbox_rec *r)
{
	struct api_err ignored = { 0 };
	json_t *st = NULL, *net;

	if (out && strcmp(r->state, "dead") != 0 &&
	    !ctl(r, json_pack("{s:s}", "cmd", "status"), &st, STATUS_NET_MS, &ignored,
		 "status")) {
		net = json_object_get(st, "net");
		if (net && strcmp(json_string_value(json_object_get(net, "mode")) ?: "none", "none"))
			json_object_set(out, "network", net);
	}
	json_decref(st);
	return out;
}

/* The least memory a VMM needs besides guest RAM (its default is 256 MiB more). */
#define LIMIT_VMM_MIB 64

/* A positive number field of "limits", or 0 when absent. */
static int limit_num(json_t *lim, const char *key, double min, double max, bool integer,
		     double *out, struct api_err *e)
{
	json_t *v = json_object_get(lim, key);

	*out = 0;
	if (!v || json_is_null(v))
		return 0;
	if ((integer ? !json_is_integer(v) : !json_is_number(v)) || json_number_value(v) < min ||
	    json_number_value(v) > max)
		return api_fail(e, 400, "bad_request", "limits.%s must be %s from %g to %g", key,
				integer ? "an integer" : "a number", min, max);
	*out = json_number_value(v);
	return 0;
}

/*
 * The body's "limits" {memory_mib, cpus, cpu_weight, pids_max} as the VMM's cgroup options
 * (SECURITY.md, "cgroup v2 per VM"), appended to argv. mem_mib: the guest's RAM when known
 * (a boot), which memory_mib must exceed; 0 for a restore (the VMM checks nothing then: a
 * too-small limit ends the VM when the guest touches its memory).
 */
static int limits_args(json_t *lim, uint64_t mem_mib, const char **argv, int *n,
		       struct cgroup_argv *b, struct api_err *e)
{
	static const char *const known[] = { "memory_mib", "cpus", "cpu_weight", "pids_max",
					     NULL };
	double mem, cpus, weight, pids;
	struct cgroup_opts check = { 0 };
	struct fvm_err err = FVM_ERR_INIT;

	if (!lim || json_is_null(lim))
		return 0;
	if (!json_is_object(lim))
		return api_fail(e, 400, "bad_request", "field 'limits' must be an object {memory_mib, "
				"cpus, cpu_weight, pids_max}");
	if (check_fields(lim, known, e) ||
	    limit_num(lim, "memory_mib", 16, 1 << 20, true, &mem, e) ||
	    limit_num(lim, "cpus", 0.01, 1024, false, &cpus, e) ||
	    limit_num(lim, "cpu_weight", 1, 10000, true, &weight, e) ||
	    limit_num(lim, "pids_max", 16, 4194304, true, &pids, e))
		return -1;
	if (mem && mem_mib && mem < (double)(mem_mib + LIMIT_VMM_MIB))
		return api_fail(e, 400, "bad_request", "limits.memory_mib (%.0f) must be at least "
				"the guest's RAM (mem_mib %llu) + %d MiB: the VMM needs memory of its "
				"own besides it", mem, (unsigned long long)mem_mib, LIMIT_VMM_MIB);
	if (mem) {
		snprintf(b->mem, sizeof(b->mem), "%.0fM", mem);
		argv[(*n)++] = "--mem-limit";
		argv[(*n)++] = b->mem;
	}
	if (cpus) { /* CPUs as a quota per 100 ms period */
		snprintf(b->cpu, sizeof(b->cpu), "%.0f/100000", cpus * 100000);
		argv[(*n)++] = "--cpu-max";
		argv[(*n)++] = b->cpu;
	}
	if (weight) {
		snprintf(b->weight, sizeof(b->weight), "%.0f", weight);
		argv[(*n)++] = "--cpu-weight";
		argv[(*n)++] = b->weight;
	}
	if (pids) {
		snprintf(b->pids, sizeof(b->pids), "%.0f", pids);
		argv[(*n)++] = "--pids-max";
		argv[(*n)++] = b->pids;
	}
	/* what the VMM will parse, parsed the same way first: a 400, not a VM that fails */
	static const int ids[] = { CGROUP_OPT_MEM_LIMIT, CGROUP_OPT_CPU_MAX, CGROUP_OPT_CPU_WEIGHT,
				   CGROUP_OPT_PIDS_MAX };
	const char *vals[] = { mem ? b->mem : NULL, cpus ? b->cpu : NULL,
			       weight ? b->weight : NULL, pids ? b->pids : NULL };
	for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++)
		if (vals[i] && cgroup_opt(&check, ids[i], vals[i], &err))
			return api_fail(e, 400, "bad_request", "limits: %s", err_text(&err));
	return 0;
}

/* A sandbox's answer with the limits its cgroup has, as the kernel applies them. */
static json_t *with_limits(json_t *out, const struct sandbox_rec *r)
{
	struct cgroup_limits l;

	if (!out || strcmp(r->state, "dead") == 0 || !vmm_alive(r) ||
	    cgroup_read_limits(r->pid, &l) || !l.found)
		return out;
	json_t *lim = json_pack("{s:o, s:o, s:o, s:o}", "memory_mib",
				l.memory_max == UINT64_MAX ? json_null()
							   : json_integer((json_int_t)(l.memory_max >> 20)),
				"cpus", l.cpu_quota == UINT64_MAX || !l.cpu_period ? json_null()
					: json_real((double)l.cpu_quota / (double)l.cpu_period),
				"cpu_weight", l.cpu_weight ? json_integer((json_int_t)l.cpu_weight)
							   : json_null(), "pids_max",
				l.pids_max == UINT64_MAX ? json_null()
							 : json_integer((json_int_t)l.pids_max));
	if (lim)
		json_object_set_new(out, "limits", lim);
	return out;
}

json_t *sb_create(struct daemon *d, json_t *body, struct api_err *e)
{
	static const char *const known[] = { "guest", "mem_mib", "vcpus", "snapshot", "metadata",
					     "ttl_s", "paused", "ready_timeout_ms", "backing", "network",
					     "limits", NULL };
	struct sandbox_rec r = { 0 };
	struct snapshot_rec snap;
	const char *guest, *snapshot, *backing;
	uint64_t mem, vcpus, ttl, ready_ms;
	char memarg[32], vcpuarg[16], pssock[STORE_PATH_MAX];
	struct fvm_err err = FVM_ERR_INIT;
	bool lazy;

	if (check_fields(body, known, e) || get_str(body, "guest", &guest, e) ||
	    get_str(body, "snapshot", &snapshot, e) || get_str(body, "backing", &backing, e) ||
	    get_uint(body, "mem_mib", 256, 16, 1 << 20, &mem, e) ||
	    get_uint(body, "vcpus", 1, 1, 16, &vcpus, e) ||
	    get_uint(body, "ttl_s", 0, 0, 30 * 86400, &ttl, e) ||
	    get_uint(body, "ready_timeout_ms", AGENT_READY_MS, 1000, 3600000, &ready_ms, e))
		return NULL;
	json_t *paused = json_object_get(body, "paused");
	if (paused && !json_is_boolean(paused)) {
		api_fail(e, 400, "bad_request", "field 'paused' must be true or false");
		return NULL;
	}
	if (get_metadata(body, r.metadata, sizeof(r.metadata), e))
		return NULL;
	if (backing && strcmp(backing, "anon") && strcmp(backing, "memfd") &&
	    strcmp(backing, "hugetlb") && strcmp(backing, "uffd")) {
		api_fail(e, 400, "bad_request", "field 'backing' must be anon, memfd (needed by live "
			 "branches), hugetlb or uffd (a lazy restore of 'snapshot')");
		return NULL;
	}
	lazy = backing && strcmp(backing, "uffd") == 0;
	if (lazy && !snapshot) {
		api_fail(e, 400, "bad_request", "backing uffd restores a snapshot lazily, through the "
			 "daemon's page server: it needs field 'snapshot'");
		return NULL;
	}
	if (guest && strcmp(guest, "probe") != 0 && strcmp(guest, "linux") != 0) {
		api_fail(e, 400, "bad_request", "field 'guest' must be \"probe\" or \"linux\"");
		return NULL;
	}
	if (snapshot) {
		int ret = store_get_snapshot(d->store, snapshot, &snap, &err);
		if (ret) {
			api_fail(e, ret == -ENOENT ? 404 : 500, ret == -ENOENT ? "not_found" : "state",
				 "%s", err_text(&err));
			return NULL;
		}
		if (guest) {
			api_fail(e, 400, "bad_request", "give either 'guest' or 'snapshot', not both");
			return NULL;
		}
		/* A branch image of a jailed source lives in its jail, written by that VMM: only
		 * the source's own children restore from it (inside the jail). */
		if (!path_under(snap.dir, d->snap_dir)) {
			api_fail(e, 409, "image_in_jail", "snapshot %s is a branch image that sandbox "
				 "%s keeps in its jail (%s); start new sandboxes from a snapshot "
				 "(POST /v1/sandboxes/%s/snapshot)", snapshot, snap.sandbox, snap.dir,
				 snap.sandbox);
			return NULL;
		}
		snprintf(r.snapshot, sizeof(r.snapshot), "%s", snapshot);
		snprintf(r.guest, sizeof(r.guest), "%s", snap.guest);
	} else {
		snprintf(r.guest, sizeof(r.guest), "%s", guest ? guest : "probe");
	}
	if (new_id(r.id, sizeof(r.id))) {
		api_fail(e, 500, "internal", "a sandbox id: getrandom: %s", strerror(errno));
		return NULL;
	}
	snprintf(r.socket, sizeof(r.socket), "%s/%s.sock", d->run_dir, r.id);
	snprintf(memarg, sizeof(memarg), "%lluM", (unsigned long long)mem);
	snprintf(vcpuarg, sizeof(vcpuarg), "%llu", (unsigned long long)vcpus);
	const char *argv[SB_ARGV_MAX];
	int n = 0;
	argv[n++] = d->exe;
	argv[n++] = "run";
	argv[n++] = "--detach";
	argv[n++] = "--socket";
	argv[n++] = r.socket;
	argv[n++] = "--name"; /* its jail is RUN_DIR/ID.jail (sb_jail_dir) */
	argv[n++] = r.id;
	if (snapshot) {
		argv[n++] = "--restore";
		argv[n++] = snap.dir;
	} else {
		argv[n++] = "--mem";
		argv[n++] = memarg;
		argv[n++] = "--vcpus";
		argv[n++] = vcpuarg;
		if (strcmp(r.guest, "linux") == 0)
			argv[n++] = "--linux";
	}
	if (backing) {
		argv[n++] = "--backing";
		argv[n++] = backing;
	}
	/* Guest RAM filled on demand by the daemon's one page server (started if none answers). */
	if (lazy) {
		if (pageserver_ensure(d, pssock, sizeof(pssock), e))
			return NULL;
		argv[n++] = "--pageserver";
		argv[n++] = pssock;
	}
	if (json_is_true(paused)) {
		argv[n++] = "--paused";
		if (snapshot && strcmp(r.guest, "linux") == 0)
			argv[n++] = "--no-agent-sync";
	}
	struct cgroup_argv limbuf; /* the option strings */
	if (limits_args(json_object_get(body, "limits"), snapshot ? 0 : mem, argv, &n, &limbuf, e))
		return NULL;
	if (network_args(json_object_get(body, "network"), argv, &n, e))
		return NULL;
	/* Jailed unless the daemon runs --no-jail; a network included: the VMM's broker makes it
	 * (docs/NET.md, "Networks of jailed VMMs"). */
	argv[n++] = d->o.no_jail ? "--no-jail" : "--jail";
	/* The family's cgroup bound from the first instruction on: one VM's limits, raised
	 * before each branch (jailed.c, family_sync) */
	if (!d->o.no_jail) {
		argv[n++] = "--family-budget";
		argv[n++] = "1";
	}
	argv[n] = NULL;
	if (spawn_vmm(d, (char *const *)argv, &r.pid, e)) {
		if (lazy && (!strcmp(e->code, "vm_start_failed") || !strcmp(e->code, "timeout")))
			pageserver_explain(d, e);
		return NULL;
	}
	r.start_ticks = proc_start_ticks(r.pid);
	snprintf(r.state, sizeof(r.state), "%s", json_is_true(paused) ? "paused" : "running");
	r.mem_mib = mem;
	r.vcpus = (int)vcpus;
	r.created_at = now_unix();
	r.expires_at = ttl ? r.created_at + (double)ttl : 0;
	if (snapshot) { /* the snapshot's own size and vCPUs, as the VMM reports them */
		json_t *st = NULL;
		if (!ctl(&r, json_pack("{s:s}", "cmd", "status"), &st, CTL_TIMEOUT_MS, e,
			 "status of the restored VM")) {
			r.mem_mib = (uint64_t)json_integer_value(json_object_get(st, "mem_bytes")) >> 20;
			r.vcpus = (int)json_array_size(json_object_get(st, "vcpus"));
			json_decref(st);
		}
	}
	/* Recorded first: a daemon killed while the guest boots still knows this VM. */
	if (save(d, &r, e)) {
		kill(r.pid, SIGKILL);
		return NULL;
	}
	family_record(d, &r); /* jailed: the unit of its family's cgroup budget */
	if (strcmp(r.guest, "linux") == 0 && !json_is_true(paused) &&
	    wait_agent(&r, (int)ready_ms, e)) {
		struct api_err ignored;
		json_decref(sb_delete(d, r.id, "its agent never answered", &ignored));
		return NULL;
	}
	return with_limits(with_network(sb_json(d, &r), &r), &r);
}

json_t *sb_get(struct daemon *d, const char *id, struct api_err *e)
{
	struct sandbox_rec r;

	if (load(d, id, &r, e))
		return NULL;
	/* A VMM that ended on its own (guest power-off, crash) shows as dead at once. */
	if (strcmp(r.state, "dead") != 0 && !vmm_alive(&r)) {
		snprintf(r.state, sizeof(r.state), "dead");
		snprintf(r.end_reason, sizeof(r.end_reason), "the VMM exited");
		store_set_state(d->store, r.id, r.state, r.end_reason, NULL);
	}
	return with_limits(with_network(sb_json(d, &r), &r), &r);
}

static bool meta_matches(const struct sandbox_rec *r, json_t *want)
{
	json_t *have, *v, *want_v;
	const char *key;
	bool ok = true;

	if (!want || !json_object_size(want))
		return true;
	have = json_loads(r->metadata[0] ? r->metadata : "{}", 0, NULL);
	json_object_foreach(want, key, want_v) {
		v = json_object_get(have, key);
		char *text = v && !json_is_string(v) ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY)
						     : NULL;
		const char *got = json_is_string(v) ? json_string_value(v) : text;
		ok = got && strcmp(got, json_string_value(want_v)) == 0;
		free(text);
		if (!ok)
			break;
	}
	json_decref(have);
	return ok;
}

json_t *sb_list(struct daemon *d, const char *state, const char *parent, json_t *meta,
		struct api_err *e)
{
	struct sandbox_rec *recs = NULL;
	struct fvm_err err = FVM_ERR_INIT;
	size_t n = 0;

	if (store_list_sandboxes(d->store, state, parent, &recs, &n, &err)) {
		api_fail(e, 500, "state", "%s", err_text(&err));
		return NULL;
	}
	json_t *arr = json_array();
	for (size_t i = 0; arr && i < n; i++)
		if (meta_matches(&recs[i], meta))
			json_array_append_new(arr, sb_json(d, &recs[i]));
	free(recs);
	return arr;
}

json_t *sb_pause(struct daemon *d, const char *id, bool pause, struct api_err *e)
{
	struct sandbox_rec r;
	struct fvm_err err = FVM_ERR_INIT;

	if (load_live(d, id, &r, e) ||
	    ctl(&r, json_pack("{s:s}", "cmd", pause ? "pause" : "resume"), NULL,
		CTL_TIMEOUT_MS, e, pause ? "pausing" : "resuming"))
		return NULL;
	snprintf(r.state, sizeof(r.state), "%s", pause ? "paused" : "running");
	if (store_set_state(d->store, r.id, r.state, NULL, &err)) {
		api_fail(e, 500, "state", "%s", err_text(&err));
		return NULL;
	}
	return sb_json(d, &r);
}

/* Wait for pid to exit (it is not our child: poll a pidfd), up to ms. */
static bool wait_gone(const struct sandbox_rec *r, int ms)
{
	int fd = (int)syscall(SYS_pidfd_open, r->pid, 0);

	if (fd < 0)
		return !vmm_alive(r);
	if (!vmm_alive(r)) { /* the pid was reused before we opened it */
		close(fd);
		return true;
	}
	struct pollfd p = { .fd = fd, .events = POLLIN };
	int n = poll(&p, 1, ms);
	close(fd);
	return n > 0;
}

static void drop_branch_images(struct daemon *d, const struct sandbox_rec *r);

json_t *sb_delete(struct daemon *d, const char *id, const char *reason, struct api_err *e)
{
	struct sandbox_rec r;
	struct fvm_err err = FVM_ERR_INIT;

	char jail[JAIL_DIR_MAX];
	uid_t uid;

	if (load(d, id, &r, e))
		return NULL;
	bool jailed = !sb_jail_dir(d, &r, jail, sizeof(jail), &uid);
	if (vmm_alive(&r)) {
		struct api_err ignored;
		/* Stop asks the VMM to end cleanly (its overlay and sockets go with it). */
		ctl(&r, json_pack("{s:s}", "cmd", "stop"), NULL, CTL_TIMEOUT_MS, &ignored,
		    "stopping");
		if (!wait_gone(&r, STOP_WAIT_MS) && vmm_alive(&r)) {
			log_warn("daemon: sandbox %s (pid %d) did not stop within %d ms: SIGKILL", r.id,
				 r.pid, STOP_WAIT_MS);
			kill(r.pid, SIGKILL);
			wait_gone(&r, STOP_WAIT_MS);
		}
	}
	remove_vm_files(r.socket, true);
	if (store_delete_sandbox(d->store, r.id, &err)) {
		api_fail(e, 500, "state", "%s", err_text(&err));
		return NULL;
	}
	log_info("daemon: sandbox %s ended (%s)", r.id, reason);
	drop_branch_images(d, &r);
	/* its parent's images, if this was the last child of a source already gone */
	if (r.parent[0]) {
		struct sandbox_rec gone = { 0 };
		snprintf(gone.id, sizeof(gone.id), "%s", r.parent);
		drop_branch_images(d, &gone);
	}
	if (jailed) {
		family_sync(d, jail);
		jail_dir_release(d, jail);
	}
	return json_pack("{s:s, s:b}", "id", r.id, "deleted", 1);
}

/*
 * Where full, diff and live branches leave their frozen image, recorded as a snapshot that
 * the children name: "br-PREFIX" for one branch; a diff branch grows one chain per source,
 * "bd-SOURCE", so later diff branches of it add a layer instead of a new base (BRANCH.md).
 * An image goes with its last child; a diff chain also waits for its source (drop_branch_images).
 */
static void branch_image(struct daemon *d, const struct sandbox_rec *src, const char *strategy,
			 const char *prefix, struct snapshot_rec *img)
{
	bool diff = strcmp(strategy, "diff") == 0;
	const char *tail = diff ? src->id + 3 : prefix + 3; /* after "sb-" */
	char jail[JAIL_DIR_MAX];
	uid_t uid;

	snprintf(img->id, sizeof(img->id), "%s%s", diff ? "bd-" : "br-", tail);
	/* A jailed source writes it in its jail, where its children (exec'd there) read it. */
	snprintf(img->dir, sizeof(img->dir), "%s/%s",
		 sb_jail_dir(d, src, jail, sizeof(jail), &uid) ? d->snap_dir : jail, img->id);
	snprintf(img->sandbox, sizeof(img->sandbox), "%s", src->id);
	snprintf(img->guest, sizeof(img->guest), "%s", src->guest);
}

/* After sandbox r is gone: the branch images nobody restores from any more (a diff chain
 * stays while its source lives: the source's next diff branch adds a layer to it). */
static void drop_branch_images(struct daemon *d, const struct sandbox_rec *r)
{
	char ids[2][STORE_ID_MAX + 8];
	struct fvm_err err = FVM_ERR_INIT;
	struct snapshot_rec img;
	struct sandbox_rec src;
	int users = 0;

	snprintf(ids[0], sizeof(ids[0]), "%s", r->snapshot);
	snprintf(ids[1], sizeof(ids[1]), "bd-%s", r->id + (strncmp(r->id, "sb-", 3) ? 0 : 3));
	for (int i = 0; i < 2; i++) {
		if (strncmp(ids[i], "br-", 3) != 0 && strncmp(ids[i], "bd-", 3) != 0)
			continue;
		if (store_get_snapshot(d->store, ids[i], &img, &err) ||
		    store_snapshot_users(d->store, ids[i], &users, &err) || users)
			continue;
		if (ids[i][1] == 'd' && !store_get_sandbox(d->store, img.sandbox, &src, &err) &&
		    strcmp(src.state, "dead") != 0)
			continue; /* its source may branch again onto this chain */
		int ret = remove_tree_at(AT_FDCWD, img.dir);
		if (ret)
			log_warn("daemon: removing the branch image %s: %s", img.dir, strerror(-ret));
		else
			store_delete_snapshot(d->store, img.id, NULL);
	}
}

/* The real uid of pid, from /proc/PID/status; -1 when it is gone. */
static int proc_uid(int pid)
{
	char path[64], line[256];
	int uid = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	if (pid <= 0 || !(f = fopen(path, "re")))
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "Uid: %d", &uid) == 1)
			break;
	fclose(f);
	return uid;
}

/*
 * A child as a branch reply names it, checked before it is recorded: the VMM that sent the
 * reply may be hostile (that is why it is jailed), and a record is what the daemon later
 * signals, stops and removes files for. Its name must be PREFIX-N, its socket DIR/NAME.sock
 * in the directory the children are made in (the source's jail, or RUN_DIR), and its pid a
 * live process of the source's uid. *k: src with the child's id, socket and pid.
 */
static int branch_child_check(struct daemon *d, const struct sandbox_rec *src,
			      const char *prefix, const char *dir, int uid, json_t *c,
			      struct sandbox_rec *k, struct api_err *e)
{
	const char *name = json_string_value(json_object_get(c, "name"));
	const char *sock = json_string_value(json_object_get(c, "socket"));
	json_t *pidv = json_object_get(c, "pid");
	size_t pl = strlen(prefix);
	char want[STORE_PATH_MAX];
	struct sandbox_rec other;

	*k = *src;
	if (!name || strncmp(name, prefix, pl) != 0 || name[pl] != '-' || !name[pl + 1] ||
	    strspn(name + pl + 1, "0123456789") != strlen(name + pl + 1) ||
	    strlen(name) >= sizeof(k->id))
		return api_fail(e, 502, "vm_misbehaved", "branch of %s: a child named %s, not "
				"%s-N: nothing recorded", src->id, name ? name : "(none)", prefix);
	snprintf(want, sizeof(want), "%s/%s.sock", dir, name);
	if (!sock || strcmp(sock, want) != 0)
		return api_fail(e, 502, "vm_misbehaved", "branch of %s: child %s's socket is %s, "
				"not %s: nothing recorded", src->id, name, sock ? sock : "(none)",
				want);
	if (!json_is_integer(pidv) || json_integer_value(pidv) <= 0 ||
	    json_integer_value(pidv) > INT32_MAX ||
	    proc_uid((int)json_integer_value(pidv)) != uid || uid < 0)
		return api_fail(e, 502, "vm_misbehaved", "branch of %s: child %s's pid %lld is no "
				"live process of the source's uid %d: nothing recorded", src->id, name,
				(long long)json_integer_value(pidv), uid);
	if (!store_get_sandbox(d->store, name, &other, NULL))
		return api_fail(e, 502, "vm_misbehaved", "branch of %s: child %s is recorded "
				"already: nothing recorded", src->id, name);
	snprintf(k->id, sizeof(k->id), "%s", name);
	snprintf(k->socket, sizeof(k->socket), "%s", sock);
	k->pid = (int)json_integer_value(pidv);
	k->start_ticks = proc_start_ticks(k->pid);
	return 0;
}

json_t *sb_branch(struct daemon *d, const char *id, json_t *body, struct api_err *e)
{
	static const char *const known[] = { "count", "strategy", "metadata", "ttl_s", NULL };
	struct sandbox_rec src;
	const char *strategy;
	uint64_t count, ttl;
	char prefix[STORE_ID_MAX], metatext[sizeof(((struct sandbox_rec *)0)->metadata)];
	json_t *reply = NULL;

	if (check_fields(body, known, e) || get_str(body, "strategy", &strategy, e) ||
	    get_uint(body, "count", 1, 1, MAX_COUNT, &count, e) ||
	    get_uint(body, "ttl_s", 0, 0, 30 * 86400, &ttl, e) || load_live(d, id, &src, e))
		return NULL;
	if (get_metadata(body, metatext, sizeof(metatext), e))
		return NULL;
	strategy = strategy ? strategy : "cow";
	if (strcmp(strategy, "cow") && strcmp(strategy, "full") && strcmp(strategy, "diff") &&
	    strcmp(strategy, "live")) {
		api_fail(e, 400, "bad_request", "field 'strategy' must be cow, full, diff or live");
		return NULL;
	}
	if (new_id(prefix, sizeof(prefix))) {
		api_fail(e, 500, "internal", "an id for the children: %s", strerror(errno));
		return NULL;
	}
	json_t *req = json_pack("{s:s, s:s, s:I, s:s, s:s, s:I}", "cmd", "branch", "strategy",
				strategy, "count", (json_int_t)count, "prefix", prefix, "run_dir",
				d->run_dir, "timeout_ms", (json_int_t)BRANCH_TIMEOUT_MS / 2);
	/* full, diff and live children restore from an image: a snapshot the daemon keeps */
	struct snapshot_rec img = { 0 };
	if (strcmp(strategy, "cow") != 0) {
		branch_image(d, &src, strategy, prefix, &img);
		json_object_set_new(req, "dir", json_string(img.dir));
	}
	/* A jailed family's budget (its cgroup's limits) is raised before its children start */
	char jail[JAIL_DIR_MAX];
	uid_t juid;
	bool jailed = !sb_jail_dir(d, &src, jail, sizeof(jail), &juid);
	if (jailed)
		family_branch_begin(d, jail, (int)count);
	if (ctl(&src, req, &reply, BRANCH_TIMEOUT_MS, e, "branching")) {
		if (jailed)
			family_branch_end(d, jail, (int)count);
		return NULL;
	}
	/*
	 * A cow branch's template holds the source's RAM as of the branch: every page the source
	 * writes afterwards is a copy the template alone keeps, and the source's huge pages stay
	 * split while it lives (PERFORMANCE.md). The daemon never spawns from it again, so it is
	 * stopped now; the children keep running (BRANCH.md).
	 */
	const char *kids_dir = jailed ? jail : d->run_dir;
	int src_uid = proc_uid(src.pid);
	const char *tmpl = json_string_value(json_object_get(reply, "template"));
	if (tmpl) {
		struct api_err ignored;
		char want[STORE_PATH_MAX];
		snprintf(want, sizeof(want), "%s/%s.template.sock", kids_dir, prefix);
		if (strcmp(tmpl, want) != 0)
			log_warn("daemon: branch of %s named its template %s, not %s: left alone",
				 src.id, tmpl, want);
		else if (ctl_as(want, -1, src_uid, json_pack("{s:s}", "cmd", "stop"), NULL,
				CTL_TIMEOUT_MS, &ignored, "stopping the template"))
			log_warn("daemon: branch of %s: %s (it ends with its source and last child)",
				 src.id, ignored.msg);
	}
	if (img.id[0]) {
		struct fvm_err err = FVM_ERR_INIT;
		img.created_at = now_unix();
		if (store_put_snapshot(d->store, &img, &err))
			log_warn("daemon: recording the branch image %s: %s", img.dir,
				 err_text(&err));
	}
	json_t *kids = json_object_get(reply, "children"), *out = json_array(), *c;
	size_t i;
	double now = now_unix();
	/* Every child checked before any is recorded: the reply comes from a VM. */
	struct sandbox_rec *checked = calloc(json_array_size(kids) + 1, sizeof(*checked));
	int bad = checked ? 0 : api_fail(e, 500, "internal", "out of memory");
	if (!bad && json_array_size(kids) > count) /* more than asked: no budget, no prefix */
		bad = api_fail(e, 502, "vm_misbehaved", "branch of %s: %zu children reported, %llu "
			       "asked for: nothing recorded", src.id, json_array_size(kids),
			       (unsigned long long)count);
	json_array_foreach(kids, i, c) {
		if (bad || (bad = branch_child_check(d, &src, prefix, kids_dir, src_uid, c,
						     &checked[i], e)))
			break;
		for (size_t j = 0; j < i && !bad; j++)
			if (strcmp(checked[j].id, checked[i].id) == 0)
				bad = api_fail(e, 502, "vm_misbehaved", "branch of %s: child %s named "
					       "twice: nothing recorded", src.id, checked[i].id);
		if (bad) {
			i++; /* it was checked: it is ours to end */
			break;
		}
	}
	if (bad) {
		for (size_t k = 0; checked && k < i; k++) /* ours (checked): they go */
			kill(checked[k].pid, SIGKILL);
		free(checked);
		json_decref(out);
		json_decref(reply);
		if (jailed)
			family_branch_end(d, jail, (int)count);
		return NULL;
	}
	json_array_foreach(kids, i, c) {
		struct sandbox_rec k = checked[i];
		snprintf(k.state, sizeof(k.state), "running");
		snprintf(k.parent, sizeof(k.parent), "%s", src.id);
		snprintf(k.snapshot, sizeof(k.snapshot), "%s", img.id);
		memcpy(k.metadata, metatext, sizeof(k.metadata));
		k.end_reason[0] = '\0';
		k.created_at = now;
		k.expires_at = ttl ? now + (double)ttl : 0;
		if (save(d, &k, e)) {
			kill(k.pid, SIGKILL);
			continue;
		}
		json_array_append_new(out, sb_json(d, &k));
	}
	free(checked);
	if (jailed)
		family_branch_end(d, jail, (int)count);
	json_t *res = json_pack("{s:o, s:O?, s:O?}", "children", out, "pause_us",
				json_object_get(reply, "pause_us"), "strategy",
				json_object_get(reply, "strategy"));
	json_decref(reply);
	return res;
}

int sb_agent_fd(struct daemon *d, const char *id, struct sandbox_rec *r, struct api_err *e)
{
	char path[STORE_PATH_MAX + 8];
	struct fvm_err err = FVM_ERR_INIT;

	if (load_live(d, id, r, e))
		return -1;
	if (strcmp(r->guest, "linux") != 0)
		return api_fail(e, 409, "no_agent", "sandbox %s runs the %s guest, which has no agent",
				id, r->guest);
	snprintf(path, sizeof(path), "%s.vsock", r->socket);
	int fd = agent_connect(path, AGENT_VSOCK_PORT, deadline_after_ms(AGENT_CONNECT_MS), -1,
			       &err);
	int ppid, puid;
	vm_peer(r, &ppid, &puid);
	if (fd >= 0 && unix_peer_check(fd, ppid, puid, path, &err)) {
		close(fd); /* the VM's own vsock socket only: a swapped one reaches another VM */
		fd = -1;
	}
	if (fd < 0)
		return api_fail(e, 502, "agent_unreachable", "the agent of %s: %s", id,
				err_text(&err));
	return fd;
}

static json_t *agent_call(struct daemon *d, const char *id, json_t *req, uint64_t deadline,
			  struct api_err *e)
{
	struct sandbox_rec r;
	struct fvm_err err = FVM_ERR_INIT;
	json_t *reply = NULL;
	int fd = sb_agent_fd(d, id, &r, e);

	if (fd < 0) {
		json_decref(req);
		return NULL;
	}
	int ret = agent_request(fd, req, &reply, deadline, -1, &err);
	close(fd);
	json_decref(req);
	if (ret == -EREMOTEIO) {
		api_fail(e, 422, "guest_error", "%s", err_text(&err));
		return NULL;
	}
	if (ret) {
		api_fail(e, 502, "agent_failed", "the agent of %s: %s", id, err_text(&err));
		return NULL;
	}
	json_object_del(reply, "ok");
	json_object_del(reply, "id");
	return reply;
}

/*
 * The request body as the agent's op (it checks each field's type and names a wrong one);
 * the wait is the op's own timeout plus grace, unbounded without one.
 */
static json_t *agent_pass(struct daemon *d, const char *id, json_t *body, const char *op,
			  uint64_t timeout_ms, int64_t grace_ms, struct api_err *e)
{
	json_t *req = json_deep_copy(body);

	json_object_set_new(req, "op", json_string(op));
	return agent_call(d, id, req, timeout_ms ? deadline_after_ms((int64_t)timeout_ms + grace_ms)
						 : 0, e);
}

int sb_exec_check(json_t *body, uint64_t *timeout_ms, struct api_err *e)
{
	static const char *const known[] = { "argv", "env", "clear_env", "cwd", "stdin",
					     "stdin_base64", "timeout_ms", "max_output",
					     "output_encoding", "stream", "stdin_open", NULL };

	if (check_fields(body, known, e) ||
	    get_uint(body, "timeout_ms", 0, 0, UINT32_MAX, timeout_ms, e))
		return -1;
	if (!json_is_array(json_object_get(body, "argv")) ||
	    !json_array_size(json_object_get(body, "argv")))
		return api_fail(e, 400, "bad_request",
				"field 'argv' must be a non-empty array of strings");
	static const char *const flags[] = { "stream", "stdin_open" };
	for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++)
		if (json_object_get(body, flags[i]) &&
		    !json_is_boolean(json_object_get(body, flags[i])))
			return api_fail(e, 400, "bad_request", "field '%s' must be true or false",
					flags[i]);
	if (json_is_true(json_object_get(body, "stdin_open")) &&
	    !json_is_true(json_object_get(body, "stream")))
		return api_fail(e, 400, "bad_request", "field 'stdin_open' needs \"stream\": true "
				"(input goes to the exec id its stream announces)");
	return 0;
}

json_t *sb_exec(struct daemon *d, const char *id, json_t *body, struct api_err *e)
{
	uint64_t timeout_ms;

	if (sb_exec_check(body, &timeout_ms, e))
		return NULL;
	return agent_pass(d, id, body, "exec", timeout_ms, EXEC_GRACE_MS, e);
}

json_t *sb_eval(struct daemon *d, const char *id, json_t *body, struct api_err *e)
{
	static const char *const known[] = { "code", "lang", "context", "timeout_ms", "max_output",
					     "output_encoding", NULL };
	uint64_t timeout_ms;

	if (check_fields(body, known, e) ||
	    get_uint(body, "timeout_ms", 0, 0, UINT32_MAX, &timeout_ms, e))
		return NULL;
	if (!json_is_string(json_object_get(body, "code"))) {
		api_fail(e, 400, "bad_request", "field 'code' must be a string");
		return NULL;
	}
	/* the interpreter's start (up to 30 s) comes on top of the code's own time */
	return agent_pass(d, id, body, "eval", timeout_ms, 60000, e);
}

json_t *sb_file_write(struct daemon *d, const char *id, const char *path, const void *data,
		      size_t len, struct api_err *e)
{
	char *b64 = malloc(base64_encoded_size(len));

	if (!b64) {
		api_fail(e, 500, "internal", "encoding %zu bytes: out of memory", len);
		return NULL;
	}
	base64_encode(data, len, b64);
	json_t *req = json_pack("{s:s, s:s, s:s}", "op", "write_file", "path", path, "content", b64);
	free(b64);
	return agent_call(d, id, req, deadline_after_ms(120000), e);
}

int sb_file_read(struct daemon *d, const char *id, const char *path, uint8_t **data,
		 size_t *len, struct api_err *e)
{
	json_t *req = json_pack("{s:s, s:s, s:i}", "op", "read_file", "path", path, "max_bytes",
				8 << 20);
	json_t *reply = agent_call(d, id, req, deadline_after_ms(120000), e);

	if (!reply)
		return -1;
	const char *b64 = json_string_value(json_object_get(reply, "content"));
	int ret = 0;
	if (json_is_true(json_object_get(reply, "truncated")))
		ret = api_fail(e, 413, "too_large", "%s in %s is larger than 8 MiB", path, id);
	else if (!b64 || base64_decode(b64, strlen(b64), data, len))
		ret = api_fail(e, 502, "agent_failed", "reading %s in %s: a bad reply", path, id);
	json_decref(reply);
	return ret;
}

json_t *sb_snapshot(struct daemon *d, const char *id, struct api_err *e)
{
	struct sandbox_rec r;
	struct snapshot_rec s = { 0 };
	struct fvm_err err = FVM_ERR_INIT;

	if (load_live(d, id, &r, e))
		return NULL;
	if (new_id(s.id, sizeof(s.id))) {
		api_fail(e, 500, "internal", "a snapshot id: %s", strerror(errno));
		return NULL;
	}
	memcpy(s.id, "sn", 2);
	snprintf(s.dir, sizeof(s.dir), "%s/%s", d->snap_dir, s.id);
	snprintf(s.sandbox, sizeof(s.sandbox), "%s", r.id);
	snprintf(s.guest, sizeof(s.guest), "%s", r.guest);
	/* A jailed VMM can write only its jail: the snapshot is made there, then adopted. */
	char jail[JAIL_DIR_MAX], target[STORE_PATH_MAX + STORE_ID_MAX];
	uid_t uid;
	bool jailed = !sb_jail_dir(d, &r, jail, sizeof(jail), &uid);
	snprintf(target, sizeof(target), "%s/%s", jailed ? jail : d->snap_dir, s.id);
	if (ctl(&r, json_pack("{s:s, s:s}", "cmd", "snapshot", "dir", target), NULL,
		BRANCH_TIMEOUT_MS, e, "snapshot"))
		return NULL;
	if (jailed && jail_snapshot_adopt(d, jail, uid, s.id, e))
		return NULL;
	s.created_at = now_unix();
	if (store_put_snapshot(d->store, &s, &err)) {
		api_fail(e, 500, "state", "recording snapshot %s: %s", s.id, err_text(&err));
		return NULL;
	}
	return snapshot_rec_json(&s);
}

json_t *snap_list(struct daemon *d, struct api_err *e)
{
	struct snapshot_rec *recs = NULL;
	struct fvm_err err = FVM_ERR_INIT;
	size_t n = 0;

	if (store_list_snapshots(d->store, &recs, &n, &err)) {
		api_fail(e, 500, "state", "%s", err_text(&err));
		return NULL;
	}
	json_t *arr = json_array();
	for (size_t i = 0; arr && i < n; i++)
		json_array_append_new(arr, snapshot_rec_json(&recs[i]));
	free(recs);
	return arr;
}

json_t *snap_get(struct daemon *d, const char *id, struct api_err *e)
{
	struct snapshot_rec s;
	struct fvm_err err = FVM_ERR_INIT;
	int ret = store_get_snapshot(d->store, id, &s, &err);

	if (ret) {
		api_fail(e, ret == -ENOENT ? 404 : 500, ret == -ENOENT ? "not_found" : "state", "%s",
			 err_text(&err));
		return NULL;
	}
	return snapshot_rec_json(&s);
}

static int remove_snapshot_dir(const char *dir, struct api_err *e)
{
	int ret = remove_tree_at(AT_FDCWD, dir);

	if (ret)
		return api_fail(e, 500, "internal", "removing %s: %s", dir, strerror(-ret));
	return 0;
}

json_t *snap_verify(struct daemon *d, const char *id, struct api_err *e)
{
	struct snapshot_rec s;
	char out[SPAWN_OUT_MAX];
	struct fvm_err err = FVM_ERR_INIT;
	int status = 0, ret = store_get_snapshot(d->store, id, &s, &err);

	if (ret) {
		api_fail(e, ret == -ENOENT ? 404 : 500, ret == -ENOENT ? "not_found" : "state", "%s",
			 err_text(&err));
		return NULL;
	}
	/* `verify` runs as root: never on a directory a jailed VM writes (it could be a link) */
	if (!path_under(s.dir, d->snap_dir)) {
		api_fail(e, 409, "image_in_jail", "snapshot %s is a branch image that sandbox %s "
			 "keeps in its jail (%s): only snapshots in the store are verified", id,
			 s.sandbox, s.dir);
		return NULL;
	}
	char *const argv[] = { d->exe, "snapshot", "verify", s.dir, NULL };
	if (run_forkvm(d, argv, "snapshot verify", SPAWN_TIMEOUT_MS, out, sizeof(out), &status, e))
		return NULL;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		api_fail(e, 422, "snapshot_invalid", "snapshot %s: %s", id, out[0] ? out : "invalid");
		return NULL;
	}
	return json_pack("{s:s, s:b, s:s}", "id", id, "ok", 1, "report", out);
}

json_t *snap_delete(struct daemon *d, const char *id, bool force, struct api_err *e)
{
	struct snapshot_rec s;
	struct fvm_err err = FVM_ERR_INIT;
	int users = 0, ret = store_get_snapshot(d->store, id, &s, &err);

	if (ret) {
		api_fail(e, ret == -ENOENT ? 404 : 500, ret == -ENOENT ? "not_found" : "state", "%s",
			 err_text(&err));
		return NULL;
	}
	if (store_snapshot_users(d->store, id, &users, &err)) {
		api_fail(e, 500, "state", "%s", err_text(&err));
		return NULL;
	}
	/* Restored sandboxes may map its memory file (file backing): not under them. */
	if (users && !force) {
		api_fail(e, 409, "in_use", "snapshot %s has %d live sandbox(es) restored from it; "
			 "delete them first or pass force=true", id, users);
		return NULL;
	}
	if (remove_snapshot_dir(s.dir, e))
		return NULL;
	if (store_delete_snapshot(d->store, id, &err)) {
		api_fail(e, 500, "state", "%s", err_text(&err));
		return NULL;
	}
	/* a branch image kept in a jail: that jail may hold nothing recorded any more */
	char *slash = strrchr(s.dir, '/');
	if (!path_under(s.dir, d->snap_dir) && slash) {
		*slash = '\0';
		if (path_under(s.dir, d->run_dir))
			jail_dir_release(d, s.dir);
	}
	return json_pack("{s:s, s:b}", "id", id, "deleted", 1);
}

/*
 * At start, before any request: files in the run directory, and in each jail directory in
 * it (a jailed source's children have their sockets there), that no record owns. A VM that
 * answers there was started by a daemon that died before recording it (killed mid-branch):
 * nobody can manage it, so it is stopped. Then the files of whatever no longer answers go,
 * cow templates' included. Recorded sandboxes keep theirs (a dead one keeps its log).
 */
static void sweep_dir(struct daemon *d, const char *path, int uid)
{
	char base[128], sock[PATH_MAX];
	struct fvm_err err = FVM_ERR_INIT;
	struct sandbox_rec r;
	struct dirent *de;
	DIR *dir = opendir(path);

	if (!dir) {
		log_warn("daemon: reading %s: %s", path, strerror(errno));
		return;
	}
	while ((de = readdir(dir))) {
		char *dot = strstr(de->d_name, ".sock");
		if (de->d_name[0] == '.' || !dot || (size_t)(dot - de->d_name) >= sizeof(base))
			continue;
		memcpy(base, de->d_name, (size_t)(dot - de->d_name));
		base[dot - de->d_name] = '\0';
		/* The page server's: VMs restored through it depend on it (pageserver.c). */
		if (strcmp(base, "pageserver") == 0)
			continue;
		if (!store_get_sandbox(d->store, base, &r, &err))
			continue;
		snprintf(sock, sizeof(sock), "%s/%s.sock", path, base);
		struct stat st;
		/* A jailed VM's public link: its jail's sweep looks at the socket itself. */
		if (lstat(sock, &st) == 0 && S_ISLNK(st.st_mode) && socket_answers(sock))
			continue;
		bool is_template = strstr(base, ".template") != NULL;
		if (!is_template && socket_answers(sock)) {
			struct api_err e;
			log_warn("daemon: %s runs but was never recorded (its daemon died while making it): "
				 "stopping it", sock);
			/* only a VM of this directory's uid: a link planted there reaches no other */
			ctl_as(sock, -1, uid, json_pack("{s:s}", "cmd", "stop"), NULL, CTL_TIMEOUT_MS,
			       &e, "stopping");
			continue; /* its VMM removes its files as it ends */
		}
		if (!socket_answers(sock))
			remove_vm_files(sock, true);
	}
	closedir(dir);
}

static void sweep_run_dir(struct daemon *d)
{
	char jail[PATH_MAX];
	struct dirent *de;
	struct stat st;
	DIR *dir;

	sweep_dir(d, d->run_dir, 0);
	dir = opendir(d->run_dir);
	if (!dir)
		return;
	while ((de = readdir(dir))) {
		size_t len = strlen(de->d_name);
		if (de->d_name[0] == '.' || len < 6 || strcmp(de->d_name + len - 5, ".jail") != 0)
			continue;
		snprintf(jail, sizeof(jail), "%s/%s", d->run_dir, de->d_name);
		if (lstat(jail, &st) < 0 || !S_ISDIR(st.st_mode))
			continue;
		sweep_dir(d, jail, (int)st.st_uid);
		family_sync(d, jail);
		jail_dir_release(d, jail); /* one nothing recorded lives in any more */
	}
	closedir(dir);
}

/*
 * Ask r's VMM for its status: -1 when it does not answer, else 1 while a worker (a branch,
 * a snapshot) runs and 0 when none does. Once none runs, its state (running or paused) is
 * recorded: a worker's own pause is not the sandbox's state.
 */
static int adopt_status(struct daemon *d, struct sandbox_rec *r, bool record_busy)
{
	struct api_err e;
	json_t *st = NULL;

	if (!vmm_alive(r) || ctl(r, json_pack("{s:s}", "cmd", "status"), &st, 2000, &e,
				 "status"))
		return -1;
	const char *state = json_string_value(json_object_get(st, "state"));
	bool busy = json_is_string(json_object_get(st, "busy"));
	if (!busy || record_busy)
		store_set_state(d->store, r->id, state && strcmp(state, "paused") == 0 ? "paused"
											: "running",
				NULL, NULL);
	json_decref(st);
	return busy;
}

int sb_reconcile(struct daemon *d, int *dead)
{
	struct sandbox_rec *recs = NULL;
	struct fvm_err err = FVM_ERR_INIT;
	size_t n = 0;
	int adopted = 0, busy = 0;
	bool *settling; /* busy at the first look: its state is recorded once it is not */

	*dead = 0;
	if (store_list_sandboxes(d->store, NULL, NULL, &recs, &n, &err)) {
		log_err("daemon: reconcile: %s", err_text(&err));
		return -EIO;
	}
	settling = calloc(n ? n : 1, sizeof(*settling));
	for (size_t i = 0; i < n; i++) {
		struct sandbox_rec *r = &recs[i];
		if (strcmp(r->state, "dead") == 0)
			continue;
		/* Without the table (no memory) a busy VM's state is recorded as it reads now. */
		int ret = adopt_status(d, r, !settling);
		if (ret >= 0) {
			if (ret && settling)
				settling[i] = true;
			busy += ret;
			adopted++;
			continue;
		}
		const char *why = vmm_alive(r) ? "its control socket did not answer at daemon start"
					       : "the VMM was gone at daemon start";
		if (vmm_alive(r)) /* ours but unreachable: it cannot be managed, end it */
			kill(r->pid, SIGKILL);
		store_set_state(d->store, r->id, "dead", why, NULL);
		remove_vm_files(r->socket, false);
		(*dead)++;
	}
	/*
	 * A branch the dead daemon started may still be making children, its source perhaps
	 * still paused by it: sweep once the adopted VMs are done with it (bounded), or its late
	 * children would run unmanaged, and record their state then.
	 */
	for (int waited = 0; busy && waited < RECONCILE_BUSY_WAIT_MS; waited += 100) {
		struct timespec pause = { 0, 100 * 1000 * 1000 };
		nanosleep(&pause, NULL);
		busy = 0;
		for (size_t i = 0; i < n; i++) {
			if (strcmp(recs[i].state, "dead") == 0 || (settling && !settling[i]))
				continue;
			int ret = adopt_status(d, &recs[i], false);
			if (ret == 1)
				busy++;
			else if (settling)
				settling[i] = false;
		}
	}
	if (busy) {
		log_warn("daemon: %d adopted VM(s) still busy after %d ms; sweeping anyway", busy,
			 RECONCILE_BUSY_WAIT_MS);
		for (size_t i = 0; settling && i < n; i++)
			if (settling[i])
				adopt_status(d, &recs[i], true);
	}
	free(settling);
	free(recs);
	sweep_run_dir(d);
	pageserver_adopt(d);
	return adopted;
}

/* Once a second: TTLs that passed end their sandbox; VMMs that died are marked. */
static void *reaper_main(void *arg)
{
	struct daemon *d = arg;

	for (;;) {
		struct pollfd p = { .fd = d->stop_fd, .events = POLLIN };
		if (poll(&p, 1, 1000) != 0)
			return NULL;
		pageserver_reap(d);
		struct sandbox_rec *recs = NULL;
		struct fvm_err err = FVM_ERR_INIT;
		size_t n = 0;
		double now = now_unix();
		if (store_list_sandboxes(d->store, NULL, NULL, &recs, &n, &err)) {
			log_warn("daemon: reaper: %s", err_text(&err));
			continue;
		}
		bool died = false;
		for (size_t i = 0; i < n; i++) {
			struct sandbox_rec *r = &recs[i];
			struct api_err e;
			if (strcmp(r->state, "dead") == 0)
				continue;
			if (r->expires_at > 0 && now >= r->expires_at) {
				json_t *res = sb_delete(d, r->id, "its TTL ended", &e);
				if (!res)
					log_warn("daemon: ending %s at its TTL: %s", r->id, e.msg);
				json_decref(res);
				audit(d, "reaper", "ttl", r->id, res ? 200 : e.http);
			} else if (!vmm_alive(r)) {
				char jail[JAIL_DIR_MAX];
				uid_t uid;
				store_set_state(d->store, r->id, "dead", "the VMM exited", NULL);
				remove_vm_files(r->socket, false);
				if (!sb_jail_dir(d, r, jail, sizeof(jail), &uid))
					family_sync(d, jail); /* its part of the budget goes */
				died = true;
			}
		}
		free(recs);
		/* A VMM killed outright leaves its host-side network (veth end, NAT table). */
		if (died && net_reap(NULL, &err) < 0)
			log_warn("daemon: removing dead VMs' host networking: %s", err_text(&err));
	}
}

int reaper_start(struct daemon *d)
{
	int err = pthread_create(&d->reaper, NULL, reaper_main, d);

	if (err)
		return log_errno(-err, "daemon: starting the reaper thread");
	d->reaper_started = true;
	return 0;
}

void reaper_stop(struct daemon *d)
{
	uint64_t one = 1;

	if (!d->reaper_started)
		return;
	if (write(d->stop_fd, &one, sizeof(one)) < 0)
		log_warn("daemon: stopping the reaper: %s", strerror(errno));
	pthread_join(d->reaper, NULL);
	d->reaper_started = false;
}

/* ---- images: the kernel image and root filesystem of `forkvm image build` (IMAGE.md) ---- */

static const struct image_kind {
	const char *name, *subdir;
} image_kinds[] = { { "kernel", "image" }, { "rootfs", "rootfs" } };

static const struct image_kind *image_kind(const char *name)
{
	for (size_t i = 0; i < sizeof(image_kinds) / sizeof(image_kinds[0]); i++)
		if (name && strcmp(image_kinds[i].name, name) == 0)
			return &image_kinds[i];
	return NULL;
}

static int image_dir(const struct image_kind *k, char *out, size_t cap, struct api_err *e)
{
	char cache[PATH_MAX];
	int ret = image_default_cache(cache, sizeof(cache));

	if (ret)
		return api_fail(e, 500, "internal", "the image cache directory: %s", strerror(-ret));
	if ((size_t)snprintf(out, cap, "%s/%s", cache, k->subdir) >= cap)
		return api_fail(e, 500, "internal", "the image cache path %s is too long", cache);
	return 0;
}

/* {kind, dir, manifest} of a built image, or NULL (e not set) when none is built. */
static json_t *image_info(const struct image_kind *k, struct api_err *e, bool *failed)
{
	char dir[PATH_MAX], path[PATH_MAX + 16];
	struct fvm_err err = FVM_ERR_INIT;
	uint8_t *data = NULL;
	size_t len = 0;
	json_error_t jerr;

	*failed = image_dir(k, dir, sizeof(dir), e) != 0;
	if (*failed)
		return NULL;
	snprintf(path, sizeof(path), "%s/manifest.json", dir);
	int ret = file_read(path, 1 << 20, 0, &data, &len, &err);
	if (ret == -ENOENT)
		return NULL;
	if (ret) {
		*failed = true;
		api_fail(e, 500, "internal", "%s", err_text(&err));
		return NULL;
	}
	json_t *manifest = json_loadb((const char *)data, len, 0, &jerr);
	free(data);
	if (!manifest) {
		*failed = true;
		api_fail(e, 500, "image_damaged", "%s is not valid JSON (%s): rebuild it (POST "
			 "/v1/images)", path, jerr.text);
		return NULL;
	}
	return json_pack("{s:s, s:s, s:o}", "kind", k->name, "dir", dir, "manifest", manifest);
}

json_t *api_image_list(struct daemon *d, struct api_err *e)
{
	json_t *arr = json_array();
	bool failed;

	(void)d;
	for (size_t i = 0; arr && i < sizeof(image_kinds) / sizeof(image_kinds[0]); i++) {
		json_t *info = image_info(&image_kinds[i], e, &failed);
		if (failed) {
			json_decref(arr);
			return NULL;
		}
		if (info)
			json_array_append_new(arr, info);
	}
	return arr;
}

/* One build at a time: both kinds write the shared package cache. */
static pthread_mutex_t build_lock = PTHREAD_MUTEX_INITIALIZER;

json_t *api_image_build(struct daemon *d, json_t *body, struct api_err *e)
{
	static const char *const known[] = { "kind", "packages", NULL };
	char packages[2048] = "", *out = NULL;
	const char *kind_name;
	const struct image_kind *k;
	json_t *pkgs, *p, *res = NULL;
	size_t i, plen = 0;
	int status = 0;
	bool failed;

	if (check_fields(body, known, e) || get_str(body, "kind", &kind_name, e))
		return NULL;
	if (!(k = image_kind(kind_name ? kind_name : "rootfs"))) {
		api_fail(e, 400, "bad_request", "field 'kind' must be \"kernel\" or \"rootfs\"");
		return NULL;
	}
	pkgs = json_object_get(body, "packages");
	if (pkgs && (!json_is_array(pkgs) || strcmp(k->name, "rootfs") != 0)) {
		api_fail(e, 400, "bad_request", "field 'packages' is a list of Debian package names, "
			 "for kind rootfs");
		return NULL;
	}
	json_array_foreach(pkgs, i, p) {
		const char *name = json_string_value(p);
		size_t n = name ? strlen(name) : 0;
		/* Debian package names: lower case, digits, + - . (Policy 5.6.1) */
		bool ok = n >= 2 && n < 100 && plen + n + 2 < sizeof(packages);
		for (size_t c = 0; ok && c < n; c++)
			ok = (name[c] >= 'a' && name[c] <= 'z') || (name[c] >= '0' && name[c] <= '9') ||
			     (c > 0 && strchr("+-.", name[c]));
		if (!ok) {
			api_fail(e, 400, "bad_request", "packages[%zu] is not a Debian package name", i);
			return NULL;
		}
		plen += (size_t)snprintf(packages + plen, sizeof(packages) - plen, "%s%s",
					 plen ? "," : "", name);
	}
	if (pthread_mutex_trylock(&build_lock)) {
		api_fail(e, 409, "build_in_progress", "an image build is already running");
		return NULL;
	}
	const char *argv[8];
	int n = 0;
	argv[n++] = d->exe;
	argv[n++] = "image";
	argv[n++] = "build";
	if (strcmp(k->name, "rootfs") == 0)
		argv[n++] = "--rootfs";
	if (plen) {
		argv[n++] = "--packages";
		argv[n++] = packages;
	}
	argv[n] = NULL;
	out = malloc(IMAGE_OUT_MAX);
	if (!out) {
		api_fail(e, 500, "internal", "out of memory");
	} else if (!run_forkvm(d, (char *const *)argv, "image build", IMAGE_BUILD_MS, out,
			       IMAGE_OUT_MAX, &status, e)) {
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
			size_t len = strlen(out);
			api_fail(e, 500, "image_build_failed", "forkvm image build%s failed: %s",
				 strcmp(k->name, "rootfs") ? "" : " --rootfs",
				 len > 1500 ? out + len - 1500 : out);
		} else {
			res = image_info(k, e, &failed);
			if (!res && !failed)
				api_fail(e, 500, "image_build_failed", "the build ended but left no "
					 "manifest");
		}
	}
	pthread_mutex_unlock(&build_lock);
	free(out);
	return res;
}

json_t *api_image_delete(struct daemon *d, const char *kind, bool force, struct api_err *e)
{
	struct sandbox_rec *recs = NULL;
	const struct image_kind *k = image_kind(kind);
	char dir[PATH_MAX];
	struct fvm_err err = FVM_ERR_INIT;
	size_t n = 0;
	int users = 0;

	if (!k) {
		api_fail(e, 404, "not_found", "no image kind %s (kernel or rootfs)", kind);
		return NULL;
	}
	if (image_dir(k, dir, sizeof(dir), e))
		return NULL;
	if (store_list_sandboxes(d->store, NULL, NULL, &recs, &n, &err)) {
		api_fail(e, 500, "state", "%s", err_text(&err));
		return NULL;
	}
	for (size_t i = 0; i < n; i++)
		users += strcmp(recs[i].guest, "linux") == 0 && strcmp(recs[i].state, "dead") != 0;
	free(recs);
	/* Live Linux sandboxes read the rootfs as their disk's base, the kernel at restore. */
	if (users && !force) {
		api_fail(e, 409, "in_use", "%d live Linux sandbox(es) use the %s image; delete them "
			 "first or pass force=true", users, k->name);
		return NULL;
	}
	if (pthread_mutex_trylock(&build_lock)) {
		api_fail(e, 409, "build_in_progress", "an image build is running");
		return NULL;
	}
	int ret = access(dir, F_OK) < 0 ? -ENOENT : remove_tree_at(AT_FDCWD, dir);
	pthread_mutex_unlock(&build_lock);
	if (ret == -ENOENT) {
		api_fail(e, 404, "not_found", "no %s image is built (%s)", k->name, dir);
		return NULL;
	}
	if (ret) {
		api_fail(e, 500, "internal", "removing %s: %s", dir, strerror(-ret));
		return NULL;
	}
	return json_pack("{s:s, s:b}", "kind", k->name, "deleted", 1);
}
