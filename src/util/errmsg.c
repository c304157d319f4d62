/* The one error type (util/errmsg.h): set where a failure happens, printed once at an edge. */
#include "util/errmsg.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static void vformat(struct fvm_err *err, const char *fmt, va_list ap)
{
	size_t n;

	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	n = strlen(err->msg);
	while (n && err->msg[n - 1] == '\n')
		err->msg[--n] = '\0';
}

int errmsg(struct fvm_err *err, int ret, const char *fmt, ...)
{
	va_list ap;

	if (err) {
		va_start(ap, fmt);
		vformat(err, fmt, ap);
		va_end(ap);
		if (ret < 0)
			err->errnum = -ret;
	}
	return ret;
}

void errf(struct fvm_err *err, const char *fmt, ...)
{
	va_list ap;

	if (!err)
		return;
	va_start(ap, fmt);
	vformat(err, fmt, ap);
	va_end(ap);
}

void errappend(struct fvm_err *err, const char *fmt, ...)
{
	va_list ap;
	size_t at;

	if (!err)
		return;
	at = strlen(err->msg);
	if (at + 1 >= sizeof(err->msg))
		return;
	va_start(ap, fmt);
	vsnprintf(err->msg + at, sizeof(err->msg) - at, fmt, ap);
	va_end(ap);
}

void errclear(struct fvm_err *err)
{
	if (err) {
		err->errnum = 0;
		err->msg[0] = '\0';
	}
}

bool errset(const struct fvm_err *err)
{
	return err && (err->msg[0] || err->errnum);
}

const char *err_text(const struct fvm_err *err)
{
	if (!err || !err->msg[0])
		return "(no detail recorded)";
	return err->msg;
}
