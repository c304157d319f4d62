/* Agent logging to stderr (the guest console) and reply error formatting. */
#include "log.h"
#include "agent.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static bool verbose;

void agent_log_set_verbose(bool on)
{
	verbose = on;
}

bool agent_log_verbose(void)
{
	return verbose;
}

void agent_log(const char *level, const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	/* One write per message keeps lines from concurrent connection processes whole. */
	fprintf(stderr, "forkvm-agent[%d]: %s: %s\n", (int)getpid(), level, line);
}

int log_errno(int err, const char *fmt, ...)
{
	char what[768];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	agent_log("error", "%s: %s", what, strerror(-err));
	return err;
}

