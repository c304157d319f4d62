/*
 * forkvmd's HTTP side (docs/DAEMON.md, "API"): libmicrohttpd with one thread per connection,
 * so a slow or stuck client and a long branch hold only their own thread; a table of routes;
 * bodies bounded before they are read; every error a JSON body {error: {code, message}}
 * written here and only here; the audit log. daemon_run assembles and runs it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "daemon/daemon_impl.h"
#include "util/clock.h"
#include "util/errmsg.h"
#include "util/fileio.h"
#include "util/log.h"
#include "util/unix_sock.h"

#define JSON_BODY_MAX (1u << 20)
#define FILE_BODY_MAX (8u << 20)
#define CONNECTION_TIMEOUT_S 60
#define CONNECTION_LIMIT 512

struct req {
	struct daemon *d;
	struct MHD_Connection *c;
	const char *id;		/* the {id} segment, when the route has one */
	json_t *body;		/* parsed JSON body, for routes that take one */
	const uint8_t *raw;	/* raw body (file uploads) */
	size_t raw_len;
	/* the answer: JSON, or raw bytes */
	json_t *out;
	uint8_t *out_raw;
	size_t out_raw_len;
	struct sb_stream *stream; /* or a streamed exec's NDJSON lines */
	const char *content_type;
	int status;
	struct api_err e;
};

typedef int (*handler_fn)(struct req *q);

static int fail_from(struct req *q, json_t *res)
{
	if (!res)
		return -1;
	q->out = res;
	return 0;
}

static int h_healthz(struct req *q)
{
	q->out = json_pack("{s:b}", "ok", 1);
	return 0;
}

static int h_metrics(struct req *q)
{
	char *text = NULL;

	if (metrics_render(q->d, &text, &q->e))
		return -1;
	q->out_raw = (uint8_t *)text;
	q->out_raw_len = strlen(text);
	q->content_type = "text/plain; version=0.0.4";
	return 0;
}

static int h_create(struct req *q)
{
	q->status = 201;
	return fail_from(q, sb_create(q->d, q->body, &q->e));
}

static const char *query(struct req *q, const char *key)
{
	return MHD_lookup_connection_value(q->c, MHD_GET_ARGUMENT_KIND, key);
}

/* ?metadata.KEY=VALUE arguments into {KEY: VALUE}. */
static enum MHD_Result collect_metadata(void *cls, enum MHD_ValueKind kind, const char *key,
					const char *value)
{
	(void)kind;
	if (strncmp(key, "metadata.", 9) == 0 && key[9])
		json_object_set_new(cls, key + 9, json_string(value ? value : ""));
	return MHD_YES;
}

static int h_list(struct req *q)
{
	json_t *meta = json_object();

	MHD_get_connection_values(q->c, MHD_GET_ARGUMENT_KIND, collect_metadata, meta);
	int ret = fail_from(q, sb_list(q->d, query(q, "state"), query(q, "parent"), meta, &q->e));
	json_decref(meta);
	return ret;
}

static int h_get(struct req *q)
{
	return fail_from(q, sb_get(q->d, q->id, &q->e));
}

static int h_delete(struct req *q)
{
	return fail_from(q, sb_delete(q->d, q->id, "deleted through the API", &q->e));
}

static int h_pause(struct req *q)
{
	return fail_from(q, sb_pause(q->d, q->id, true, &q->e));
}

static int h_resume(struct req *q)
{
	return fail_from(q, sb_pause(q->d, q->id, false, &q->e));
}

static int h_branch(struct req *q)
{
	q->status = 201;
	return fail_from(q, sb_branch(q->d, q->id, q->body, &q->e));
}

static int h_exec(struct req *q)
{
	if (json_is_true(json_object_get(q->body, "stream"))) {
		q->content_type = "application/x-ndjson";
		return sb_exec_stream_open(q->d, q->id, q->body, &q->stream, &q->e);
	}
	return fail_from(q, sb_exec(q->d, q->id, q->body, &q->e));
}

static int h_exec_stdin(struct req *q)
{
	const char *eof = query(q, "eof");

	if (eof && strcmp(eof, "true") && strcmp(eof, "false"))
		return api_fail(&q->e, 400, "bad_request", "query parameter 'eof' must be true or "
				"false");
	return fail_from(q, sb_exec_stdin(q->id, q->raw, q->raw_len, eof && !strcmp(eof, "true"),
					  &q->e));
}

