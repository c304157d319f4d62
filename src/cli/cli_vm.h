/* Finding a VM's control socket and talking to it from the CLI. */
#ifndef FORKVM_CLI_VM_H
#define FORKVM_CLI_VM_H

#include <jansson.h>
#include <stddef.h>

/* Directory of control sockets: $FORKVM_RUN_DIR, /run/forkvm (root) or /tmp/forkvm-UID. */
const char *cli_run_dir(void);
int cli_ensure_run_dir(void);
/* A VM is named by its socket path (contains '/') or by name (RUN_DIR/NAME.sock). */
int cli_vm_socket(const char *vm, char *path, size_t len);

/* Print reply (pretty or compact) and drop it; CLI_EXIT_FAIL for NULL (an error printed). */
int cli_print_reply(json_t *reply, int json_flags);
/* Send request to VM, print the reply (pretty or compact); returns the CLI exit code. */
int cli_vm_call_print(const char *vm, json_t *request, int timeout_ms, int json_flags);
/* Same, keeping the reply for the caller (NULL after an error that was printed). */
json_t *cli_vm_call(const char *vm, json_t *request, int timeout_ms);
/* Same, to the server process pid running as uid only (-1: any), checked on the connection
 * the request goes over: a jailed VM's socket is in a directory the VM can change. */
json_t *cli_vm_call_peer(const char *vm, int pid, int uid, json_t *request, int timeout_ms);

#endif
