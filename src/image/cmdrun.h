/* Child processes for the rootfs builder: extra environment, stdin, and the tail of stderr
 * kept for the error message that names the failing step. */
#ifndef FORKVM_IMAGE_CMDRUN_H
#define FORKVM_IMAGE_CMDRUN_H

#include <stdbool.h>
#include <stddef.h>

#define CMD_TAIL_MAX 1536

struct cmd_spec {
	char *const *argv;	/* argv[0] is looked up in PATH */
	const char *cwd;	/* NULL: ours */
	char *const *env_add;	/* "KEY=VALUE" entries added to our environment; NULL-terminated */
	bool quiet;		/* stdout to /dev/null (unless captured) */
	bool echo_stderr;	/* also pass stderr through (it is captured either way) */
};

struct cmd_result {
	int status;		/* exit status; 128 + signal when killed */
	char tail[CMD_TAIL_MAX]; /* last bytes of stderr, NUL-terminated, trailing newlines cut */
};

/* Run s; stdout into *out (malloc'd, NUL-terminated) when out != NULL. Returns 0 when the
 * command exited 0, -ECHILD when it ran and failed (r says how, and the failure is logged as
 * "WHAT: CMD ARGS failed (exit status N): TAIL"), or -errno when it could not run. */
int cmd_run(const struct cmd_spec *s, const char *what, char **out, struct cmd_result *r);
/* Where cmd_run finds the program name: PATH, then /usr/sbin and /sbin. 0, -ENOENT or -errno. */
int cmd_find(const char *name, char *path, size_t len);
/* Keep the last size-1 bytes of text in tail; trailing newlines removed. Exposed for tests. */
void cmd_tail_of(const char *text, size_t len, char *tail, size_t size);

#endif
