/* CLI helpers: usage errors, --help, number and size parsing, VM socket paths. */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
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
	/* Only right after the command: subcommands (`image extract --help`) answer their own. */
	if (argc < 2 || (strcmp(argv[1], "--help") && strcmp(argv[1], "-h")))
		return 0;
	printf("forkvm %s: %s\n\nusage: %s", cmd->name, cmd->summary, cmd->usage);
	return 1;
}

/* Decimal, or hex with 0x; no sign, no blanks (strtoull would accept " -1" as 2^64-1). */
static int parse_number(const char *text, unsigned long long *out, char **end)
{
	bool hex = text[0] == '0' && (text[1] == 'x' || text[1] == 'X');

	if (!isdigit((unsigned char)text[0]) || (hex && !isxdigit((unsigned char)text[2])))
		return -EINVAL;
	errno = 0;
	*out = strtoull(text, end, hex ? 16 : 10);
	return errno ? -EINVAL : 0;
}

int cli_parse_u64(const char *text, unsigned long long *out)
{
	char *end;

	if (!text || parse_number(text, out, &end) || *end)
		return -EINVAL;
	return 0;
}

int cli_parse_size(const char *text, unsigned long long *out)
{
	unsigned long long v, mult = 1;
	char *end;

	if (!text || parse_number(text, &v, &end))
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
	static char dir[PATH_MAX];
	const char *env = getenv("FORKVM_RUN_DIR");

	if (env && *env) {
		/* A run directory we cannot represent whole must not turn into another one. */
		if (snprintf(dir, sizeof(dir), "%s", env) >= (int)sizeof(dir))
			return NULL;
	} else if (geteuid() == 0)
		snprintf(dir, sizeof(dir), "/run/forkvm");
	else
		snprintf(dir, sizeof(dir), "/tmp/forkvm-%u", (unsigned)geteuid());
	return dir;
}

int cli_vm_socket(const char *vm, char *path, size_t len)
{
	int n;

	const char *dir = cli_run_dir();

	if (!vm || !*vm)
		return -EINVAL;
	if (strchr(vm, '/'))
		n = snprintf(path, len, "%s", vm);
	else if (!dir)
		return -ENAMETOOLONG;
	else
		n = snprintf(path, len, "%s/%s.sock", dir, vm);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

int cli_ensure_run_dir(void)
{
	const char *dir = cli_run_dir();

	if (!dir) {
		fprintf(stderr, "forkvm: FORKVM_RUN_DIR is longer than %d bytes\n", PATH_MAX - 1);
		return -ENAMETOOLONG;
	}
	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		fprintf(stderr, "forkvm: creating run directory %s: %s\n", dir, strerror(errno));
		return -errno;
	}
	return 0;
}
