/* Test tool: run the clone fix-up (agent_sync: reseed + clock, with retries) on a vsock socket. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "agent/agent_client.h"
#include "agent/agent_sync.h"
#include "util/clock.h"
#include "util/errmsg.h"

int main(int argc, char **argv)
{
	struct agent_sync_stats st;
	long timeout_ms = 10000;
	char *end;
	struct fvm_err err = FVM_ERR_INIT;

	if (argc != 3 && argc != 4) {
		fprintf(stderr, "usage: agent_notify VSOCK_SOCKET PORT [TIMEOUT_MS]\n");
		return 2;
	}
	if (argc == 4) {
		errno = 0;
		timeout_ms = strtol(argv[3], &end, 10);
		if (errno || *end || timeout_ms < 0) {
			fprintf(stderr, "agent_notify: bad TIMEOUT_MS '%s'\n", argv[3]);
			return 2;
		}
	}
	if (agent_sync(argv[1], atoi(argv[2]), timeout_ms ? deadline_after_ms(timeout_ms) : 0,
		       -1, &st, &err) < 0) {
		fprintf(stderr, "agent_notify: %s\n", err.msg);
		return 1;
	}
	/* One line for the tests: how many connections it took and what the agent reported. */
	printf("attempts %d elapsed_ms %.1f crng_reseeded %d clock_step_ns %lld\n", st.attempts,
	       (double)st.elapsed_ns / 1e6, st.crng_reseeded, (long long)st.clock_step_ns);
	return 0;
}
