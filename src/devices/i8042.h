/* Minimal i8042 keyboard controller: only what `reboot=k` needs (command 0xFE = reset). */
#ifndef FORKVM_I8042_H
#define FORKVM_I8042_H

#define I8042_DATA_PORT 0x60
#define I8042_CMD_PORT 0x64
#define I8042_CMD_RESET 0xfe

struct vm;

/* Register ports 0x60 and 0x64 on the VM's port bus. */
int i8042_create(struct vm *vm);

#endif
