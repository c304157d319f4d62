/* Per-VM control socket: newline-delimited JSON requests and replies over a Unix socket. */
#ifndef FORKVM_CTL_H
#define FORKVM_CTL_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "util/errmsg.h"

struct vm;
struct ctl_server;
struct ctl_request;

#define CTL_MAX_LINE 65536

enum ctl_field_type { CTL_U64, CTL_STR, CTL_BOOL };

struct ctl_field {
	const char *name;
	enum ctl_field_type type;
	bool required;
	uint64_t max; /* CTL_U64: largest accepted value; 0 = INT64_MAX (what JSON carries) */
};

#define CTL_MAX_FIELDS 12

/* A handler returns a reply object, or NULL after it arranged an asynchronous reply. */
typedef json_t *(*ctl_handler_fn)(struct ctl_server *srv, struct ctl_request *req);

struct ctl_command {
	const char *name;
	const char *summary;
	ctl_handler_fn handler;
	struct ctl_field fields[CTL_MAX_FIELDS];
};

struct ctl_request {
	const struct ctl_command *cmd;
	json_t *root;	  /* the parsed request, owned */
	uint64_t client;  /* id of the connection that sent it */
};

extern const struct ctl_command ctl_commands[];
const struct ctl_command *ctl_command_find(const char *name);

/* Parse and validate one request line; on error returns -EINVAL and a message in err. */
int ctl_request_parse(const char *line, size_t len, struct ctl_request *req, struct fvm_err *err);
void ctl_request_release(struct ctl_request *req);
uint64_t ctl_req_u64(const struct ctl_request *req, const char *name, uint64_t dflt);
const char *ctl_req_str(const struct ctl_request *req, const char *name, const char *dflt);
bool ctl_req_bool(const struct ctl_request *req, const char *name, bool dflt);

json_t *ctl_reply_ok(void);
json_t *ctl_reply_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Serve the control socket at path until the VM ends. ready_fd (if >= 0) gets one byte and
 * is closed once the socket accepts connections. Returns the VM's end reason. */
int ctl_serve(struct vm *vm, const char *path, int ready_fd);

/* Finish an asynchronous request from any thread (takes ownership of reply). */
void ctl_complete(struct ctl_server *srv, uint64_t client, json_t *reply);
struct vm *ctl_vm(struct ctl_server *srv);


#endif
