/* forkvm pageserver: serve uffd restores for many VMs, or print a running server's status. */
#include <getopt.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "cli/cli_vm.h"
#include "cli/commands.h"
#include "util/log.h"
#include "jail/jail.h"
#include "jail/seccomp.h"
#include "uffd/ps_server.h"
#include "util/unix_sock.h"

static const char usage[] =
	"forkvm pageserver [options]\n"
	"  --socket PATH      listen here (default RUN_DIR/pageserver.sock)\n"
	"  --fault-around N   pages copied per demand fault where the file has data (default 16)\n"
	"  --status           print the running server's status (JSON) and exit\n"
	"  --jail / --no-jail confine the server (docs/SECURITY.md; on by default as root;\n"
	"                     also FORKVM_JAIL=1|0)\n"
	"  -v, --verbose      debug logging\n"
	"Serves every `forkvm run --restore DIR --backing uffd` that connects; runs in the\n"
	"foreground until SIGTERM/SIGINT. See docs/UFFD.md.\n";

static const struct option options[] = {
	{ "socket", required_argument, NULL, 's' }, { "fault-around", required_argument, NULL, 'f' },
	{ "status", no_argument, NULL, 'S' },	     { "verbose", no_argument, NULL, 'v' },
	{ "jail", no_argument, NULL, 'J' },	     { "no-jail", no_argument, NULL, 'N' },
	{ NULL, 0, NULL, 0 },
};

static int print_status(const char *path)
{
	const char req[] = "{\"cmd\":\"status\"}\n";
	size_t cap = 1 << 16, len = 0;
	char *buf = malloc(cap);
	int fd = unix_connect(path, 0);

	if (fd < 0)
		errno = -fd;
	if (!buf || fd < 0 ||
	    send(fd, req, sizeof(req) - 1, MSG_NOSIGNAL) != (ssize_t)sizeof(req) - 1) {
		fprintf(stderr, "forkvm pageserver: %s: %s\n", path, strerror(buf ? errno : ENOMEM));
		if (fd >= 0)
			close(fd);
		free(buf);
		return CLI_EXIT_FAIL;
	}
	/* The status of many VMs can be large: grow up to 64 MiB. */
	while (!memchr(buf, '\n', len) && cap <= (64u << 20)) {
		if (len == cap) {
			char *bigger = realloc(buf, cap * 2);
			if (!bigger)
				break;
			buf = bigger;
			cap *= 2;
		}
		if (poll(&(struct pollfd){ .fd = fd, .events = POLLIN }, 1, 10000) != 1)
			break;
		ssize_t n = recv(fd, buf + len, cap - len, 0);
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	if (!memchr(buf, '\n', len)) {
		fprintf(stderr, "forkvm pageserver: %s: no complete status reply\n", path);
		free(buf);
		return CLI_EXIT_FAIL;
	}
	fwrite(buf, 1, len, stdout);
	free(buf);
	return CLI_EXIT_OK;
}

static int run(int argc, char **argv)
{
	char path[512] = "";
	unsigned long long v;
	uint32_t fault_around = 16;
	bool status = false;
	int opt, jail = -1;

	optind = 1;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, "v", options, NULL)) != -1) {
		switch (opt) {
		case 's':
			if (!*optarg || strlen(optarg) >= 108)
				return cli_usage_error(&cli_cmd_pageserver, "--socket: 1-107 bytes");
			snprintf(path, sizeof(path), "%s", optarg);
			break;
		case 'f':
			if (cli_parse_u64(optarg, &v) || v < 1 || v > 512)
				return cli_usage_error(&cli_cmd_pageserver, "--fault-around '%s': 1-512",
						       optarg);
			fault_around = (uint32_t)v;
			break;
		case 'S': status = true; break;
		case 'J': jail = 1; break;
		case 'N': jail = 0; break;
		case 'v': log_set_level(LOG_DEBUG); break;
		default:
			return cli_usage_error(&cli_cmd_pageserver, "unknown option '%s'",
					       argv[optind - 1]);
		}
	}
	if (optind != argc)
		return cli_usage_error(&cli_cmd_pageserver, "unexpected argument '%s'", argv[optind]);
	if (!path[0]) {
		if (cli_ensure_run_dir() < 0)
			return CLI_EXIT_FAIL;
		snprintf(path, sizeof(path), "%s/pageserver.sock", cli_run_dir());
	}
	if (status)
		return print_status(path);
	log_set_prefix("pageserver");
	jail_pageserver_set(jail); /* entered by ps_serve once its socket is bound */
	if (jail_seccomp_init(false) < 0) /* FORKVM_SECCOMP: filter loaded once listening */
		return CLI_EXIT_FAIL;
	return ps_serve(path, fault_around) ? CLI_EXIT_FAIL : CLI_EXIT_OK;
}

const struct cli_command cli_cmd_pageserver = {
	"pageserver", "serve uffd restores (lazy guest RAM) for many VMs", usage, run
};
