/* forkvmd's SQLite store: sandboxes and snapshots (store.h). */
#include "daemon/store.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/errmsg.h"

struct store {
	sqlite3 *db;
	pthread_mutex_t lock;
};

static const char schema[] =
	"PRAGMA journal_mode=WAL;"
	"PRAGMA synchronous=FULL;"
	"PRAGMA busy_timeout=5000;"
	"CREATE TABLE IF NOT EXISTS sandboxes("
	" id TEXT PRIMARY KEY, state TEXT NOT NULL, pid INTEGER NOT NULL,"
	" start_ticks INTEGER NOT NULL, socket TEXT NOT NULL, parent TEXT NOT NULL,"
	" snapshot TEXT NOT NULL, guest TEXT NOT NULL, mem_mib INTEGER NOT NULL,"
	" vcpus INTEGER NOT NULL, metadata TEXT NOT NULL, created_at REAL NOT NULL,"
	" expires_at REAL NOT NULL, end_reason TEXT NOT NULL);"
	"CREATE TABLE IF NOT EXISTS snapshots("
	" id TEXT PRIMARY KEY, dir TEXT NOT NULL, sandbox TEXT NOT NULL, guest TEXT NOT NULL,"
	" created_at REAL NOT NULL);";

#define SB_COLS "id, state, pid, start_ticks, socket, parent, snapshot, guest, mem_mib, " \
		"vcpus, metadata, created_at, expires_at, end_reason"

static int db_error(struct store *s, const char *what, struct fvm_err *err)
{
	return errmsg(err, -EIO, "state database: %s: %s", what, sqlite3_errmsg(s->db));
}

int store_open(const char *dir, struct store **out, struct fvm_err *err)
{
	struct store *s = calloc(1, sizeof(*s));
	char path[512], *msg = NULL;
	int ret = 0;

	if (!s)
		return errmsg(err, -ENOMEM, "state database: out of memory");
	pthread_mutex_init(&s->lock, NULL);
	snprintf(path, sizeof(path), "%s/state.db", dir);
	if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
			    SQLITE_OPEN_FULLMUTEX, NULL) != SQLITE_OK) {
		ret = errmsg(err, -EIO, "state database %s: %s", path,
			     s->db ? sqlite3_errmsg(s->db) : "cannot open");
		goto fail;
	}
	if (sqlite3_exec(s->db, schema, NULL, NULL, &msg) != SQLITE_OK) {
		ret = errmsg(err, -EIO, "state database %s: creating the schema: %s", path,
			     msg ? msg : "?");
		sqlite3_free(msg);
		goto fail;
	}
	*out = s;
	return 0;
fail:
	store_close(s);
	return ret;
}

void store_close(struct store *s)
{
	if (!s)
		return;
	sqlite3_close(s->db);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

static void text(sqlite3_stmt *st, int col, char *dst, size_t cap)
{
	const unsigned char *t = sqlite3_column_text(st, col);

	snprintf(dst, cap, "%s", t ? (const char *)t : "");
}

static void row_sandbox(sqlite3_stmt *st, struct sandbox_rec *r)
{
	memset(r, 0, sizeof(*r));
	text(st, 0, r->id, sizeof(r->id));
	text(st, 1, r->state, sizeof(r->state));
	r->pid = sqlite3_column_int(st, 2);
	r->start_ticks = (uint64_t)sqlite3_column_int64(st, 3);
	text(st, 4, r->socket, sizeof(r->socket));
	text(st, 5, r->parent, sizeof(r->parent));
	text(st, 6, r->snapshot, sizeof(r->snapshot));
	text(st, 7, r->guest, sizeof(r->guest));
	r->mem_mib = (uint64_t)sqlite3_column_int64(st, 8);
	r->vcpus = sqlite3_column_int(st, 9);
	text(st, 10, r->metadata, sizeof(r->metadata));
	r->created_at = sqlite3_column_double(st, 11);
	r->expires_at = sqlite3_column_double(st, 12);
	text(st, 13, r->end_reason, sizeof(r->end_reason));
}

/*
 * Prepare sql, bind the text/int64 arguments described by types ('t' const char *, 'i'
 * int64_t, 'd' double), run it to completion; rows go to each(st, arg). Under the lock.
 */
static int run(struct store *s, const char *sql, const char *types,
	       void (*each)(sqlite3_stmt *, void *), void *arg, struct fvm_err *err, ...)
{
	sqlite3_stmt *st = NULL;
	va_list ap;
	int rc, ret = 0;

	pthread_mutex_lock(&s->lock);
	if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) {
		ret = db_error(s, "prepare", err);
		goto out;
	}
	va_start(ap, err);
	for (int i = 0; types[i]; i++) {
		if (types[i] == 't')
			rc = sqlite3_bind_text(st, i + 1, va_arg(ap, const char *), -1, SQLITE_TRANSIENT);
		else if (types[i] == 'i')
			rc = sqlite3_bind_int64(st, i + 1, va_arg(ap, int64_t));
		else
			rc = sqlite3_bind_double(st, i + 1, va_arg(ap, double));
		if (rc != SQLITE_OK) {
			va_end(ap);
			ret = db_error(s, "bind", err);
			goto out;
		}
	}
	va_end(ap);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		if (each)
			each(st, arg);
	if (rc != SQLITE_DONE)
		ret = db_error(s, "step", err);
out:
	sqlite3_finalize(st);
	pthread_mutex_unlock(&s->lock);
	return ret;
}

