/* posix_spawn with an extended environment, stderr captured in a memfd for its tail. */
#include "image/cmdrun.h"

#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util/log.h"
#include "image/fsutil.h"

extern char **environ;

void cmd_tail_of(const char *text, size_t len, char *tail, size_t size)
{
	size_t start = len > size - 1 ? len - (size - 1) : 0;

	memcpy(tail, text + start, len - start);
	tail[len - start] = 0;
	for (size_t n = len - start; n > 0 && (tail[n - 1] == '\n' || tail[n - 1] == '\r'); n--)
		tail[n - 1] = 0;
}

/* environ plus env_add (an added KEY= replaces ours). */
static char **merged_env(char *const *add)
{
	size_t n = 0, nadd = 0, k = 0;
	char **env;

	while (environ[n])
		n++;
	while (add && add[nadd])
		nadd++;
	env = calloc(n + nadd + 1, sizeof(*env));
	if (!env)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		size_t klen = strcspn(environ[i], "=");
		bool replaced = false;

		for (size_t j = 0; j < nadd && !replaced; j++)
			replaced = !strncmp(add[j], environ[i], klen) && add[j][klen] == '=';
		if (!replaced)
			env[k++] = environ[i];
	}
	for (size_t j = 0; j < nadd; j++)
		env[k++] = add[j];
	return env;
}

/* Tail of the memfd's content into r->tail; replay it to our stderr when asked. */
static void collect_stderr(int memfd, bool echo, struct cmd_result *r)
{
	struct stat st;
	char *map;

	r->tail[0] = 0;
	if (fstat(memfd, &st) < 0 || st.st_size == 0)
		return;
	map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, memfd, 0);
	if (map == MAP_FAILED)
		return;
	cmd_tail_of(map, (size_t)st.st_size, r->tail, sizeof(r->tail));
	if (echo && fwrite(map, 1, (size_t)st.st_size, stderr) != (size_t)st.st_size)
		clearerr(stderr);
	munmap(map, (size_t)st.st_size);
}

static void log_failure(const struct cmd_spec *s, const char *what, const struct cmd_result *r)
{
	char cmd[400];
	size_t len = 0;

	cmd[0] = 0;
	for (int i = 0; s->argv[i] && len + 4 < sizeof(cmd); i++)
		len += (size_t)snprintf(cmd + len, sizeof(cmd) - len, "%s%s", i ? " " : "", s->argv[i]);
	if (len >= sizeof(cmd) - 4)
		strcpy(cmd + sizeof(cmd) - 4, "...");
	if (r->status > 128)
		log_err("%s: %s was killed by signal %d%s%s", what, cmd, r->status - 128,
			r->tail[0] ? "; its stderr ends: " : "", r->tail);
	else
		log_err("%s: %s failed (exit status %d)%s%s", what, cmd, r->status,
			r->tail[0] ? "; its stderr ends: " : "", r->tail);
}

static int wait_child(pid_t pid, struct cmd_result *r)
{
	int status;

	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -errno;
	r->status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	return 0;
}

/* Tried after PATH: e2fsprogs and ldconfig live in /usr/sbin, which a user's PATH may lack. */
static const char *const sbin[] = { "/usr/sbin/", "/sbin/" };

int cmd_find(const char *name, char *path, size_t len)
{
	const char *env = getenv("PATH");
	char dirs[4096];
	int n;

	if (!*name || strchr(name, '/'))
		return -EINVAL;
	n = snprintf(dirs, sizeof(dirs), "%s", env && *env ? env : "/usr/bin:/bin");
	if (n < 0 || (size_t)n >= sizeof(dirs))
		return -ENAMETOOLONG;
	for (char *save = NULL, *d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
		n = snprintf(path, len, "%s/%s", d, name);
		if (n > 0 && (size_t)n < len && access(path, X_OK) == 0)
			return 0;
	}
	for (size_t i = 0; i < sizeof(sbin) / sizeof(sbin[0]); i++) {
		n = snprintf(path, len, "%s%s", sbin[i], name);
		if (n > 0 && (size_t)n < len && access(path, X_OK) == 0)
			return 0;
	}
	return -ENOENT;
}

/* posix_spawnp, then the sbin directories. */
static int spawn(pid_t *pid, char *const *argv, const posix_spawn_file_actions_t *fa, char **env)
{
	char path[256];
	int ret = -posix_spawnp(pid, argv[0], fa, NULL, argv, env);

	for (size_t i = 0; ret == -ENOENT && !strchr(argv[0], '/') && i < 2; i++) {
		snprintf(path, sizeof(path), "%s%s", sbin[i], argv[0]);
		if (access(path, X_OK) == 0)
			ret = -posix_spawn(pid, path, fa, NULL, argv, env);
	}
	return ret;
}

int cmd_run(const struct cmd_spec *s, const char *what, char **out, struct cmd_result *r)
{
	posix_spawn_file_actions_t fa;
	int pipefd[2] = { -1, -1 }, memfd, ret, err;
	char **env = merged_env(s->env_add);
	pid_t pid;

	r->status = -1;
	r->tail[0] = 0;
	if (out)
		*out = NULL;
	memfd = memfd_create("forkvm-stderr", MFD_CLOEXEC);
	if (!env || memfd < 0) {
		ret = !env ? -ENOMEM : -errno;
		free(env);
		if (memfd >= 0)
			close(memfd);
		return log_errno(ret, "%s: run %s", what, s->argv[0]);
	}
	if (out && pipe2(pipefd, O_CLOEXEC) < 0) {
		ret = log_errno(-errno, "%s: pipe for %s", what, s->argv[0]);
		goto out;
	}
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, memfd, STDERR_FILENO);
	if (out)
		posix_spawn_file_actions_adddup2(&fa, pipefd[1], STDOUT_FILENO);
	else if (s->quiet)
		posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
	if (s->cwd)
		posix_spawn_file_actions_addchdir_np(&fa, s->cwd);
	ret = spawn(&pid, s->argv, &fa, env);
	posix_spawn_file_actions_destroy(&fa);
	if (out)
		close(pipefd[1]);
	if (ret) {
		ret = log_errno(ret, "%s: run %s", what, s->argv[0]);
		goto out;
	}
	if (out)
		ret = fd_read_string(pipefd[0], out);
	err = wait_child(pid, r);
	if (err && !ret)
		ret = log_errno(err, "%s: wait for %s", what, s->argv[0]);
	collect_stderr(memfd, s->echo_stderr, r);
	if (!ret && r->status != 0) {
		log_failure(s, what, r);
		ret = -ECHILD;
	}
	if (ret && out && *out) {
		free(*out);
		*out = NULL;
	}
out:
	if (out && pipefd[0] >= 0)
		close(pipefd[0]);
	close(memfd);
	free(env);
	return ret;
}
