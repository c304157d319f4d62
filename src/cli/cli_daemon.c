/*
 * The CLI's HTTP client for forkvmd (cli_daemon.h). libcurl is opened with dlopen the first
 * time a command talks to a daemon: the forkvm binary is also every VMM (`forkvm run`, and
 * each restored or branched child is an exec of it), and linking libcurl would load its ~18
 * libraries (TLS, Kerberos, LDAP, ...) into every one of them, about 1.7 ms more per start.
 */
#include <curl/curl.h>
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "cli/cli.h"
#include "cli/cli_daemon.h"
#include "cli/cli_vm.h"
#include "daemon/daemon.h"
#include "daemon/store.h"
#include "util/errmsg.h"
#include "util/fileio.h"

#define HEALTHZ_TIMEOUT_MS 2000
#define LOOKUP_TIMEOUT_MS 30000
#define CONNECT_TIMEOUT_MS 5000
/* Above the daemon's largest answer (a file: 8 MiB) with room for long sandbox lists. */
#define ANSWER_MAX (64u << 20)
#define TOKEN_FILE_MAX 4096

/* ------------------------------------------------------------------ libcurl, loaded */

static struct {
	bool tried, ok;
	char why[512];
	CURLcode (*global_init)(long flags);
	void (*global_cleanup)(void);
	CURL *(*easy_init)(void);
	CURLcode (*easy_setopt)(CURL *h, CURLoption opt, ...);
	CURLcode (*easy_perform)(CURL *h);
	CURLcode (*easy_getinfo)(CURL *h, CURLINFO info, ...);
	void (*easy_cleanup)(CURL *h);
	const char *(*easy_strerror)(CURLcode code);
	char *(*easy_escape)(CURL *h, const char *text, int len);
	void (*free)(void *p);
	struct curl_slist *(*slist_append)(struct curl_slist *list, const char *text);
	void (*slist_free_all)(struct curl_slist *list);
} cu;

static void curl_cleanup_at_exit(void)
{
	cu.global_cleanup();
}

/* Open libcurl and initialize it, once; -ENOENT (with its reason) when it cannot be used. */
static int curl_load(struct fvm_err *err)
{
	const struct {
		const char *name;
		void **slot;
	} syms[] = {
		{ "curl_global_init", (void **)&cu.global_init },
		{ "curl_global_cleanup", (void **)&cu.global_cleanup },
		{ "curl_easy_init", (void **)&cu.easy_init },
		{ "curl_easy_setopt", (void **)&cu.easy_setopt },
		{ "curl_easy_perform", (void **)&cu.easy_perform },
		{ "curl_easy_getinfo", (void **)&cu.easy_getinfo },
		{ "curl_easy_cleanup", (void **)&cu.easy_cleanup },
		{ "curl_easy_strerror", (void **)&cu.easy_strerror },
		{ "curl_easy_escape", (void **)&cu.easy_escape },
		{ "curl_free", (void **)&cu.free },
		{ "curl_slist_append", (void **)&cu.slist_append },
		{ "curl_slist_free_all", (void **)&cu.slist_free_all },
	};
	void *lib;

	if (cu.tried)
		return cu.ok ? 0 : errmsg(err, -ENOENT, "%s", cu.why);
	cu.tried = true;
	lib = dlopen("libcurl.so.4", RTLD_NOW | RTLD_LOCAL);
	if (!lib) {
		snprintf(cu.why, sizeof(cu.why), "talking to the daemon needs libcurl "
			 "(libcurl4 on Debian): %s", dlerror());
		return errmsg(err, -ENOENT, "%s", cu.why);
	}
	for (size_t i = 0; i < sizeof(syms) / sizeof(syms[0]); i++) {
		*syms[i].slot = dlsym(lib, syms[i].name);
		if (!*syms[i].slot) {
			snprintf(cu.why, sizeof(cu.why), "libcurl.so.4 lacks %s", syms[i].name);
			return errmsg(err, -ENOENT, "%s", cu.why);
		}
	}
	CURLcode rc = cu.global_init(CURL_GLOBAL_DEFAULT);
	if (rc != CURLE_OK) {
		snprintf(cu.why, sizeof(cu.why), "initializing libcurl: %s", cu.easy_strerror(rc));
		return errmsg(err, -EIO, "%s", cu.why);
	}
	atexit(curl_cleanup_at_exit);
	cu.ok = true;
	return 0;
}

