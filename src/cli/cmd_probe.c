/* forkvm probe OP VM: drive the probe guest (ping, fill, checksum, dirty, counter). */
#include <getopt.h>
#include <stdint.h>
#include <string.h>

#include "cli/cli_vm.h"
#include "cli/commands.h"

static const char usage[] =
	"forkvm probe OP VM [options]\n"
	"  OP: ping | fill | checksum | dirty | counter | memhash | crash\n"
	"  --vcpu N      which vCPU's probe runs it (default 0)\n"
	"  --gpa ADDR    guest-physical start (page aligned; work area starts at 4M)\n"
	"  --len SIZE    bytes (fill, checksum, memhash), e.g. 64M\n"
	"  --seed N      fill/dirty pattern seed\n"
	"  --pages N     dirty: pages to keep rewriting (0 stops)\n"
	"  --stride N    dirty: distance between touched pages, in pages (default 1)\n"
	"memhash is computed by the VMM from guest RAM, not by the guest.\n";

struct probe_op {
	const char *name;
	const char *const required[3];
};

static const struct probe_op ops[] = {
	{ "ping", { NULL } },
	{ "fill", { "gpa", "len", NULL } },
	{ "checksum", { "gpa", "len", NULL } },
	{ "dirty", { "pages", NULL } },
	{ "counter", { NULL } },
	{ "memhash", { "gpa", "len", NULL } },
	{ "crash", { NULL } },
};

static const struct option options[] = {
	{ "vcpu", required_argument, NULL, 'c' }, { "gpa", required_argument, NULL, 'g' },
	{ "len", required_argument, NULL, 'l' },  { "seed", required_argument, NULL, 's' },
	{ "pages", required_argument, NULL, 'p' }, { "stride", required_argument, NULL, 't' },
	{ "nonce", required_argument, NULL, 'n' }, { NULL, 0, NULL, 0 },
};

static const char *field_of(int opt)
{
	switch (opt) {
	case 'c': return "vcpu";
	case 'g': return "gpa";
	case 'l': return "len";
	case 's': return "seed";
	case 'p': return "pages";
	case 't': return "stride";
	default: return "nonce";
	}
}

static int run(int argc, char **argv)
{
	const struct probe_op *op = NULL;
	json_t *req;
	int opt, ret;

	if (argc < 3)
		return cli_usage_error(&cli_cmd_probe, "need OP and VM");
	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
		if (strcmp(argv[1], ops[i].name) == 0)
			op = &ops[i];
	if (!op)
		return cli_usage_error(&cli_cmd_probe, "unknown probe operation '%s'", argv[1]);
	req = json_pack("{s:s}", "cmd", op->name);
	optind = 3;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
		unsigned long long v;
		if (opt == '?' || cli_parse_size(optarg, &v) || v > (unsigned long long)INT64_MAX) {
			ret = cli_usage_error(&cli_cmd_probe, "bad option or value '%s'", argv[optind - 1]);
			goto out;
		}
		json_object_set_new(req, field_of(opt), json_integer((json_int_t)v));
	}
	if (optind < argc) {
		ret = cli_usage_error(&cli_cmd_probe, "unexpected argument '%s'", argv[optind]);
		goto out;
	}
	for (int i = 0; op->required[i]; i++) {
		if (!json_object_get(req, op->required[i])) {
			ret = cli_usage_error(&cli_cmd_probe, "%s needs --%s", op->name, op->required[i]);
			goto out;
		}
	}
	ret = cli_vm_call_print(argv[2], req, 600000, JSON_COMPACT);
out:
	json_decref(req);
	return ret;
}

const struct cli_command cli_cmd_probe = { "probe", "command the probe guest", usage, run };
