/*
 * The fix-up of a Linux clone (a branch child or a restored VM): its guest agent reseeds the
 * kernel RNG with fresh host bytes and sets the realtime clock to the host's. Clones of one
 * image otherwise share RNG state and carry the image's (stale) wall clock.
 */
#ifndef FORKVM_AGENT_SYNC_H
#define FORKVM_AGENT_SYNC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/errmsg.h"

/* Backoff between attempts: 20 ms, doubling, at most 500 ms (never past the deadline). */
#define AGENT_SYNC_BACKOFF_FIRST_MS 20
#define AGENT_SYNC_BACKOFF_MAX_MS 500
/* No attempt starts with less than this left before the deadline: it could only be cut short. */
#define AGENT_SYNC_MIN_TRY_MS 50
/* Time for the first attempt (connect + both requests); each later attempt gets twice more. */
#define AGENT_SYNC_ATTEMPT_FIRST_MS 5000

struct agent_sync_stats {
	int attempts;		/* connections tried (1 when the first one did it all) */
	uint64_t elapsed_ns;	/* first attempt → success or giving up */
	int64_t clock_step_ns;	/* host time − the guest's clock just before set_clock */
	bool crng_reseeded;	/* the agent reported that RNDRESEEDCRNG reseeded the CRNG */
};

/*
 * Connect to the clone's vsock socket, CONNECT `port`, and send reseed_entropy (64 bytes from
 * getrandom) and set_clock (the host's CLOCK_REALTIME, read just before sending).
 *
 * Retried until deadline_ns (CLOCK_MONOTONIC; 0: one attempt only), with the backoff above
 * (the last attempt starts AGENT_SYNC_MIN_TRY_MS before it at the latest), but only on
 * transient failures: the guest refused the port or has no listener yet ("no
 * agent listening", e.g. while its vsock driver handles the transport reset of a restore),
 * the connection was reset, or it closed before a reply. A restored guest resets every vsock
 * connection once, so the first connections may meet exactly this. Anything else fails at
 * once: no vsock socket at the path, the agent answering ok:false, a malformed reply, or a
 * guest kernel that took the entropy but did not reseed its CRNG.
 *
 * Idempotent: a step counts as done only once its reply arrived, and only steps not yet
 * done are sent again. A step whose reply was lost may have been applied already; repeating
 * it is harmless (more entropy mixed in; the clock set to the host's time of the retry).
 *
 * cancel_fd (-1: none) cancels as soon as it is readable (a signalfd). stats may be NULL.
 * Returns 0, or -errno with err saying what was tried, on which socket, how many attempts in
 * how long, and the last error.
 */
int agent_sync(const char *vsock_socket, int port, uint64_t deadline_ns, int cancel_fd,
	       struct agent_sync_stats *stats, struct fvm_err *err);

#endif
