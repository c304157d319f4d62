/* put_tree and get_tree: whole directories in and out of the guest as ustar archives. */
#include "ops.h"
#include "reply.h"
#include "util/errmsg.h"
#include "util/tartree.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* mkdir -p: create path and its missing parents (symlinks in the given path are followed:
 * the client chose it; only archive members are confined). */
static int make_dirs(const char *path, struct fvm_err *e)
{
	char *copy = strdup(path);
	int ret = 0;

	if (!copy)
		return errmsg(e, -ENOMEM, "%s", strerror(ENOMEM));
	for (char *p = copy + 1;; p++) {
		if (*p && *p != '/')
			continue;
		char saved = *p;

		*p = '\0';
		if (mkdir(copy, 0755) < 0 && errno != EEXIST) {
			ret = errmsg(e, -errno, "mkdir %s: %s", copy, strerror(errno));
			break;
		}
		*p = saved;
		if (!saved)
			break;
	}
	free(copy);
	return ret;
}

int op_put_tree(const struct put_tree_request *t, json_t *reply, struct fvm_err *e)
{
	const struct tartree_limits lim = { AGENT_MAX_TREE, AGENT_MAX_TREE_ENTRIES };
	struct tartree_stats st;
	struct fvm_err why = FVM_ERR_INIT;
	int fd, ret;

	ret = make_dirs(t->path, e);
	if (ret < 0)
		return ret;
	fd = open(t->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return errmsg(e, -errno, "open directory %s: %s", t->path, strerror(errno));
	ret = tartree_extract(fd, t->data, t->len, &lim, &st, &why);
	close(fd);
	if (ret < 0)
		return errmsg(e, ret, "extract into %.64s: %s", t->path, why.msg);
	ret = reply_set(reply, "entries", json_integer((json_int_t)st.entries));
	if (ret == 0)
		ret = reply_set(reply, "bytes", json_integer((json_int_t)st.bytes));
	if (ret < 0)
		return errmsg(e, ret, "build put_tree reply: %s", strerror(-ret));
	return 0;
}

int op_get_tree(const struct get_tree_request *t, json_t *reply, struct fvm_err *e)
{
	const struct tartree_limits lim = { t->max_bytes, AGENT_MAX_TREE_ENTRIES };
	struct tartree_stats st;
	enum tartree_kind kind;
	uint8_t *tar = NULL;
	size_t len = 0;
	int ret;

	ret = tartree_archive(t->path, &lim, &tar, &len, &kind, &st, e);
	if (ret < 0)
		return ret;
	ret = reply_set_base64(reply, "data", tar, len);
	if (ret == 0)
		ret = reply_set(reply, "type", json_string(kind == TARTREE_DIR ? "directory" : "file"));
	if (ret == 0)
		ret = reply_set(reply, "bytes", json_integer((json_int_t)len));
	if (ret == 0)
		ret = reply_set(reply, "entries", json_integer((json_int_t)st.entries));
	if (ret == 0)
		ret = reply_set(reply, "skipped", json_integer((json_int_t)st.skipped));
	if (ret < 0)
		errmsg(e, ret, "build get_tree reply: %s", strerror(-ret));
	free(tar);
	return ret;
}
