/*
 * Test tool (tests/integration/test_net_host.py): what a cow child does with the network it
 * inherits, under the filters a real one runs with. The parent makes a network (net_create,
 * before any filter, as `forkvm run` does), loads the control filter, forks; the child closes
 * every inherited fd (as fds_close_except does in the cow template) and makes its own with
 * net_create_child, under the inherited control filter (its relay thread adds the device
 * filter). Each prints "parent|child PID STATUS-JSON" and waits for its stdin to close,
 * then net_destroy and exit 0.
 *
 *   net_child [--publish SPEC]... [--net MODE] [--allow CIDR]... [--deny CIDR]...
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fork/fd_hygiene.h"
#include "jail/seccomp.h"
#include "net/net.h"
#include "util/errmsg.h"

static int relay_filter(void)
{
	return jail_seccomp_apply(JAIL_ROLE_DEVICE);
}

/* Print our status line, wait until stdin closes, tear down. */
static int serve(const char *who, struct net *n)
{
	char buf[64];
	json_t *st = net_status_json(n);
	char *text = json_dumps(st, JSON_COMPACT);

	printf("%s %d %s\n", who, (int)getpid(), text ? text : "{}");
	fflush(stdout);
	free(text);
	json_decref(st);
	/* Until stdin closes: parent and child both see the end of file. */
	while (read(STDIN_FILENO, buf, sizeof(buf)) > 0)
		;
	net_destroy(n);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "net", required_argument, NULL, 'n' }, { "publish", required_argument, NULL, 'p' },
		{ "allow", required_argument, NULL, 'a' }, { "deny", required_argument, NULL, 'd' },
		{ NULL, 0, NULL, 0 },
	};
	static struct net parent, child;
	struct net_opts o;
	struct fvm_err err = FVM_ERR_INIT;
	int c, ret = 0, status;
	pid_t pid;

	net_opts_init(&o);
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'n': ret = net_opts_mode(&o, optarg, &err); break;
		case 'p': ret = net_opts_publish(&o, optarg, &err); break;
		case 'a': ret = net_opts_cidr(&o, true, optarg, &err); break;
		case 'd': ret = net_opts_cidr(&o, false, optarg, &err); break;
		default: ret = -EINVAL; snprintf(err.msg, sizeof(err.msg), "unknown option"); break;
		}
		if (ret) {
			fprintf(stderr, "net_child: %s\n", err.msg);
			return 2;
		}
	}
	o.relay_thread_init = relay_filter;
	if (net_opts_finish(&o, &err) || jail_seccomp_init(false) < 0) {
		fprintf(stderr, "net_child: %s\n", err.msg);
		return 2;
	}
	if (net_create(&o, &parent, &err)) {
		fprintf(stderr, "net_child: parent: %s\n", err.msg);
		return 1;
	}
	if (jail_seccomp_apply(JAIL_ROLE_CONTROL) < 0)
		return 1;
	fflush(stdout);
	pid = fork();
	if (pid < 0) {
		perror("net_child: fork");
		return 1;
	}
	if (pid == 0) {
		int keep[1] = { -1 };

		fds_close_except(keep, 0);
		ret = net_create_child(&child, true, &err);
		if (ret) {
			fprintf(stderr, "net_child: child: %s\n", err.msg);
			_exit(1);
		}
		_exit(serve("child", &child));
	}
	serve("parent", &parent);
	if (waitpid(pid, &status, 0) != pid)
		return 1;
	if (!WIFEXITED(status) || WEXITSTATUS(status)) {
		char how[64];
		jail_describe_wait(status, how, sizeof(how));
		fprintf(stderr, "net_child: the child %s\n", how);
		return 1;
	}
	return 0;
}
