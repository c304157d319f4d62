/*
 * forkvm snapshot create VM DIR | verify DIR: write a snapshot of a running VM, or check one.
 * A daemon sandbox's snapshot is the daemon's (create ID, no DIR): it records it, so that
 * sandboxes can be created from it.
 */
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "cli/cli_daemon.h"
#include "cli/cli_jail.h"
#include "cli/cli_vm.h"
#include "cli/commands.h"
#include "snapshot/snap_layer.h"
#include "snapshot/snapshot.h"
#include "util/errmsg.h"

static const char usage[] =
	"forkvm snapshot create VM DIR [--force]\n"
	"    pause VM, write DIR atomically (vmstate, sparse memory, meta.json), resume;\n"
	"    a jailed VM writes it in its jail, then it is moved to DIR, root's (SECURITY.md)\n"
	"forkvm snapshot create ID\n"
	"    a daemon sandbox (sb-...): the daemon writes and records the snapshot in its state\n"
	"    directory; prints its id and dir\n"
	"forkvm snapshot verify DIR [--sections]\n"
	"    read and check DIR as a restore would (magic, version, checksums, sizes);\n"
	"    --sections lists every vmstate section with its length and XXH64\n"
	"forkvm snapshot compact TIP OUT\n"
	"    merge a diff chain (TIP and its parents) into one full snapshot OUT\n";

/* DIR for the VMM: absolute, since the VMM's working directory is not ours. */
static int absolute_dir(const char *dir, char *out, size_t len)
{
	char cwd[PATH_MAX];

	if (dir[0] == '/')
		return snprintf(out, len, "%s", dir) >= (int)len ? -1 : 0;
	if (!getcwd(cwd, sizeof(cwd)))
		return -1;
	return snprintf(out, len, "%s/%s", cwd, dir) >= (int)len ? -1 : 0;
}

/* The daemon's snapshot of sandbox id; prints the snapshot's record (id, dir, ...). */
static int daemon_snapshot(const char *id)
{
	char path[128];
	struct fvm_err err = FVM_ERR_INIT;
	json_t *reply = NULL;

	if (cli_daemon_sandbox_path(id, "/snapshot", path, sizeof(path)) < 0) {
		fprintf(stderr, "forkvm snapshot: sandbox id '%s' is too long\n", id);
		return CLI_EXIT_FAIL;
	}
	if (cli_daemon_call("POST", path, NULL, &reply, &err) < 0) {
		fprintf(stderr, "forkvm snapshot: %s\n", err_text(&err));
		return CLI_EXIT_FAIL;
	}
	if (json_object_set_new(reply, "ok", json_true()) < 0) {
		fprintf(stderr, "forkvm snapshot: %s: the daemon's answer is not an object\n", id);
		json_decref(reply);
		return CLI_EXIT_FAIL;
	}
	json_dumpf(reply, stdout, JSON_COMPACT);
	fputc('\n', stdout);
	json_decref(reply);
	return CLI_EXIT_OK;
}

static int snapshot_create(int argc, char **argv)
{
	char dir[PATH_MAX];
	struct fvm_err err = FVM_ERR_INIT;
	bool force = false, via_daemon = false;
	json_t *req;

	if (argc >= 3 && argv[2][0] != '-' &&
	    cli_daemon_sandbox(argv[2], &via_daemon, &err) < 0) {
		fprintf(stderr, "forkvm snapshot: %s\n", err_text(&err));
		return CLI_EXIT_FAIL;
	}
	for (int i = 3; via_daemon && i < argc; i++)
		if (strcmp(argv[i], "--force") == 0)
			return cli_daemon_refuse("snapshot", "--force", "each daemon snapshot is a "
						 "new one");
	if (via_daemon && argc > 3)
		return cli_daemon_refuse("snapshot", "DIR", "the daemon keeps its snapshots in "
					 "its state directory");
	if (via_daemon)
		return daemon_snapshot(argv[2]);
	if (argc == 5 && strcmp(argv[4], "--force") == 0)
		force = true;
	else if (argc != 4)
		return cli_usage_error(&cli_cmd_snapshot, "create needs VM and DIR");
	if (absolute_dir(argv[3], dir, sizeof(dir)) < 0)
		return cli_usage_error(&cli_cmd_snapshot, "DIR '%s' is too long", argv[3]);
	/* A jailed VMM writes only its jail: the snapshot is made there and adopted. */
	struct cli_jail jail;
	int jailed = cli_vm_jail(argv[2], &jail, &err);
	if (jailed < 0) {
		fprintf(stderr, "forkvm: %s\n", err_text(&err));
		return CLI_EXIT_FAIL;
	}
	if (jailed && !cli_jail_writes_itself(&jail, dir))
		return cli_jail_snapshot(argv[2], &jail, dir, force);
	req = json_pack("{s:s,s:s,s:b,s:s}", "cmd", "snapshot", "dir", dir, "force", force,
			"source", argv[2]);
	/* a jailed VMM writing DIR itself: the one checked, on the request's connection */
	json_t *reply = cli_vm_call_peer(argv[2], jailed ? (int)jail.pid : -1,
					 jailed ? (int)jail.uid : -1, req, 3600 * 1000);
	json_decref(req);
	return cli_print_reply(reply, JSON_COMPACT);
}

