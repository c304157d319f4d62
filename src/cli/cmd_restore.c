/* forkvm restore DIR --backend B --count N: N children from one snapshot, in parallel. */
#include <getopt.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli_vm.h"
#include "cli/commands.h"
#include "core/vm.h"
#include "snapshot/restore_many.h"
#include "util/clock.h"
#include "util/errmsg.h"

static const char usage[] =
	"forkvm restore DIR [options]\n"
	"  --backend KIND   file (default: memory file mapped private, page cache shared)\n"
	"                   | memfd (own copy per child) | hugetlb (own copy, 2 MiB pages) | anon\n"
	"  --count N        children to start in parallel (default 1, max 1000)\n"
	"  --name PREFIX    children are PREFIX-0..N-1 (default: the snapshot's directory name)\n"
	"  --paused         children start with their vCPUs parked\n"
	"  --timeout MS     for all children to be ready (default 120000); a Linux snapshot's\n"
	"                   clones then get as long again for the agent fix-up\n"
	"  --no-agent-sync  Linux snapshots: skip the fix-up that gives every clone new\n"
	"                   entropy and the host's clock through its guest agent\n"
	"                   (needed for --paused; docs/SNAPSHOT.md)\n"
	"  --backend uffd   guest RAM served by a page server (docs/UFFD.md); with it:\n"
	"  --pageserver PATH, --pageserver-timeout MS, --record, --no-prefetch, --no-uffd,\n"
	"  --ignore-bad-hotpages, --record-settle MS, --record-max MS\n"
	"                   are passed to each child (see forkvm run --help)\n"
	"  --mem-limit SIZE, --cpu-max Q[/P], --cpu-weight N, --pids-max N, --no-cgroup\n"
	"                   each child's cgroup limits, passed on likewise\n"
	"  --net MODE, --allow CIDR, --deny CIDR, --publish SPEC, --net-addr A/P[,GW],\n"
	"  --net-mtu N      each child's network (docs/NET.md), passed on likewise: a snapshot\n"
	"                   with a NIC needs one; with --count > 1 publish HOSTPORT 0\n"
	"Prints one line per child: NAME PID SOCKET. If any child fails, none is left running;\n"
	"the error names it and quotes the end of its log, which is kept.\n";

static const struct option options[] = {
	{ "backend", required_argument, NULL, 'b' }, { "count", required_argument, NULL, 'n' },
	{ "name", required_argument, NULL, 'p' },    { "paused", no_argument, NULL, 'P' },
	{ "timeout", required_argument, NULL, 't' }, { "no-agent-sync", no_argument, NULL, 'A' },
	/* uffd options, forwarded to every child's `forkvm run` (which checks them) */
	{ "pageserver", required_argument, NULL, 1 }, { "pageserver-timeout", required_argument, NULL, 1 },
	{ "record", no_argument, NULL, 0 },	     { "no-prefetch", no_argument, NULL, 0 },
	{ "no-uffd", no_argument, NULL, 0 },	     { "ignore-bad-hotpages", no_argument, NULL, 0 },
	{ "record-settle", required_argument, NULL, 1 }, { "record-max", required_argument, NULL, 1 },
	/* cgroup options, likewise */
	{ "mem-limit", required_argument, NULL, 1 },  { "cpu-max", required_argument, NULL, 1 },
	{ "cpu-weight", required_argument, NULL, 1 }, { "pids-max", required_argument, NULL, 1 },
	{ "no-cgroup", no_argument, NULL, 0 },
	/* network options, likewise */
	{ "net", required_argument, NULL, 1 },	      { "allow", required_argument, NULL, 1 },
	{ "deny", required_argument, NULL, 1 },	      { "publish", required_argument, NULL, 1 },
	{ "net-addr", required_argument, NULL, 1 },   { "net-mtu", required_argument, NULL, 1 },
	{ NULL, 0, NULL, 0 },
};