static int h_eval(struct req *q)
{
	return fail_from(q, sb_eval(q->d, q->id, q->body, &q->e));
}

static int h_snapshot(struct req *q)
{
	q->status = 201;
	return fail_from(q, sb_snapshot(q->d, q->id, &q->e));
}

static const char *file_path(struct req *q)
{
	const char *p = query(q, "path");

	if (!p || p[0] != '/')
		api_fail(&q->e, 400, "bad_request", "query parameter 'path' must be an absolute path");
	return p && p[0] == '/' ? p : NULL;
}

static int h_file_put(struct req *q)
{
	const char *path = file_path(q);

	return path ? fail_from(q, sb_file_write(q->d, q->id, path, q->raw, q->raw_len, &q->e))
		    : -1;
}

static int h_file_get(struct req *q)
{
	const char *path = file_path(q);

	if (!path || sb_file_read(q->d, q->id, path, &q->out_raw, &q->out_raw_len, &q->e))
		return -1;
	q->content_type = "application/octet-stream";
	return 0;
}

static int h_snap_list(struct req *q)
{
	return fail_from(q, snap_list(q->d, &q->e));
}

static int h_snap_get(struct req *q)
{
	return fail_from(q, snap_get(q->d, q->id, &q->e));
}

static int h_snap_verify(struct req *q)
{
	return fail_from(q, snap_verify(q->d, q->id, &q->e));
}

static int h_snap_delete(struct req *q)
{
	const char *force = query(q, "force");

	return fail_from(q, snap_delete(q->d, q->id, force && strcmp(force, "true") == 0, &q->e));
}

static int h_image_list(struct req *q)
{
	return fail_from(q, api_image_list(q->d, &q->e));
}

static int h_image_build(struct req *q)
{
	q->status = 201;
	return fail_from(q, api_image_build(q->d, q->body, &q->e));
}

static int h_image_delete(struct req *q)
{
	const char *force = query(q, "force");

	return fail_from(q, api_image_delete(q->d, q->id, force && strcmp(force, "true") == 0,
					     &q->e));
}

enum body_kind { BODY_NONE, BODY_JSON, BODY_RAW };

static const struct route {
	const char *method, *path, *op;
	enum body_kind body;
	handler_fn fn;
} routes[] = {
	{ "GET", "/v1/healthz", "healthz", BODY_NONE, h_healthz },
	{ "GET", "/v1/metrics", "metrics", BODY_NONE, h_metrics },
	{ "POST", "/v1/sandboxes", "create", BODY_JSON, h_create },
	{ "GET", "/v1/sandboxes", "list", BODY_NONE, h_list },
	{ "GET", "/v1/sandboxes/{id}", "get", BODY_NONE, h_get },
	{ "DELETE", "/v1/sandboxes/{id}", "delete", BODY_NONE, h_delete },
	{ "POST", "/v1/sandboxes/{id}/pause", "pause", BODY_NONE, h_pause },
	{ "POST", "/v1/sandboxes/{id}/resume", "resume", BODY_NONE, h_resume },
	{ "POST", "/v1/sandboxes/{id}/branch", "branch", BODY_JSON, h_branch },
	{ "POST", "/v1/sandboxes/{id}/exec", "exec", BODY_JSON, h_exec },
	{ "POST", "/v1/execs/{id}/stdin", "exec_stdin", BODY_RAW, h_exec_stdin },
	{ "POST", "/v1/sandboxes/{id}/eval", "eval", BODY_JSON, h_eval },
	{ "POST", "/v1/sandboxes/{id}/snapshot", "snapshot", BODY_NONE, h_snapshot },
	{ "PUT", "/v1/sandboxes/{id}/files", "file_write", BODY_RAW, h_file_put },
	{ "GET", "/v1/sandboxes/{id}/files", "file_read", BODY_NONE, h_file_get },
	{ "GET", "/v1/snapshots", "snapshot_list", BODY_NONE, h_snap_list },
	{ "GET", "/v1/snapshots/{id}", "snapshot_get", BODY_NONE, h_snap_get },
	{ "DELETE", "/v1/snapshots/{id}", "snapshot_delete", BODY_NONE, h_snap_delete },
	{ "POST", "/v1/snapshots/{id}/verify", "snapshot_verify", BODY_NONE, h_snap_verify },
	{ "GET", "/v1/images", "image_list", BODY_NONE, h_image_list },
	{ "POST", "/v1/images", "image_build", BODY_JSON, h_image_build },
	{ "DELETE", "/v1/images/{id}", "image_delete", BODY_NONE, h_image_delete },
};
#define NROUTES ((int)(sizeof(routes) / sizeof(routes[0])))

