/*
 * `forkvm doctor`: checks of this host for what forkvm needs, one small function per check in
 * a table (doctor.c). Each fills a result (ok / warn / fail, what it found, the command that
 * fixes it); nothing here prints or exits, the CLI formats (src/cli/cmd_doctor.c). The pure
 * parsers of /proc and /sys text are exposed for the unit tests. docs/DOCTOR.md lists them.
 */
#ifndef FORKVM_DOCTOR_H
#define FORKVM_DOCTOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum doctor_status { DOCTOR_OK, DOCTOR_WARN, DOCTOR_FAIL };

/* Below this many free bytes a directory forkvm writes to is a warning. */
#define DOCTOR_DISK_LOW (2ULL << 30)

struct doctor_result {
	enum doctor_status status;
	char found[1536];	/* what the check saw, "; "-separated facts */
	char fix[768];		/* for warn and fail: the command (or step) that fixes it */
};

/* Where this invocation's forkvm would work; filled by the CLI. */
struct doctor_ctx {
	const char *kvm_path;	/* the KVM device; NULL: /dev/kvm */
	const char *run_dir;	/* sockets and logs; NULL: FORKVM_RUN_DIR is too long */
	const char *cache_dir;	/* $FORKVM_CACHE or ~/.cache/forkvm; NULL: too long */
};

struct doctor_check {
	const char *name;
	/* 0, or -errno for a failure of the probe itself (reported as a warning). */
	int (*run)(const struct doctor_ctx *ctx, struct doctor_result *res);
};

extern const struct doctor_check doctor_checks[];
extern const size_t doctor_checks_count;

/* Run one check: res is reset first; a probe error becomes a warning naming it. */
void doctor_run(const struct doctor_check *check, const struct doctor_ctx *ctx,
		struct doctor_result *res);
const char *doctor_status_name(enum doctor_status status);

/* Result helpers for the checks: append a fact / a fix ("; " between), raise the status. */
void doctor_found(struct doctor_result *res, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void doctor_fix(struct doctor_result *res, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void doctor_raise(struct doctor_result *res, enum doctor_status status);
/* A probe that could not read what it needed: warn "PATH: ENAME (message)". */
void doctor_probe_error(struct doctor_result *res, const char *path, int err);

/* The text of a /proc or /sys file, NUL-terminated, at most max bytes (malloc'd). -errno. */
int doctor_read_file(const char *path, size_t max, char **text);
/* Whether /sys/module/NAME exists (the module is loaded, or built in with parameters). */
int doctor_module_present(const char *name, bool *present);

/* --- Parsers (pure; unit-tested with fixture strings) --- */

/* The value of "KEY: N [kB]" in /proc/meminfo text, as written (kB stays kB). -ENOENT, -EINVAL. */
int doctor_meminfo_value(const char *text, const char *key, uint64_t *value);

/* The [selected] word of a THP mode file ("always [madvise] never"). -EINVAL if none. */
int doctor_thp_mode(const char *text, char *mode, size_t len);

#define DOCTOR_CPU_VMX (1u << 0)
#define DOCTOR_CPU_SVM (1u << 1)
#define DOCTOR_CPU_HYPERVISOR (1u << 2)
/* The DOCTOR_CPU_* flags on the first "flags" line of /proc/cpuinfo text. -ENOENT if none. */
int doctor_cpuinfo_flags(const char *text, unsigned *flags);

/* Bit i set when names[i] is a word of text: a cgroup.controllers file ("cpu io memory pids"),
 * seccomp's actions_avail. n at most 32. */
unsigned doctor_words_present(const char *text, const char *const *names, size_t n);

/* Whether an image manifest.json's "modules" lists module: 1, 0, or -EINVAL (not a manifest).
 * kver (may be NULL) gets its "kernel_version", "" when it has none. */
int doctor_manifest_has_module(const char *json, const char *module, char *kver, size_t len);

#endif
