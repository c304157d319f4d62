/* The last lines of a log file, quoted into an error message (why a child VMM failed). */
#ifndef FORKVM_LOG_TAIL_H
#define FORKVM_LOG_TAIL_H

#include <stddef.h>

#define LOG_TAIL_LINES 10

/*
 * Append to buf (NUL-terminated, len bytes in all) the last `nlines` non-empty lines of the
 * file at path, each as "\n    | <line>": control characters and non-ASCII bytes show as '?'
 * (the text may end up in JSON), lines longer than 240 characters are cut. Reads at most the
 * file's last 16 KiB. Returns the number of lines quoted (0: the file is empty), or -errno
 * when it cannot be read (buf unchanged).
 */
int log_tail_append(const char *path, int nlines, char *buf, size_t len);

#endif