/* An id segment: what new_id makes, and the children the VMM names PREFIX-k. */
static bool id_ok(const char *s, size_t len)
{
	if (len == 0 || len >= STORE_ID_MAX)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
			return false;
	return true;
}

/* Whether url matches pattern; the {id} segment is copied to id. */
static bool path_match(const char *pattern, const char *url, char *id, size_t idcap)
{
	const char *p = pattern, *u = url;

	while (*p && *u) {
		if (strncmp(p, "{id}", 4) == 0) {
			size_t n = strcspn(u, "/");
			if (!id_ok(u, n) || n >= idcap)
				return false;
			memcpy(id, u, n);
			id[n] = '\0';
			p += 4;
			u += n;
			continue;
		}
		if (*p != *u)
			return false;
		p++;
		u++;
	}
	return !*p && (!*u || strcmp(u, "/") == 0);
}

/* The route for (method, url): *found_path tells a wrong method (405) from no route (404). */
static int route_find(const char *method, const char *url, char *id, size_t idcap,
		      bool *found_path)
{
	*found_path = false;
	for (int i = 0; i < NROUTES; i++) {
		if (!path_match(routes[i].path, url, id, idcap))
			continue;
		*found_path = true;
		if (strcmp(routes[i].method, method) == 0)
			return i;
	}
	return -1;
}

/* Per-request state kept between libmicrohttpd's calls. */
struct conn {
	int route;
	char id[STORE_ID_MAX];
	uint8_t *body;
	size_t len, max;
	bool too_big;
	uint64_t t0;
};

struct listener {
	struct daemon *d;
	bool tcp;
	char token[256];
};

static enum MHD_Result send_reply(struct MHD_Connection *c, int status, const char *type,
				  void *data, size_t len)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(len, data, MHD_RESPMEM_MUST_FREE);
	enum MHD_Result ret;

	if (!r) {
		free(data);
		return MHD_NO;
	}
	MHD_add_response_header(r, "Content-Type", type);
	ret = MHD_queue_response(c, (unsigned)status, r);
	MHD_destroy_response(r);
	return ret;
}

/* libmicrohttpd asks for the next bytes of a streamed answer; blocking is allowed with a
 * thread per connection. */
static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	ssize_t n;

	(void)pos;
	do
		n = read(sb_stream_fd(cls), buf, max);
	while (n < 0 && errno == EINTR);
	if (n == 0)
		return MHD_CONTENT_READER_END_OF_STREAM;
	return n < 0 ? MHD_CONTENT_READER_END_WITH_ERROR : n;
}

static void stream_done(void *cls)
{
	sb_stream_close(cls);
}

