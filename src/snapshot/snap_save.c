/* snap_save: pause, capture, write vmstate + sparse memory + meta.json atomically, resume. */
#include <jansson.h>
#include <stdlib.h>
#include <time.h>

#include "util/log.h"
#include "core/vm.h"
#include "snapshot/snapshot.h"
#include "util/clock.h"

static char *meta_json(struct vm *vm, const struct snap_save_opts *o,
		       const struct snap_save_stats *st)
{
	char created[32];
	time_t now = time(NULL);
	struct tm tm;
	json_t *meta;
	char *text;

	gmtime_r(&now, &tm);
	strftime(created, sizeof(created), "%Y-%m-%dT%H:%M:%SZ", &tm);
	meta = json_pack("{s:s,s:s?,s:i,s:I,s:I,s:I,s:i,s:s,s:s,s:s?,s:s?}", "created", created,
			 "source", o->source, "format_version", SNAP_VERSION, "mem_bytes",
			 (json_int_t)vm->mem.size, "memory_bytes_written",
			 (json_int_t)st->memory_bytes_written, "vmstate_bytes",
			 (json_int_t)st->vmstate_bytes, "vcpus", vm->nvcpus, "guest",
			 vm->probe_guest ? "probe" : "linux", "source_backing",
			 guest_mem_backing_name(vm->mem.backing), "parent", o->parent, "strategy",
			 o->strategy);
	if (!meta)
		return NULL;
	if (!o->parent)
		json_object_set_new(meta, "parent", json_null());
	text = json_dumps(meta, JSON_INDENT(2) | JSON_SORT_KEYS);
	json_decref(meta);
	return text;
}

static int snap_write(struct vm *vm, const struct snap_save_opts *o, struct snap_buf *buf,
		      struct snap_save_stats *st, struct fvm_err *e)
{
	struct snap_writer w;
	struct snap_mem_stats ms;
	char *meta = NULL;
	int err = snap_writer_begin(&w, o->dir, o->force, e);

	if (err)
		return err;
	err = snap_writer_put(&w, SNAP_FILE_VMSTATE, buf->data, buf->len);
	if (!err) /* the sealed disk layers the capture recorded: linked (or copied) */
		err = snap_disks_put(vm, &w);
	if (!err)
		err = snap_writer_put_memory(&w, vm->mem.host, vm->mem.size, &ms);
	if (!err) {
		st->memory_bytes_written = ms.bytes_written;
		st->memory_bytes_by_helper = ms.bytes_by_helper;
		meta = meta_json(vm, o, st);
		err = meta ? snap_writer_put(&w, SNAP_FILE_META, meta, strlen(meta))
			   : errmsg(e, -ENOMEM, "snapshot %s: out of memory for meta.json", o->dir);
	}
	if (!err)
		err = snap_writer_commit(&w);
	if (err)
		snap_writer_abort(&w);
	free(meta);
	return err;
}

int snap_save(struct vm *vm, const struct snap_save_opts *o, struct snap_save_stats *st,
	      struct fvm_err *e)
{
	struct snap_buf buf;
	bool was_paused = vm_is_paused(vm);
	uint64_t t0 = monotonic_ns(), t1;
	int err;

	memset(st, 0, sizeof(*st));
	snap_buf_init(&buf);
	if (!was_paused) {
		err = vm_pause(vm);
		if (err)
			return errmsg(e, err, "pausing the VM for a snapshot: %s", strerror(-err));
		st->pause_ns = vm->last_pause_ns;
	}
	t1 = monotonic_ns();
	err = snap_capture(vm, &buf);
	if (!err)
		err = snap_buf_finish(&buf);
	st->capture_ns = monotonic_ns() - t1;
	if (err)
		errmsg(e, err, "capturing the VM state: %s", strerror(-err));
	if (!err) {
		st->vmstate_bytes = buf.len;
		t1 = monotonic_ns();
		err = snap_write(vm, o, &buf, st, e);
		st->write_ns = monotonic_ns() - t1;
	}
	if (!was_paused) {
		st->paused_ns = vm_resume_window(vm);
		st->source_paused_ns = monotonic_ns() - t0;
	}
	snap_buf_free(&buf);
	return err;
}
