/* ustar reader and writer over memory buffers, with strict bounds on every field. */
#include "util/ustar.h"
#include "util/errmsg.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Header field offsets and widths (POSIX.1-1988 ustar). */
#define H_NAME 0
#define H_NAME_LEN 100
#define H_MODE 100
#define H_SIZE 124
#define H_MTIME 136
#define H_CHKSUM 148
#define H_TYPE 156
#define H_LINK 157
#define H_LINK_LEN 100
#define H_MAGIC 257
#define H_PREFIX 345
#define H_PREFIX_LEN 155
#define TRAILER (2 * USTAR_BLOCK)

static size_t pad_block(size_t n)
{
	return (n + USTAR_BLOCK - 1) / USTAR_BLOCK * USTAR_BLOCK;
}

/* ------------------------------------------------------------------------- reading */

void ustar_reader_init(struct ustar_reader *r, const uint8_t *buf, size_t len)
{
	*r = (struct ustar_reader){ .buf = buf, .len = len };
}

/* A numeric field: octal digits (leading spaces, then space/NUL padding) or GNU base-256. */
static int parse_number(const uint8_t *f, size_t width, uint64_t *out)
{
	uint64_t v = 0;
	size_t i = 0;

	if (f[0] & 0x80) {
		if (f[0] != 0x80)
			return -1; /* negative, or more than 56 bits */
		for (i = 1; i < width; i++) {
			if (v >> 55)
				return -1;
			v = v << 8 | f[i];
		}
		*out = v;
		return 0;
	}
	while (i < width && f[i] == ' ')
		i++;
	for (; i < width && f[i] >= '0' && f[i] <= '7'; i++) {
		if (v >> 60)
			return -1;
		v = v << 3 | (uint64_t)(f[i] - '0');
	}
	for (; i < width; i++)
		if (f[i] != ' ' && f[i] != '\0')
			return -1;
	*out = v;
	return 0;
}

static bool checksum_ok(const uint8_t *h)
{
	uint64_t want;
	unsigned long usum = 0;
	long ssum = 0;

	if (parse_number(h + H_CHKSUM, 8, &want) < 0)
		return false;
	for (size_t i = 0; i < USTAR_BLOCK; i++) {
		uint8_t c = i >= H_CHKSUM && i < H_CHKSUM + 8 ? ' ' : h[i];

		usum += c;
		ssum += (signed char)c;
	}
	/* Some old writers summed signed chars; both are accepted, as GNU tar does. */
	return want == usum || (int64_t)want == ssum;
}

static bool all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

/* Copy a fixed-width, possibly unterminated header string into out (size cap). */
static void field_string(char *out, size_t cap, const uint8_t *f, size_t width)
{
	size_t n = strnlen((const char *)f, width);

	if (n >= cap)
		n = cap - 1;
	memcpy(out, f, n);
	out[n] = '\0';
}

/* Copy len bytes of a long name (up to its first NUL) into out; -1 when it cannot fit. */
static int long_name(char *out, const uint8_t *data, size_t len)
{
	size_t n = strnlen((const char *)data, len);

	if (n >= USTAR_PATH_MAX || n == 0)
		return -1;
	memcpy(out, data, n);
	out[n] = '\0';
	return 0;
}

/* What the pax and GNU headers before a member said about it. */
struct overrides {
	bool path, link, size;
	uint64_t size_value;
};

/* One "LEN key=value\n" record at rec (avail bytes): its length, or 0 when malformed. */
static size_t pax_record(const uint8_t *rec, size_t avail, const uint8_t **key, size_t *key_len,
			 const uint8_t **val, size_t *val_len)
{
	size_t len = 0, i = 0;
	const uint8_t *eq;

	for (; i < avail && rec[i] >= '0' && rec[i] <= '9' && i < 9; i++)
		len = len * 10 + (size_t)(rec[i] - '0');
	if (i == 0 || i >= avail || rec[i] != ' ' || len > avail || len < i + 3 ||
	    rec[len - 1] != '\n')
		return 0;
	*key = rec + i + 1;
	eq = memchr(*key, '=', len - i - 2);
	if (!eq || eq == *key)
		return 0;
	*key_len = (size_t)(eq - *key);
	*val = eq + 1;
	*val_len = (size_t)(rec + len - 1 - *val);
	return len;
}

