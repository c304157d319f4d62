/* Test tool: run the branch engine's agent fix-up against a vsock socket. */
#include <stdio.h>
#include <stdlib.h>

#include "fork/agent_notify.h"

int main(int argc, char **argv)
{
	char err[512];

	if (argc != 3) {
		fprintf(stderr, "usage: agent_notify VSOCK_SOCKET PORT\n");
		return 2;
	}
	if (agent_notify_branch(argv[1], atoi(argv[2]), 10000, err, sizeof(err)) < 0) {
		fprintf(stderr, "agent_notify: %s\n", err);
		return 1;
	}
	return 0;
}