static void print_sections(const struct snapshot *snap)
{
	json_t *list = json_array();

	for (int i = 0; i < snap->state.nsections; i++) {
		const struct snap_section *s = &snap->state.sections[i];
		char hash[20];
		snprintf(hash, sizeof(hash), "%016llx", (unsigned long long)XXH64(s->data, s->len, 0));
		json_array_append_new(list, json_pack("{s:s,s:i,s:I,s:s}", "section",
						      snap_section_name(s->type), "instance",
						      (int)s->instance, "len", (json_int_t)s->len,
						      "xxh64", hash));
	}
	json_dumpf(list, stdout, JSON_COMPACT);
	fputc('\n', stdout);
	json_decref(list);
}

static int snapshot_verify(int argc, char **argv)
{
	struct snapshot snap;
	struct snap_machine m;
	bool sections = argc == 4 && strcmp(argv[3], "--sections") == 0;
	struct fvm_err err = FVM_ERR_INIT;

	if (argc != 3 && !sections)
		return cli_usage_error(&cli_cmd_snapshot, "verify needs DIR");
	if (snap_open(argv[2], &snap, &err) ||
	    snap_decode(&snap, &m, &err)) {
		fprintf(stderr, "forkvm snapshot verify: %s: %s\n", argv[2], err_text(&err));
		return CLI_EXIT_FAIL;
	}
	printf("{\"ok\":true,\"dir\":\"%s\",\"format_version\":%u,\"sections\":%d,"
	       "\"mem_bytes\":%llu,\"vcpus\":%d,\"guest\":\"%s\",\"disks\":%d}\n",
	       argv[2], snap.state.version, snap.state.nsections,
	       (unsigned long long)m.config.mem_size, m.nvcpus,
	       m.config.guest_kind == SNAP_GUEST_PROBE ? "probe" : "linux", m.ndisks);
	if (sections)
		print_sections(&snap);
	snap_machine_free(&m);
	snap_close(&snap);
	return CLI_EXIT_OK;
}

static int run(int argc, char **argv)
{
	if (argc < 2)
		return cli_usage_error(&cli_cmd_snapshot, "missing subcommand");
	if (strcmp(argv[1], "create") == 0)
		return snapshot_create(argc, argv);
	if (strcmp(argv[1], "verify") == 0)
		return snapshot_verify(argc, argv);
	if (strcmp(argv[1], "compact") == 0) {
		struct fvm_err err = FVM_ERR_INIT;
		if (argc != 4)
			return cli_usage_error(&cli_cmd_snapshot, "compact needs TIP and OUT");
		if (snap_compact(argv[2], argv[3], &err) < 0) {
			fprintf(stderr, "forkvm snapshot compact: %s\n", err_text(&err));
			return CLI_EXIT_FAIL;
		}
		printf("{\"ok\":true,\"dir\":\"%s\"}\n", argv[3]);
		return CLI_EXIT_OK;
	}
	return cli_usage_error(&cli_cmd_snapshot, "unknown subcommand '%s'", argv[1]);
}

const struct cli_command cli_cmd_snapshot = { "snapshot", "create or verify VM snapshots", usage,
					      run };
