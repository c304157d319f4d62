/* Register message encode/decode (strict) and the layout check against a snapshot. */
#include "uffd/ps_proto.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "util/errmsg.h"

json_t *ps_register_to_json(const struct ps_register *r)
{
	json_t *regions = json_array();

	for (int i = 0; i < r->nregions; i++)
		json_array_append_new(regions, json_pack("{s:I,s:I,s:I}", "gpa", (json_int_t)r->regions[i].gpa,
							 "size", (json_int_t)r->regions[i].size,
							 "offset", (json_int_t)r->regions[i].offset));
	return json_pack("{s:s,s:i,s:s,s:s,s:i,s:I,s:I,s:I,s:I,s:o,s:b,s:b,s:b,s:i,s:i}",
			 "cmd", "register", "version", PS_PROTO_VERSION, "snapshot", r->snapshot,
			 "name", r->name, "pid", r->pid, "base", (json_int_t)r->base,
			 "size", (json_int_t)r->size, "file_offset", (json_int_t)r->file_offset,
			 "page_size", (json_int_t)r->page_size, "regions", regions,
			 "record", r->record, "prefetch", r->prefetch,
			 "allow_bad_hotpages", r->allow_bad_hotpages, "settle_ms", (int)r->settle_ms,
			 "record_max_ms", (int)r->record_max_ms);
}

static int get_u64(json_t *obj, const char *key, uint64_t *out, struct fvm_err *err)
{
	json_t *v = json_object_get(obj, key);

	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return errmsg(err, -EINVAL, "field '%s' must be a non-negative integer", key);
	*out = (uint64_t)json_integer_value(v);
	return 0;
}

static int get_bool(json_t *obj, const char *key, bool *out, struct fvm_err *err)
{
	json_t *v = json_object_get(obj, key);

	if (!json_is_boolean(v))
		return errmsg(err, -EINVAL, "field '%s' must be true or false", key);
	*out = json_is_true(v);
	return 0;
}

static int get_str(json_t *obj, const char *key, char *out, size_t len, struct fvm_err *err)
{
	json_t *v = json_object_get(obj, key);

	if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) >= len)
		return errmsg(err, -EINVAL, "field '%s' must be a string of 1 to %zu bytes", key,
			      len - 1);
	memcpy(out, json_string_value(v), json_string_length(v) + 1);
	return 0;
}