/* ------------------------------------------------------------------ where the daemon is */

static struct {
	bool resolved;		/* where is set */
	bool disabled;		/* --no-daemon */
	bool is_url;
	char where[PATH_MAX];	/* socket path, or base URL without a trailing '/' */
	int running;		/* -1: not asked yet */
	bool token_read;
	char token[TOKEN_FILE_MAX];
} ep = { .running = -1 };

static bool is_url(const char *s)
{
	return strncmp(s, "http://", 7) == 0 || strncmp(s, "https://", 8) == 0;
}

int cli_daemon_set(const char *where, struct fvm_err *err)
{
	size_t n;

	ep.resolved = true;
	ep.running = -1;
	if (!where) {
		ep.disabled = true;
		ep.where[0] = '\0';
		return 0;
	}
	ep.disabled = false;
	ep.is_url = is_url(where);
	n = strlen(where);
	if (n == 0)
		return errmsg(err, -EINVAL, "the daemon's socket path or URL is empty");
	if (!ep.is_url && n >= sizeof(((struct sockaddr_un *)0)->sun_path))
		return errmsg(err, -ENAMETOOLONG, "the daemon socket %s is longer than a "
			      "Unix socket address holds (%zu bytes)", where,
			      sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
	if (n >= sizeof(ep.where))
		return errmsg(err, -ENAMETOOLONG, "the daemon's address is longer than %zu "
			      "bytes", sizeof(ep.where) - 1);
	memcpy(ep.where, where, n + 1);
	while (ep.is_url && n > 0 && ep.where[n - 1] == '/')
		ep.where[--n] = '\0';
	return 0;
}

/* The default place unless --daemon or --no-daemon said otherwise; false when unusable. */
static bool endpoint(void)
{
	const char *url = getenv("FORKVM_DAEMON_URL"), *sock = getenv("FORKVM_DAEMON_SOCKET");
	struct fvm_err err = FVM_ERR_INIT;

	if (!ep.resolved) {
		const char *where = url && *url ? url : sock && *sock ? sock : DAEMON_DEFAULT_SOCKET;

		if (url && *url && !is_url(url)) {
			fprintf(stderr, "forkvm: FORKVM_DAEMON_URL '%s' is not an http:// or https:// "
				"URL; not using a daemon\n", url);
			where = NULL;
		}
		if (cli_daemon_set(where, &err) < 0) {
			fprintf(stderr, "forkvm: %s; not using a daemon\n", err_text(&err));
			cli_daemon_set(NULL, NULL);
		}
	}
	return !ep.disabled;
}

const char *cli_daemon_where(void)
{
	endpoint();
	return ep.where;
}

/* The bearer token for a URL: $FORKVM_DAEMON_TOKEN_FILE's first line, else $FORKVM_DAEMON_TOKEN. */
static int token(const char **out, struct fvm_err *err)
{
	const char *file = getenv("FORKVM_DAEMON_TOKEN_FILE"), *value = getenv("FORKVM_DAEMON_TOKEN");
	uint8_t *data = NULL;
	struct fvm_err why = FVM_ERR_INIT;
	size_t len = 0;
	int ret = 0;

	*out = NULL;
	if (!ep.is_url)
		return 0;
	if (!ep.token_read && file && *file) {
		ret = file_read(file, TOKEN_FILE_MAX - 1, 0, &data, &len, &why);
		if (ret < 0)
			return errmsg(err, ret, "reading the daemon token: %s", err_text(&why));
		len = strcspn((char *)data, "\r\n");
		while (len > 0 && (data[len - 1] == ' ' || data[len - 1] == '\t'))
			len--;
		memcpy(ep.token, data, len);
		ep.token[len] = '\0';
		free(data);
		if (!len)
			return errmsg(err, -EINVAL, "the daemon token file %s is empty", file);
	} else if (!ep.token_read && value && *value) {
		if (snprintf(ep.token, sizeof(ep.token), "%s", value) >= (int)sizeof(ep.token))
			return errmsg(err, -EINVAL, "FORKVM_DAEMON_TOKEN is longer than %zu "
				      "bytes", sizeof(ep.token) - 1);
	}
	ep.token_read = true;
	*out = ep.token[0] ? ep.token : NULL;
	return 0;
}

/* ------------------------------------------------------------------ one request */

struct http_req {
	const char *method, *path;
	const void *body;	/* NULL: no body */
	size_t body_len;
	const char *content_type;
	long timeout_ms;	/* 0: none (the daemon bounds its own operations) */
	/* an NDJSON answer: each line goes to on_line as it arrives (error answers do not) */
	cli_daemon_line_fn on_line;
	void *line_arg;
	int line_ret;		/* what on_line returned when it stopped the transfer */
	CURL *curl;
	/* the answer */
	long status;
	uint8_t *out;
	size_t out_len, out_cap;
	bool too_big;
};

/* Hand every complete line buffered in r to on_line; keep the rest. false: stop. */
static bool pass_lines(struct http_req *r)
{
	uint8_t *nl;

	while ((nl = memchr(r->out, '\n', r->out_len))) {
		size_t n = (size_t)(nl - r->out);
		json_t *line = n ? json_loadb((const char *)r->out, n, JSON_ALLOW_NUL, NULL) : NULL;

		if (n && !line)
			r->line_ret = -EPROTO;
		else if (line)
			r->line_ret = r->on_line(r->line_arg, line);
		json_decref(line);
		memmove(r->out, nl + 1, r->out_len - n - 1);
		r->out_len -= n + 1;
		r->out[r->out_len] = '\0';
		if (r->line_ret)
			return false;
	}
	return true;
}

static size_t on_data(char *data, size_t size, size_t n, void *arg)
{
	struct http_req *r = arg;
	size_t len = size * n;
	long status = 0;

	if (r->on_line && !r->status && cu.easy_getinfo(r->curl, CURLINFO_RESPONSE_CODE,
							&status) == CURLE_OK && status < 400)
		r->status = status; /* a streamed answer: lines, not a buffered body */
	if (len > ANSWER_MAX - r->out_len) {
		r->too_big = true;
		return 0;
	}
	if (r->out_len + len + 1 > r->out_cap) {
		size_t cap = r->out_cap ? r->out_cap : 4096;
		while (cap < r->out_len + len + 1)
			cap *= 2;
		uint8_t *grown = realloc(r->out, cap);
		if (!grown)
			return 0;
		r->out = grown;
		r->out_cap = cap;
	}
	memcpy(r->out + r->out_len, data, len);
	r->out_len += len;
	r->out[r->out_len] = '\0';
	if (r->on_line && r->status && !pass_lines(r))
		return 0;
	return len;
}

/* -errno for an HTTP error status. */
static int status_errno(long status)
{
	switch (status) {
	case 400: return -EINVAL;
	case 401: return -EACCES;
	case 404: return -ENOENT;
	case 405: return -EOPNOTSUPP;
	case 409: return -EBUSY;
	case 413: return -EFBIG;
	case 422: return -EREMOTEIO;
	case 504: return -ETIMEDOUT;
	default: return status >= 500 ? -EIO : -EPROTO;
	}
}

/* Send r and read its answer (any status); -errno only when no answer came. */
static int http_do(struct http_req *r, struct fvm_err *err)
{
	char url[PATH_MAX + 256], auth[TOKEN_FILE_MAX + 32], ctype[128], curl_err[CURL_ERROR_SIZE] = "";
	struct curl_slist *headers = NULL, *h;
	const char *bearer = NULL;
	CURL *c = NULL;
	CURLcode rc = CURLE_OK;
	int ret;

	r->status = 0;
	r->out_len = 0;
	r->too_big = false;
	if (!endpoint())
		return errmsg(err, -ENOTCONN, "no daemon is used (--no-daemon)");
	ret = curl_load(err);
	if (ret < 0)
		return ret;
	ret = token(&bearer, err);
	if (ret < 0)
		return ret;
	if (snprintf(url, sizeof(url), "%s%s", ep.is_url ? ep.where : "http://localhost",
		     r->path) >= (int)sizeof(url))
		return errmsg(err, -ENAMETOOLONG, "daemon %s: %s %s: the URL is too long",
			      ep.where, r->method, r->path);
	/* No "Expect: 100-continue" wait before a body. */
	headers = cu.slist_append(NULL, "Expect:");
	if (headers && r->body) {
		snprintf(ctype, sizeof(ctype), "Content-Type: %s", r->content_type);
		h = cu.slist_append(headers, ctype);
		headers = h ? h : headers;
		ret = h ? 0 : -ENOMEM;
	}
	if (headers && bearer && ret == 0) {
		snprintf(auth, sizeof(auth), "Authorization: Bearer %s", bearer);
		h = cu.slist_append(headers, auth);
		headers = h ? h : headers;
		ret = h ? 0 : -ENOMEM;
	}
	c = headers && ret == 0 ? cu.easy_init() : NULL;
	r->curl = c;
	if (!c) {
		ret = errmsg(err, -ENOMEM, "daemon %s: %s %s: setting up the request: out of "
			     "memory", ep.where, r->method, r->path);
		goto out;
	}
	/* Every option is checked; the first one that fails ends the chain. */
	rc = cu.easy_setopt(c, CURLOPT_URL, url);
	if (rc == CURLE_OK && !ep.is_url)
		rc = cu.easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, ep.where);
	if (rc == CURLE_OK)
		rc = cu.easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	if (rc == CURLE_OK)
		rc = cu.easy_setopt(c, CURLOPT_ERRORBUFFER, curl_err);
	if (rc == CURLE_OK)
		rc = cu.easy_setopt(c, CURLOPT_HTTPHEADER, headers);
	if (rc == CURLE_OK)
		rc = cu.easy_setopt(c, CURLOPT_CUSTOMREQUEST, r->method);
	if (rc == CURLE_OK && r->body)
		rc = cu.easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
	if (rc == CURLE_OK && r->body)
		rc = cu.easy_setopt(c, CURLOPT_POSTFIELDS, r->body);
	if (rc == CURLE_OK && !r->body && strcmp(r->method, "GET") && strcmp(r->method, "DELETE"))
		rc = cu.easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)0);
	if (rc == CURLE_OK && !r->body && strcmp(r->method, "GET") && strcmp(r->method, "DELETE"))
		rc = cu.easy_setopt(c, CURLOPT_POSTFIELDS, "");
	if (rc == CURLE_OK)
		rc = cu.easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
	if (rc == CURLE_OK)
		rc = cu.easy_setopt(c, CURLOPT_WRITEDATA, r);
	if (rc == CURLE_OK)
		rc = cu.easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS,
				    r->timeout_ms && r->timeout_ms < CONNECT_TIMEOUT_MS
					    ? r->timeout_ms : (long)CONNECT_TIMEOUT_MS);
	if (rc == CURLE_OK)
		rc = cu.easy_setopt(c, CURLOPT_TIMEOUT_MS, r->timeout_ms);
	if (rc == CURLE_OK && getenv("FORKVM_DAEMON_CA") && *getenv("FORKVM_DAEMON_CA"))
		rc = cu.easy_setopt(c, CURLOPT_CAINFO, getenv("FORKVM_DAEMON_CA"));
	if (rc != CURLE_OK) {
		ret = errmsg(err, -EINVAL, "daemon %s: %s %s: setting up libcurl: %s",
			     ep.where, r->method, r->path, cu.easy_strerror(rc));
		goto out;
	}
	rc = cu.easy_perform(c);
	if (rc == CURLE_OK)
		rc = cu.easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
	if (rc == CURLE_WRITE_ERROR && r->line_ret) {
		ret = r->line_ret == -EPROTO
			? errmsg(err, -EPROTO, "daemon %s: %s %s: a streamed line is not JSON",
				 ep.where, r->method, r->path)
			: r->line_ret; /* on_line's own error, already in its words */
	} else if (rc != CURLE_OK) {
		ret = rc == CURLE_COULDNT_CONNECT ? -ECONNREFUSED
		      : rc == CURLE_OPERATION_TIMEDOUT ? -ETIMEDOUT : -EIO;
		if (r->too_big)
			errmsg(err, -EFBIG, "daemon %s: %s %s: the answer is larger than %u "
			       "MiB", ep.where, r->method, r->path, ANSWER_MAX >> 20);
		else
			errmsg(err, ret, "daemon %s: %s %s: %s%s%s", ep.where, r->method,
			       r->path, cu.easy_strerror(rc), curl_err[0] ? ": " : "", curl_err);
		ret = r->too_big ? -EFBIG : ret;
	}
