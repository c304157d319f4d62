/* Request validation: one JSON frame payload in, a typed and checked request out. */
#ifndef FORKVM_AGENT_REQUEST_H
#define FORKVM_AGENT_REQUEST_H

#include "agent.h"

#include <jansson.h>
#include <stdint.h>
#include <sys/types.h>

enum agent_op {
	OP_PING,
	OP_EXEC,
	OP_WRITE_FILE,
	OP_READ_FILE,
	OP_SET_CLOCK,
	OP_RESEED_ENTROPY,
	OP_SHUTDOWN,
	OP_EVAL,
	OP_EVAL_CLOSE,
	OP_PUT_TREE,
	OP_GET_TREE,
	OP_STDIN,		/* input for the running exec with stdin_open; never answered */
	OP_NET_CONFIG,
};

struct exec_request {
	char **argv;		/* NULL-terminated, strings borrowed from the JSON */
	char **env;		/* NULL-terminated "K=V" (owned), or NULL for none */
	bool clear_env;		/* start from an empty environment, not the agent's */
	const char *cwd;	/* NULL: the agent's cwd */
	uint8_t *stdin_data;	/* owned; NULL with stdin_len 0 for no input */
	size_t stdin_len;
	uint64_t timeout_ms;	/* 0: no timeout */
	size_t max_output;	/* per stream */
	bool force_base64;	/* output_encoding "base64" */
	bool stream;		/* output as event frames while it runs, not in the reply */
	bool stdin_open;	/* stdin stays open for "stdin" frames until one has eof */
};

/* net_config: strings checked by the op (net.c); mtu 0: unchanged. */
struct net_config_request {
	const char *interface, *address, *gateway;	/* borrowed; interface/gateway may be NULL */
	uint64_t mtu;
};

/* One "stdin" frame: bytes for the running command, and/or the end of its input. */
struct stdin_request {
	uint8_t *data;		/* owned; NULL with len 0 for none */
	size_t len;
	bool eof;
};

struct write_file_request {
	const char *path;
	uint8_t *data;		/* owned */
	size_t len;
	mode_t mode;
	bool atomic;
};

struct read_file_request {
	const char *path;
	size_t max_bytes;
};

struct reseed_request {
	uint8_t *data;		/* owned */
	size_t len;
	int entropy_bits;
};

/* eval and eval_close (which uses only context). */
struct eval_request {
	const char *code;	/* borrowed, code_len bytes of UTF-8 */
	size_t code_len;
	const char *context;	/* checked with eval_context_name_ok; default "default" */
	uint64_t timeout_ms;	/* 0: none */
	size_t max_output;	/* captured stdout / stderr bytes, each */
	bool force_base64;	/* output_encoding "base64" */
};

struct put_tree_request {
	const char *path;	/* target directory, created with its parents */
	uint8_t *data;		/* owned: the ustar archive */
	size_t len;
};

struct get_tree_request {
	const char *path;	/* a directory or a regular file */
	size_t max_bytes;	/* archive bound, at most AGENT_MAX_TREE */
};

struct agent_request {
	enum agent_op op;
	json_t *root;		/* owns every borrowed string */
	json_t *id;		/* borrowed from root, echoed into the reply; may be NULL */
	union {
		struct exec_request exec;
		struct write_file_request write_file;
		struct read_file_request read_file;
		int64_t set_clock_ns;
		struct reseed_request reseed;
		bool shutdown_reboot;
		struct eval_request eval;
		struct put_tree_request put_tree;
		struct get_tree_request get_tree;
		struct stdin_request stdin_frame;
		struct net_config_request net;
	};
};

/*
 * Most JSON values (arrays, objects, members, elements) one request may hold. The parsed
 * tree costs far more than its text (a 2-byte "0," is a ~100-byte node), so a 16 MiB frame
 * of tiny values would take hundreds of MiB; the largest legitimate request (exec with
 * AGENT_MAX_ARGV arguments and AGENT_MAX_ENV variables) has about 12,300.
 */
#define AGENT_MAX_JSON_VALUES 65536u

/*
 * Count the JSON values a payload would parse into, from its structural characters outside
 * strings: one per '[' or '{', one more per ',' or ':'. Stops counting past max; escapes
 * inside strings are skipped so a quoted "[" or \" does not count.
 */
size_t agent_json_values(const uint8_t *p, size_t len, size_t max);

/*
 * Parse and validate one payload. A payload with more than AGENT_MAX_JSON_VALUES values is
 * refused (-E2BIG) before any of it is parsed. Returns 0 or -errno with e->msg set. Even on
 * failure req->id is set when the payload was a JSON object carrying one, so the error
 * reply can echo it; always call agent_request_free afterwards.
 */
int agent_request_parse(const uint8_t *payload, size_t len, struct agent_request *req,
			struct fvm_err *e);
void agent_request_free(struct agent_request *req);

const char *agent_op_name(enum agent_op op);

/* Field helpers shared by the per-op validators (request*.c). */
int req_string(json_t *obj, const char *key, bool required, const char **out,
	       struct fvm_err *e);
int req_bool(json_t *obj, const char *key, bool dflt, bool *out, struct fvm_err *e);
int req_uint(json_t *obj, const char *key, uint64_t dflt, uint64_t max, uint64_t *out,
	     struct fvm_err *e);
int req_base64(json_t *obj, const char *key, bool required, size_t max, uint8_t **out,
	       size_t *out_len, struct fvm_err *e);
/*
 * The output limits exec and eval share: timeout_ms (0: none), max_output (clamped to
 * AGENT_MAX_OUTPUT, not refused) and output_encoding ("auto" or "base64").
 */
int req_limits(json_t *root, uint64_t *timeout_ms, size_t *max_output, bool *force_base64,
	       struct fvm_err *e);

int req_parse_exec(json_t *root, struct exec_request *x, struct fvm_err *e);
void req_free_exec(struct exec_request *x);

/* eval (with_code) and eval_close (without): lang, code, context, limits. */
int req_parse_eval(json_t *root, bool with_code, struct eval_request *x, struct fvm_err *e);
/* A context name: 1..AGENT_MAX_CONTEXT_NAME of [A-Za-z0-9_.-], not starting with '.'. */
bool eval_context_name_ok(const char *name);

int req_parse_put_tree(json_t *root, struct put_tree_request *t, struct fvm_err *e);
int req_parse_get_tree(json_t *root, struct get_tree_request *t, struct fvm_err *e);

#endif
