/* forkvm-agent: runs commands and file/clock/entropy requests for the host inside a guest. */
#include "agent.h"
#include "eval_ctx.h"
#include "listen.h"
#include "log.h"
#include "net.h"
#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static const char usage_text[] =
	"usage: forkvm-agent [--vsock-port N | --unix PATH] [--no-reboot] [--max-conns N]\n"
	"                    [--run-dir DIR] [--python PROGRAM] [--mem-budget MIB]\n"
	"                    [--mem-wait MS] [--verbose]\n"
	"  --vsock-port N   listen on AF_VSOCK port N (default 52)\n"
	"  --unix PATH      listen on a Unix stream socket instead (tests)\n"
	"  --no-reboot      shutdown only stops the agent, never the machine\n"
	"  --max-conns N    concurrent connections (default 64)\n"
	"  --run-dir DIR    eval interpreter sockets (default /tmp/forkvm-agent.PID)\n"
	"  --python PROGRAM eval interpreter, looked up in PATH (default python3)\n"
	"  --mem-budget MIB memory all connections' large requests share (default 128)\n"
	"  --mem-wait MS    how long a request waits for that memory (default 30000)\n"
	"  --verbose        log every request\n";

static int parse_uint(const char *text, unsigned int min, unsigned int max, unsigned int *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(text, &end, 10);
	if (errno || end == text || *end || v < min || v > max)
		return -EINVAL;
	*out = (unsigned int)v;
	return 0;
}

/* Returns 0, 1 for --help/--version (exit 0), or -EINVAL (usage error). */
static int parse_args(int argc, char **argv, struct agent_config *cfg)
{
	static const struct option opts[] = {
		{ "vsock-port", required_argument, NULL, 'p' },
		{ "unix", required_argument, NULL, 'u' },
		{ "no-reboot", no_argument, NULL, 'n' },
		{ "max-conns", required_argument, NULL, 'm' },
		{ "run-dir", required_argument, NULL, 'r' },
		{ "python", required_argument, NULL, 'y' },
		{ "mem-budget", required_argument, NULL, 'b' },
		{ "mem-wait", required_argument, NULL, 'w' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	bool port_given = false;
	unsigned int n;
	int c;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'p':
			if (parse_uint(optarg, 1, 0xfffffffeu, &cfg->vsock_port) < 0) {
				fprintf(stderr, "forkvm-agent: bad --vsock-port '%s'\n", optarg);
				return -EINVAL;
			}
			port_given = true;
			break;
		case 'u':
			cfg->unix_path = optarg;
			break;
		case 'n':
			cfg->no_reboot = true;
			break;
		case 'm':
			if (parse_uint(optarg, 1, 4096, &cfg->max_conns) < 0) {
				fprintf(stderr, "forkvm-agent: bad --max-conns '%s'\n", optarg);
				return -EINVAL;
			}
			break;
		case 'r':
			cfg->run_dir = optarg;
			break;
		case 'y':
			cfg->python = optarg;
			break;
		case 'b':
			if (parse_uint(optarg, AGENT_MIN_MEM_BUDGET_MIB, AGENT_MAX_MEM_BUDGET_MIB, &n) < 0) {
				fprintf(stderr, "forkvm-agent: bad --mem-budget '%s' (MiB, %u to %u)\n",
					optarg, AGENT_MIN_MEM_BUDGET_MIB, AGENT_MAX_MEM_BUDGET_MIB);
				return -EINVAL;
			}
			cfg->mem_budget = (size_t)n << 20;
			break;
		case 'w':
			if (parse_uint(optarg, 0, 600000, &cfg->mem_wait_ms) < 0) {
				fprintf(stderr, "forkvm-agent: bad --mem-wait '%s' (ms, 0 to 600000)\n",
					optarg);
				return -EINVAL;
			}
			break;
		case 'v':
			agent_log_set_verbose(true);
			break;
		case 'h':
			fputs(usage_text, stdout);
			return 1;
		case 'V':
			puts("forkvm-agent " AGENT_VERSION);
			return 1;
		default:
			return -EINVAL; /* getopt already said what was wrong */
		}
	}
	if (optind < argc || (port_given && cfg->unix_path)) {
		fprintf(stderr, "forkvm-agent: %s\n", optind < argc ? "unexpected argument"
								    : "--unix and --vsock-port exclude each other");
		return -EINVAL;
	}
	return 0;
}

/* Commands get pipes on 0/1/2 via dup2; those must not collide with our own fds. */
static int ensure_std_fds(void)
{
	for (int fd = 0; fd < 3; fd++) {
		if (fcntl(fd, F_GETFD) >= 0)
			continue;
		int nfd = open("/dev/null", O_RDWR);

		if (nfd < 0)
			return log_errno(-errno, "open /dev/null for fd %d", fd);
		if (nfd != fd)
			return log_errno(-EBADF, "reopen fd %d on /dev/null (got %d)", fd, nfd);
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct agent_config cfg = {
		.vsock_port = AGENT_DEFAULT_VSOCK_PORT,
		.max_conns = AGENT_DEFAULT_MAX_CONNS,
		.mem_budget = AGENT_DEFAULT_MEM_BUDGET,
		.mem_wait_ms = AGENT_DEFAULT_MEM_WAIT_MS,
	};
	int listen_fd = -1, ret;

	ret = parse_args(argc, argv, &cfg);
	if (ret < 0)
		fputs(usage_text, stderr);
	if (ret != 0)
		return ret > 0 ? 0 : 2;
	ret = ensure_std_fds();
	if (ret < 0)
		return 1;
	/* A client vanishing mid-reply must surface as EPIPE, not kill the process. */
	if (signal(SIGPIPE, SIG_IGN) == SIG_ERR)
		return log_errno(-errno, "ignore SIGPIPE"), 1;
	if (!cfg.unix_path)
		net_boot_config(); /* the guest's NIC, from forkvm.net= (docs/NET.md) */
	if (cfg.unix_path)
		ret = listen_unix(cfg.unix_path, &listen_fd);
	else
		ret = listen_vsock(cfg.vsock_port, &listen_fd);
	if (ret < 0)
		return 1;
	if (cfg.unix_path)
		log_info("version %s listening on unix %s%s", AGENT_VERSION, cfg.unix_path,
			 cfg.no_reboot ? " (no-reboot)" : "");
	else
		log_info("version %s listening on vsock port %u%s", AGENT_VERSION, cfg.vsock_port,
			 cfg.no_reboot ? " (no-reboot)" : "");
	/* Without it only eval is unavailable (its replies say why); everything else works. */
	if (eval_setup(&cfg) < 0)
		log_warn("eval is unavailable");
	ret = server_run(listen_fd, &cfg);
	close(listen_fd);
	eval_teardown();
	if (cfg.unix_path && unlink(cfg.unix_path) < 0 && errno != ENOENT)
		log_errno(-errno, "remove socket %s", cfg.unix_path);
	return ret < 0 ? 1 : 0;
}
