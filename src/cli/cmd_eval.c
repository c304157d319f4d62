/*
 * forkvm eval VM CODE: run code in a warm interpreter in a Linux guest, through its agent;
 * for a daemon sandbox, through the daemon's eval route.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent/agent_client.h"
#include "cli/cli_daemon.h"
#include "cli/cli_vm.h"
#include "cli/commands.h"
#include "util/base64.h"
#include "util/clock.h"
#include "util/errmsg.h"

/* The agent takes at most a 16 MiB frame; code read from stdin is bounded below that. */
#define EVAL_MAX_CODE (15u << 20)
#define EVAL_EXIT_TIMEOUT 124

static const char usage[] =
	"forkvm eval VM [options] [--] CODE\n"
	"  CODE            Python source; '-' reads it from stdin\n"
	"  --vsock PATH    the VM's vsock socket (default: its control socket + .vsock)\n"
	"  --port N        the agent's vsock port (default 52)\n"
	"  --lang LANG     the language (default and, for now, only: python)\n"
	"  --context NAME  the interpreter to use (default 'default'); each context is its own\n"
	"                  interpreter process with its own variables\n"
	"  --timeout MS    interrupt the code after MS (KeyboardInterrupt; if it does not stop\n"
	"                  within 2 s the interpreter is killed and the context loses its state)\n"
	"  --close         end the context's interpreter instead (no CODE)\n"
	"Runs CODE in a long-lived interpreter in the guest: what one eval defines, the next one\n"
	"of the same context sees (and so do the children of a snapshot or branch). Prints what\n"
	"the code wrote to stdout and stderr, then the repr of a final expression (unless None)\n"
	"on stdout. Exit status: 0; 1 when the code raised (the traceback goes to stderr) or the\n"
	"eval failed; 124 on timeout.\n"
	"A daemon sandbox (VM is an sb-... id) evaluates through the daemon: --context, --lang\n"
	"and --timeout apply; --vsock, --port and --close do not.\n";

static const struct option options[] = {
	{ "vsock", required_argument, NULL, 'v' },  { "port", required_argument, NULL, 'p' },
	{ "lang", required_argument, NULL, 'l' },   { "context", required_argument, NULL, 'c' },
	{ "timeout", required_argument, NULL, 't' }, { "close", no_argument, NULL, 'x' },
	{ NULL, 0, NULL, 0 },
};

struct eval_opts {
	char vsock[600];
	unsigned long long port, timeout;
	const char *lang, *context, *code;
	bool close;
	const char *direct_only;	/* an option the daemon has no counterpart for */
	const char *direct_why;		/* and why */
};

/* All of stdin (at most EVAL_MAX_CODE bytes), NUL-terminated; NULL with a message. */
static char *read_all_stdin(size_t *len)
{
	size_t cap = 1 << 16;
	char *buf = malloc(cap + 1), *grown;
	ssize_t n;

	*len = 0;
	while (buf && (n = read(STDIN_FILENO, buf + *len, cap - *len)) > 0) {
		*len += (size_t)n;
		if (*len < cap)
			continue;
		if (cap >= EVAL_MAX_CODE) {
			fprintf(stderr, "forkvm eval: code on stdin exceeds %u bytes\n", EVAL_MAX_CODE);
			free(buf);
			return NULL;
		}
		cap *= 2;
		grown = realloc(buf, cap + 1);
		if (!grown)
			free(buf);
		buf = grown;
	}
	if (!buf)
		fprintf(stderr, "forkvm eval: out of memory reading stdin\n");
	else
		buf[*len] = '\0';
	return buf;
}

/* Decode and write one base64 output field of the reply. */
static void print_stream(json_t *reply, const char *name, FILE *out)
{
	const char *text = json_string_value(json_object_get(reply, name));
	char key[32];
	uint8_t *data;
	size_t len;

	if (text && base64_decode(text, strlen(text), &data, &len) == 0) {
		fwrite(data, 1, len, out);
		free(data);
	}
	fflush(out);
	snprintf(key, sizeof(key), "%s_truncated", name);
	if (json_is_true(json_object_get(reply, key)))
		fprintf(stderr, "forkvm eval: %s was truncated by the agent's output bound\n", name);
}

/* Print an eval reply; returns the exit status. */
static int print_reply(json_t *reply, const struct eval_opts *o)
{
	json_t *error = json_object_get(reply, "error");
	const char *result = json_string_value(json_object_get(reply, "result"));
	const char *tb = json_string_value(json_object_get(error, "traceback"));

	if (json_is_true(json_object_get(reply, "started")) &&
	    json_is_true(json_object_get(reply, "state_lost")))
		fprintf(stderr, "forkvm eval: context '%s' had lost its interpreter; "
			"this eval ran in a fresh one\n", o->context);
	print_stream(reply, "stdout", stdout);
	print_stream(reply, "stderr", stderr);
	if (result) {
		printf("%s\n", result);
		if (json_is_true(json_object_get(reply, "result_truncated")))
			fprintf(stderr, "forkvm eval: the result was truncated\n");
	}
	fflush(stdout);
	if (!json_is_object(error))
		return CLI_EXIT_OK;
	if (tb && tb[0])
		fputs(tb, stderr);
	fprintf(stderr, "forkvm eval: %s: %s\n", json_string_value(json_object_get(error, "name")),
		json_string_value(json_object_get(error, "value")));
	return json_is_true(json_object_get(reply, "timed_out")) ? EVAL_EXIT_TIMEOUT
								  : CLI_EXIT_FAIL;
}

