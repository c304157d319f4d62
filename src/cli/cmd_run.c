/* forkvm run: create one VM in this process, serve its control socket until it ends. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent/agent_client.h"
#include "agent/agent_sync.h"
#include "cli/cli_vm.h"
#include "cli/commands.h"
#include "cli/run_jail.h"
#include "cli/run_opts.h"
#include "util/errmsg.h"
#include "util/log.h"
#include "util/stopfd.h"
#include "util/log_tail.h"
#include "builder/builder.h"
#include "ctl/ctl.h"
#include "jail/cgroup.h"
#include "jail/seccomp.h"
#include "snapshot/snapshot.h"
#include "uffd/uffd_restore.h"
#include "util/clock.h"

static const char usage[] =
	"forkvm run [options]\n"
	"  --mem SIZE           guest RAM, e.g. 256M, 1G (default 256M)\n"
	"  --vcpus N            vCPUs, 1-16 (default 1)\n"
	"  --backing KIND       anon (default, THP) | memfd (shared) | hugetlb (2 MiB pages)\n"
	"                       | file (with --restore: the memory file mapped private)\n"
	"  --restore DIR        restore the snapshot in DIR instead of booting\n"
	"                       (default backing file; --backend is a synonym of --backing)\n"
	"  --paused             start with every vCPU parked; `forkvm resume` runs them\n"
	"  --no-hugepage        anon backing without MADV_HUGEPAGE\n"
	"  --name NAME          VM name; socket RUN_DIR/NAME.sock (default vm-PID)\n"
	"  --socket PATH        control socket path (overrides --name)\n"
	"  --console FILE       guest serial output (default stdout)\n"
	"  --cpu-features LIST  hide CPU features, e.g. -cx16,-xsave\n"
	"  --detach             run in the background once the socket is ready;\n"
	"                       prints \"PID SOCKET\"; messages go to --log\n"
	"                       (default SOCKET.log), console to SOCKET.console\n"
	"  --log FILE           VMM messages (default stderr)\n"
	"  --ready-fd N         write one byte to fd N once the socket accepts requests\n"
	"  --no-agent-sync      --restore of a Linux snapshot: skip the fix-up that gives the\n"
	"                       clone new entropy and the host's clock through its guest agent\n"
	"                       (needed with --paused or without vsock; docs/SNAPSHOT.md)\n"
	"  --agent-timeout MS   for that fix-up, retries included (default 30000)\n"
	"  --kvm-device PATH    KVM device (default /dev/kvm)\n"
	"  --disk PATH[,ro]     virtio-blk disk on base image PATH (never written; up to 4):\n"
	"                       writes go to a private copy-on-write overlay SOCKET.diskN.ovl,\n"
	"                       removed when the VM ends; ,ro: a read-only disk (docs/DISK.md)\n"
	UFFD_RESTORE_USAGE
	RUN_LINUX_USAGE
	RUN_NET_USAGE
	RUN_TAP_USAGE
	CGROUP_USAGE
	JAIL_USAGE
	"  -v, --verbose        debug logging\n"
	"Without a kernel the VM runs the built-in probe guest.\n"
	"Exit status: 0 stopped or powered off, 1 error, 3 guest reset or crash.\n";

static int run_redirect_stdio(const char *log_path)
{
	int in = open("/dev/null", O_RDONLY | O_CLOEXEC);
	int out = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);

	if (in < 0 || out < 0) {
		fprintf(stderr, "forkvm run: opening %s: %s\n", in < 0 ? "/dev/null" : log_path,
			strerror(errno));
		return -1;
	}
	if (dup2(in, STDIN_FILENO) < 0 || dup2(out, STDOUT_FILENO) < 0 || dup2(out, STDERR_FILENO) < 0)
		return -1;
	close(in);
	close(out);
	return 0;
}

/* Fork; the parent returns once the child's socket is ready (or it failed). */
static int run_detach(struct run_opts *o)
{
	int pipefd[2];
	char byte;
	pid_t pid;

	if (pipe2(pipefd, O_CLOEXEC) < 0) {
		perror("forkvm run: pipe");
		return -1;
	}
	pid = fork();
	if (pid < 0) {
		perror("forkvm run: fork");
		return -1;
	}
	if (pid == 0) {
		close(pipefd[0]);
		setsid();
		o->ready_fd = pipefd[1];
		return run_redirect_stdio(o->log_path);
	}
	close(pipefd[1]);
	ssize_t n = read(pipefd[0], &byte, 1);
	close(pipefd[0]);
	if (n != 1) {
		char tail[4096] = "", how[64];
		int status;
		if (waitpid(pid, &status, 0) == pid && WIFSIGNALED(status)) {
			jail_describe_wait(status, how, sizeof(how));
			fprintf(stderr, "forkvm run: the VMM was %s\n", how);
		}
		int lines = log_tail_append(o->log_path, LOG_TAIL_LINES, tail, sizeof(tail));
		if (lines > 0)
			fprintf(stderr, "forkvm run: the VM failed to start; its log %s ends:%s\n",
				o->log_path, tail);
		else
			fprintf(stderr, "forkvm run: the VM failed to start (its log %s: %s)\n",
				o->log_path, lines == 0 ? "empty" : strerror(-lines));
		exit(CLI_EXIT_FAIL);
	}
	printf("%d %s\n", (int)pid, o->socket);
	exit(CLI_EXIT_OK);
}

