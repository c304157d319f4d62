/* Parsing and checking `forkvm run` options. */
#include "cli/run_opts.h"

#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli_vm.h"
#include "util/errmsg.h"
#include "util/log.h"

enum { OPT_MEM = 256, OPT_VCPUS, OPT_BACKING, OPT_NO_HUGEPAGE, OPT_NAME, OPT_SOCKET,
       OPT_CONSOLE, OPT_CPU_FEATURES, OPT_DETACH, OPT_READY_FD, OPT_KVM, OPT_LOG, OPT_RESTORE, OPT_PAUSED,
       OPT_NO_AGENT_SYNC, OPT_AGENT_TIMEOUT, OPT_DISK };

static const struct option options[] = {
	{ "mem", required_argument, NULL, OPT_MEM },
	{ "vcpus", required_argument, NULL, OPT_VCPUS },
	{ "backing", required_argument, NULL, OPT_BACKING },
	{ "backend", required_argument, NULL, OPT_BACKING },
	{ "restore", required_argument, NULL, OPT_RESTORE },
	{ "paused", no_argument, NULL, OPT_PAUSED },
	{ "no-hugepage", no_argument, NULL, OPT_NO_HUGEPAGE },
	{ "name", required_argument, NULL, OPT_NAME },
	{ "socket", required_argument, NULL, OPT_SOCKET },
	{ "console", required_argument, NULL, OPT_CONSOLE },
	{ "cpu-features", required_argument, NULL, OPT_CPU_FEATURES },
	{ "detach", no_argument, NULL, OPT_DETACH },
	{ "ready-fd", required_argument, NULL, OPT_READY_FD },
	{ "kvm-device", required_argument, NULL, OPT_KVM },
	{ "log", required_argument, NULL, OPT_LOG },
	{ "no-agent-sync", no_argument, NULL, OPT_NO_AGENT_SYNC },
	{ "agent-timeout", required_argument, NULL, OPT_AGENT_TIMEOUT },
	{ "disk", required_argument, NULL, OPT_DISK },
	{ "verbose", no_argument, NULL, 'v' },
	UFFD_RESTORE_OPTIONS,
	CGROUP_OPTIONS,
	RUN_LINUX_OPTIONS,
	RUN_NET_OPTIONS,
	RUN_TAP_OPTIONS,
	JAIL_OPTIONS,
	{ NULL, 0, NULL, 0 },
};

/* --disk PATH[,ro]: a base image; the VM writes to a private top next to its socket. */
static int parse_disk(const struct cli_command *self, const char *arg, struct run_opts *o)
{
	char *comma, *base = o->disk_base[o->vm.ndisks];
	bool ro = false;

	if (o->vm.ndisks == VM_MAX_DISKS)
		return cli_usage_error(self, "--disk: at most %d disks", VM_MAX_DISKS);
	if (!*arg || strlen(arg) >= sizeof(o->disk_base[0]))
		return cli_usage_error(self, "--disk '%s': need an image path", arg);
	snprintf(base, sizeof(o->disk_base[0]), "%s", arg);
	comma = strrchr(base, ',');
	if (comma && strcmp(comma, ",ro") == 0) {
		*comma = '\0';
		ro = true;
	} else if (comma && strchr(comma, '/') == NULL) {
		return cli_usage_error(self, "--disk '%s': the only option is ',ro'", arg);
	}
	o->vm.disks[o->vm.ndisks++] = (struct vm_disk_config){ .base = base, .read_only = ro,
							       .slot = -1 };
	return 0;
}

