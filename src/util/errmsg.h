/* The one error type: what failed, named by its step and object, and the errno.
 *
 * Every fallible function below the edges takes a `struct fvm_err *` and, when it fails,
 * fills it where the failure happens (`return errmsg(err, -ENOENT, "open %s: ...", path)`);
 * a caller that adds context formats its own message around an inner one (`errmsg(err, ret,
 * "restoring %s: %s", dir, inner.msg)`) or appends (`errappend`). The edges print it once:
 * the CLI (stderr and exit code), a control reply (`"error"`), the daemon (an HTTP answer
 * with `struct api_err`, which carries the status and stable code on top), the guest agent
 * (an error frame). A failing path that set nothing is a bug that `err_text` makes visible
 * instead of printing an empty reason. */
#ifndef FORKVM_ERRMSG_H
#define FORKVM_ERRMSG_H

#include <stdbool.h>
#include <stddef.h>

#define FVM_ERR_MSG_MAX 4096

struct fvm_err {
	int errnum;			/* positive errno of the failure; 0 when none applies */
	char msg[FVM_ERR_MSG_MAX];	/* "<step> <object>: <reason>", never ending in '\n' */
};

#define FVM_ERR_INIT { .errnum = 0, .msg = "" }

/* Format err->msg (if err) and record -ret as the errno when ret is a negative errno; return
 * ret, so `return errmsg(...)` reads as one step. */
int errmsg(struct fvm_err *err, int ret, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Format err->msg (if err), leaving the errno as it is. */
void errf(struct fvm_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Append to err->msg (bounded). */
void errappend(struct fvm_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Forget a previous failure (a retried step). */
void errclear(struct fvm_err *err);

/* True when a failure was recorded. */
bool errset(const struct fvm_err *err);

/* The message for printing at an edge: never empty, "(no detail recorded)" when a failing
 * path set nothing (a bug that should be reported, not an empty "failed: "). */
const char *err_text(const struct fvm_err *err);

#endif