/* Parse argv into o; CODE is the one positional argument after the options. */
static int parse(int argc, char **argv, struct eval_opts *o)
{
	char sock[512];
	int opt;

	if (argc < 2 || argv[1][0] == '-' || cli_vm_socket(argv[1], sock, sizeof(sock)) < 0)
		return -1;
	optind = 1;
	opterr = 0;
	while ((opt = getopt_long(argc - 1, argv + 1, "+", options, NULL)) != -1) {
		switch (opt) {
		case 'v':
			snprintf(o->vsock, sizeof(o->vsock), "%s", optarg);
			o->direct_only = "--vsock";
			o->direct_why = "the daemon reaches the guest agent itself";
			break;
		case 'p':
			if (cli_parse_u64(optarg, &o->port) || o->port > 0xffffffffULL)
				return -1;
			o->direct_only = "--port";
			o->direct_why = "the daemon reaches the guest agent itself";
			break;
		case 'l': o->lang = optarg; break;
		case 'c': o->context = optarg; break;
		case 't':
			if (cli_parse_u64(optarg, &o->timeout) || o->timeout > 0xffffffffULL)
				return -1;
			break;
		case 'x':
			o->close = true;
			o->direct_only = "--close";
			o->direct_why = "the daemon has no route that ends an interpreter context";
			break;
		default: return -1;
		}
	}
	if (!o->vsock[0])
		snprintf(o->vsock, sizeof(o->vsock), "%s.vsock", sock);
	/* optind counts within argv + 1. */
	if (o->close)
		return optind + 1 == argc ? 0 : -1;
	if (optind + 2 != argc)
		return -1;
	o->code = argv[optind + 1];
	return 0;
}

/* The eval through the daemon's route for sandbox id; the exit status as the direct path's. */
static int daemon_eval(const char *id, const struct agent_eval_args *a,
		       const struct eval_opts *o)
{
	char path[128];
	struct fvm_err err = FVM_ERR_INIT;
	json_t *body, *reply = NULL;
	int ret = CLI_EXIT_FAIL;

	body = json_pack("{s:s%,s:s,s:s,s:I}", "code", a->code, a->code_len, "context", o->context,
			 "output_encoding", "base64", "timeout_ms", (json_int_t)o->timeout);
	if (!body) {
		fprintf(stderr, "forkvm eval: cannot encode the request (code must be UTF-8)\n");
		return CLI_EXIT_FAIL;
	}
	if (o->lang && json_object_set_new(body, "lang", json_string(o->lang)) < 0)
		fprintf(stderr, "forkvm eval: --lang '%s' cannot be encoded (not UTF-8)\n", o->lang);
	else if (cli_daemon_sandbox_path(id, "/eval", path, sizeof(path)) < 0)
		fprintf(stderr, "forkvm eval: sandbox id '%s' is too long\n", id);
	else if (cli_daemon_call("POST", path, body, &reply, &err) < 0)
		fprintf(stderr, "forkvm eval: %s\n", err_text(&err));
	else
		ret = print_reply(reply, o);
	json_decref(reply);
	json_decref(body);
	return ret;
}

static int run(int argc, char **argv)
{
	struct eval_opts o = { .port = AGENT_VSOCK_PORT, .context = "default" };
	struct agent_eval_args a = { 0 };
	char *code = NULL;
	struct fvm_err err = FVM_ERR_INIT;
	json_t *reply = NULL;
	int fd = -1, ret = CLI_EXIT_FAIL;
	bool closed, via_daemon;

	if (parse(argc, argv, &o) < 0)
		return cli_usage_error(&cli_cmd_eval, "need VM, then options, then CODE (or --close)");
	if (cli_daemon_sandbox(argv[1], &via_daemon, &err) < 0) {
		fprintf(stderr, "forkvm eval: %s\n", err_text(&err));
		return CLI_EXIT_FAIL;
	}
	if (via_daemon && o.direct_only)
		return cli_daemon_refuse("eval", o.direct_only, o.direct_why);
	if (o.code && !strcmp(o.code, "-")) {
		code = read_all_stdin(&a.code_len);
		if (!code)
			return CLI_EXIT_FAIL;
		a.code = code;
	} else if (o.code) {
		a.code = o.code;
		a.code_len = strlen(o.code);
	}
	a.lang = o.lang;
	a.context = o.context;
	a.timeout_ms = o.timeout;
	if (via_daemon) {
		ret = daemon_eval(argv[1], &a, &o);
		free(code);
		return ret;
	}
	/* 10 s to reach the agent; the code itself may run as long as it needs. */
	fd = agent_connect(o.vsock, (int)o.port, deadline_after_ms(10000), -1, &err);
	if (fd >= 0 && o.close)
		ret = agent_eval_close(fd, o.context, &closed, deadline_after_ms(60000), &err);
	else if (fd >= 0)
		ret = agent_eval(fd, &a, &reply, -1, &err);
	if (fd < 0 || ret < 0) {
		fprintf(stderr, "forkvm eval: %s\n", err_text(&err));
		ret = CLI_EXIT_FAIL;
	} else if (o.close) {
		printf("context '%s': %s\n", o.context, closed ? "closed" : "was not running");
		ret = CLI_EXIT_OK;
	} else {
		ret = print_reply(reply, &o);
	}
	if (fd >= 0)
		close(fd);
	json_decref(reply);
	free(code);
	return ret;
}

const struct cli_command cli_cmd_eval = { "eval", "run code in a warm interpreter in a guest (agent)",
					  usage, run };
