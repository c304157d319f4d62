/*
 * forkvm exec VM -- cmd args...: run a command in a Linux guest through its agent, its output
 * streamed as it is produced; for a daemon sandbox, through the daemon's streamed exec.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli_daemon.h"
#include "cli/cli_vm.h"
#include "cli/commands.h"
#include "util/base64.h"
#include "agent/agent_client.h"
#include "util/clock.h"
#include "util/errmsg.h"

static const char usage[] =
	"forkvm exec VM [options] -- COMMAND [ARGS...]\n"
	"  --vsock PATH    the VM's vsock socket (default: its control socket + .vsock)\n"
	"  --port N        the agent's vsock port (default 52)\n"
	"  --timeout MS    kill the command's process group after MS (exit status 124)\n"
	"  --cwd DIR       working directory in the guest\n"
	"  --env K=V       add to the environment (repeatable)\n"
	"  --stdin         send this process's stdin to the command\n"
	"Prints the command's stdout and stderr as it produces them (no size bound) and exits\n"
	"with its exit status (128+N when killed by signal N). A daemon sandbox (VM is an sb-...\n"
	"id) runs it through the daemon (--vsock and --port are not available there).\n";

static const struct option options[] = {
	{ "vsock", required_argument, NULL, 'v' }, { "port", required_argument, NULL, 'p' },
	{ "timeout", required_argument, NULL, 't' }, { "cwd", required_argument, NULL, 'c' },
	{ "env", required_argument, NULL, 'e' },   { "stdin", no_argument, NULL, 'i' },
	{ NULL, 0, NULL, 0 },
};

static json_t *read_stdin_b64(void)
{
	size_t cap = 1 << 16, len = 0;
	uint8_t *buf = malloc(cap);
	ssize_t n;

	while (buf && (n = read(STDIN_FILENO, buf + len, cap - len)) > 0) {
		len += (size_t)n;
		if (len == cap && cap < (64u << 20))
			buf = realloc(buf, cap *= 2);
	}
	char *b64 = buf ? malloc(base64_encoded_size(len)) : NULL;

	if (b64)
		base64_encode(buf, len, b64);
	json_t *v = b64 ? json_string(b64) : NULL;
	free(buf);
	free(b64);
	return v;
}

/* A streamed output event: its bytes go out at once, to stdout or stderr. */
static int print_event(void *arg, json_t *ev, struct fvm_err *err)
{
	const char *name = json_string_value(json_object_get(ev, "event")) ?: "";
	const char *text = json_string_value(json_object_get(ev, "data")) ?: "";
	FILE *out = strcmp(name, "stderr") == 0 ? stderr : stdout;
	uint8_t *data;
	size_t len;

	(void)arg;
	if (strcmp(name, "stdout") && strcmp(name, "stderr"))
		return 0; /* an event this client does not know: not output */
	if (base64_decode(text, strlen(text), &data, &len))
		return errmsg(err, -EPROTO, "exec: a %s event that is not base64", name);
	fwrite(data, 1, len, out);
	free(data);
	if (fflush(out) == EOF)
		return errmsg(err, -errno, "exec: writing the command's %s: %s", name,
			      strerror(errno));
	return 0;
}

/* How a streamed exec through the daemon ended (its "exit" line), or its "error" line. */
struct daemon_exec {
	json_t *exit;
	struct fvm_err err;
};

/* One NDJSON line of the daemon's streamed exec (docs/DAEMON.md). */
static int daemon_line(void *arg, json_t *line)
{
	struct daemon_exec *x = arg;
	const char *type = json_string_value(json_object_get(line, "type")) ?: "";
	json_t *ev;
	int ret;

	if (!strcmp(type, "stdout") || !strcmp(type, "stderr")) {
		/* the agent's event shape, so one printer serves both paths */
		ev = json_pack("{s:s, s:O?}", "event", type, "data", json_object_get(line, "data"));
		ret = ev ? print_event(NULL, ev, &x->err) : -ENOMEM;
		json_decref(ev);
		if (ret)
			fprintf(stderr, "forkvm exec: %s\n", x->err.msg);
		return ret;
	}
	if (!strcmp(type, "exit")) {
		x->exit = json_incref(line);
		return 0;
	}
	if (!strcmp(type, "error")) {
		json_t *e = json_object_get(line, "error");
		fprintf(stderr, "forkvm exec: %s: %s\n",
			json_string_value(json_object_get(e, "code")) ?: "error",
			json_string_value(json_object_get(e, "message")) ?: "");
		return -EREMOTEIO;
	}
	return 0; /* "start", or a line this CLI does not know */
}