static const char *uffd_flag(const char *name)
{
	static const char *const flags[] = { "--pageserver", "--pageserver-timeout", "--record",
					     "--no-prefetch", "--no-uffd", "--ignore-bad-hotpages",
					     "--record-settle", "--record-max", "--mem-limit",
					     "--cpu-max", "--cpu-weight", "--pids-max", "--no-cgroup",
					     "--net", "--allow", "--deny", "--publish", "--net-addr",
					     "--net-mtu" };

	for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++)
		if (!strcmp(flags[i] + 2, name))
			return flags[i];
	return name;
}

static int run(int argc, char **argv)
{
	struct restore_many_opts o = { .backend = "file", .count = 1, .timeout_ms = 120000 };
	struct restored_child *children;
	unsigned long long v;
	char dircopy[4096];
	struct fvm_err err = FVM_ERR_INIT;
	uint64_t t0;
	int opt;

	optind = 1;
	opterr = 0;
	int idx;
	while ((opt = getopt_long(argc, argv, "", options, &idx)) != -1) {
		switch (opt) {
		case 0:
		case 1:
			if (o.nextra > RESTORE_MAX_EXTRA - 2)
				return cli_usage_error(&cli_cmd_restore, "too many options for the children");
			/* getopt_long's names lack the dashes: the "--name" forms are in a table. */
			o.extra[o.nextra++] = uffd_flag(options[idx].name);
			if (opt == 1)
				o.extra[o.nextra++] = optarg;
			break;
		case 'b':
			if (strcmp(optarg, "file") && strcmp(optarg, "memfd") && strcmp(optarg, "hugetlb") &&
			    strcmp(optarg, "anon") && strcmp(optarg, "uffd"))
				return cli_usage_error(&cli_cmd_restore, "--backend '%s' is not one of "
						       "file, memfd, hugetlb, anon, uffd", optarg);
			o.backend = optarg;
			break;
		case 'n':
			if (cli_parse_u64(optarg, &v) || v < 1 || v > 1000)
				return cli_usage_error(&cli_cmd_restore, "--count '%s': need 1-1000", optarg);
			o.count = (int)v;
			break;
		case 'p':
			if (!*optarg || strchr(optarg, '/') || strlen(optarg) > 40)
				return cli_usage_error(&cli_cmd_restore, "--name '%s': 1-40 characters, no '/'",
						       optarg);
			o.prefix = optarg;
			break;
		case 'P': o.paused = true; break;
		case 'A': o.no_agent_sync = true; break;
		case 't':
			if (cli_parse_u64(optarg, &v) || v < 1 || v > 3600000)
				return cli_usage_error(&cli_cmd_restore, "--timeout '%s' out of range", optarg);
			o.timeout_ms = (int)v;
			break;
		default:
			return cli_usage_error(&cli_cmd_restore, "unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind != argc - 1)
		return cli_usage_error(&cli_cmd_restore, "need exactly one snapshot DIR");
	o.dir = argv[optind];
	snprintf(dircopy, sizeof(dircopy), "%s", o.dir);
	if (!o.prefix)
		o.prefix = basename(dircopy);
	if (cli_ensure_run_dir() < 0)
		return CLI_EXIT_FAIL;
	o.run_dir = cli_run_dir();
	children = calloc((size_t)o.count, sizeof(*children));
	if (!children)
		return CLI_EXIT_FAIL;
	t0 = monotonic_ns();
	if (restore_many(&o, children, &err) < 0) {
		fprintf(stderr, "forkvm restore: %s\n", err_text(&err));
		free(children);
		return CLI_EXIT_FAIL;
	}
	for (int i = 0; i < o.count; i++)
		printf("%s %d %s\n", children[i].name, (int)children[i].pid, children[i].socket);
	fprintf(stderr, "forkvm restore: %d children ready in %.1f ms\n", o.count,
		(double)(monotonic_ns() - t0) / 1e6);
	free(children);
	return CLI_EXIT_OK;
}

const struct cli_command cli_cmd_restore = { "restore", "start N VMs from one snapshot", usage,
					     run };
