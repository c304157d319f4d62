/* Monotonic time and deadlines: the one clock every timeout in forkvm is measured on. */
#ifndef FORKVM_UTIL_CLOCK_H
#define FORKVM_UTIL_CLOCK_H

#include <stdint.h>

#define NS_PER_MS 1000000ULL
#define NS_PER_S 1000000000ULL

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t monotonic_ns(void);
/* The monotonic time ms milliseconds from now (a negative ms counts as 0). */
uint64_t deadline_after_ms(int64_t ms);
/* Whole milliseconds left until deadline_ns, 0 once it has passed; capped to INT32_MAX so the
 * result fits poll(2)'s timeout. */
int deadline_ms_left(uint64_t deadline_ns);

#endif
