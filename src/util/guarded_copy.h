/*
 * Copying into a shared file mapping without dying of SIGBUS. A store into a page the file
 * system cannot give (tmpfs or a disk full, a file truncated under the mapping, a memory
 * error) raises SIGBUS in the storing thread, where write(2) would return an error. Between
 * guarded_copy_begin and guarded_copy_end, a SIGBUS inside guarded_copy ends that copy with
 * -EIO instead; a SIGBUS anywhere else goes to the action that was there before (by default
 * it ends the process, as without the guard).
 */
#ifndef FORKVM_UTIL_GUARDED_COPY_H
#define FORKVM_UTIL_GUARDED_COPY_H

#include <stddef.h>

/* Install the SIGBUS handler (counted: nested and concurrent users share one). 0 or -errno. */
int guarded_copy_begin(void);

/* memcpy; 0, or -EIO when a SIGBUS stopped it (dst is then partly written). */
int guarded_copy(void *dst, const void *src, size_t len);

/* Put back the action guarded_copy_begin found, once its last user is done. */
void guarded_copy_end(void);

#endif