static int run_boot(struct vm *vm, struct run_opts *o)
{
	static struct linux_boot lb; /* large; one per process */
	int err = o->kernel ? run_linux_prepare(o, &lb) : 0;

	if (!err)
		err = vm_create(vm, &o->vm);
	if (err)
		return err;
	err = o->kernel ? vm_boot_linux(vm, &lb) : vm_boot_probe(vm);
	if (err)
		vm_destroy(vm);
	return err;
}

/*
 * A restored Linux clone gets its own entropy and the host's clock from its guest agent
 * (agent/agent_sync.h) before the socket is announced ready. Decide before the VM exists
 * whether it can: the guest must run (not --paused) and have its vsock device.
 */
static int run_agent_sync_check(struct run_opts *o, const struct snap_machine *m)
{
	if (m->config.guest_kind != SNAP_GUEST_LINUX || o->no_agent_sync)
		return 0;
	if (o->vm.start_paused) {
		log_err("cannot restore %s --paused: a Linux clone needs the agent fix-up (new "
			"entropy, the host's clock), which needs it running; add --no-agent-sync to "
			"start it paused anyway", o->restore);
		return -EINVAL;
	}
	if (!m->has_vsock || !o->vm.vsock_path) {
		log_err("cannot restore %s: the Linux clone's agent is reached over vsock, and %s; "
			"add --no-agent-sync to restore it without the fix-up (new entropy, the "
			"host's clock)", o->restore,
			m->has_vsock ? "--no-vsock leaves it without" : "the snapshot has no vsock device");
		return -EINVAL;
	}
	o->agent_sync = true;
	return 0;
}

/* The fix-up itself, once the vCPUs run; a stop signal cancels it (and still ends the VM). */
static int run_agent_sync(struct vm *vm, struct run_opts *o)
{
	struct agent_sync_stats st;
	char vcpus[4096];
	struct fvm_err err = FVM_ERR_INIT;
	int sig_fd = stop_signal_fd(), ret;

	if (sig_fd < 0)
		return log_errno(sig_fd, "signalfd for the agent fix-up of %s", o->name);
	ret = agent_sync(o->vm.vsock_path, AGENT_VSOCK_PORT,
			 deadline_after_ms(o->agent_timeout_ms), sig_fd, &st, &err);
	close(sig_fd);
	if (ret) {
		log_err("restored Linux clone %s: %s (--no-agent-sync skips the fix-up)", o->name,
			err_text(&err));
		/* Canceled by a stop signal: nothing is wrong with the guest. Else say what its vCPUs
		 * were doing, which tells a stuck guest from a VMM thread that never ran it. */
		if (ret != -ECANCELED) {
			vm_describe_vcpus(vm, vcpus, sizeof(vcpus));
			log_err("restored Linux clone %s: its vCPUs then: %s", o->name, vcpus);
		}
		return ret;
	}
	log_info("agent fix-up: fresh entropy (CRNG reseeded: %s), clock stepped by %+.3f s, "
		 "%d attempt%s in %.0f ms", st.crng_reseeded ? "yes" : "not reported",
		 (double)st.clock_step_ns / 1e9, st.attempts, st.attempts == 1 ? "" : "s",
		 (double)st.elapsed_ns / 1e6);
	return 0;
}

/*
 * uffd: the page server gets the registered RAM before anything touches it (layers, device
 * and vCPU state), and must ack (hot set in) before any vCPU may run.
 */
static int attach_pageserver(struct vm *vm, void *arg)
{
	struct run_opts *o = arg;
	int ret = o->vm.mem.backing != GUEST_MEM_UFFD ? 0 :
		  uffd_restore_attach(vm, &o->uffd, o->restore, o->name);

	/* Restores: jailed with the snapshot open (and the page server reached) as root. */
	if (ret >= 0 && o->jail_late)
		ret = jail_enter(&o->jail, o->name);
	return ret < 0 ? ret : 0;
}