out:
	if (c)
		cu.easy_cleanup(c);
	if (headers)
		cu.slist_free_all(headers);
	return ret;
}

/* An error answer as -errno and "daemon W: METHOD PATH: STATUS CODE: MESSAGE". */
static int answer_error(const struct http_req *r, struct fvm_err *err)
{
	json_t *doc = r->out ? json_loadb((const char *)r->out, r->out_len, 0, NULL) : NULL;
	json_t *e = json_object_get(doc, "error");
	const char *code = json_string_value(json_object_get(e, "code"));
	const char *msg = json_string_value(json_object_get(e, "message"));
	int ret = status_errno(r->status);

	if (code)
		errmsg(err, ret, "daemon %s: %s %s: %ld %s: %s", ep.where, r->method,
		       r->path, r->status, code, msg ? msg : "");
	else
		errmsg(err, ret, "daemon %s: %s %s: HTTP %ld: %.200s", ep.where, r->method,
		       r->path, r->status, r->out ? (const char *)r->out : "(no body)");
	json_decref(doc);
	return ret;
}

int cli_daemon_call_raw(const char *method, const char *path, const void *data, size_t len,
			uint8_t **out, size_t *out_len, struct fvm_err *err)
{
	struct http_req r = { .method = method, .path = path, .body = data, .body_len = len,
			      .content_type = "application/octet-stream" };
	int ret = http_do(&r, err);

	if (ret == 0 && r.status >= 400)
		ret = answer_error(&r, err);
	if (ret == 0 && !r.out)
		r.out = calloc(1, 1);
	if (ret == 0 && !r.out)
		ret = errmsg(err, -ENOMEM, "daemon %s: %s %s: out of memory", ep.where,
			     method, path);
	if (ret == 0) {
		*out = r.out;
		*out_len = r.out_len;
		return 0;
	}
	free(r.out);
	return ret;
}

