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
 * Parse and validate one payload. A payload with more than AGENT_MAX_JSON_VALUES values is
 * refused (-E2BIG) before any of it is parsed. Returns 0 or -errno with e->msg set. Even on
 * failure req->id is set when the payload was a JSON object carrying one, so the error
 * reply can echo it; always call agent_request_free afterwards.
 */
int agent_request_parse(const uint8_t *payload, size_t len, struct agent_request *req,
			struct agent_err *e);
void agent_request_free(struct agent_request *req);

const char *agent_op_name(enum agent_op op);

/* Field helpers shared by the per-op validators (request*.c). */
int req_string(json_t *obj, const char *key, bool required, const char **out,
	       struct agent_err *e);
int req_bool(json_t *obj, const char *key, bool dflt, bool *out, struct agent_err *e);
int req_uint(json_t *obj, const char *key, uint64_t dflt, uint64_t max, uint64_t *out,
	     struct agent_err *e);
int req_base64(json_t *obj, const char *key, bool required, size_t max, uint8_t **out,
	       size_t *out_len, struct agent_err *e);

int req_parse_exec(json_t *root, struct exec_request *x, struct agent_err *e);
void req_free_exec(struct exec_request *x);

#endif
