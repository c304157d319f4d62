/* diff strategy: a full base once, then layers of the pages dirtied since the previous branch. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "core/vm.h"
#include "fork/branch.h"
#include "mem/dirty_log.h"
#include "snapshot/snap_layer.h"
#include "snapshot/snapshot.h"
#include "util/errmsg.h"
#include "util/page.h"

/* One VM per process, so the chain state of the source lives here. */
static struct {
	bool enabled;
	int layers;
	char tip[PATH_MAX];
	uint64_t *bitmap;
} diff;

static int diff_base(struct vm *vm, const struct branch_opts *o, struct branch_result *res,
		     struct fvm_err *err)
{
	struct snap_save_opts so = { .force = true, .strategy = "diff-base", .source = o->prefix };
	struct snap_save_stats st;
	struct fvm_err inner = FVM_ERR_INIT;
	char base[PATH_MAX];
	int ret;

	snprintf(base, sizeof(base), "%s/base", o->dir);
	so.dir = base;
	ret = dirty_log_enable(&vm->mem, vm->fd);
	if (ret)
		return errmsg(err, ret, "diff base %s: enabling the dirty log: %s", base,
			      strerror(-ret));
	if ((ret = snap_save(vm, &so, &st, &inner)))
		return errmsg(err, ret, "writing the diff base %s: %s", base, err_text(&inner));
	/* Everything is in the base: start the log afresh (the log starts all-set). */
	if ((ret = dirty_log_collect(&vm->mem, vm->fd, diff.bitmap)))
		return errmsg(err, ret, "diff base %s: collecting the dirty log: %s", base,
			      strerror(-ret));
	res->bytes_written = st.memory_bytes_written;
	snprintf(diff.tip, sizeof(diff.tip), "%s", base);
	diff.enabled = true;
	return 0;
}

static char *layer_meta(struct vm *vm, const char *parent, uint64_t npages)
{
	char created[32], *text;
	time_t now = time(NULL);
	struct tm tm;
	json_t *j;

	gmtime_r(&now, &tm);
	strftime(created, sizeof(created), "%Y-%m-%dT%H:%M:%SZ", &tm);
	j = json_pack("{s:s,s:i,s:s,s:I,s:I,s:i,s:s,s:s}", "created", created, "format_version",
		      SNAP_VERSION, "parent", parent, "mem_bytes", (json_int_t)vm->mem.size,
		      "layer_pages", (json_int_t)npages, "vcpus", vm->nvcpus, "guest",
		      vm->probe_guest ? "probe" : "linux", "strategy", "diff");
	text = j ? json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
	json_decref(j);
	return text;
}

int branch_diff(struct vm *vm, const struct branch_opts *o, struct branch_result *res,
		struct fvm_err *err)
{
	struct snap_buf state;
	uint8_t *blob = NULL;
	uint64_t blob_len = 0, npages = 0;
	bool layer = diff.enabled;
	struct branch_pause bp;
	struct fvm_err inner = FVM_ERR_INIT; /* the layer writer's failing step */
	char dir[PATH_MAX], *meta = NULL;
	int ret;

	if (!o->dir) {
		return errmsg(err, -EINVAL,
			      "the diff strategy needs a directory for its base and layers");
	}
	if (!diff.bitmap && !(diff.bitmap = calloc((vm->mem.map_size / PAGE_4K + 63) / 64, 8))) {
		return errmsg(err, -ENOMEM, "diff branch: out of memory for the dirty-page bitmap");
	}
	snap_buf_init(&state);
	if ((ret = branch_pause_source(vm, o, res, &bp, err)))
		return ret;
	if (!layer) {
		ret = diff_base(vm, o, res, err);
	} else {
		/* While paused only copy the dirty pages to memory; the disk write comes after. */
		ret = snap_capture(vm, &state);
		if (!ret)
			ret = snap_buf_finish(&state);
		if (!ret)
			ret = dirty_log_collect(&vm->mem, vm->fd, diff.bitmap);
		if (!ret)
			ret = snap_layer_collect(vm->mem.host, vm->mem.size, diff.bitmap, &blob,
						 &blob_len, &npages);
		if (ret)
			errf(err, "collecting the dirty pages: %s", strerror(-ret));
	}
	branch_resume_source(vm, res, &bp);
	if (!ret && layer) {
		snprintf(dir, sizeof(dir), "%s/layer-%d", o->dir, ++diff.layers);
		meta = layer_meta(vm, diff.tip, npages);
		ret = meta ? snap_layer_write(dir, diff.tip, state.data, state.len, blob, blob_len, meta,
					      vm, &inner)
			   : errmsg(&inner, -ENOMEM, "out of memory for meta.json");
		if (ret)
			errmsg(err, ret, "writing layer %s: %s", dir, err_text(&inner));
		else
			snprintf(diff.tip, sizeof(diff.tip), "%s", dir);
		res->bytes_written = npages * PAGE_4K;
	}
	free(meta);
	free(blob);
	snap_buf_free(&state);
	if (ret)
		return ret;
	snprintf(res->snapshot, sizeof(res->snapshot), "%s", diff.tip);
	return branch_restore_children(diff.tip, o, res, err);
}
