/* Test-only control command: prove the control thread's seccomp filter kills (docs/SECURITY.md). */
#include <errno.h>

#include "ctl/ctl.h"
#include "jail/seccomp.h"

json_t *ctl_cmd_seccomp_probe(struct ctl_server *srv, struct ctl_request *req);

json_t *ctl_cmd_seccomp_probe(struct ctl_server *srv, struct ctl_request *req)
{
	int ret;

	if (!jail_seccomp_probe_enabled())
		return ctl_reply_error("seccomp_probe is a test hook: start the VMM with "
				       "FORKVM_TEST_SECCOMP_PROBE=1");
	ret = jail_seccomp_probe(); /* under the filter, the process dies here */
	return ctl_reply_error("seccomp_probe: mount(2) returned %d (errno %d): no filter killed "
			       "this VMM (FORKVM_SECCOMP=%s)", ret, ret < 0 ? errno : 0,
			       jail_seccomp_mode() == JAIL_SECCOMP_LOG ? "log" : "0");
}
