/*
 * forkvmd's state (docs/DAEMON.md, "State"): every sandbox and snapshot it made, in SQLite
 * (WAL, synchronous=FULL) under the state directory, so a daemon killed with -9 loses nothing
 * it had answered for. One connection, serialized by a mutex: requests run on many threads.
 */
#ifndef FORKVM_DAEMON_STORE_H
#define FORKVM_DAEMON_STORE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/errmsg.h"

#define STORE_ID_MAX 40
#define STORE_PATH_MAX 256

struct store;

/* One sandbox row. metadata is a JSON object's text (the caller's, at most 4 KiB). */
struct sandbox_rec {
	char id[STORE_ID_MAX];
	char state[16];		/* running | paused | dead | stopping */
	int pid;
	uint64_t start_ticks;	/* /proc/PID/stat field 22: tells a reused pid from ours */
	char socket[STORE_PATH_MAX];
	char parent[STORE_ID_MAX];	/* sandbox branched from, or "" */
	char snapshot[STORE_ID_MAX];	/* snapshot restored from, or "" */
	char guest[16];		/* probe | linux */
	uint64_t mem_mib;
	int vcpus;
	char metadata[4096];
	double created_at;	/* Unix time */
	double expires_at;	/* Unix time the TTL ends; 0: none */
	char end_reason[256];
};

struct snapshot_rec {
	char id[STORE_ID_MAX];
	char dir[STORE_PATH_MAX];
	char sandbox[STORE_ID_MAX];	/* taken from */
	char guest[16];			/* probe | linux, as the sandbox's */
	double created_at;
};

/* Open (creating) DIR/state.db; -errno with err set. */
int store_open(const char *dir, struct store **out, struct fvm_err *err);
void store_close(struct store *s);

int store_put_sandbox(struct store *s, const struct sandbox_rec *r, struct fvm_err *err);
/* 0, -ENOENT when no such id, or -EIO with err set. */
int store_get_sandbox(struct store *s, const char *id, struct sandbox_rec *r, struct fvm_err *err);
int store_set_state(struct store *s, const char *id, const char *state, const char *reason,
		    struct fvm_err *err);
int store_delete_sandbox(struct store *s, const char *id, struct fvm_err *err);
/*
 * Every sandbox, oldest first, into a malloc'd array (*n of them), filtered by state and
 * parent when those are not NULL.
 */
int store_list_sandboxes(struct store *s, const char *state, const char *parent,
			 struct sandbox_rec **out, size_t *n, struct fvm_err *err);

int store_put_snapshot(struct store *s, const struct snapshot_rec *r, struct fvm_err *err);
int store_get_snapshot(struct store *s, const char *id, struct snapshot_rec *r,
		       struct fvm_err *err);
int store_delete_snapshot(struct store *s, const char *id, struct fvm_err *err);
int store_list_snapshots(struct store *s, struct snapshot_rec **out, size_t *n,
			 struct fvm_err *err);
/* How many live (not dead) sandboxes were restored from snapshot id. */
int store_snapshot_users(struct store *s, const char *id, int *users, struct fvm_err *err);

/* The JSON the API returns for a row. */
json_t *sandbox_rec_json(const struct sandbox_rec *r);
json_t *snapshot_rec_json(const struct snapshot_rec *r);

#endif
