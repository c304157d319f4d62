/* forkvmd's insides, shared by its files (docs/DAEMON.md). */
#ifndef FORKVM_DAEMON_IMPL_H
#define FORKVM_DAEMON_IMPL_H

#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "daemon/daemon.h"
#include "daemon/store.h"

/*
 * The one error type of the API: an HTTP status, a stable machine-readable code, and a
 * message naming the step and the object. Set once where it happens, sent once (api.c).
 */
struct api_err {
	int http;
	const char *code;	/* bad_request, not_found, conflict, unauthorized, ... */
	char msg[1024];
};

int api_fail(struct api_err *e, int http, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* Latency histogram buckets (seconds) of metrics.c. */
#define METRIC_BUCKETS 11

/*
 * A VM's sockets live at STATE_DIR/run/ID.sock.vsock, and a Unix socket path holds at most 107
 * bytes: the state directory's path is bounded so that every one of them fits.
 */
#define DAEMON_STATE_DIR_MAX 64

struct op_metric {
	const char *name;
	uint64_t count, errors;
	uint64_t buckets[METRIC_BUCKETS];
	double sum_s;
};

struct daemon {
	struct daemon_opts o;
	char run_dir[DAEMON_STATE_DIR_MAX + 16];  /* VMM sockets and logs */
	char snap_dir[DAEMON_STATE_DIR_MAX + 16]; /* snapshot directories */
	char exe[PATH_MAX];	 /* the forkvm binary the VMMs run */
	struct store *store;
	int audit_fd;
	int lock_fd;
	pthread_mutex_t metrics_lock;
	struct op_metric *ops;	/* one per route (api.c's table) */
	int nops;
	uint64_t requests_rejected; /* unauthorized, too large, bad JSON */
	/* Branches under way in jailed families: children to come, counted in the budget
	 * (jailed.c) whoever sets it meanwhile. */
	pthread_mutex_t family_lock;	/* the pending table */
	pthread_mutex_t family_sync_lock; /* one family_sync at a time: count and write as one */
	struct family_pending {
		char jail[DAEMON_STATE_DIR_MAX + 16 + STORE_ID_MAX + 8];
		int count;
	} pending[32];
	int stop_fd;		/* eventfd: the reaper's stop */
	pthread_t reaper;
	bool reaper_started;
};

/* ---- sandbox.c: the operations, each returning a new JSON value or NULL with e set ---- */
json_t *sb_create(struct daemon *d, json_t *body, struct api_err *e);
json_t *sb_get(struct daemon *d, const char *id, struct api_err *e);
/* Filtered by state, parent, and metadata: every {KEY: VALUE} of meta must match (a string
 * value as it is, anything else as its compact JSON). */
json_t *sb_list(struct daemon *d, const char *state, const char *parent, json_t *meta,
		struct api_err *e);
json_t *sb_pause(struct daemon *d, const char *id, bool pause, struct api_err *e);
json_t *sb_delete(struct daemon *d, const char *id, const char *reason, struct api_err *e);
json_t *sb_branch(struct daemon *d, const char *id, json_t *body, struct api_err *e);
json_t *sb_exec(struct daemon *d, const char *id, json_t *body, struct api_err *e);
/* How long past an exec's own timeout_ms the daemon waits for the agent's reply. */
#define EXEC_GRACE_MS 30000
/* The fields of an exec body (the agent checks their types); *timeout_ms from it. */
int sb_exec_check(json_t *body, uint64_t *timeout_ms, struct api_err *e);
/* A connected agent fd for a live Linux sandbox (r filled), or -1 with e set. */
int sb_agent_fd(struct daemon *d, const char *id, struct sandbox_rec *r, struct api_err *e);

/*
 * exec_stream.c: an exec whose output is streamed (body "stream": true). open checks the
 * body, reaches the agent and starts a thread that turns its event frames into NDJSON lines
 * ({"type":"stdout"|"stderr","data","encoding"}, last {"type":"exit",...} or
 * {"type":"error","error":{code,message}}) on a pipe; read them from sb_stream_fd until EOF.
 * close cancels what still runs (the agent then kills the command) and frees everything.
 */
struct sb_stream;
int sb_exec_stream_open(struct daemon *d, const char *id, json_t *body, struct sb_stream **out,
			struct api_err *e);
int sb_stream_fd(const struct sb_stream *s);
void sb_stream_close(struct sb_stream *s);
/* Input for a running streamed exec started with "stdin_open" (POST /v1/execs/ID/stdin);
 * eof closes it. */
json_t *sb_exec_stdin(const char *exec_id, const void *data, size_t len, bool eof,
		      struct api_err *e);
/* Code in the guest's warm interpreter (the agent's eval, docs/AGENT.md). */
json_t *sb_eval(struct daemon *d, const char *id, json_t *body, struct api_err *e);
json_t *sb_snapshot(struct daemon *d, const char *id, struct api_err *e);
/* Files: write data to path in the guest; read path (*data malloc'd). */
json_t *sb_file_write(struct daemon *d, const char *id, const char *path, const void *data,
		      size_t len, struct api_err *e);
int sb_file_read(struct daemon *d, const char *id, const char *path, uint8_t **data,
		 size_t *len, struct api_err *e);
json_t *snap_list(struct daemon *d, struct api_err *e);
json_t *snap_get(struct daemon *d, const char *id, struct api_err *e);
json_t *snap_delete(struct daemon *d, const char *id, bool force, struct api_err *e);
/* `forkvm snapshot verify` of its directory: 422 snapshot_invalid with the reason. */
json_t *snap_verify(struct daemon *d, const char *id, struct api_err *e);

/* The kernel image and root filesystem of `forkvm image build`: list, build (one at a time,
 * in the request's own thread), delete (refused while live Linux sandboxes use them). */
json_t *api_image_list(struct daemon *d, struct api_err *e);
json_t *api_image_build(struct daemon *d, json_t *body, struct api_err *e);
json_t *api_image_delete(struct daemon *d, const char *kind, bool force, struct api_err *e);

/* Our VMM is still running: the pid exists and started when the one we recorded did. */
bool vmm_alive(const struct sandbox_rec *r);

/* ---- jailed.c: the daemon's side of jailed VMMs (docs/DAEMON.md, "Confinement") ---- */
/* RUN_DIR/ID.jail: a VMM's jail directory */
#define JAIL_DIR_MAX (DAEMON_STATE_DIR_MAX + 16 + STORE_ID_MAX + 8)
/*
 * Where r's VMM is jailed: RUN_DIR/ID.jail for a sandbox the daemon started, the directory
 * its socket lies in for a branch child (RUN_DIR/SOURCE.jail/CHILD.sock). 0 with dir and
 * *uid (the jail's) set; -ENOENT when r runs unjailed.
 */
int sb_jail_dir(const struct daemon *d, const struct sandbox_rec *r, char *dir, size_t cap,
		uid_t *uid);
/* Whether path lies inside directory dir. */
bool path_under(const char *path, const char *dir);
/* Remove jail (RUN_DIR/NAME.jail) and its family file once nothing recorded lives in it. */
void jail_dir_release(struct daemon *d, const char *jail);
/* Move snapshot NAME that the VMM of uid wrote in jail into the store, root's and checked
 * (jail/jail_adopt.h): 500 snapshot_refused naming what was wrong. */
int jail_snapshot_adopt(struct daemon *d, const char *jail, uid_t uid, const char *name,
			struct api_err *e);
/* Record r's cgroup limits as the unit of its family's budget (a jailed sandbox's start). */
void family_record(struct daemon *d, const struct sandbox_rec *r);
/* Set the family's cgroup limits to the unit times its live VMs plus the children of the
 * branches under way in it. */
void family_sync(struct daemon *d, const char *jail);
/* A branch of count children starts in (begin) or ends (end) in the family of jail: its
 * children count in the budget meanwhile (and once they run, as live VMs). */
void family_branch_begin(struct daemon *d, const char *jail, int count);
void family_branch_end(struct daemon *d, const char *jail, int count);

/*
 * At start: adopt every recorded VM whose process is ours (pid, start time) and whose control
 * socket answers; mark the others dead and remove what they left. Returns how many were
 * adopted; *dead counts the others.
 */
int sb_reconcile(struct daemon *d, int *dead);
/* The reaper: ends sandboxes whose TTL passed, marks those whose VMM died. */
int reaper_start(struct daemon *d);
void reaper_stop(struct daemon *d);

/*
 * The environment a child forkvm (a VMM, the page server) starts with: ours, with the
 * snapshot roots it may write under (the state directory first). *envp is calloc'd (free it)
 * unless it is environ itself (out of memory); buf holds the one variable it adds.
 */
void vmm_env(struct daemon *d, char ***envp, char *buf, size_t cap);

/* ---- pageserver.c: the one page server of the daemon's uffd restores (docs/DAEMON.md) ---- */

/* Per-VM counters of the page server's status (docs/UFFD.md), summed into /v1/metrics. */
enum { PSC_DEMAND_FAULTS, PSC_ZERO_FAULTS, PSC_PAGES_PREFETCHED, PSC_BYTES_COPIED, PSC_EEXIST,
       PSC_EAGAIN, PSC_COUNT };
/* The states a VM of the status has. */
enum { PSV_HOT, PSV_BACKGROUND, PSV_IDLE, PSV_LOADING, PSV_GONE, PSV_COUNT };

struct pageserver_counter {
	const char *key;	/* in the status; the metric is forkvm_pageserver_KEY_total */
	const char *help;
};
extern const struct pageserver_counter pageserver_counters[PSC_COUNT];
extern const char *const pageserver_vm_states[PSV_COUNT];

struct pageserver_metrics {
	bool up;		/* its status answered in time */
	uint64_t vms[PSV_COUNT];
	uint64_t total[PSC_COUNT];
};

/*
 * The page-server socket a uffd restore goes through (STATE_DIR/run/pageserver.sock, into
 * sock[cap]), once a server answers there: a live one is used as it is (adopted), none (or a
 * dead one) means a new `forkvm pageserver` is started and awaited. Serialized: concurrent
 * creates start one server. Errors name the step and quote the server's log.
 */
int pageserver_ensure(struct daemon *d, char *sock, size_t cap, struct api_err *e);
/* After a uffd VMM failed to start: e's message gains the page server's last log lines. */
void pageserver_explain(struct daemon *d, struct api_err *e);
/* At daemon start: log the adoption of a page server that answers (never restarted). */
void pageserver_adopt(struct daemon *d);
/* The reaper's, once a second: collect a page server this daemon started that has exited. */
void pageserver_reap(struct daemon *d);
/* Its status, within a short deadline (a stuck server reads as down): gauges and totals. */
void pageserver_metrics(struct daemon *d, struct pageserver_metrics *m);

/*
 * For a process the daemon starts (a VMM, the page server): an empty mask (none) and the
 * signals whose handling goes back to the default (defaults: SIGPIPE, which the daemon
 * ignores, and the stop signals it blocks), for posix_spawnattr_setsigmask/setsigdefault.
 */
void spawn_signal_sets(sigset_t *none, sigset_t *defaults);

/* ---- metrics.c ---- */
void metrics_observe(struct daemon *d, int op, double seconds, bool failed);
/* Prometheus text exposition of everything: *out malloc'd. */
int metrics_render(struct daemon *d, char **out, struct api_err *e);

/* ---- api.c ---- */
void audit(struct daemon *d, const char *caller, const char *op, const char *target, int http);

#endif
