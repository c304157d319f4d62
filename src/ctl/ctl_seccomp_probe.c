/* Test-only control command: prove the control thread's seccomp filter kills (docs/SECURITY.md). */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>

#include "ctl/ctl.h"
#include "jail/seccomp.h"

json_t *ctl_cmd_seccomp_probe(struct ctl_server *srv, struct ctl_request *req);

json_t *ctl_cmd_seccomp_probe(struct ctl_server *srv, struct ctl_request *req)
{
	const char *role = ctl_req_str(req, "role", NULL);
	const char *call = ctl_req_str(req, "call", "signal");
	int family = !strcmp(call, "shutdown_family") ? 1 : !strcmp(call, "setsockopt_family") ? 2 : 0;
	int ret;

	(void)srv;
	if (!jail_seccomp_probe_enabled())
		return ctl_reply_error("seccomp_probe is a test hook: start the VMM with "
				       "FORKVM_TEST_SECCOMP_PROBE=1");
	if (!strcmp(call, "kill")) { /* the control thread sends SIGCONT to pid: allowed? */
		uint64_t pid = ctl_req_u64(req, "pid", 0);
		if (!pid || pid > INT32_MAX)
			return ctl_reply_error("seccomp_probe: call kill needs a pid");
		json_t *reply = ctl_reply_ok();
		ret = kill((pid_t)pid, SIGCONT) < 0 ? -errno : 0;
		json_object_set_new(reply, "errno", json_integer(-ret));
		return reply;
	}
	if (role && strcmp(role, "vcpu") && strcmp(role, "device"))
		return ctl_reply_error("seccomp_probe: role %s: expected vcpu or device", role);
	if (!family && strcmp(call, "signal"))
		return ctl_reply_error("seccomp_probe: call %s: expected signal, "
				       "shutdown_family, setsockopt_family or kill", call);
	if (role) { /* dies in a thread of that role: a signal out, or the family socket */
		ret = jail_seccomp_probe_role(strcmp(role, "vcpu") ? JAIL_ROLE_DEVICE :
					      JAIL_ROLE_VCPU, family);
		if (ret == -EBADF)
			return ctl_reply_error("seccomp_probe: this VMM has no family socket");
		if (ret == -EPERM)
			return ctl_reply_error("seccomp_probe: a %s thread could not make its "
					       "allowed call", role);
		return ctl_reply_error("seccomp_probe: a %s thread made the forbidden call "
				       "(returned %d): no filter killed this VMM", role, ret);
	}
	ret = jail_seccomp_probe(); /* under the filter, the process dies here */
	return ctl_reply_error("seccomp_probe: mount(2) returned %d (errno %d): no filter killed "
			       "this VMM (FORKVM_SECCOMP=%s)", ret, ret < 0 ? errno : 0,
			       jail_seccomp_mode() == JAIL_SECCOMP_LOG ? "log" : "0");
}
