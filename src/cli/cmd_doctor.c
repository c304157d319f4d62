/* "forkvm doctor": run every check of src/doctor/ and print one line each, or a JSON array. */
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/cli_vm.h"
#include "cli/commands.h"
#include "doctor/doctor.h"
#include "image/image.h"

#define DOCTOR_USAGE                                                                        \
	"forkvm doctor [--json] [--kvm-device PATH]\n"                                      \
	"  Check this host for what forkvm needs: /dev/kvm and its flavour (hardware,\n"    \
	"  nested, PVM), KVM capabilities, userfaultfd features, hugepages and THP, memfd,\n" \
	"  cgroup v2 controllers, /dev/net/tun, seccomp, free disk space (run dir, snapshot\n" \
	"  roots, image cache), the Linux guest image and root filesystem, image tools,\n"  \
	"  and whether forkvmd answers ($FORKVM_DAEMON_SOCKET or /var/lib/forkvm/api.sock).\n"  \
	"  One line per check: ok, warn or fail, what was found and, for warn and fail,\n"  \
	"  the command that fixes it. --json prints an array of {name, status, found, fix}.\n" \
	"  --kvm-device checks another KVM device than /dev/kvm (as forkvm run's).\n"         \
	"  Exit status 0 when no check fails, 1 otherwise.\n"

static json_t *result_json(const char *name, const struct doctor_result *r)
{
	return json_pack("{s:s, s:s, s:s, s:s?}", "name", name, "status",
			 doctor_status_name(r->status), "found", r->found, "fix",
			 r->fix[0] ? r->fix : NULL);
}

static void print_line(const char *name, const struct doctor_result *r)
{
	printf("%-4s  %-19s %s", doctor_status_name(r->status), name, r->found);
	if (r->fix[0] && r->status != DOCTOR_OK)
		printf("  [fix: %s]", r->fix);
	putchar('\n');
}

static int cmd_doctor(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "kvm-device", required_argument, NULL, 'k' },
		{ 0 },
	};
	static struct doctor_result results[64];
	char cache[PATH_MAX];
	struct doctor_ctx ctx = { 0 };
	size_t counts[3] = { 0 };
	json_t *arr = NULL;
	bool json = false;
	int c, ret = CLI_EXIT_OK;

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+", longopts, NULL)) != -1) {
		if (c == 'j')
			json = true;
		else if (c == 'k' && optarg[0])
			ctx.kvm_path = optarg;
		else
			return cli_usage_error(&cli_cmd_doctor, "unknown option or missing argument "
					       "'%s'", argv[optind - 1]);
	}
	if (optind != argc)
		return cli_usage_error(&cli_cmd_doctor, "unexpected argument '%s'", argv[optind]);
	if (doctor_checks_count > sizeof(results) / sizeof(results[0])) {
		fprintf(stderr, "forkvm doctor: more checks than results\n");
		return CLI_EXIT_FAIL;
	}
	ctx.run_dir = cli_run_dir();
	ctx.cache_dir = image_default_cache(cache, sizeof(cache)) ? NULL : cache;
	for (size_t i = 0; i < doctor_checks_count; i++) {
		doctor_run(&doctor_checks[i], &ctx, &results[i]);
		counts[results[i].status]++;
	}
	if (counts[DOCTOR_FAIL])
		ret = CLI_EXIT_FAIL;
	if (!json) {
		for (size_t i = 0; i < doctor_checks_count; i++)
			print_line(doctor_checks[i].name, &results[i]);
		printf("%zu ok, %zu warn, %zu fail\n", counts[DOCTOR_OK], counts[DOCTOR_WARN],
		       counts[DOCTOR_FAIL]);
		return ret;
	}
	arr = json_array();
	for (size_t i = 0; arr && i < doctor_checks_count; i++)
		if (json_array_append_new(arr, result_json(doctor_checks[i].name, &results[i])))
			goto nomem;
	if (!arr || json_dumpf(arr, stdout, JSON_INDENT(2)) < 0)
		goto nomem;
	putchar('\n');
	json_decref(arr);
	return ret;
nomem:
	json_decref(arr);
	fprintf(stderr, "forkvm doctor: cannot write the JSON report (out of memory)\n");
	return CLI_EXIT_FAIL;
}

const struct cli_command cli_cmd_doctor = {
	.name = "doctor",
	.summary = "check this host for what forkvm needs (ok / warn / fail, with fixes)",
	.usage = DOCTOR_USAGE,
	.run = cmd_doctor,
};