/* req (the agent's exec request) through the daemon's streamed exec of sandbox id. */
static int daemon_exec(const char *id, json_t *req, json_t **reply)
{
	struct daemon_exec x = { 0 };
	char path[256];
	struct fvm_err err = FVM_ERR_INIT;
	int ret;

	json_object_del(req, "op");
	json_object_set_new(req, "stream", json_true());
	ret = cli_daemon_sandbox_path(id, "/exec", path, sizeof(path));
	if (ret < 0)
		fprintf(stderr, "forkvm exec: %s: the sandbox id is too long\n", id);
	if (ret == 0) {
		ret = cli_daemon_stream("POST", path, req, daemon_line, &x, &err);
		if (ret < 0 && ret != -EREMOTEIO && !errset(&x.err))
			fprintf(stderr, "forkvm exec: %s\n", err_text(&err));
	}
	if (ret == 0 && !x.exit) {
		fprintf(stderr, "forkvm exec: daemon %s: the stream of %s ended without an exit "
			"line\n", cli_daemon_where(), id);
		ret = -EPROTO;
	}
	*reply = x.exit;
	if (ret < 0) {
		json_decref(x.exit);
		*reply = NULL;
	}
	return ret;
}

static void print_stream(json_t *reply, const char *name, FILE *out)
{
	uint8_t *data;
	size_t len;
	char key[32];

	const char *text = json_string_value(json_object_get(reply, name)) ?: "";

	if (base64_decode(text, strlen(text), &data, &len) == 0) {
		fwrite(data, 1, len, out);
		free(data);
	}
	snprintf(key, sizeof(key), "%s_truncated", name);
	if (json_is_true(json_object_get(reply, key)))
		fprintf(stderr, "forkvm exec: %s was truncated by the agent's output bound\n", name);
}

static int run(int argc, char **argv)
{
	char sock[512], vsock[600] = "";
	struct fvm_err err = FVM_ERR_INIT;
	unsigned long long port = 52, timeout = 0;
	const char *direct_only = NULL;
	bool via_daemon = false;
	json_t *req = json_pack("{s:s,s:s,s:b,s:[]}", "op", "exec", "output_encoding", "base64",
				"stream", 1, "argv");
	json_t *env = json_array(), *reply = NULL;
	int opt, fd, ret = CLI_EXIT_FAIL;

	/* VM first, then options, then `--` and the command (getopt stops at `--`). */
	if (argc < 2 || argv[1][0] == '-')
		goto usage;
	if (cli_vm_resolve(argv[1], sock, sizeof(sock), &via_daemon, &err) < 0) {
		fprintf(stderr, "forkvm exec: %s\n", err_text(&err));
		goto out;
	}
	optind = 1;
	opterr = 0;
	while ((opt = getopt_long(argc - 1, argv + 1, "+", options, NULL)) != -1) {
		switch (opt) {
		case 'v':
			snprintf(vsock, sizeof(vsock), "%s", optarg);
			direct_only = "--vsock";
			break;
		case 'p':
			if (cli_parse_u64(optarg, &port) || port > 0xffffffffULL)
				goto usage;
			direct_only = "--port";
			break;
		case 't':
			if (cli_parse_u64(optarg, &timeout) || timeout > 0xffffffffULL)
				goto usage;
			json_object_set_new(req, "timeout_ms", json_integer((json_int_t)timeout));
			break;
		case 'c': json_object_set_new(req, "cwd", json_string(optarg)); break;
		case 'e': json_array_append_new(env, json_string(optarg)); break;
		case 'i':
			json_object_set_new(req, "stdin", read_stdin_b64());
			json_object_set_new(req, "stdin_base64", json_true());
			break;
		default: goto usage;
		}
	}
	if (!vsock[0])
		snprintf(vsock, sizeof(vsock), "%s.vsock", sock);
	for (int i = optind + 1; i < argc; i++)
		json_array_append_new(json_object_get(req, "argv"), json_string(argv[i]));
	if (json_array_size(json_object_get(req, "argv")) == 0)
		goto usage;
	json_object_set(req, "env", env);
	if (via_daemon && direct_only) {
		ret = cli_daemon_refuse("exec", direct_only, "the daemon reaches the guest agent itself");
		goto out;
	}
	if (via_daemon) {
		if (daemon_exec(argv[1], req, &reply) < 0)
			goto out;
		goto ended;
	}
	/* 10 s to reach the agent; the command itself may run as long as it needs. */
	fd = agent_connect(vsock, (int)port, deadline_after_ms(10000), -1, &err);
	if (fd < 0 ||
	    agent_request_stream(fd, req, print_event, NULL, &reply, 0, -1, &err) < 0) {
		fprintf(stderr, "forkvm exec: %s\n", err_text(&err));
		if (fd >= 0)
			close(fd);
		goto out;
	}
	close(fd);
	/* An agent from before streaming ignores "stream" and answers with the output. */
	print_stream(reply, "stdout", stdout);
	print_stream(reply, "stderr", stderr);
ended:
	if (json_is_true(json_object_get(reply, "timed_out"))) {
		fprintf(stderr, "forkvm exec: timed out after %llu ms\n", timeout);
		ret = 124;
	} else if (json_is_integer(json_object_get(reply, "exit_code"))) {
		ret = (int)json_integer_value(json_object_get(reply, "exit_code"));
	} else {
		ret = 128 + (int)json_integer_value(json_object_get(reply, "signal"));
	}
	goto out;
usage:
	ret = cli_usage_error(&cli_cmd_exec, "need VM, then -- and a command");
out:
	json_decref(reply);
	json_decref(env);
	json_decref(req);
	return ret;
}

const struct cli_command cli_cmd_exec = { "exec", "run a command in a Linux guest (agent)", usage,
					  run };
