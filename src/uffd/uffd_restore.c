/* Restore glue for the VMM: uffd options, the breakers, and one page-server link per process. */
#include "uffd/uffd_restore.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "util/errmsg.h"
#include "util/log.h"
#include "core/vm.h"
#include "uffd/ps_client.h"
#include "uffd/ps_proto.h"

static struct ps_client client = { .sock = -1, .stop_efd = -1, .mem_fd = -1 };
static bool attached;

void uffd_restore_defaults(struct uffd_restore_opts *u, const char *run_dir)
{
	memset(u, 0, sizeof(*u));
	u->timeout_ms = 30000;
	u->settle_ms = PS_DEFAULT_SETTLE_MS;
	u->record_max_ms = PS_DEFAULT_RECORD_MAX_MS;
	snprintf(u->default_path, sizeof(u->default_path), "%s/pageserver.sock", run_dir);
	u->pageserver = u->default_path;
}

static int parse_ms(const char *arg, uint64_t lo, uint64_t hi, uint64_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(arg, &end, 10);
	if (errno || end == arg || *end || arg[0] == '-' || v < lo || v > hi)
		return -EINVAL;
	*out = v;
	return 0;
}

int uffd_restore_opt(struct uffd_restore_opts *u, int opt, const char *arg, struct fvm_err *err)
{
	uint64_t v;

	switch (opt) {
	case UFFD_OPT_PAGESERVER:
		if (!*arg || strlen(arg) >= 108) {
			return errmsg(err, -EINVAL,
				      "--pageserver: need a socket path of 1-107 bytes");
		}
		u->pageserver = arg;
		return 0;
	case UFFD_OPT_TIMEOUT:
	case UFFD_OPT_SETTLE:
	case UFFD_OPT_RECORD_MAX:
		if (parse_ms(arg, opt == UFFD_OPT_TIMEOUT ? 1 : 100, 3600000, &v)) {
			return errmsg(err, -EINVAL, "'%s': need milliseconds, %d to 3600000", arg,
				 opt == UFFD_OPT_TIMEOUT ? 1 : 100);
		}
		if (opt == UFFD_OPT_TIMEOUT)
			u->timeout_ms = (int)v;
		else if (opt == UFFD_OPT_SETTLE)
			u->settle_ms = (uint32_t)(v > 600000 ? 600000 : v);
		else
			u->record_max_ms = (uint32_t)v;
		return 0;
	case UFFD_OPT_RECORD: u->record = true; return 0;
	case UFFD_OPT_NO_PREFETCH: u->no_prefetch = true; return 0;
	case UFFD_OPT_NO_UFFD: u->no_uffd = true; return 0;
	case UFFD_OPT_IGNORE_BAD: u->allow_bad_hotpages = true; return 0;
	default:
		errf(err, "unknown option");
		return -EINVAL;
	}
}

static bool env_off(const char *name)
{
	const char *v = getenv(name);

	return v && (!strcmp(v, "0") || !strcasecmp(v, "false") || !strcasecmp(v, "off"));
}

void uffd_restore_breakers(struct uffd_restore_opts *u, enum guest_mem_backing *backing)
{
	if (*backing != GUEST_MEM_UFFD)
		return;
	if (u->no_uffd || env_off("FORKVM_UFFD")) {
		log_info("uffd restores are switched off (%s): using the file backing",
			 u->no_uffd ? "--no-uffd" : "FORKVM_UFFD=0");
		*backing = GUEST_MEM_FILE_PRIVATE;
		return;
	}
	if (env_off("FORKVM_PREFETCH")) {
		if (u->record)
			log_info("FORKVM_PREFETCH=0: not recording hot pages");
		u->no_prefetch = true;
	}
	if (u->no_prefetch)
		u->record = false;
}

static void on_lost(void *ctx, const char *msg)
{
	vm_request_end(ctx, VM_END_ERROR, "%s", msg);
}

int uffd_restore_attach(struct vm *vm, const struct uffd_restore_opts *u, const char *snapdir,
			const char *name)
{
	struct ps_client_opts o = { .path = u->pageserver, .timeout_ms = u->timeout_ms,
				    .record = u->record, .prefetch = !u->no_prefetch && !u->record,
				    .allow_bad_hotpages = u->allow_bad_hotpages,
				    .settle_ms = u->settle_ms, .record_max_ms = u->record_max_ms,
				    .name = name };
	char memory[PATH_MAX + 16];
	int ret;

	snprintf(memory, sizeof(memory), "%s/memory", snapdir);
	ret = ps_client_register(&client, &o, &vm->mem, snapdir, memory);
	if (ret)
		return ret;
	attached = true;
	return 0;
}

int uffd_restore_watch(struct vm *vm)
{
	return attached ? ps_client_watch(&client, on_lost, vm) : 0;
}

void uffd_restore_detach(void)
{
	if (attached)
		ps_client_close(&client);
	attached = false;
}