/* A chunked answer of unknown length read from a stream (which it then owns). */
static enum MHD_Result send_stream(struct MHD_Connection *c, const char *type,
				   struct sb_stream *s)
{
	struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024,
								   stream_read, s, stream_done);
	enum MHD_Result ret;

	if (!r) {
		sb_stream_close(s);
		return MHD_NO;
	}
	MHD_add_response_header(r, "Content-Type", type);
	ret = MHD_queue_response(c, 200, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result send_error(struct MHD_Connection *c, const struct api_err *e)
{
	json_t *j = json_pack("{s:{s:s, s:s}}", "error", "code", e->code ? e->code : "internal",
			      "message", e->msg);
	char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;

	json_decref(j);
	if (!text)
		return MHD_NO;
	size_t len = strlen(text);
	text[len] = '\n'; /* json_dumps leaves room for the NUL: a newline ends the body */
	return send_reply(c, e->http ? e->http : 500, "application/json", text, len + 1);
}

static void caller_of(struct MHD_Connection *c, bool tcp, char *out, size_t cap)
{
	const union MHD_ConnectionInfo *ci;
	char host[64] = "?";

	if (!tcp) {
		snprintf(out, cap, "unix");
		return;
	}
	ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	if (ci && ci->client_addr)
		getnameinfo(ci->client_addr,
			    ci->client_addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
								     : sizeof(struct sockaddr_in),
			    host, sizeof(host), NULL, 0, NI_NUMERICHOST);
	snprintf(out, cap, "tcp:%s", host);
}

void audit(struct daemon *d, const char *caller, const char *op, const char *target, int http)
{
	struct timespec ts;

	if (d->audit_fd < 0)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	json_t *j = json_pack("{s:f, s:s, s:s, s:s?, s:i}", "time",
			      (double)ts.tv_sec + (double)ts.tv_nsec / 1e9, "caller", caller, "op", op,
			      "target", target && *target ? target : NULL, "result", http);
	char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	if (!text)
		return;
	size_t len = strlen(text);
	text[len] = '\n';
	/* One write of one line to an O_APPEND file: lines of concurrent requests never mix. */
	if (write(d->audit_fd, text, len + 1) != (ssize_t)(len + 1))
		log_warn("daemon: audit log write: %s", strerror(errno));
	free(text);
}

/* Constant time in the length of the expected token. */
static bool token_ok(const char *header, const char *token)
{
	static const char prefix[] = "Bearer ";
	size_t tlen = strlen(token), hlen, diff;

	if (!header || strncmp(header, prefix, sizeof(prefix) - 1) != 0)
		return false;
	header += sizeof(prefix) - 1;
	hlen = strlen(header);
	diff = hlen ^ tlen;
	for (size_t i = 0; i < tlen; i++)
		diff |= (unsigned char)header[i < hlen ? i : 0] ^ (unsigned char)token[i];
	return diff == 0;
}

static enum MHD_Result reject(struct listener *l, struct MHD_Connection *c, const char *method,
			      const char *url, int http, const char *code, const char *fmt, ...)
{
	struct api_err e = { .http = http, .code = code };
	char caller[80];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(e.msg, sizeof(e.msg), fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&l->d->metrics_lock);
	l->d->requests_rejected++;
	pthread_mutex_unlock(&l->d->metrics_lock);
	caller_of(c, l->tcp, caller, sizeof(caller));
	char op[160];
	snprintf(op, sizeof(op), "%s %.120s", method, url);
	audit(l->d, caller, op, NULL, http);
	return send_error(c, &e);
}

/* First call of a request: route, authenticate, bound the body. */
static enum MHD_Result begin(struct listener *l, struct MHD_Connection *c, const char *url,
			     const char *method, void **con_cls)
{
	struct conn *k = calloc(1, sizeof(*k));
	bool found_path;

	if (!k)
		return MHD_NO;
	*con_cls = k;
	k->t0 = monotonic_ns();
	k->route = -1;
	if (l->tcp && !token_ok(MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization"),
				l->token))
		return reject(l, c, method, url, 401, "unauthorized",
			      "a valid 'Authorization: Bearer TOKEN' header is required");
	k->route = route_find(method, url, k->id, sizeof(k->id), &found_path);
	if (k->route < 0)
		return reject(l, c, method, url, found_path ? 405 : 404,
			      found_path ? "method_not_allowed" : "route_not_found",
			      found_path ? "%s is not allowed on %s" : "no route %s %s", method, url);
	k->max = routes[k->route].body == BODY_RAW ? FILE_BODY_MAX
		 : routes[k->route].body == BODY_JSON ? JSON_BODY_MAX : 0;
	const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
	if (cl && strtoull(cl, NULL, 10) > k->max) {
		k->route = -1;
		return reject(l, c, method, url, 413, "too_large",
			      "the body of %s %s may hold at most %zu bytes", method, url, k->max);
	}
	return MHD_YES;
}

static enum MHD_Result finish(struct listener *l, struct MHD_Connection *c, struct conn *k,
			      const char *method, const char *url)
{
	const struct route *rt = &routes[k->route];
	struct req q = { .d = l->d, .c = c, .id = k->id, .status = 200,
			 .content_type = "application/json" };
	char caller[80];
	enum MHD_Result ret;
	int rc = 0;

	if (k->too_big) {
		rc = api_fail(&q.e, 413, "too_large", "the body of %s %s may hold at most %zu bytes",
			      method, url, k->max);
	} else if (rt->body == BODY_JSON) {
		json_error_t jerr;
		q.body = k->len ? json_loadb((const char *)k->body, k->len, JSON_REJECT_DUPLICATES,
					     &jerr)
				: json_object();
		if (!q.body)
			rc = api_fail(&q.e, 400, "bad_json", "the body is not valid JSON: %s at line %d "
				      "column %d", jerr.text, jerr.line, jerr.column);
	} else {
		q.raw = k->body ? k->body : (const uint8_t *)"";
		q.raw_len = k->len;
	}
	if (!rc)
		rc = rt->fn(&q);
	json_decref(q.body);
	double secs = (double)(monotonic_ns() - k->t0) / 1e9;
	metrics_observe(l->d, k->route, secs, rc != 0);
	caller_of(c, l->tcp, caller, sizeof(caller));
	audit(l->d, caller, rt->op, k->id[0] ? k->id : NULL, rc ? q.e.http : q.status);
	if (rc) {
		json_decref(q.out);
		free(q.out_raw);
		return send_error(c, &q.e);
	}
	if (q.stream)
		return send_stream(c, q.content_type, q.stream);
	if (q.out) {
		char *text = json_dumps(q.out, JSON_COMPACT);
		json_decref(q.out);
		if (!text)
			return MHD_NO;
		size_t len = strlen(text);
		text[len] = '\n';
		return send_reply(c, q.status, q.content_type, text, len + 1);
	}
	ret = send_reply(c, q.status, q.content_type, q.out_raw ? q.out_raw : malloc(1),
			 q.out_raw_len);
	return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
				  const char *method, const char *version, const char *upload,
				  size_t *upload_size, void **con_cls)
{
	struct listener *l = cls;
	struct conn *k = *con_cls;

	(void)version;
	if (!k)
		return begin(l, c, url, method, con_cls);
	if (k->route < 0) /* answered at once (rejected); drop whatever body follows */
		return *upload_size ? (*upload_size = 0, MHD_YES) : MHD_YES;
	if (*upload_size) {
		if (k->too_big || k->len + *upload_size > k->max) {
			k->too_big = true;
		} else {
			uint8_t *p = realloc(k->body, k->len + *upload_size);
			if (!p)
				return MHD_NO;
			memcpy(p + k->len, upload, *upload_size);
			k->body = p;
			k->len += *upload_size;
		}
		*upload_size = 0;
		return MHD_YES;
	}
	return finish(l, c, k, method, url);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
			 enum MHD_RequestTerminationCode why)
{
	struct conn *k = *con_cls;

	(void)cls;
	(void)c;
	(void)why;
	if (k) {
		free(k->body);
		free(k);
		*con_cls = NULL;
	}
}

/* One libmicrohttpd server on listen_fd; HTTPS when cert and key (PEM text) are given. */
static struct MHD_Daemon *serve(struct listener *l, int listen_fd, const char *cert,
				const char *key)
{
	unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
			 MHD_USE_ERROR_LOG;

	if (cert && key)
		return MHD_start_daemon(flags | MHD_USE_TLS, 0, NULL, NULL, on_request, l,
					MHD_OPTION_LISTEN_SOCKET, listen_fd,
					MHD_OPTION_HTTPS_MEM_CERT, cert, MHD_OPTION_HTTPS_MEM_KEY, key,
					MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)CONNECTION_TIMEOUT_S,
					MHD_OPTION_CONNECTION_LIMIT, (unsigned)CONNECTION_LIMIT,
					MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
					MHD_OPTION_END);
	return MHD_start_daemon(flags, 0, NULL, NULL, on_request, l, MHD_OPTION_LISTEN_SOCKET,
				listen_fd, MHD_OPTION_CONNECTION_TIMEOUT,
				(unsigned)CONNECTION_TIMEOUT_S, MHD_OPTION_CONNECTION_LIMIT,
				(unsigned)CONNECTION_LIMIT, MHD_OPTION_NOTIFY_COMPLETED, on_completed,
				NULL, MHD_OPTION_END);
}

