/* Starting threads: one place for the attributes every forkvm thread gets. */
#ifndef FORKVM_UTIL_THREAD_H
#define FORKVM_UTIL_THREAD_H

#include <pthread.h>

/* glibc's default on Linux (RLIMIT_STACK 8 MiB): a stack cached by an earlier thread, or
 * inherited from the process a cow child forked from, fits and is reused. */
#define THREAD_STACK_SIZE (8u << 20)

/*
 * pthread_create with explicit attributes (stack size above). With NULL attributes glibc
 * reads its process-wide defaults under a lock in libc's data, a page each cow child would
 * copy for its first thread (docs/PERFORMANCE.md). Returns 0 or a positive error number, as
 * pthread_create does.
 */
int thread_start(pthread_t *thread, void *(*fn)(void *), void *arg);

#endif
