/* Snapshot on-disk format: the vmstate section container, the directory, the memory file. */
#ifndef FORKVM_SNAP_FORMAT_H
#define FORKVM_SNAP_FORMAT_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/errmsg.h"

#define SNAP_MAGIC "FKVMSNAP"
#define SNAP_VERSION 1

#define SNAP_FILE_VMSTATE "vmstate"
#define SNAP_FILE_MEMORY "memory"
#define SNAP_FILE_META "meta.json"

/* The largest vmstate read: sections are at most 64 MiB, and there are few. */
#define SNAP_VMSTATE_MAX (256ULL << 20)

/*
 * vmstate = header, sections, end section. Every section carries an XXH64 of its payload;
 * the end section carries an XXH64 of every byte before it. All integers little-endian.
 *   header:  char magic[8]; u32 version; u32 header_size (= 16)
 *   section: u32 type; u32 instance; u64 length; u64 xxh64(payload); payload; pad to 8
 *   end:     type SNAP_SEC_END, instance 0, length 8, payload = u64 xxh64(file[0..end))
 */
enum snap_section_type {
	SNAP_SEC_CONFIG = 1,	/* struct snap_config, instance 0 */
	SNAP_SEC_CPUID,		/* kvm_cpuid2 + entries, per vCPU */
	SNAP_SEC_MP_STATE,	/* kvm_mp_state, per vCPU */
	SNAP_SEC_REGS,		/* kvm_regs */
	SNAP_SEC_SREGS,		/* kvm_sregs */
	SNAP_SEC_XSAVE,		/* kvm_xsave (size from KVM_CAP_XSAVE2) */
	SNAP_SEC_XCRS,		/* kvm_xcrs */
	SNAP_SEC_DEBUGREGS,	/* kvm_debugregs */
	SNAP_SEC_LAPIC,		/* kvm_lapic_state */
	SNAP_SEC_MSRS,		/* kvm_msrs + entries */
	SNAP_SEC_VCPU_EVENTS,	/* kvm_vcpu_events */
	SNAP_SEC_TSC_KHZ,	/* u64 */
	SNAP_SEC_PIC_MASTER,	/* kvm_irqchip (chip 0), instance 0 */
	SNAP_SEC_PIC_SLAVE,	/* kvm_irqchip (chip 1) */
	SNAP_SEC_IOAPIC,	/* kvm_irqchip (chip 2) */
	SNAP_SEC_PIT2,		/* kvm_pit_state2 */
	SNAP_SEC_CLOCK,		/* kvm_clock_data */
	SNAP_SEC_SERIAL,	/* struct serial_regs, instance = port */
	SNAP_SEC_VIRTIO_MMIO,	/* virtio-mmio transport + queues, instance = slot */
	SNAP_SEC_VSOCK,		/* virtio-vsock device state, instance = slot */
	SNAP_SEC_PROBE,		/* probe device state */
	SNAP_SEC_BLK,		/* virtio-blk disk and its chain (snap_disk.h), instance = slot */
	SNAP_SEC_NET,		/* virtio-net NIC: struct virtio_net_state, instance = slot */
	SNAP_SEC_END = 0xffff,
};

/* "regs", "lapic", ... for error messages; "unknown" for anything else. */
const char *snap_section_name(uint32_t type);

/* Building a vmstate in memory. Errors are sticky: check once at snap_buf_finish(). */
struct snap_buf {
	uint8_t *data;
	size_t len, cap;
	int err;
};

void snap_buf_init(struct snap_buf *b);
void snap_buf_add(struct snap_buf *b, uint32_t type, uint32_t instance, const void *payload,
		  uint64_t len);
/* Append the end section; returns 0 or the first error (-ENOMEM). */
int snap_buf_finish(struct snap_buf *b);
void snap_buf_free(struct snap_buf *b);

struct snap_section {
	uint32_t type, instance;
	const uint8_t *data;
	uint64_t len;
};

/* A parsed, verified vmstate: sections point into data (owned). */
struct snap_state {
	uint8_t *data;
	size_t len;
	uint32_t version;
	int nsections;
	struct snap_section *sections;
};

/*
 * Verify and index a vmstate image (takes ownership of data, even on error). Errors, each
 * with one message in err: bad magic, unknown version, truncated (header, section header,
 * payload, or missing end), a section checksum mismatch (names the section and instance),
 * a whole-file checksum mismatch, trailing bytes after the end section. Returns 0 or -EINVAL.
 */
int snap_state_parse(uint8_t *data, size_t len, struct snap_state *st, struct fvm_err *err);
const struct snap_section *snap_state_find(const struct snap_state *st, uint32_t type,
					   uint32_t instance);
void snap_state_free(struct snap_state *st);

/* Writing a snapshot directory atomically: DIR.tmp-PID, fsync everything, rename, fsync parent. */
struct snap_writer {
	char dir[PATH_MAX];
	char tmp[PATH_MAX];
	int tmp_fd;  /* O_DIRECTORY fd of tmp */
	bool force;  /* replace an existing DIR */
	struct fvm_err *err; /* where a failing step is described (NULL: the log) */
};

struct snap_mem_stats {
	uint64_t bytes_total;	/* guest RAM size = memory file size */
	uint64_t bytes_written; /* non-zero pages actually written */
	uint64_t bytes_by_helper; /* of those, copied by the second writer thread */
	uint64_t ns;		/* time spent */
};

/* Fails with -EEXIST if DIR exists and !force; removes stale DIR.tmp-PID of dead processes.
 * Every writer call below describes its failing step and file in err (NULL: the log). */
int snap_writer_begin(struct snap_writer *w, const char *dir, bool force, struct fvm_err *err);
/* Describe a failing step of the snapshot being written (in w->err, else the log); ret. */
int snap_writer_fail(const struct snap_writer *w, int ret, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Whether force may replace DIR: 0 for a complete forkvm snapshot (meta.json with our
 * format_version, vmstate with our magic) or an empty dir; else -ENOTDIR/-EEXIST/-errno
 * and the reason in why. */
int snap_dir_replaceable(const char *dir, struct fvm_err *why);
/* Write a whole small file into the temp dir and fsync it. */
int snap_writer_put(struct snap_writer *w, const char *name, const void *data, size_t len);
/* Write guest RAM as a sparse file: all-zero 4 KiB pages stay holes. fsyncs. */
int snap_writer_put_memory(struct snap_writer *w, const uint8_t *mem, uint64_t size,
			   struct snap_mem_stats *stats);
/* Test hook: the second writer thread fails every copy (as on a full file system), so the
 * chunks it gives back are written again by the first (tests/unit/test_snap_dir.c). */
void snap_memory_test_helper_fails(bool fail);
/* fsync the temp dir, rename it to DIR (replacing when force), fsync the parent. */
int snap_writer_commit(struct snap_writer *w);
/* Remove the temp dir and everything in it (safe to call after commit: no-op). */
void snap_writer_abort(struct snap_writer *w);

/* A snapshot opened for restore: verified vmstate, memory file checked against its size. */
struct snapshot {
	char dir[PATH_MAX];
	struct snap_state state;
	char memory_path[PATH_MAX + 16];
	uint64_t memory_size; /* from the memory file; equals snap_config.mem_size */
};

/*
 * Open DIR: read and verify vmstate (snap_state_parse), require the CONFIG section, and check
 * that DIR/memory exists and its size equals the configured RAM size. One message in err.
 */
int snap_open(const char *dir, struct snapshot *snap, struct fvm_err *err);
void snap_close(struct snapshot *snap);

#endif
