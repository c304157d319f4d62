/* The request handlers: each fills an ok reply or returns -errno with a message. */
#ifndef FORKVM_AGENT_OPS_H
#define FORKVM_AGENT_OPS_H

#include "agent.h"
#include "io.h"
#include "request.h"

#include <jansson.h>
#include <stdint.h>

struct op_ctx {
	int conn_fd;		/* the client, watched for hang-up during exec */
	struct conn_in *in;	/* its input, read ahead (an exec's stdin frames come from here) */
	const struct agent_config *cfg;
	uint64_t agent_start_ms;
};

int op_ping(const struct op_ctx *ctx, json_t *reply, struct fvm_err *e);
/* exec; with x->stream its output goes out as event frames carrying id (docs/AGENT.md). */
int op_exec(const struct op_ctx *ctx, const struct exec_request *x, json_t *id, json_t *reply,
	    struct fvm_err *e);
int op_write_file(const struct write_file_request *w, json_t *reply, struct fvm_err *e);
int op_read_file(const struct read_file_request *r, json_t *reply, struct fvm_err *e);
int op_set_clock(int64_t time_ns, json_t *reply, struct fvm_err *e);
int op_reseed_entropy(const struct reseed_request *r, json_t *reply, struct fvm_err *e);
/* eval: code in the context's warm interpreter (eval_ctx.h); eval_close ends one. */
int op_eval(const struct op_ctx *ctx, const struct eval_request *x, json_t *reply,
	    struct fvm_err *e);
int op_eval_close(const struct eval_request *x, json_t *reply, struct fvm_err *e);
/* put_tree / get_tree: directories as ustar archives (util/tartree.h). */
int op_put_tree(const struct put_tree_request *t, json_t *reply, struct fvm_err *e);
int op_get_tree(const struct get_tree_request *t, json_t *reply, struct fvm_err *e);

/* Re-address the guest's NIC (docs/AGENT.md, net_config). */
int op_net_config(const struct net_config_request *x, json_t *reply, struct fvm_err *e);

/* Check that shutdown can work before the ok reply goes out (reboot(2) never returns). */
int op_shutdown_check(const struct op_ctx *ctx, bool restart, json_t *reply,
		      struct fvm_err *e);
/* After the reply: power off / reboot, or in --no-reboot mode return AGENT_EXIT_SHUTDOWN. */
int op_shutdown_finish(const struct op_ctx *ctx, bool restart);

#endif
