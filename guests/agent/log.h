/* Tiny stderr logging for the agent (a separate static binary, so not core/log). */
#ifndef FORKVM_AGENT_LOG_H
#define FORKVM_AGENT_LOG_H

#include <stdbool.h>

void agent_log(const char *level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void agent_log_set_verbose(bool verbose);
bool agent_log_verbose(void);

#define log_err(...) agent_log("error", __VA_ARGS__)
#define log_warn(...) agent_log("warning", __VA_ARGS__)
#define log_info(...) agent_log("info", __VA_ARGS__)
#define log_debug(...) \
	do { \
		if (agent_log_verbose()) \
			agent_log("debug", __VA_ARGS__); \
	} while (0)

/* Log "<what>: <strerror(-err)>" and return err (a negative errno) in one step. */
int log_errno(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