int store_put_sandbox(struct store *s, const struct sandbox_rec *r, struct fvm_err *err)
{
	return run(s, "INSERT OR REPLACE INTO sandboxes(" SB_COLS ") VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
		   "ttiittttiitddt", NULL, NULL, err, r->id,
		   r->state, (int64_t)r->pid, (int64_t)r->start_ticks, r->socket, r->parent,
		   r->snapshot, r->guest, (int64_t)r->mem_mib, (int64_t)r->vcpus, r->metadata,
		   r->created_at, r->expires_at, r->end_reason);
}

struct one {
	void *rec;
	bool found;
};

static void each_sandbox_one(sqlite3_stmt *st, void *arg)
{
	struct one *o = arg;

	row_sandbox(st, o->rec);
	o->found = true;
}

int store_get_sandbox(struct store *s, const char *id, struct sandbox_rec *r, struct fvm_err *err)
{
	struct one o = { r, false };
	int ret = run(s, "SELECT " SB_COLS " FROM sandboxes WHERE id = ?", "t", each_sandbox_one,
		      &o, err, id);

	if (!ret && !o.found)
		return errmsg(err, -ENOENT, "no sandbox %s", id);
	return ret;
}

int store_set_state(struct store *s, const char *id, const char *state, const char *reason,
		    struct fvm_err *err)
{
	return run(s, "UPDATE sandboxes SET state = ?, end_reason = ? WHERE id = ?", "ttt", NULL,
		   NULL, err, state, reason ? reason : "", id);
}

int store_delete_sandbox(struct store *s, const char *id, struct fvm_err *err)
{
	return run(s, "DELETE FROM sandboxes WHERE id = ?", "t", NULL, NULL, err, id);
}

struct many {
	void *recs;
	size_t n, cap, size;
	bool nomem;
	void (*fill)(sqlite3_stmt *, void *);
};

static void each_many(sqlite3_stmt *st, void *arg)
{
	struct many *m = arg;

	if (m->nomem)
		return;
	if (m->n == m->cap) {
		size_t cap = m->cap ? m->cap * 2 : 16;
		void *p = realloc(m->recs, cap * m->size);
		if (!p) {
			m->nomem = true;
			return;
		}
		m->recs = p;
		m->cap = cap;
	}
	m->fill(st, (char *)m->recs + m->n++ * m->size);
}

static void fill_sandbox(sqlite3_stmt *st, void *rec)
{
	row_sandbox(st, rec);
}

int store_list_sandboxes(struct store *s, const char *state, const char *parent,
			 struct sandbox_rec **out, size_t *n, struct fvm_err *err)
{
	struct many m = { .size = sizeof(struct sandbox_rec), .fill = fill_sandbox };
	int ret = run(s, "SELECT " SB_COLS " FROM sandboxes WHERE (?1 IS NULL OR state = ?1) AND "
		      "(?2 IS NULL OR parent = ?2) ORDER BY created_at, id", "tt", each_many, &m,
		      err, state, parent);

