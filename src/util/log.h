/* One logging and error style for the whole VMM. */
#ifndef FORKVM_LOG_H
#define FORKVM_LOG_H

#include <errno.h>
#include <string.h>

enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };

/* Messages say what failed and on which object: "open /dev/kvm: No such file". */
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_set_level(enum log_level level);
void log_set_prefix(const char *prefix);

#define log_err(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

/* Log "<what>: <strerror(-err)>" and return err (a negative errno) in one step. */
#define log_errno(err, fmt, ...) \
	(log_err(fmt ": %s", ##__VA_ARGS__, strerror(-(err))), (err))

#endif
