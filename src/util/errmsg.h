/* Error messages into a caller's buffer, for parsers that report one clear reason. */
#ifndef FORKVM_ERRMSG_H
#define FORKVM_ERRMSG_H

#include <stddef.h>

/* Format into err (if errlen > 0) and return ret, so `return errmsg(...)` reads as one step. */
int errmsg(char *err, size_t errlen, int ret, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

#endif