static int pax_value(char *out, const uint8_t *val, size_t len)
{
	if (len == 0 || len >= USTAR_PATH_MAX || memchr(val, '\0', len))
		return -1;
	memcpy(out, val, len);
	out[len] = '\0';
	return 0;
}

static int parse_pax(const uint8_t *data, size_t len, struct ustar_entry *e, struct overrides *o)
{
	size_t pos = 0;

	while (pos < len) {
		const uint8_t *key, *val;
		size_t key_len, val_len, n = pax_record(data + pos, len - pos, &key, &key_len, &val,
							&val_len);

		if (n == 0)
			return all_zero(data + pos, len - pos) ? 0 : -1; /* NUL padding may follow */
		if (key_len == 4 && !memcmp(key, "path", 4)) {
			if (pax_value(e->path, val, val_len) < 0)
				return -1;
			o->path = true;
		} else if (key_len == 8 && !memcmp(key, "linkpath", 8)) {
			if (pax_value(e->link, val, val_len) < 0)
				return -1;
			o->link = true;
		} else if (key_len == 4 && !memcmp(key, "size", 4)) {
			uint64_t v = 0;

			if (val_len == 0 || val_len > 19)
				return -1;
			for (size_t i = 0; i < val_len; i++) {
				if (val[i] < '0' || val[i] > '9')
					return -1;
				v = v * 10 + (uint64_t)(val[i] - '0');
			}
			o->size = true;
			o->size_value = v;
		}
		pos += n;
	}
	return 0;
}

/* Fill e's path from the header (prefix + name for POSIX ustar) unless a long name did. */
static void header_path(const uint8_t *h, struct ustar_entry *e)
{
	char name[H_NAME_LEN + 1], prefix[H_PREFIX_LEN + 1];

	field_string(name, sizeof(name), h + H_NAME, H_NAME_LEN);
	/* GNU headers keep other fields where POSIX has the prefix. */
	if (!memcmp(h + H_MAGIC, "ustar\0", 6))
		field_string(prefix, sizeof(prefix), h + H_PREFIX, H_PREFIX_LEN);
	else
		prefix[0] = '\0';
	if (prefix[0])
		snprintf(e->path, sizeof(e->path), "%s/%s", prefix, name);
	else
		snprintf(e->path, sizeof(e->path), "%s", name);
}

/* Map the type flag; a name ending in '/' marks an old-style directory. */
static int member_type(char flag, const char *raw_path, struct ustar_entry *e, struct fvm_err *err)
{
	size_t n = strlen(raw_path);

	switch (flag) {
	case '0':
	case '\0':
	case '7':
		e->type = n && raw_path[n - 1] == '/' ? USTAR_DIR : USTAR_FILE;
		return 0;
	case '5':
		e->type = USTAR_DIR;
		return 0;
	case '2':
		e->type = USTAR_SYMLINK;
		return 0;
	case '1':
		return errmsg(err, -EINVAL, "%.200s: hard links are not supported", raw_path);
	case '3':
	case '4':
	case '6':
		return errmsg(err, -EINVAL, "%.200s: device and FIFO members are not supported",
			      raw_path);
	default:
		return errmsg(err, -EINVAL, "%.200s: unsupported member type '%c'", raw_path,
			      flag >= 0x20 && flag < 0x7f ? flag : '?');
	}
}

/* The member data of header at r->pos: bounds-checked; advances past its padding. */
static int take_data(struct ustar_reader *r, uint64_t size, const uint8_t **data,
		     struct fvm_err *err)
{
	size_t avail = r->len - r->pos - USTAR_BLOCK;

	if (size > avail)
		return errmsg(err, -EBADMSG,
			      "truncated archive: a member of %llu bytes at offset %zu has only %zu",
			      (unsigned long long)size, r->pos, avail);
	*data = r->buf + r->pos + USTAR_BLOCK;
	r->pos += USTAR_BLOCK + (pad_block((size_t)size) < avail ? pad_block((size_t)size) : avail);
	return 0;
}

