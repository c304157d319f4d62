/* Monotonic time and deadlines. */
#include "util/clock.h"

#include <time.h>

uint64_t monotonic_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

uint64_t deadline_after_ms(int64_t ms)
{
	return monotonic_ns() + (uint64_t)(ms > 0 ? ms : 0) * NS_PER_MS;
}

int deadline_ms_left(uint64_t deadline_ns)
{
	uint64_t now = monotonic_ns(), left;

	if (now >= deadline_ns)
		return 0;
	/* Rounded up: 0.4 ms left is a 1 ms poll, not a busy loop of 0 ms polls. */
	left = (deadline_ns - now + NS_PER_MS - 1) / NS_PER_MS;
	return left > INT32_MAX ? INT32_MAX : (int)left;
}