/* A JSON request with a bound on the whole exchange (0: none). */
static int call_json(const char *method, const char *path, json_t *body, json_t **reply,
		     long timeout_ms, struct fvm_err *err)
{
	struct http_req r = { .method = method, .path = path, .content_type = "application/json",
			      .timeout_ms = timeout_ms };
	char *text = NULL;
	json_error_t jerr;
	int ret = 0;

	*reply = NULL;
	if (body) {
		text = json_dumps(body, JSON_COMPACT);
		if (!text)
			return errmsg(err, -EINVAL, "daemon %s: %s %s: the body cannot be "
				      "encoded as JSON (not UTF-8?)", cli_daemon_where(), method,
				      path);
		r.body = text;
		r.body_len = strlen(text);
	}
	ret = http_do(&r, err);
	if (ret == 0 && r.status >= 400)
		ret = answer_error(&r, err);
	if (ret == 0) {
		*reply = r.out ? json_loadb((const char *)r.out, r.out_len, JSON_ALLOW_NUL, &jerr) : NULL;
		if (!*reply)
			ret = errmsg(err, -EPROTO, "daemon %s: %s %s: the answer is not JSON: "
				     "%s", ep.where, method, path, r.out ? jerr.text : "empty");
	}
	free(r.out);
	free(text);
	return ret;
}