/* A PEM file into a NUL-terminated buffer; a private key must be its owner's alone. */
static int read_pem(const char *path, bool secret, char **out, struct fvm_err *err)
{
	uint8_t *data = NULL;
	size_t len = 0;
	struct stat st;
	int ret = file_read(path, 1 << 20, 0, &data, &len, err);

	if (ret)
		return ret;
	if (secret && stat(path, &st) == 0 && (st.st_mode & 077)) {
		free(data);
		return errmsg(err, -EPERM,
			      "TLS key %s is readable by others (mode %o): chmod 600 it", path,
			 st.st_mode & 0777);
	}
	if (!memmem(data, len, "-----BEGIN ", 11)) {
		free(data);
		return errmsg(err, -EINVAL, "%s is not a PEM file", path);
	}
	*out = (char *)data; /* file_read puts a NUL after the bytes */
	return 0;
}

/* "HOST:PORT" → a listening TCP socket (HOST may be [v6]). */
static int tcp_listen(const char *spec, struct fvm_err *err)
{
	char host[256];
	const char *colon = strrchr(spec, ':');
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV },
			*ai = NULL;
	int fd = -1, one = 1;

	if (!colon || colon == spec || (size_t)(colon - spec) >= sizeof(host) || !colon[1]) {
		return errmsg(err, -EINVAL, "--listen %s: expected HOST:PORT, e.g. 127.0.0.1:8080",
			      spec);
	}
	memcpy(host, spec, (size_t)(colon - spec));
	host[colon - spec] = '\0';
	char *h = host;
	if (h[0] == '[' && h[strlen(h) - 1] == ']') {
		h[strlen(h) - 1] = '\0';
		h++;
	}
	int rc = getaddrinfo(h, colon + 1, &hints, &ai);
	if (rc) {
		return errmsg(err, -EINVAL, "--listen %s: %s", spec, gai_strerror(rc));
	}
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 128) < 0) {
		int e = errno;
		errf(err, "--listen %s: %s", spec, strerror(e));
		if (fd >= 0)
			close(fd);
		freeaddrinfo(ai);
		return -e;
	}
	freeaddrinfo(ai);
	return fd;
}

