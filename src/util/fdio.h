/*
 * Plain file-descriptor helpers with no dependency beyond libc, so the guest agent links
 * this file too (mk/extra-agent.mk's AGENT_CORE_SRC).
 */
#ifndef FORKVM_FDIO_H
#define FORKVM_FDIO_H

#include <stddef.h>
#include <stdint.h>

/* Write all len bytes, retrying EINTR and short writes. Returns 0 or -errno. */
int fd_write_all(int fd, const void *buf, size_t len);
/*
 * Whole-buffer positioned I/O, retrying EINTR and short transfers: 0, or -errno (-EIO for an
 * early end of file on read, -ENOSPC for a write that makes no progress).
 */
int fd_pread_full(int fd, void *buf, size_t len, uint64_t off);
int fd_pwrite_full(int fd, const void *buf, size_t len, uint64_t off);

#endif
