/* Logging to stderr with a per-process prefix (the VM or command name). */
#include "util/log.h"

#include <stdarg.h>
#include <stdio.h>

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
	char line[1024];
	va_list ap;

	if (level > current_level)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	/* One fprintf per message keeps lines from concurrent threads whole. */
	fprintf(stderr, "%s: %s: %s\n", log_prefix, names[level], line);
}