int ps_register_from_json(json_t *obj, struct ps_register *r, struct fvm_err *err)
{
	static const char *const known[] = { "cmd", "version", "snapshot", "name", "pid", "base",
		"size", "file_offset", "page_size", "regions", "record", "prefetch",
		"allow_bad_hotpages", "settle_ms", "record_max_ms" };
	uint64_t version, pid, settle, rmax;
	const char *key;
	json_t *val, *regions;

	memset(r, 0, sizeof(*r));
	json_object_foreach(obj, key, val) {
		size_t i = 0;
		while (i < sizeof(known) / sizeof(known[0]) && strcmp(known[i], key))
			i++;
		if (i == sizeof(known) / sizeof(known[0]))
			return errmsg(err, -EINVAL, "unknown field '%s'", key);
	}
	if (get_u64(obj, "version", &version, err))
		return -EINVAL;
	if (version != PS_PROTO_VERSION)
		return errmsg(err, -EINVAL,
			      "protocol version %llu is not supported (this server speaks %d)",
			    (unsigned long long)version, PS_PROTO_VERSION);
	if (get_str(obj, "snapshot", r->snapshot, sizeof(r->snapshot), err) ||
	    get_str(obj, "name", r->name, sizeof(r->name), err) ||
	    get_u64(obj, "pid", &pid, err) || get_u64(obj, "base", &r->base, err) ||
	    get_u64(obj, "size", &r->size, err) ||
	    get_u64(obj, "file_offset", &r->file_offset, err) ||
	    get_u64(obj, "page_size", &r->page_size, err) ||
	    get_bool(obj, "record", &r->record, err) ||
	    get_bool(obj, "prefetch", &r->prefetch, err) ||
	    get_bool(obj, "allow_bad_hotpages", &r->allow_bad_hotpages, err) ||
	    get_u64(obj, "settle_ms", &settle, err) ||
	    get_u64(obj, "record_max_ms", &rmax, err))
		return -EINVAL;
	if (r->snapshot[0] != '/')
		return errmsg(err, -EINVAL, "snapshot '%s' is not an absolute path", r->snapshot);
	if (pid > INT_MAX || settle < 100 || settle > 600000 || rmax < 100 || rmax > 3600000)
		return errmsg(err, -EINVAL,
			      "pid, settle_ms (100-600000) or record_max_ms (100-3600000) " "out of range");
	r->pid = (int)pid;
	r->settle_ms = (uint32_t)settle;
	r->record_max_ms = (uint32_t)rmax;
	regions = json_object_get(obj, "regions");
	if (!json_is_array(regions) || json_array_size(regions) < 1 ||
	    json_array_size(regions) > PS_MAX_REGIONS)
		return errmsg(err, -EINVAL, "field 'regions' must be an array of 1 to %d regions",
			    PS_MAX_REGIONS);
	r->nregions = (int)json_array_size(regions);
	for (int i = 0; i < r->nregions; i++) {
		json_t *reg = json_array_get(regions, (size_t)i);
		if (!json_is_object(reg) || json_object_size(reg) != 3 ||
		    get_u64(reg, "gpa", &r->regions[i].gpa, err) ||
		    get_u64(reg, "size", &r->regions[i].size, err) ||
		    get_u64(reg, "offset", &r->regions[i].offset, err))
			return errmsg(err, -EINVAL, "region %d must be {gpa, size, offset}", i);
	}
	return 0;
}

int ps_layout_check(const struct ps_register *r, const struct snap_config *cfg,
		    uint64_t memory_file_size, struct fvm_err *err)
{
	if (r->page_size != 4096)
		return errmsg(err, -EINVAL, "page size %llu is not supported (4096 is)",
			    (unsigned long long)r->page_size);
	if (r->base == 0 || r->base % 4096)
		return errmsg(err, -EINVAL, "host base 0x%llx is not a page-aligned address",
			    (unsigned long long)r->base);
	if (r->file_offset != 0)
		return errmsg(err, -EINVAL, "file offset %llu: guest RAM starts at offset 0 of the "
			    "memory file", (unsigned long long)r->file_offset);
	if (r->size != cfg->mem_size)
		return errmsg(err, -EINVAL, "RAM size %llu differs from the snapshot's %llu",
			    (unsigned long long)r->size, (unsigned long long)cfg->mem_size);
	if (r->size != memory_file_size)
		return errmsg(err, -EINVAL,
			      "RAM size %llu differs from the memory file's %llu bytes",
			    (unsigned long long)r->size, (unsigned long long)memory_file_size);
	if ((uint32_t)r->nregions != cfg->nregions)
		return errmsg(err, -EINVAL, "%d regions, the snapshot has %u", r->nregions,
			    cfg->nregions);
	for (int i = 0; i < r->nregions; i++) {
		const struct ps_region *g = &r->regions[i];
		if (g->gpa != cfg->regions[i].gpa || g->size != cfg->regions[i].size ||
		    g->offset != cfg->regions[i].offset)
			return errmsg(err, -EINVAL,
				      "region %d (gpa 0x%llx, %llu bytes at offset %llu) " "differs from the snapshot's (gpa 0x%llx, %llu bytes at offset %llu)", i, (unsigned long long)g->gpa, (unsigned long long)g->size, (unsigned long long)g->offset, (unsigned long long)cfg->regions[i].gpa, (unsigned long long)cfg->regions[i].size, (unsigned long long)cfg->regions[i].offset);
	}
	return 0;
}
