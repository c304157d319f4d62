/*
 * The agent's side of the eval driver protocol (guests/agent/eval_driver.py): frames as on
 * the client connection (frame.h), JSON except the two raw output frames. Pure, so the unit
 * tests check it without an interpreter.
 *
 *   driver -> agent, once per connection: hello {"pid": N, "python": "3.x.y"}
 *   agent -> driver: request {"code": "...", "max_output": N}
 *   driver -> agent: meta {"result": str|null, "result_truncated": bool,
 *                          "error": null|{"name","value","traceback"},
 *                          "stdout_truncated": bool, "stderr_truncated": bool},
 *                    then the stdout bytes, then the stderr bytes (one frame each)
 */
#ifndef FORKVM_AGENT_EVAL_PROTO_H
#define FORKVM_AGENT_EVAL_PROTO_H

#include "agent.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct eval_hello {
	pid_t pid;
	char python[32];	/* the interpreter's version */
};

struct eval_meta {
	json_t *root;		/* owns result and error */
	json_t *result;		/* a string, or NULL */
	bool result_truncated;
	json_t *error;		/* an object of three strings, or NULL */
	bool stdout_truncated, stderr_truncated;
};

/* The request frame (header included) for code; -ENOMEM, -EMSGSIZE past AGENT_MAX_FRAME. */
int evalp_request(const char *code, size_t code_len, size_t max_output, uint8_t **out,
		  size_t *out_len);

/* Check a hello payload; -EPROTO with e->msg naming what is wrong. */
int evalp_parse_hello(const uint8_t *payload, size_t len, struct eval_hello *h,
		      struct fvm_err *e);

/* Check a meta payload; -EPROTO with e->msg. Free with evalp_meta_free (also on failure). */
int evalp_parse_meta(const uint8_t *payload, size_t len, struct eval_meta *m,
		     struct fvm_err *e);
void evalp_meta_free(struct eval_meta *m);

/* {"name": name, "value": value, "traceback": traceback} for errors the agent reports
 * itself (timeout, lost interpreter); NULL on allocation failure. */
json_t *evalp_error(const char *name, const char *value, const char *traceback);

#endif