/* A meta header ('L', 'K', 'x', 'g') at the current position: apply it to e / o. */
static int apply_meta(char flag, const uint8_t *data, size_t size, struct ustar_entry *e,
		      struct overrides *o, size_t at, struct fvm_err *err)
{
	int bad = 0;

	if (flag == 'L') {
		bad = long_name(e->path, data, size);
		o->path = true;
	} else if (flag == 'K') {
		bad = long_name(e->link, data, size);
		o->link = true;
	} else if (flag == 'x') {
		bad = parse_pax(data, size, e, o);
	}
	if (bad)
		return errmsg(err, -EBADMSG, "malformed '%c' header at offset %zu", flag, at);
	return 0;
}

static int read_header(struct ustar_reader *r, struct ustar_entry *e, struct overrides *o,
		       bool *is_member, struct fvm_err *err)
{
	const uint8_t *h = r->buf + r->pos, *data = NULL;
	uint64_t size, mode, mtime;
	size_t at = r->pos;
	char flag = (char)h[H_TYPE];
	int ret;

	if (!checksum_ok(h))
		return errmsg(err, -EBADMSG, "bad header checksum at offset %zu", at);
	if (memcmp(h + H_MAGIC, "ustar", 5))
		return errmsg(err, -EBADMSG, "not a ustar header at offset %zu", at);
	if (parse_number(h + H_SIZE, 12, &size) < 0 || parse_number(h + H_MODE, 8, &mode) < 0 ||
	    parse_number(h + H_MTIME, 12, &mtime) < 0)
		return errmsg(err, -EBADMSG, "bad number in the header at offset %zu", at);
	*is_member = flag != 'L' && flag != 'K' && flag != 'x' && flag != 'g';
	if (*is_member && o->size)
		size = o->size_value;
	ret = take_data(r, size, &data, err);
	if (ret < 0 || !*is_member)
		return ret < 0 ? ret : apply_meta(flag, data, (size_t)size, e, o, at, err);
	if (!o->path)
		header_path(h, e);
	if (!o->link)
		field_string(e->link, sizeof(e->link), h + H_LINK, H_LINK_LEN);
	ret = member_type(flag, e->path, e, err);
	if (ret < 0)
		return ret;
	e->mode = (unsigned int)(mode & 07777);
	e->mtime = mtime > INT64_MAX ? INT64_MAX : (int64_t)mtime;
	e->data = e->type == USTAR_FILE ? data : NULL;
	e->size = e->type == USTAR_FILE ? (size_t)size : 0;
	return 0;
}

int ustar_next(struct ustar_reader *r, struct ustar_entry *e, struct fvm_err *err)
{
	struct overrides o = { 0 };
	bool is_member = false;
	char raw[64];
	int ret;

	memset(e, 0, sizeof(*e));
	while (!is_member) {
		if (r->done || r->pos == r->len) {
			if (o.path || o.link || o.size)
				return errmsg(err, -EBADMSG,
					      "truncated archive: extended header without a member");
			r->done = true;
			return 0;
		}
		if (r->len - r->pos < USTAR_BLOCK)
			return errmsg(err, -EBADMSG, "truncated header at offset %zu", r->pos);
		if (all_zero(r->buf + r->pos, USTAR_BLOCK)) {
			r->done = true;
			continue;
		}
		ret = read_header(r, e, &o, &is_member, err);
		if (ret < 0)
			return ret;
	}
	memcpy(raw, e->path, strnlen(e->path, sizeof(raw) - 1)); /* for messages */
	raw[strnlen(e->path, sizeof(raw) - 1)] = '\0';
	ret = ustar_clean_path(e->path, err);
	if (ret < 0)
		return ret;
	if (!e->path[0] && e->type != USTAR_DIR)
		return errmsg(err, -EINVAL, "member '%s' has no name", raw);
	if (e->type == USTAR_SYMLINK && !e->link[0])
		return errmsg(err, -EINVAL, "symlink '%.200s' has no target", e->path);
	return 1;
}

