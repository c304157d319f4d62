/* Logging to stderr with a per-process prefix (the VM or command name). */
#include "util/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static enum log_level current_level = LOG_INFO;
static char log_prefix[64] = "forkvm";

void log_set_level(enum log_level level)
{
	current_level = level;
}

void log_set_prefix(const char *prefix)
{
	snprintf(log_prefix, sizeof(log_prefix), "%s", prefix);
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	static const char *const names[] = { "error", "warning", "info", "debug" };
	char line[1024 + sizeof(log_prefix) + 16];
	size_t len;
	va_list ap;

	if (level > current_level)
		return;
	len = (size_t)snprintf(line, sizeof(line), "%s: %s: ", log_prefix, names[level]);
	va_start(ap, fmt);
	vsnprintf(line + len, sizeof(line) - len - 1, fmt, ap);
	va_end(ap);
	len += strlen(line + len);
	line[len++] = '\n';
	/*
	 * One write(2) per message keeps lines from concurrent threads whole. Not stdio: an
	 * unbuffered stream formats through an 8 KiB stack buffer and writes libc's FILE state,
	 * pages a cow child would otherwise copy for a single warning (docs/PERFORMANCE.md).
	 */
	for (size_t done = 0; done < len;) {
		ssize_t n = write(STDERR_FILENO, line + done, len - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break; /* nowhere left to report it */
		done += (size_t)n;
	}
}
