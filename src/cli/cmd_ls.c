/*
 * forkvm ls: the VMs this CLI reaches: a running daemon's sandboxes (GET /v1/sandboxes) and
 * the VMs with a control socket in the CLI's run directory (each asked for its status), as a
 * table or, with --json, one JSON array.
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cli/cli_daemon.h"
#include "cli/cli_vm.h"
#include "cli/commands.h"
#include "util/ctl_call.h"
#include "util/errmsg.h"

#define LS_STATUS_TIMEOUT_MS 2000

static const char usage[] =
	"forkvm ls [--json]\n"
	"  Lists the sandboxes of the running daemon (forkvm --help: which one) and the VMs\n"
	"  with a control socket in the run directory ($FORKVM_RUN_DIR, /run/forkvm for root,\n"
	"  else /tmp/forkvm-UID), whichever exist: NAME (a daemon sandbox's id), VIA (daemon or\n"
	"  local), STATE (running, paused, template: a cow template, dead; unreachable: a\n"
	"  socket nothing answers on), GUEST, PARENT (the sandbox it was branched from) and\n"
	"  AGE. A jailed VM's NAME.sock is a symlink into its jail: listed while it answers.\n"
	"  --json   one JSON array instead: each daemon sandbox's record with name, via and\n"
	"           age_s added; each local VM as name, via, socket, state, pid, age_s\n";

static double now_unix(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The daemon's sandboxes appended to rows; 0, or -errno with err set. */
static int daemon_rows(json_t *rows, struct fvm_err *err)
{
	json_t *list = NULL, *s;
	double now = now_unix();
	size_t i;
	int ret = cli_daemon_call("GET", "/v1/sandboxes", NULL, &list, err);

	if (ret < 0)
		return ret;
	json_array_foreach(list, i, s) {
		json_t *row = json_deep_copy(s);
		double created = json_number_value(json_object_get(s, "created_at"));

		if (!row || json_object_set(row, "name", json_object_get(s, "id")) < 0 ||
		    json_object_set_new(row, "via", json_string("daemon")) < 0 ||
		    json_object_set_new(row, "age_s", json_real(created > 0 ? now - created : 0)) < 0 ||
		    json_array_append_new(rows, row) < 0) {
			errf(err, "listing the daemon's sandboxes: out of memory");
			ret = -ENOMEM;
			break;
		}
	}
	json_decref(list);
	return ret;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* One local VM's row: its status answer, or "unreachable"; NULL when out of memory. */
static json_t *local_row(const char *dir, const char *file)
{
	char path[PATH_MAX];
	struct fvm_err err = FVM_ERR_INIT;
	json_t *req = json_pack("{s:s}", "cmd", "status"), *st = NULL, *row;
	size_t n = strlen(file) - strlen(".sock");
	int bad = 0;

	snprintf(path, sizeof(path), "%s/%s", dir, file);
	row = json_pack("{s:s%,s:s,s:s}", "name", file, n, "via", "local", "socket", path);
	if (req && row && ctl_call(path, req, &st, LS_STATUS_TIMEOUT_MS, &err) == 0 &&
	    json_is_true(json_object_get(st, "ok"))) {
		json_t *state = json_object_get(st, "state"), *up = json_object_get(st, "uptime_ms");

		/* A cow template answers status too, with its own fields (BRANCH.md). */
		if (!state && json_object_get(st, "live"))
			bad |= json_object_set_new(row, "state", json_string("template"));
		else
			bad |= json_object_set_new(row, "state", state ? json_incref(state)
							   : json_string("unknown"));
		bad |= json_object_set_new(row, "pid", json_incref(json_object_get(st, "pid")) ?: json_null());
		bad |= json_object_set_new(row, "age_s", json_is_integer(up) ?
					   json_real((double)json_integer_value(up) / 1e3) : json_null());
	} else if (row) {
		bad |= json_object_set_new(row, "state", json_string("unreachable"));
	}
	json_decref(st);
	json_decref(req);
	if (bad) {
		json_decref(row);
		return NULL;
	}
	return row;
}

/*
 * The run directory's VMs (NAME.sock sockets), by name, appended to rows; a socket a daemon
 * sandbox already listed (taken) is left out. 0, or -errno with err set.
 */
static int local_rows(json_t *rows, json_t *taken, struct fvm_err *err)
{
	const char *dir = cli_run_dir();
	char **names = NULL, path[PATH_MAX];
	size_t n = 0, cap = 0;
	struct dirent *e;
	struct stat sb;
	DIR *d;
	int ret = 0;

	if (!dir) {
		return errmsg(err, -ENAMETOOLONG, "FORKVM_RUN_DIR is longer than %d bytes",
			      PATH_MAX - 1);
	}
	d = opendir(dir);
	if (!d) {
		ret = errno == ENOENT ? 0 : -errno;
		if (ret)
			errf(err, "reading the run directory %s: %s", dir, strerror(-ret));
		return ret;
	}
	while ((e = readdir(d))) {
		size_t len = strlen(e->d_name);

		if (len <= 5 || strcmp(e->d_name + len - 5, ".sock") != 0 ||
		    snprintf(path, sizeof(path), "%s/%s", dir, e->d_name) >= (int)sizeof(path) ||
		    /* stat: a jailed VM's NAME.sock is a symlink into its NAME.jail */
		    stat(path, &sb) < 0 || !S_ISSOCK(sb.st_mode) || json_object_get(taken, path))
			continue;
		if (n == cap) {
			char **grown = realloc(names, (cap = cap ? 2 * cap : 16) * sizeof(*names));
			if (!grown) {
				ret = -ENOMEM;
				break;
			}
			names = grown;
		}
		if (!(names[n] = strdup(e->d_name))) {
			ret = -ENOMEM;
			break;
		}
		n++;
	}
	closedir(d);
	if (ret == 0 && n)
		qsort(names, n, sizeof(*names), by_name);
	for (size_t i = 0; ret == 0 && i < n; i++) {
		json_t *row = local_row(dir, names[i]);

		if (!row || json_array_append_new(rows, row) < 0)
			ret = -ENOMEM;
	}
	if (ret == -ENOMEM)
		errf(err, "listing the run directory %s: out of memory", dir);
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	return ret;
}

/* "42s", "3m", "5h", "2d", or "-" when unknown. */
static void format_age(json_t *age, char *out, size_t len)
{
	double s = json_number_value(age);

	if (!json_is_number(age))
		snprintf(out, len, "-");
	else if (s < 120)
		snprintf(out, len, "%.0fs", s);
	else if (s < 120 * 60)
		snprintf(out, len, "%.0fm", s / 60);
	else if (s < 48 * 3600)
		snprintf(out, len, "%.0fh", s / 3600);
	else
		snprintf(out, len, "%.0fd", s / 86400);
}

static const char *field(json_t *row, const char *key)
{
	const char *v = json_string_value(json_object_get(row, key));

	return v && *v ? v : "-";
}

static void print_table(json_t *rows)
{
	size_t i, width = 4;
	json_t *row;
	char age[32];

	json_array_foreach(rows, i, row)
		if (strlen(field(row, "name")) > width)
			width = strlen(field(row, "name"));
	printf("%-*s  %-6s  %-11s  %-5s  %-*s  %s\n", (int)width, "NAME", "VIA", "STATE", "GUEST",
	       (int)width, "PARENT", "AGE");
	json_array_foreach(rows, i, row) {
		format_age(json_object_get(row, "age_s"), age, sizeof(age));
		printf("%-*s  %-6s  %-11s  %-5s  %-*s  %s\n", (int)width, field(row, "name"),
		       field(row, "via"), field(row, "state"), field(row, "guest"), (int)width,
		       field(row, "parent"), age);
	}
}

static int run(int argc, char **argv)
{
	json_t *rows = json_array(), *taken = json_object(), *row;
	struct fvm_err err = FVM_ERR_INIT;
	bool as_json = false;
	int ret = CLI_EXIT_OK;
	size_t i;

	for (int a = 1; a < argc; a++) {
		if (strcmp(argv[a], "--json") == 0) {
			as_json = true;
			continue;
		}
		json_decref(rows);
		json_decref(taken);
		return cli_usage_error(&cli_cmd_ls, "unexpected argument '%s'", argv[a]);
	}
	if (!rows || !taken) {
		fprintf(stderr, "forkvm ls: out of memory\n");
		ret = CLI_EXIT_FAIL;
		goto out;
	}
	if (cli_daemon_running() && daemon_rows(rows, &err) < 0) {
		fprintf(stderr, "forkvm ls: %s\n", err_text(&err));
		ret = CLI_EXIT_FAIL;
	}
	json_array_foreach(rows, i, row)
		if (json_is_string(json_object_get(row, "socket")) &&
		    json_object_set(taken, json_string_value(json_object_get(row, "socket")),
				    json_true()) < 0)
			break;
	if (i < json_array_size(rows)) {
		fprintf(stderr, "forkvm ls: out of memory\n");
		ret = CLI_EXIT_FAIL;
	} else if (local_rows(rows, taken, &err) < 0) {
		fprintf(stderr, "forkvm ls: %s\n", err_text(&err));
		ret = CLI_EXIT_FAIL;
	}
	if (as_json) {
		json_dumpf(rows, stdout, JSON_COMPACT);
		fputc('\n', stdout);
	} else {
		print_table(rows);
	}
out:
	json_decref(taken);
	json_decref(rows);
	return ret;
}

const struct cli_command cli_cmd_ls = { "ls", "list daemon sandboxes and local VMs", usage, run };