/* True when path has a ".." component (checked before any rewriting, for the message). */
static bool has_dotdot(const char *path)
{
	for (const char *p = path; *p;) {
		const char *end = strchrnul(p, '/');

		if (end - p == 2 && p[0] == '.' && p[1] == '.')
			return true;
		p = *end ? end + 1 : end;
	}
	return false;
}

int ustar_clean_path(char *path, struct fvm_err *err)
{
	const char *src = path;
	char *dst = path;

	if (path[0] == '/')
		return errmsg(err, -EINVAL, "member '%.200s' has an absolute path", path);
	if (has_dotdot(path))
		return errmsg(err, -EINVAL, "member '%.200s' has a '..' component", path);
	while (*src) {
		const char *end = strchrnul(src, '/');
		size_t n = (size_t)(end - src);

		if (n && !(n == 1 && src[0] == '.')) {
			if (dst != path)
				*dst++ = '/';
			memmove(dst, src, n);
			dst += n;
		}
		src = *end ? end + 1 : end;
	}
	*dst = '\0';
	return 0;
}

/* ------------------------------------------------------------------------- writing */

void ustar_writer_init(struct ustar_writer *w, size_t max)
{
	*w = (struct ustar_writer){ .max = max };
}

void ustar_writer_free(struct ustar_writer *w)
{
	free(w->buf);
	ustar_writer_init(w, w->max);
}

/* Room for n more bytes, keeping TRAILER bytes free below max for ustar_finish. */
static int reserve(struct ustar_writer *w, size_t n, bool trailer)
{
	size_t need = w->len + n, cap = w->cap ? w->cap : 65536;
	uint8_t *nbuf;

	if (n > w->max || w->len > w->max - n || (!trailer && need > w->max - TRAILER))
		return -E2BIG;
	if (need <= w->cap)
		return 0;
	while (cap < need)
		cap = cap > SIZE_MAX / 2 ? need : cap * 2;
	nbuf = realloc(w->buf, cap);
	if (!nbuf)
		return -ENOMEM;
	memset(nbuf + w->cap, 0, cap - w->cap);
	w->buf = nbuf;
	w->cap = cap;
	return 0;
}

/* Octal into a field of width bytes (digits, then NUL); false when v does not fit. */
static bool put_octal(uint8_t *f, size_t width, uint64_t v)
{
	char tmp[24];

	if (width - 1 < 22 && v >> (3 * (width - 1)))
		return false;
	snprintf(tmp, sizeof(tmp), "%0*llo", (int)(width - 1), (unsigned long long)v);
	memcpy(f, tmp, width); /* includes the NUL */
	return true;
}

static void put_checksum(uint8_t *h)
{
	unsigned int sum = 0;
	char tmp[8];

	memset(h + H_CHKSUM, ' ', 8);
	for (size_t i = 0; i < USTAR_BLOCK; i++)
		sum += h[i];
	snprintf(tmp, sizeof(tmp), "%06o", sum);
	memcpy(h + H_CHKSUM, tmp, 7); /* six digits, NUL, and the space already there */
}

/* Append one header block plus data (padded). The caller reserved the room. */
static int put_member(struct ustar_writer *w, char flag, const char *name, const char *prefix,
		      const char *link, unsigned int mode, int64_t mtime, const uint8_t *data,
		      size_t size)
{
	uint8_t *h = w->buf + w->len;

	memset(h, 0, USTAR_BLOCK);
	memcpy(h + H_NAME, name, strnlen(name, H_NAME_LEN));
	memcpy(h + H_PREFIX, prefix, strnlen(prefix, H_PREFIX_LEN));
	memcpy(h + H_LINK, link, strnlen(link, H_LINK_LEN));
	if (!put_octal(h + H_MODE, 8, mode & 07777) || !put_octal(h + 108, 8, 0) ||
	    !put_octal(h + 116, 8, 0) || !put_octal(h + H_SIZE, 12, size) ||
	    !put_octal(h + H_MTIME, 12, mtime < 0 ? 0 : mtime > 077777777777ll ? 077777777777ull
										       : (uint64_t)mtime))
		return -E2BIG;
	h[H_TYPE] = (uint8_t)flag;
	memcpy(h + H_MAGIC, "ustar\0" "00", 8);
	put_checksum(h);
	if (size)
		memcpy(h + USTAR_BLOCK, data, size);
	w->len += USTAR_BLOCK + pad_block(size);
	return 0;
}