	if (!ret && m.nomem)
		ret = errmsg(err, -ENOMEM, "listing sandboxes: out of memory");
	if (ret) {
		free(m.recs);
		return ret;
	}
	*out = m.recs;
	*n = m.n;
	return 0;
}

static void row_snapshot(sqlite3_stmt *st, void *rec)
{
	struct snapshot_rec *r = rec;

	memset(r, 0, sizeof(*r));
	text(st, 0, r->id, sizeof(r->id));
	text(st, 1, r->dir, sizeof(r->dir));
	text(st, 2, r->sandbox, sizeof(r->sandbox));
	text(st, 3, r->guest, sizeof(r->guest));
	r->created_at = sqlite3_column_double(st, 4);
}

int store_put_snapshot(struct store *s, const struct snapshot_rec *r, struct fvm_err *err)
{
	return run(s, "INSERT OR REPLACE INTO snapshots(id, dir, sandbox, guest, created_at) "
		   "VALUES(?,?,?,?,?)", "ttttd", NULL, NULL, err, r->id, r->dir, r->sandbox,
		   r->guest, r->created_at);
}

static void each_snapshot_one(sqlite3_stmt *st, void *arg)
{
	struct one *o = arg;

	row_snapshot(st, o->rec);
	o->found = true;
}

int store_get_snapshot(struct store *s, const char *id, struct snapshot_rec *r, struct fvm_err *err)
{
	struct one o = { r, false };
	int ret = run(s, "SELECT id, dir, sandbox, guest, created_at FROM snapshots WHERE id = ?", "t",
		      each_snapshot_one, &o, err, id);

	if (!ret && !o.found)
		return errmsg(err, -ENOENT, "no snapshot %s", id);
	return ret;
}

int store_delete_snapshot(struct store *s, const char *id, struct fvm_err *err)
{
	return run(s, "DELETE FROM snapshots WHERE id = ?", "t", NULL, NULL, err, id);
}

int store_list_snapshots(struct store *s, struct snapshot_rec **out, size_t *n, struct fvm_err *err)
{
	struct many m = { .size = sizeof(struct snapshot_rec), .fill = row_snapshot };
	int ret = run(s, "SELECT id, dir, sandbox, guest, created_at FROM snapshots ORDER BY created_at, id",
		      "", each_many, &m, err);

	if (!ret && m.nomem)
		ret = errmsg(err, -ENOMEM, "listing snapshots: out of memory");
	if (ret) {
		free(m.recs);
		return ret;
	}
	*out = m.recs;
	*n = m.n;
	return 0;
}

static void count_row(sqlite3_stmt *st, void *arg)
{
	*(int *)arg = sqlite3_column_int(st, 0);
}

int store_snapshot_users(struct store *s, const char *id, int *users, struct fvm_err *err)
{
	*users = 0;
	return run(s, "SELECT COUNT(*) FROM sandboxes WHERE snapshot = ? AND state != 'dead'", "t",
		   count_row, users, err, id);
}

json_t *sandbox_rec_json(const struct sandbox_rec *r)
{
	json_error_t jerr;
	json_t *meta = json_loads(r->metadata[0] ? r->metadata : "{}", 0, &jerr);

	return json_pack("{s:s, s:s, s:i, s:s, s:s?, s:s?, s:s, s:I, s:i, s:o, s:f, s:o?, s:s?}",
			 "id", r->id, "state", r->state, "pid", r->pid, "socket", r->socket,
			 "parent", r->parent[0] ? r->parent : NULL, "snapshot",
			 r->snapshot[0] ? r->snapshot : NULL, "guest", r->guest, "mem_mib",
			 (json_int_t)r->mem_mib, "vcpus", r->vcpus, "metadata",
			 meta ? meta : json_object(), "created_at", r->created_at, "expires_at",
			 r->expires_at > 0 ? json_real(r->expires_at) : NULL, "end_reason",
			 r->end_reason[0] ? r->end_reason : NULL);
}

json_t *snapshot_rec_json(const struct snapshot_rec *r)
{
	return json_pack("{s:s, s:s, s:s, s:s, s:f}", "id", r->id, "dir", r->dir, "sandbox",
			 r->sandbox, "guest", r->guest, "created_at", r->created_at);
}