/* The bearer token: a file only its owner can read, at least 16 bytes, trailing space cut. */
static int read_token(const char *path, char *out, size_t cap, struct fvm_err *err)
{
	uint8_t *data = NULL;
	size_t len = 0;
	struct stat st;
	int ret = file_read(path, cap - 1, 0, &data, &len, err);

	if (ret)
		return ret;
	if (stat(path, &st) == 0 && (st.st_mode & 077)) {
		free(data);
		return errmsg(err, -EPERM,
			      "token file %s is readable by others (mode %o): chmod 600 it",
			 path, st.st_mode & 0777);
	}
	while (len && (data[len - 1] == '\n' || data[len - 1] == '\r' || data[len - 1] == ' '))
		len--;
	if (len < 16 || memchr(data, '\0', len)) {
		free(data);
		return errmsg(err, -EINVAL,
			      "token file %s: the token must be at least 16 bytes of text",
			 path);
	}
	memcpy(out, data, len);
	out[len] = '\0';
	free(data);
	return 0;
}

/* One daemon per state directory: an flock held for the daemon's life, with its pid inside. */
static int take_lock(struct daemon *d, struct fvm_err *err)
{
	char path[PATH_MAX], pid[32] = "";

	snprintf(path, sizeof(path), "%s/daemon.lock", d->o.state_dir);
	d->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (d->lock_fd < 0) {
		return errmsg(err, -errno, "opening %s: %s", path, strerror(errno));
	}
	if (flock(d->lock_fd, LOCK_EX | LOCK_NB) < 0) {
		int e = errno;
		ssize_t n = pread(d->lock_fd, pid, sizeof(pid) - 1, 0);
		pid[n > 0 ? n : 0] = '\0';
		pid[strcspn(pid, "\n")] = '\0';
		errf(err, "another forkvm daemon (pid %s) already uses the state directory %s",
			 pid[0] ? pid : "?", d->o.state_dir);
		return e == EWOULDBLOCK ? -EBUSY : -e;
	}
	int n = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
	if (ftruncate(d->lock_fd, 0) < 0 || pwrite(d->lock_fd, pid, (size_t)n, 0) != n)
		log_warn("daemon: writing the pid into %s: %s", path, strerror(errno));
	return 0;
}

