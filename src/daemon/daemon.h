/*
 * forkvmd: the sandbox service (docs/DAEMON.md). A REST API over a Unix socket (and, when
 * asked, TCP with a bearer token) that creates, lists, pauses, branches, snapshots and ends
 * VMs, runs commands in them and moves files, with its state in SQLite so that VMs outlive
 * the daemon and a restarted daemon adopts them. The VMs are `forkvm run` processes of their
 * own; the daemon holds no guest state.
 */
#ifndef FORKVM_DAEMON_H
#define FORKVM_DAEMON_H

#include <stdbool.h>
#include <stddef.h>

#include "util/errmsg.h"

/* Where the daemon keeps its state and listens unless told otherwise. */
#define DAEMON_DEFAULT_STATE_DIR "/var/lib/forkvm"
#define DAEMON_DEFAULT_SOCKET DAEMON_DEFAULT_STATE_DIR "/api.sock"

struct daemon_opts {
	const char *state_dir;	/* state.db, audit.log, run/, snapshots/, daemon.lock */
	const char *socket;	/* the API's Unix socket (default STATE_DIR/api.sock) */
	const char *listen;	/* "HOST:PORT" for TCP, or NULL */
	const char *token_file;	/* bearer token for TCP (required with listen) */
	const char *tls_cert;	/* PEM certificate (chain) for TCP: HTTPS; with tls_key */
	const char *tls_key;	/* PEM private key, readable by its owner only */
	const char *forkvm;	/* the forkvm binary VMMs run (default: this one) */
	bool no_jail;		/* development only: VMMs unconfined (--no-jail, FORKVM_JAIL=0) */
	int stop_fd;		/* readable: shut down (a signalfd) */
	int ready_fd;		/* -1, or written one byte once the API answers */
};

/* Run until stop_fd is readable. Returns 0, or -errno with err naming the step. */
int daemon_run(const struct daemon_opts *o, struct fvm_err *err);

#endif
