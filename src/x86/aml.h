/* A tiny AML encoder: just what forkvm's DSDT needs (Scope, Device, Name, resources, and the
 * few statements of a Generic Event Device's _EVT method: Method, If, LEqual, Arg, Notify). */
#ifndef FORKVM_X86_AML_H
#define FORKVM_X86_AML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A growable byte buffer; errors are sticky (check err once at the end). */
struct aml {
	uint8_t *data;
	size_t len, cap;
	int err;
};

void aml_init(struct aml *a);
void aml_free(struct aml *a);
void aml_bytes(struct aml *a, const void *p, size_t n);
void aml_byte(struct aml *a, uint8_t b);

/* PkgLength encoding of a package whose body is `body` bytes (the length counts itself). */
size_t aml_pkglen_encode(size_t body, uint8_t out[4]);

/* Opening a package: returns the body's start; aml_pkg_end inserts the PkgLength before it. */
size_t aml_pkg_begin(struct aml *a, const uint8_t *op, size_t oplen);
void aml_pkg_end(struct aml *a, size_t start);

/* NameString: an optional root prefix '\\', then NameSegs separated by '.', each padded to
 * four characters with '_': "V000", "\\_SB", "\\_SB.VGEN" (DualNamePath), up to 8 segments. */
void aml_name(struct aml *a, const char *name);
/* Integer constant in the shortest form: Zero, One, Byte, Word, DWord or QWord prefix. */
void aml_integer(struct aml *a, uint64_t v);
void aml_string(struct aml *a, const char *s);

size_t aml_scope_begin(struct aml *a, const char *name);
size_t aml_device_begin(struct aml *a, const char *name);
/* Name(name, <object follows>): call aml_integer/aml_string/... right after. */
void aml_name_decl(struct aml *a, const char *name);

/* Package(n) { v[0], ..., v[n-1] } of integers, n <= 255. */
void aml_package_ints(struct aml *a, const uint64_t *v, int n);

/* Method(name, nargs, Serialized|NotSerialized) { ...: close with aml_pkg_end. */
size_t aml_method_begin(struct aml *a, const char *name, int nargs, bool serialized);
/* If (<predicate>) { ...: emit the predicate right after, then the body; aml_pkg_end. */
size_t aml_if_begin(struct aml *a);
/* LEqual(<operand>, <operand>): emit both operands right after. */
void aml_lequal(struct aml *a);
/* ArgN, N = 0..6. */
void aml_arg(struct aml *a, int n);
/* Notify(path, value). */
void aml_notify(struct aml *a, const char *path, uint64_t value);

/* Buffer(){ resource template } with Memory32Fixed(ReadWrite, base, len) and one
 * Interrupt(ResourceConsumer, Edge, ActiveHigh, Exclusive) { irq }, then EndTag. */
void aml_crs_mmio_irq(struct aml *a, uint32_t base, uint32_t len, uint32_t irq);
/* The same template with the Interrupt descriptor alone. */
void aml_crs_irq(struct aml *a, uint32_t irq);

#endif