static int setup(struct daemon *d, struct fvm_err *err)
{
	char path[PATH_MAX];
	int ret;

	if (strlen(d->o.state_dir) > DAEMON_STATE_DIR_MAX) {
		return errmsg(err, -ENAMETOOLONG,
			      "the state directory %s is longer than %d bytes: VM socket paths "
			 "under it would not fit a Unix socket address", d->o.state_dir,
			 DAEMON_STATE_DIR_MAX);
	}
	if ((ret = mkdir_p(d->o.state_dir, 0700))) {
		return errmsg(err, ret, "creating the state directory %s: %s", d->o.state_dir,
			 strerror(-ret));
	}
	if (!d->o.no_jail && geteuid() != 0) {
		return errmsg(err, -EPERM, "every VM of the daemon runs jailed, and making a jail "
			      "needs root (this is uid %u): run it as root, or with --no-jail for "
			      "development", (unsigned)geteuid());
	}
	if (d->o.no_jail)
		log_warn("daemon: JAIL DISABLED (--no-jail / FORKVM_JAIL=0): development only; every "
			 "VM runs as root with all capabilities, outside any namespace");
	if ((ret = take_lock(d, err)))
		return ret;
	snprintf(d->run_dir, sizeof(d->run_dir), "%s/run", d->o.state_dir);
	snprintf(d->snap_dir, sizeof(d->snap_dir), "%s/snapshots", d->o.state_dir);
	if ((ret = mkdir_p(d->run_dir, 0700)) || (ret = mkdir_p(d->snap_dir, 0700))) {
		return errmsg(err, ret, "creating %s and %s: %s", d->run_dir, d->snap_dir,
			 strerror(-ret));
	}
	if (d->o.forkvm) {
		snprintf(d->exe, sizeof(d->exe), "%s", d->o.forkvm);
	} else {
		ssize_t n = readlink("/proc/self/exe", d->exe, sizeof(d->exe) - 1);
		if (n <= 0) {
			return errmsg(err, -errno, "finding this forkvm binary: %s",
				      strerror(errno));
		}
		d->exe[n] = '\0';
	}
	if (access(d->exe, X_OK) < 0) {
		return errmsg(err, -errno, "the forkvm binary %s: %s", d->exe, strerror(errno));
	}
	if ((ret = store_open(d->o.state_dir, &d->store, err)))
		return ret;
	snprintf(path, sizeof(path), "%s/audit.log", d->o.state_dir);
	d->audit_fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (d->audit_fd < 0) {
		return errmsg(err, -errno, "opening the audit log %s: %s", path, strerror(errno));
	}
	d->stop_fd = eventfd(0, EFD_CLOEXEC);
	if (d->stop_fd < 0) {
		return errmsg(err, -errno, "an eventfd for the reaper: %s", strerror(errno));
	}
	d->nops = NROUTES;
	d->ops = calloc((size_t)NROUTES, sizeof(*d->ops));
	if (!d->ops) {
		return errmsg(err, -ENOMEM, "out of memory");
	}
	for (int i = 0; i < NROUTES; i++)
		d->ops[i].name = routes[i].op;
	return 0;
}

