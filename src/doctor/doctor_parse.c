/* `forkvm doctor`'s parsers of /proc/meminfo, THP mode, /proc/cpuinfo flags, cgroup.controllers
 * and image manifests: pure functions over text, unit-tested with fixture strings. */
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "doctor/doctor.h"

/* The next blank-separated word of [*p, end): its start and length; false at the end. */
static bool next_word(const char **p, const char *end, const char **word, size_t *len)
{
	const char *s = *p;

	while (s < end && isspace((unsigned char)*s))
		s++;
	if (s == end) {
		*p = s;
		return false;
	}
	*word = s;
	while (s < end && !isspace((unsigned char)*s))
		s++;
	*len = (size_t)(s - *word);
	*p = s;
	return true;
}

static bool word_is(const char *word, size_t len, const char *name)
{
	return strlen(name) == len && !memcmp(word, name, len);
}

int doctor_meminfo_value(const char *text, const char *key, uint64_t *value)
{
	size_t klen = strlen(key);
	const char *line = text;
	unsigned long long v;
	char *end;

	while (line && *line) {
		if (!strncmp(line, key, klen) && line[klen] == ':') {
			const char *num = line + klen + 1;
			while (*num == ' ' || *num == '\t')
				num++;
			if (!isdigit((unsigned char)*num))
				return -EINVAL;
			errno = 0;
			v = strtoull(num, &end, 10);
			if (errno || (*end && *end != ' ' && *end != '\n'))
				return -EINVAL;
			*value = v;
			return 0;
		}
		line = strchr(line, '\n');
		if (line)
			line++;
	}
	return -ENOENT;
}

int doctor_thp_mode(const char *text, char *mode, size_t len)
{
	const char *open = strchr(text, '['), *close;
	size_t n;

	if (!open || !(close = strchr(open, ']')))
		return -EINVAL;
	n = (size_t)(close - open - 1);
	if (!n || n >= len || memchr(open + 1, ' ', n) || memchr(open + 1, '\n', n))
		return -EINVAL;
	memcpy(mode, open + 1, n);
	mode[n] = '\0';
	return 0;
}

int doctor_cpuinfo_flags(const char *text, unsigned *flags)
{
	const char *line = text, *end, *word;
	size_t len;

	*flags = 0;
	while (line && *line) {
		end = strchr(line, '\n');
		if (!end)
			end = line + strlen(line);
		if (!strncmp(line, "flags", 5) && (line[5] == ' ' || line[5] == '\t' ||
						   line[5] == ':')) {
			const char *p = memchr(line, ':', (size_t)(end - line));
			if (!p)
				return -EINVAL;
			for (p++; next_word(&p, end, &word, &len);) {
				if (word_is(word, len, "vmx"))
					*flags |= DOCTOR_CPU_VMX;
				else if (word_is(word, len, "svm"))
					*flags |= DOCTOR_CPU_SVM;
				else if (word_is(word, len, "hypervisor"))
					*flags |= DOCTOR_CPU_HYPERVISOR;
			}
			return 0;
		}
		line = *end ? end + 1 : NULL;
	}
	return -ENOENT;
}

unsigned doctor_words_present(const char *text, const char *const *names, size_t n)
{
	const char *p = text, *end = text + strlen(text), *word;
	unsigned present = 0;
	size_t len;

	while (next_word(&p, end, &word, &len))
		for (size_t i = 0; i < n && i < 32; i++)
			if (word_is(word, len, names[i]))
				present |= 1u << i;
	return present;
}

int doctor_manifest_has_module(const char *json, const char *module, char *kver, size_t len)
{
	json_t *m = json_loads(json, 0, NULL), *mods, *v;
	const char *version;
	int ret = 0;
	size_t i;

	if (kver && len)
		kver[0] = '\0';
	mods = json_object_get(m, "modules");
	if (!json_is_object(m) || !json_is_array(mods)) {
		ret = -EINVAL;
		goto out;
	}
	json_array_foreach(mods, i, v)
		if (json_is_string(v) && !strcmp(json_string_value(v), module))
			ret = 1;
	version = json_string_value(json_object_get(m, "kernel_version"));
	if (kver && len && version)
		snprintf(kver, len, "%s", version);
out:
	json_decref(m);
	return ret;
}
