/* forkvm daemon: run forkvmd, the sandbox service (docs/DAEMON.md), until SIGTERM or SIGINT. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/commands.h"
#include "daemon/daemon.h"
#include "util/errmsg.h"
#include "util/log.h"
#include "util/stopfd.h"

static const char usage[] =
	"forkvm daemon [options]\n"
	"  --state-dir DIR    state (SQLite), audit log, VM sockets and snapshots\n"
	"                     (default /var/lib/forkvm; created 0700)\n"
	"  --socket PATH      the API's Unix socket (default STATE_DIR/api.sock, mode 0600)\n"
	"  --listen HOST:PORT also serve the API on TCP; needs --token-file\n"
	"  --token-file FILE  bearer token TCP clients must send (mode 0600, >= 16 bytes)\n"
	"  --tls-cert FILE    serve TCP as HTTPS with this PEM certificate (chain)\n"
	"  --tls-key FILE     ... and this PEM private key (mode 0600)\n"
	"  --forkvm PATH      the forkvm binary VMs run (default: this one)\n"
	"  --ready-fd N       write one byte to fd N once the API answers\n"
	"  --no-jail          development only: VMMs run unconfined (also FORKVM_JAIL=0);\n"
	"                     by default each VMM is jailed (docs/SECURITY.md)\n"
	"  -v, --verbose      debug logging\n"
	"A REST API under /v1 (docs/DAEMON.md). VMs are processes of their own: they keep\n"
	"running when the daemon stops or is killed, and a restarted daemon adopts them.\n"
	"A second daemon on the same state directory refuses to start.\n";

static int cmd_daemon(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "state-dir", required_argument, NULL, 's' }, { "socket", required_argument, NULL, 'S' },
		{ "listen", required_argument, NULL, 'l' },    { "token-file", required_argument, NULL, 't' },
		{ "forkvm", required_argument, NULL, 'f' },    { "ready-fd", required_argument, NULL, 'r' },
		{ "tls-cert", required_argument, NULL, 'c' },  { "tls-key", required_argument, NULL, 'k' },
		{ "verbose", no_argument, NULL, 'v' },	       { "no-jail", no_argument, NULL, 'J' },
		{ 0 },
	};
	struct daemon_opts o = { .state_dir = DAEMON_DEFAULT_STATE_DIR, .ready_fd = -1 };
	struct fvm_err err = FVM_ERR_INIT;
	sigset_t set;
	int c;

	if (cli_wants_help(&cli_cmd_daemon, argc, argv))
		return CLI_EXIT_OK;
	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+v", longopts, NULL)) != -1) {
		switch (c) {
		case 's': o.state_dir = optarg; break;
		case 'S': o.socket = optarg; break;
		case 'l': o.listen = optarg; break;
		case 't': o.token_file = optarg; break;
		case 'f': o.forkvm = optarg; break;
		case 'c': o.tls_cert = optarg; break;
		case 'k': o.tls_key = optarg; break;
		case 'r': {
			unsigned long long fd;
			if (cli_parse_u64(optarg, &fd) || fd > 1024)
				return cli_usage_error(&cli_cmd_daemon, "--ready-fd: a descriptor number");
			o.ready_fd = (int)fd;
			break;
		}
		case 'v': log_set_level(LOG_DEBUG); break;
		case 'J': o.no_jail = true; break;
		default:
			return cli_usage_error(&cli_cmd_daemon, "unknown option '%s'", argv[optind - 1]);
		}
	}
	if (getenv("FORKVM_JAIL") && strcmp(getenv("FORKVM_JAIL"), "0") == 0)
		o.no_jail = true;
	if (optind != argc)
		return cli_usage_error(&cli_cmd_daemon, "unexpected argument '%s'", argv[optind]);
	if (o.state_dir[0] != '/')
		return cli_usage_error(&cli_cmd_daemon, "--state-dir must be an absolute path");
	/* The stop signals wait, blocked in every thread, for the main thread's signalfd. */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	o.stop_fd = stop_signal_fd();
	if (o.stop_fd < 0) {
		fprintf(stderr, "forkvm daemon: a signalfd for SIGTERM/SIGINT: %s\n",
			strerror(-o.stop_fd));
		return CLI_EXIT_FAIL;
	}
	log_set_prefix("forkvmd");
	int ret = daemon_run(&o, &err);
	close(o.stop_fd);
	if (ret) {
		fprintf(stderr, "forkvm daemon: %s\n", err_text(&err));
		return CLI_EXIT_FAIL;
	}
	return CLI_EXIT_OK;
}

const struct cli_command cli_cmd_daemon = {
	.name = "daemon",
	.summary = "run the sandbox service (REST API, state in SQLite)",
	.usage = usage,
	.run = cmd_daemon,
};