int daemon_run(const struct daemon_opts *o, struct fvm_err *err)
{
	struct daemon d = { .o = *o, .audit_fd = -1, .lock_fd = -1, .stop_fd = -1 };
	struct listener unix_l = { .d = &d }, tcp_l = { .d = &d, .tcp = true };
	struct MHD_Daemon *mu = NULL, *mt = NULL;
	char sock[PATH_MAX], *cert = NULL, *key = NULL;
	int ufd = -1, tfd = -1, ret, dead = 0;

	pthread_mutex_init(&d.metrics_lock, NULL);
	pthread_mutex_init(&d.family_lock, NULL);
	pthread_mutex_init(&d.family_sync_lock, NULL);
	if ((ret = setup(&d, err)))
		goto out;
	if (o->listen && !o->token_file) {
		errf(err, "--listen needs --token-file: TCP clients must authenticate");
		ret = -EINVAL;
		goto out;
	}
	if (o->listen && (ret = read_token(o->token_file, tcp_l.token, sizeof(tcp_l.token), err)))
		goto out;
	if (!o->tls_cert != !o->tls_key || (o->tls_cert && !o->listen)) {
		errf(err, "--tls-cert and --tls-key go together, with --listen");
		ret = -EINVAL;
		goto out;
	}
	if (o->tls_cert && !MHD_is_feature_supported(MHD_FEATURE_TLS)) {
		errf(err, "this libmicrohttpd was built without TLS");
		ret = -ENOTSUP;
		goto out;
	}
	if (o->tls_cert && ((ret = read_pem(o->tls_cert, false, &cert, err)) ||
			    (ret = read_pem(o->tls_key, true, &key, err))))
		goto out;
	int adopted = sb_reconcile(&d, &dead);
	if (adopted < 0) {
		errf(err, "reconciling the recorded sandboxes failed (see the log)");
		ret = adopted;
		goto out;
	}
	log_info("daemon: state %s: %d sandbox(es) adopted, %d found dead", o->state_dir, adopted,
		 dead);
	if ((ret = reaper_start(&d))) {
		errf(err, "starting the reaper thread: %s", strerror(-ret));
		goto out;
	}
	snprintf(sock, sizeof(sock), "%s", o->socket ? o->socket : "");
	if (!o->socket)
		snprintf(sock, sizeof(sock), "%s/api.sock", o->state_dir);
	ufd = unix_listen(sock, 128, 0, "API socket");
	if (ufd < 0) {
		ret = ufd;
		errf(err, "listening on %s: %s", sock, strerror(-ret));
		goto out;
	}
	mu = serve(&unix_l, ufd, NULL, NULL);
	if (!mu) {
		ret = -EIO;
		errf(err, "starting the HTTP server on %s failed", sock);
		goto out;
	}
	if (o->listen) {
		tfd = tcp_listen(o->listen, err);
		if (tfd < 0) {
			ret = tfd;
			goto out;
		}
		mt = serve(&tcp_l, tfd, cert, key);
		if (!mt) {
			ret = -EIO;
			errf(err, "starting the HTTP%s server on %s failed%s", cert ? "S" : "",
				 o->listen, cert ? " (is the key the certificate's?)" : "");
			goto out;
		}
	}
	log_info("daemon: API on %s%s%s (forkvm %s)", sock,
		 !o->listen ? "" : cert ? " and https://" : " and http://", o->listen ? o->listen : "",
		 d.exe);
	if (o->ready_fd >= 0 && write(o->ready_fd, "r", 1) != 1)
		log_warn("daemon: ready fd: %s", strerror(errno));
	for (;;) {
		struct pollfd p = { .fd = o->stop_fd, .events = POLLIN };
		if (poll(&p, 1, -1) > 0)
			break;
		if (errno != EINTR) {
			ret = -errno;
			errf(err, "waiting for the stop signal: %s", strerror(errno));
			goto out;
		}
	}
	log_info("daemon: stopping (the VMs keep running; a restarted daemon adopts them)");
	ret = 0;
out:
	if (mu)
		MHD_stop_daemon(mu);
	if (mt)
		MHD_stop_daemon(mt);
	if (ufd >= 0) {
		close(ufd);
		unlink(sock);
	}
	if (tfd >= 0)
		close(tfd);
	reaper_stop(&d);
	store_close(d.store);
	if (d.audit_fd >= 0)
		close(d.audit_fd);
	if (d.stop_fd >= 0)
		close(d.stop_fd);
	if (d.lock_fd >= 0)
		close(d.lock_fd);
	free(d.ops);
	free(cert);
	if (key) {
		explicit_bzero(key, strlen(key));
		free(key);
	}
	pthread_mutex_destroy(&d.metrics_lock);
	pthread_mutex_destroy(&d.family_lock);
	pthread_mutex_destroy(&d.family_sync_lock);
	return ret;
}