/* Everything is read and checked before the VM exists; the vCPUs start only after all of it. */
static int run_restore(struct vm *vm, struct run_opts *o)
{
	struct snapshot snap;
	struct snap_machine m;
	struct fvm_err err = FVM_ERR_INIT;
	int ret = snap_open(o->restore, &snap, &err);

	if (ret) {
		log_err("cannot restore %s: %s", o->restore, err_text(&err));
		return ret;
	}
	ret = snap_decode(&snap, &m, &err);
	if (ret) {
		log_err("cannot restore %s: %s", o->restore, err_text(&err));
		snap_close(&snap);
		return ret;
	}
	/* A snapshot with a vsock device keeps it, at the usual place next to the socket. */
	if (m.has_vsock && !o->no_vsock && !o->vm.vsock_path) {
		snprintf(o->default_vsock, sizeof(o->default_vsock), "%s.vsock", o->socket);
		o->vm.vsock_path = o->default_vsock;
		o->vm.vsock_cid = (uint32_t)m.vsock.cid;
	}
	ret = run_agent_sync_check(o, &m);
	if (!ret) /* memory.max from the snapshot's RAM, before any jail (docs/SECURITY.md) */
		ret = jail_cgroup_set_guest_ram(m.config.mem_size);
	if (!ret) {
		struct restore_hooks hooks = { .mem_ready = attach_pageserver, .arg = o };
		bool lazy = o->vm.mem.backing == GUEST_MEM_UFFD;

		ret = vm_restore(vm, &o->vm, &snap, &m, o->vm.mem.backing,
				 lazy || o->jail_late ? &hooks : NULL);
	}
	snap_machine_free(&m);
	snap_close(&snap);
	return ret;
}

static int exit_code(enum vm_end_reason reason)
{
	switch (reason) {
	case VM_END_STOPPED:
	case VM_END_GUEST_POWEROFF:
		return CLI_EXIT_OK;
	case VM_END_GUEST_RESET:
		return 3;
	default:
		return CLI_EXIT_FAIL;
	}
}

static int run(int argc, char **argv)
{
	struct run_opts o;
	struct vm vm;
	sigset_t sigs;
	int ret = run_opts_parse(&cli_cmd_run, argc, argv, &o);

	if (ret)
		return ret;
	if (o.detach && run_detach(&o) < 0)
		return CLI_EXIT_FAIL;
	if (!o.detach && o.log_path && run_redirect_stdio(o.log_path) < 0)
		return CLI_EXIT_FAIL;
	log_set_prefix(o.name);
	/* Own cgroup before guest RAM exists, a family's for a jail of its own; filters per
	 * thread as each starts (docs/SECURITY.md). */
	uint64_t ram = o.restore ? JAIL_CGROUP_RAM_LATER : o.vm.mem_size;
	if (jail_seccomp_init(o.cg.no_seccomp) < 0 ||
	    (jail_will_confine(&o.jail) ? jail_cgroup_enter_family(o.name, ram, &o.cg)
					: jail_cgroup_enter(o.name, ram, &o.cg)) < 0)
		return CLI_EXIT_FAIL;
	/* Termination signals go to the control loop's signalfd, never to a vCPU thread. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	/* A peer that went away is an error return, never a reason for the VMM to die. */
	signal(SIGPIPE, SIG_IGN);
	/* A disk overlay hitting a file size limit is an I/O error for the guest, not our end. */
	signal(SIGXFSZ, SIG_IGN);
	/* The VM's network (its namespace, TAP, ports) before the VM: its NIC gets the TAP. With
	 * the signals above blocked: the relay thread inherits the mask (docs/NET.md). */
	if (run_net_create(&o) < 0) {
		jail_cgroup_leave();
		return CLI_EXIT_FAIL;
	}
	/* The jail, before the VM exists and so before any guest code runs (docs/SECURITY.md). */
	if (run_jail_prepare(&o) < 0 || (!o.jail_late && jail_enter(&o.jail, o.name) < 0)) {
		run_net_destroy(&o);
		jail_cgroup_leave();
		return CLI_EXIT_FAIL;
	}
	if (o.restore ? run_restore(&vm, &o) < 0 : run_boot(&vm, &o) < 0) {
		run_net_destroy(&o);
		jail_cgroup_leave();
		return CLI_EXIT_FAIL;
	}
	if (vm_start(&vm) < 0 || uffd_restore_watch(&vm) < 0 ||
	    (o.agent_sync && run_agent_sync(&vm, &o) < 0)) {
		uffd_restore_detach();
		vm_destroy(&vm);
		run_net_destroy(&o);
		jail_cgroup_leave();
		return CLI_EXIT_FAIL;
	}
	ctl_serve(&vm, o.socket, o.ready_fd);
	uffd_restore_detach();
	ret = exit_code(vm.end_reason);
	if (vm.end_reason != VM_END_STOPPED)
		log_info("VM ended: %s (%s)", vm_end_reason_name(vm.end_reason), vm.end_detail);
	vm_destroy(&vm);
	run_net_destroy(&o);
	jail_cgroup_leave();
	return ret;
}

const struct cli_command cli_cmd_run = { "run", "boot a VM and serve its control socket", usage,
					 run };
