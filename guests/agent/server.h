/* The accept loop: one process per connection, so one bad client cannot hurt others. */
#ifndef FORKVM_AGENT_SERVER_H
#define FORKVM_AGENT_SERVER_H

#include "agent.h"

/* Serve listen_fd until SIGTERM/SIGINT or a --no-reboot shutdown. Returns 0 or -errno. */
int server_run(int listen_fd, const struct agent_config *cfg);

#endif
