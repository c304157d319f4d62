/* `forkvm run --restore --backing uffd`: options, circuit breakers, and the page-server link. */
#ifndef FORKVM_UFFD_RESTORE_H
#define FORKVM_UFFD_RESTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mem/guest_mem.h"
#include "util/errmsg.h"

struct vm;

struct uffd_restore_opts {
	const char *pageserver;	/* socket; default $FORKVM_RUN_DIR/pageserver.sock */
	char default_path[512];
	int timeout_ms;		/* handshake deadline, default 30000 */
	bool record, no_prefetch, no_uffd, allow_bad_hotpages;
	uint32_t settle_ms, record_max_ms;
};

/* getopt_long values of the uffd options; run_opts.c forwards them to uffd_restore_opt(). */
enum {
	UFFD_OPT_PAGESERVER = 1000, UFFD_OPT_TIMEOUT, UFFD_OPT_RECORD, UFFD_OPT_NO_PREFETCH,
	UFFD_OPT_NO_UFFD, UFFD_OPT_IGNORE_BAD, UFFD_OPT_SETTLE, UFFD_OPT_RECORD_MAX,
};
#define UFFD_RESTORE_OPTIONS                                                        \
	{ "pageserver", required_argument, NULL, UFFD_OPT_PAGESERVER },             \
	{ "pageserver-timeout", required_argument, NULL, UFFD_OPT_TIMEOUT },        \
	{ "record", no_argument, NULL, UFFD_OPT_RECORD },                           \
	{ "no-prefetch", no_argument, NULL, UFFD_OPT_NO_PREFETCH },                 \
	{ "no-uffd", no_argument, NULL, UFFD_OPT_NO_UFFD },                         \
	{ "ignore-bad-hotpages", no_argument, NULL, UFFD_OPT_IGNORE_BAD },          \
	{ "record-settle", required_argument, NULL, UFFD_OPT_SETTLE },              \
	{ "record-max", required_argument, NULL, UFFD_OPT_RECORD_MAX }

#define UFFD_RESTORE_USAGE                                                                    \
	"  --backing uffd       (with --restore) guest RAM served lazily by a page server\n"     \
	"  --pageserver PATH    page-server socket (default RUN_DIR/pageserver.sock)\n"         \
	"  --pageserver-timeout MS  connect + register + ack deadline (default 30000)\n"       \
	"  --record             record hot pages + access log into the snapshot until settled\n" \
	"  --record-settle MS   settle window of the recorder (default 1000)\n"                  \
	"  --record-max MS      stop recording after this at the latest (default 60000)\n"      \
	"  --no-prefetch        no prefetch, no recording (also FORKVM_PREFETCH=0)\n"            \
	"  --no-uffd            restore with the file backing instead (also FORKVM_UFFD=0)\n"   \
	"  --ignore-bad-hotpages  a damaged hot-page list or access log means no prefetch\n"

/* Defaults; the socket is RUN_DIR/pageserver.sock. */
void uffd_restore_defaults(struct uffd_restore_opts *u, const char *run_dir);
/* 0, or -EINVAL with a message for a bad value. */
int uffd_restore_opt(struct uffd_restore_opts *u, int opt, const char *arg, struct fvm_err *err);
/* Apply FORKVM_UFFD / FORKVM_PREFETCH and the flags: may turn uffd into file backing. */
void uffd_restore_breakers(struct uffd_restore_opts *u, enum guest_mem_backing *backing);

/* Handshake with the page server; the vCPUs may start only after this returned 0. */
int uffd_restore_attach(struct vm *vm, const struct uffd_restore_opts *u, const char *snapdir,
			const char *name);
/* After vm_start: stop the VM if the page server goes away. */
int uffd_restore_watch(struct vm *vm);
void uffd_restore_detach(void);

#endif
