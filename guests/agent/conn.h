/* Serving one accepted client connection. */
#ifndef FORKVM_AGENT_CONN_H
#define FORKVM_AGENT_CONN_H

#include "agent.h"

#include <stdint.h>

/* Serve fd until EOF or a fatal stream error; returns the connection process's exit
 * status: 0, or AGENT_EXIT_SHUTDOWN when a --no-reboot shutdown was requested. */
int conn_serve(int fd, const struct agent_config *cfg, uint64_t agent_start_ms);

#endif