static int parse_one(const struct cli_command *self, int opt, struct run_opts *o)
{
	unsigned long long v;
	struct fvm_err err = FVM_ERR_INIT;

	switch (opt) {
	case OPT_MEM:
		if (cli_parse_size(optarg, &v) || v < (8ULL << 20) || v % 4096)
			return cli_usage_error(self, "--mem '%s': need a size of at least 8M, a multiple of 4K", optarg);
		o->vm.mem_size = v;
		o->size_set = true;
		return 0;
	case OPT_VCPUS:
		if (cli_parse_u64(optarg, &v) || v < 1 || v > 16)
			return cli_usage_error(self, "--vcpus '%s': need 1 to 16", optarg);
		o->vm.nvcpus = (int)v;
		o->size_set = true;
		return 0;
	case OPT_BACKING:
		if (guest_mem_backing_parse(optarg, &o->vm.mem.backing))
			return cli_usage_error(self, "--backing '%s': need anon, memfd, hugetlb, file "
					       "or uffd", optarg);
		o->backing_set = true;
		return 0;
	case OPT_RESTORE: o->restore = optarg; return 0;
	case OPT_PAUSED: o->vm.start_paused = true; return 0;
	case OPT_NO_HUGEPAGE: o->vm.mem.no_hugepage = true; return 0;
	case OPT_NAME:
		if (!*optarg || strlen(optarg) >= sizeof(o->name) || strchr(optarg, '/'))
			return cli_usage_error(self, "--name '%s': need 1-63 characters, no '/'", optarg);
		snprintf(o->name, sizeof(o->name), "%s", optarg);
		return 0;
	case OPT_SOCKET:
		if (strlen(optarg) >= 108)
			return cli_usage_error(self, "--socket: path longer than 107 bytes");
		snprintf(o->socket, sizeof(o->socket), "%s", optarg);
		return 0;
	case OPT_CONSOLE: o->vm.console_path = optarg; return 0;
	case OPT_CPU_FEATURES:
		if (cpuid_policy_parse(&o->vm.cpuid_policy, optarg, &err))
			return cli_usage_error(self, "--cpu-features: %s", err_text(&err));
		o->cpu_features_set = true;
		return 0;
	case OPT_DETACH: o->detach = true; return 0;
	case OPT_READY_FD:
		if (cli_parse_u64(optarg, &v) || v > 1024 || fcntl((int)v, F_GETFD) < 0)
			return cli_usage_error(self, "--ready-fd '%s': not an open file descriptor", optarg);
		o->ready_fd = (int)v;
		return 0;
	case OPT_KVM: o->vm.kvm_path = optarg; return 0;
	case OPT_LOG: o->log_path = optarg; return 0;
	case OPT_NO_AGENT_SYNC: o->no_agent_sync = true; return 0;
	case OPT_AGENT_TIMEOUT:
		if (cli_parse_u64(optarg, &v) || v < 1 || v > 3600000)
			return cli_usage_error(self, "--agent-timeout '%s': need 1 to 3600000 ms", optarg);
		o->agent_timeout_ms = (int)v;
		return 0;
	case OPT_DISK: return parse_disk(self, optarg, o);
	case 'v': log_set_level(LOG_DEBUG); return 0;
	default:
		if (opt >= CGROUP_OPT_BASE)
			return cgroup_opt(&o->cg, opt, optarg, &err) ? cli_usage_error(self, "%s",
					  err_text(&err)) : 0;
		if (opt >= JAIL_OPT_BASE)
			return jail_opt(&o->jail, opt, optarg, &err) ?
				       cli_usage_error(self, "%s", err_text(&err)) : 0;
		if (opt >= RUN_TAP_OPT_BASE)
			return run_tap_opt(self, opt, optarg, o);
		if (opt >= RUN_NET_OPT_BASE)
			return run_net_opt(self, opt, optarg, o);
		if (opt >= RUN_LINUX_OPT_BASE)
			return run_linux_opt(self, opt, optarg, o);
		if (opt >= UFFD_OPT_PAGESERVER && uffd_restore_opt(&o->uffd, opt, optarg, &err))
			return cli_usage_error(self, "%s", err_text(&err));
		return opt >= UFFD_OPT_PAGESERVER ? 0 : cli_usage_error(self, "unknown option");
	}
}

int run_opts_parse(const struct cli_command *self, int argc, char **argv, struct run_opts *o)
{
	int opt, ret;

	memset(o, 0, sizeof(*o));
	o->vm.mem_size = 256ULL << 20;
	o->vm.nvcpus = 1;
	o->vm.mem.backing = GUEST_MEM_ANON;
	o->ready_fd = -1;
	o->agent_timeout_ms = RUN_AGENT_TIMEOUT_MS;
	uffd_restore_defaults(&o->uffd, cli_run_dir());
	jail_opts_init(&o->jail);
	net_opts_init(&o->net);
	o->net_broker_fd = -1;
	o->vm.net.tap_fd = -1;
	optind = 1;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, "v", options, NULL)) != -1) {
		if (opt == '?')
			return cli_usage_error(self, "unknown or incomplete option '%s'", argv[optind - 1]);
		ret = parse_one(self, opt, o);
		if (ret)
			return ret;
	}
	if (optind < argc)
		return cli_usage_error(self, "unexpected argument '%s'", argv[optind]);
	if (o->restore && o->size_set)
		return cli_usage_error(self, "--mem and --vcpus come from the snapshot with --restore");
	if (o->restore && o->vm.ndisks)
		return cli_usage_error(self, "--disk comes from the snapshot with --restore");
	if (o->restore && !o->backing_set)
		o->vm.mem.backing = GUEST_MEM_FILE_PRIVATE;
	if (!o->restore && o->vm.mem.backing == GUEST_MEM_FILE_PRIVATE)
		return cli_usage_error(self, "--backing file needs --restore DIR");
	if (!o->restore && o->vm.mem.backing == GUEST_MEM_UFFD)
		return cli_usage_error(self, "--backing uffd needs --restore DIR");
	if (o->cg.family_budget && (!jail_will_confine(&o->jail) || o->cg.no_cgroup))
		return cli_usage_error(self, "--family-budget is for a VMM entering a jail of its own "
				       "(the default as root, --jail; not --no-jail or --no-cgroup)");
	uffd_restore_breakers(&o->uffd, &o->vm.mem.backing);
	if (!o->name[0])
		snprintf(o->name, sizeof(o->name), "vm-%d", (int)getpid());
	if (!o->socket[0]) {
		if (cli_ensure_run_dir() < 0)
			return CLI_EXIT_FAIL;
		if (cli_vm_socket(o->name, o->socket, sizeof(o->socket)) < 0 || strlen(o->socket) >= 108)
			return cli_usage_error(self, "socket path for '%s' is too long", o->name);
	}
	/* Writable disk tops (and the layers later snapshots seal) live next to the socket. */
	o->vm.disk_top_prefix = o->socket;
	ret = run_linux_finish(self, o);
	if (!ret)
		ret = run_net_finish(self, o);
	if (!ret)
		ret = run_tap_finish(self, o);
	if (ret)
		return ret;
	if (o->detach) {
		/* A detached VMM must not hold the caller's terminal or pipes open. */
		snprintf(o->default_log, sizeof(o->default_log), "%s.log", o->socket);
		snprintf(o->default_console, sizeof(o->default_console), "%s.console", o->socket);
		if (!o->log_path)
			o->log_path = o->default_log;
		if (!o->vm.console_path || strcmp(o->vm.console_path, "-") == 0)
			o->vm.console_path = o->default_console;
	}
	return 0;
}
