/* VMM side of the page server: handshake with a deadline, then a watcher for server loss. */
#ifndef FORKVM_UFFD_PS_CLIENT_H
#define FORKVM_UFFD_PS_CLIENT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "mem/guest_mem.h"

struct ps_client_opts {
	const char *path;	/* page-server socket */
	int timeout_ms;		/* connect + register + ack, in total */
	bool record, prefetch, allow_bad_hotpages;
	uint32_t settle_ms, record_max_ms;
	const char *name;	/* VM name for the server's status */
};

/* Called once from the watcher thread when the server's socket closes. */
typedef void (*ps_lost_fn)(void *ctx, const char *msg);

struct ps_client {
	int sock, stop_efd, uffd, mem_fd;
	const struct guest_mem *mem;
	char path[108];
	pthread_t thread;
	bool watching;
	ps_lost_fn lost;
	void *ctx;
};

/*
 * Connect (retrying while no server listens), send the register message with the uffd,
 * and wait for the ack — all within o->timeout_ms, and cancelled early by SIGTERM, SIGINT
 * or SIGHUP (which the caller keeps blocked). 0 once the server acked ok.
 */
int ps_client_register(struct ps_client *c, const struct ps_client_opts *o,
		       const struct guest_mem *mem, const char *snapdir, const char *memory_path);
/* Start the watcher: on server loss it calls lost(), then serves faults from the memory file. */
int ps_client_watch(struct ps_client *c, ps_lost_fn lost, void *ctx);
void ps_client_close(struct ps_client *c);

#endif