/* Split name into prefix/name fields when it fits that way; false when it does not. */
static bool split_name(const char *full, char *prefix, char *name)
{
	size_t len = strlen(full);

	if (len <= H_NAME_LEN) {
		prefix[0] = '\0';
		memcpy(name, full, len + 1);
		return true;
	}
	for (size_t i = len - 1; i > 0; i--) {
		if (full[i] != '/')
			continue;
		if (i > H_PREFIX_LEN)
			continue;
		if (len - i - 1 > H_NAME_LEN || len - i - 1 == 0)
			return false;
		memcpy(prefix, full, i);
		prefix[i] = '\0';
		memcpy(name, full + i + 1, len - i);
		return true;
	}
	return false;
}

/* Append "LEN key=value\n" to rec (cap bytes at rec + *len). */
static void pax_append(char *rec, size_t *len, const char *key, const char *value)
{
	size_t body = 1 + strlen(key) + 1 + strlen(value) + 1, n = body + 1, digits;

	/* The length counts its own digits. */
	for (;;) {
		digits = (size_t)snprintf(NULL, 0, "%zu", n);
		if (body + digits == n)
			break;
		n = body + digits;
	}
	*len += (size_t)sprintf(rec + *len, "%zu %s=%s\n", n, key, value);
}

int ustar_add(struct ustar_writer *w, enum ustar_type type, const char *path, const char *link,
	      unsigned int mode, int64_t mtime, const uint8_t *data, size_t size)
{
	char full[USTAR_PATH_MAX + 2], prefix[H_PREFIX_LEN + 1], name[USTAR_PATH_MAX + 2];
	char *pax = NULL;
	size_t pax_len = 0, need;
	bool fits;
	int ret;

	link = type == USTAR_SYMLINK && link ? link : "";
	if (!path[0])
		return -EINVAL;
	if (strlen(path) >= USTAR_PATH_MAX || strlen(link) >= USTAR_PATH_MAX)
		return -ENAMETOOLONG;
	snprintf(full, sizeof(full), "%s%s", path, type == USTAR_DIR ? "/" : "");
	fits = split_name(full, prefix, name);
	if (!fits || strlen(link) > H_LINK_LEN) {
		pax = malloc(2 * USTAR_PATH_MAX + 64);
		if (!pax)
			return -ENOMEM;
		if (!fits)
			pax_append(pax, &pax_len, "path", full);
		if (strlen(link) > H_LINK_LEN)
			pax_append(pax, &pax_len, "linkpath", link);
	}
	if (type != USTAR_FILE)
		size = 0;
	need = USTAR_BLOCK + pad_block(size) + (pax ? USTAR_BLOCK + pad_block(pax_len) : 0);
	ret = reserve(w, need, false);
	if (ret == 0 && pax)
		ret = put_member(w, 'x', "././@PaxHeader", "", "", 0644, mtime,
				 (const uint8_t *)pax, pax_len);
	if (ret == 0) {
		if (!fits) {
			/* The pax path rules; the header keeps a readable head of the name. */
			memcpy(name, full, H_NAME_LEN);
			name[H_NAME_LEN] = '\0';
			prefix[0] = '\0';
		}
		ret = put_member(w, type == USTAR_DIR ? '5' : type == USTAR_SYMLINK ? '2' : '0', name,
				 prefix, link, mode, mtime, data, size);
	}
	free(pax);
	return ret;
}

int ustar_finish(struct ustar_writer *w)
{
	int ret = reserve(w, TRAILER, true);

	if (ret < 0)
		return ret;
	memset(w->buf + w->len, 0, TRAILER);
	w->len += TRAILER;
	return 0;
}
