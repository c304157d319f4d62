/* Start N VMM processes restored from one snapshot, in parallel, all or nothing. */
#ifndef FORKVM_RESTORE_MANY_H
#define FORKVM_RESTORE_MANY_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct restored_child {
	char name[64];
	char socket[512];
	pid_t pid;
};

struct restore_many_opts {
	const char *dir;	/* snapshot directory */
	const char *backend;	/* file | memfd | hugetlb | anon */
	int count;
	const char *prefix;	/* children are PREFIX-0 .. PREFIX-(count-1) */
	const char *run_dir;	/* sockets, logs and consoles go here */
	bool paused;
	int timeout_ms;		/* for every child to become ready */
	const char *extra[16];	/* more `forkvm run` arguments (uffd: --pageserver PATH, ...) */
	int nextra;
};

/*
 * Spawn `count` `forkvm run --restore` processes at once (each in its own session, so they
 * outlive the caller) and wait until every control socket is ready. If child k fails, every
 * child is killed and reaped, their sockets and logs removed, and err names k and the cause.
 */
int restore_many(const struct restore_many_opts *o, struct restored_child *children, char *err,
		 size_t errlen);

/* The last line a VMM child logged to SOCKET.log: why it failed. */
void vmm_child_reason(const char *socket, char *buf, size_t len);

#endif