int cli_daemon_call(const char *method, const char *path, json_t *body, json_t **reply,
		    struct fvm_err *err)
{
	return call_json(method, path, body, reply, 0, err);
}

int cli_daemon_stream(const char *method, const char *path, json_t *body,
		      cli_daemon_line_fn on_line, void *arg, struct fvm_err *err)
{
	struct http_req r = { .method = method, .path = path, .content_type = "application/json",
			      .on_line = on_line, .line_arg = arg };
	char *text = json_dumps(body, JSON_COMPACT);
	int ret;

	if (!text)
		return errmsg(err, -EINVAL, "daemon %s: %s %s: the body cannot be encoded "
			      "as JSON (not UTF-8?)", cli_daemon_where(), method, path);
	r.body = text;
	r.body_len = strlen(text);
	ret = http_do(&r, err);
	if (ret == 0 && r.status >= 400)
		ret = answer_error(&r, err);
	if (ret == 0 && r.out_len)
		ret = errmsg(err, -EPROTO, "daemon %s: %s %s: the stream ended inside a line",
			     ep.where, method, path);
	free(r.out);
	free(text);
	return ret;
}

char *cli_daemon_escape(const char *text, struct fvm_err *err)
{
	char *curl_text, *out;

	if (curl_load(err) < 0)
		return NULL;
	curl_text = cu.easy_escape(NULL, text, (int)strlen(text));
	out = curl_text ? strdup(curl_text) : NULL;
	if (curl_text)
		cu.free(curl_text);
	if (!out)
		errmsg(err, -ENOMEM, "escaping '%s' for a URL: out of memory", text);
	return out;
}

