/* Blocking socket I/O helpers for one connection. */
#ifndef FORKVM_AGENT_IO_H
#define FORKVM_AGENT_IO_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* Encode msg as one frame and send it. Returns 0 or -errno. */
int io_send_json(int fd, const json_t *msg);

/* Send msg, then drop it (convenience for reply paths). Returns io_send_json's result. */
int io_send_reply(int fd, json_t *msg);

/* Monotonic milliseconds, for uptime and durations. */
uint64_t io_now_ms(void);

#endif
