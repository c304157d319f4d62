/* CLI helpers: usage errors, --help, number and size parsing, VM socket paths. */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/cli_vm.h"

int cli_usage_error(const struct cli_command *cmd, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "forkvm %s: ", cmd->name);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nusage: %s", cmd->usage);
	return CLI_EXIT_USAGE;
}

int cli_wants_help(const struct cli_command *cmd, int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			break;
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			printf("forkvm %s: %s\n\nusage: %s", cmd->name, cmd->summary, cmd->usage);
			return 1;
		}
	}
	return 0;
}

int cli_parse_u64(const char *text, unsigned long long *out)
{
	char *end;

	if (!text || !*text || *text == '-')
		return -EINVAL;
	errno = 0;
	*out = strtoull(text, &end, 0);
	if (errno || *end)
		return -EINVAL;
	return 0;
}

int cli_parse_size(const char *text, unsigned long long *out)
{
	unsigned long long v, mult = 1;
	char *end;

	if (!text || !*text || *text == '-')
		return -EINVAL;
	errno = 0;
	v = strtoull(text, &end, 0);
	if (errno || end == text)
		return -EINVAL;
	switch (*end) {
	case 'k': case 'K': mult = 1ULL << 10; end++; break;
	case 'm': case 'M': mult = 1ULL << 20; end++; break;
	case 'g': case 'G': mult = 1ULL << 30; end++; break;
	case 't': case 'T': mult = 1ULL << 40; end++; break;
	}
	if ((*end == 'i' || *end == 'I') && mult > 1 && (end[1] == 'B' || end[1] == 'b'))
		end += 2;
	else if ((*end == 'B' || *end == 'b') && mult > 1)
		end++;
	if (*end || (mult > 1 && v > ~0ULL / mult))
		return -EINVAL;
	*out = v * mult;
	return 0;
}

const char *cli_run_dir(void)
{
	static char dir[256];
	const char *env = getenv("FORKVM_RUN_DIR");

	if (env && *env)
		snprintf(dir, sizeof(dir), "%s", env);
	else if (geteuid() == 0)
		snprintf(dir, sizeof(dir), "/run/forkvm");
	else
		snprintf(dir, sizeof(dir), "/tmp/forkvm-%u", (unsigned)geteuid());
	return dir;
}

int cli_vm_socket(const char *vm, char *path, size_t len)
{
	int n;

	if (!vm || !*vm)
		return -EINVAL;
	if (strchr(vm, '/'))
		n = snprintf(path, len, "%s", vm);
	else
		n = snprintf(path, len, "%s/%s.sock", cli_run_dir(), vm);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

int cli_ensure_run_dir(void)
{
	const char *dir = cli_run_dir();

	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		fprintf(stderr, "forkvm: creating run directory %s: %s\n", dir, strerror(errno));
		return -errno;
	}
	return 0;
}
