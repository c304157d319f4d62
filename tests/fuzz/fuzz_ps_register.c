/* libFuzzer harness: the page-server handshake (src/uffd/ps_proto.c): a restoring VMM's
 * register message, parsed strictly by ps_register_from_json, checked against a snapshot's
 * layout (ps_layout_check), and round-tripped through ps_register_to_json.
 * Input: the JSON line the server reads from its Unix socket. */
#include "fuzz_util.h"
#include "uffd/ps_proto.h"
#include "util/errmsg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ps_register *r, *r2;
	struct snap_config cfg = { 0 };
	struct fvm_err err = FVM_ERR_INIT;
	json_t *obj, *again;

	if (size > PS_LINE_MAX)
		return 0;
	obj = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
	if (!obj)
		return 0;
	r = calloc(1, sizeof(*r));
	r2 = calloc(1, sizeof(*r2));
	if (!r || !r2)
		abort();
	err.msg[0] = '\0';
	if (ps_register_from_json(obj, r, &err) == 0) {
		cfg.mem_size = 64 << 20;
		cfg.nvcpus = 1;
		cfg.nregions = 1;
		cfg.regions[0].size = cfg.mem_size;
		(void)ps_layout_check(r, &cfg, cfg.mem_size, &err);
		again = ps_register_to_json(r);
		if (!again || ps_register_from_json(again, r2, &err))
			abort(); /* what was accepted must encode to something acceptable */
		json_t *third = ps_register_to_json(r2);
		if (!third || !json_equal(again, third))
			abort();
		json_decref(third);
		json_decref(again);
	} else if (!err.msg[0]) {
		abort();
	}
	free(r2);
	free(r);
	json_decref(obj);
	return 0;
}
