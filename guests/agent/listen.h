/* Creating the agent's listening stream socket: vsock in a guest, Unix for tests. */
#ifndef FORKVM_AGENT_LISTEN_H
#define FORKVM_AGENT_LISTEN_H

/* Bind and listen on a Unix stream socket at path (a stale socket there is replaced). */
int listen_unix(const char *path, int *out_fd);

/* Bind and listen on AF_VSOCK, any CID, the given port. */
int listen_vsock(unsigned int port, int *out_fd);

#endif