bool cli_daemon_running(void)
{
	struct stat sb;
	json_t *reply = NULL;
	struct fvm_err err = { .msg = "GET /v1/healthz did not answer {\"ok\": true}" };

	if (ep.running >= 0)
		return ep.running;
	ep.running = 0;
	if (!endpoint())
		return false;
	/* No socket, no daemon: nothing is tried, so the direct path costs nothing more. */
	if (!ep.is_url && (stat(ep.where, &sb) < 0 || !S_ISSOCK(sb.st_mode)))
		return false;
	if (call_json("GET", "/v1/healthz", NULL, &reply, HEALTHZ_TIMEOUT_MS, &err) == 0 &&
	    json_is_true(json_object_get(reply, "ok")))
		ep.running = 1;
	else if (ep.is_url)
		/* A daemon someone named on purpose: say why it is not used. */
		fprintf(stderr, "forkvm: the daemon does not answer: %s\n", err_text(&err));
	json_decref(reply);
	return ep.running;
}

/* ------------------------------------------------------------------ which VM is whose */

bool cli_daemon_id_like(const char *name)
{
	size_t n = strlen(name);

	if (n <= 3 || n >= STORE_ID_MAX || strncmp(name, "sb-", 3) != 0)
		return false;
	for (size_t i = 3; i < n; i++)
		if (!((name[i] >= 'a' && name[i] <= 'z') || (name[i] >= '0' && name[i] <= '9') ||
		      name[i] == '-'))
			return false;
	return true;
}

int cli_daemon_sandbox_path(const char *id, const char *suffix, char *out, size_t len)
{
	int n = snprintf(out, len, "/v1/sandboxes/%s%s", id, suffix);

	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

/* Whether a VM named vm has a control socket in the CLI's run directory. */
static bool local_vm_exists(const char *vm)
{
	char path[PATH_MAX];
	struct stat sb;

	return cli_vm_socket(vm, path, sizeof(path)) == 0 && stat(path, &sb) == 0;
}

/* The daemon's record of vm in *rec (NULL when vm is not one of its sandboxes). */
static int sandbox_lookup(const char *vm, json_t **rec, struct fvm_err *err)
{
	char path[128];
	int ret;

	*rec = NULL;
	if (!cli_daemon_id_like(vm) || !cli_daemon_running())
		return 0;
	if (cli_daemon_sandbox_path(vm, "", path, sizeof(path)) < 0)
		return 0;
	ret = call_json("GET", path, NULL, rec, LOOKUP_TIMEOUT_MS, err);
	if (ret == -ENOENT && local_vm_exists(vm))
		return 0;
	return ret;
}

int cli_daemon_sandbox(const char *vm, bool *yes, struct fvm_err *err)
{
	json_t *rec = NULL;
	int ret = sandbox_lookup(vm, &rec, err);

	*yes = rec != NULL;
	json_decref(rec);
	return ret;
}

int cli_vm_resolve(const char *vm, char *sock, size_t len, bool *daemon_sandbox,
		   struct fvm_err *err)
{
	json_t *rec = NULL;
	const char *path;
	int ret = sandbox_lookup(vm, &rec, err);

	*daemon_sandbox = rec != NULL;
	if (ret < 0)
		return ret;
	if (rec) {
		path = json_string_value(json_object_get(rec, "socket"));
		if (!path || snprintf(sock, len, "%s", path) >= (int)len)
			ret = errmsg(err, -ENAMETOOLONG, "daemon sandbox %s: its socket path "
				     "is missing or too long", vm);
		json_decref(rec);
		return ret;
	}
	ret = cli_vm_socket(vm, sock, len);
	if (ret < 0)
		errmsg(err, ret, "bad VM name or socket path '%s'", vm);
	return ret;
}

int cli_daemon_refuse(const char *cmd, const char *option, const char *why)
{
	fprintf(stderr, "forkvm %s: %s is not available for daemon sandboxes%s%s%s\n", cmd, option,
		why ? " (" : "", why ? why : "", why ? ")" : "");
	return CLI_EXIT_USAGE;
}
