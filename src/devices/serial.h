/* 8250/16550 UART at 0x3f8: the guest console, output to a file descriptor. */
#ifndef FORKVM_SERIAL_H
#define FORKVM_SERIAL_H

#include <stdint.h>

struct vm;

/* Register state, also what a snapshot saves. */
struct serial_regs {
	uint8_t ier, iir, lcr, mcr, lsr, msr, scr, dll, dlm, fcr;
	uint8_t thr_interrupt; /* THR-empty interrupt pending */
};

struct serial;

int serial_create(struct vm *vm, uint16_t port, int irq, int out_fd, struct serial **out);
void serial_destroy(struct serial *serial);
void serial_get_regs(struct serial *serial, struct serial_regs *regs);
void serial_set_regs(struct serial *serial, const struct serial_regs *regs);
/* Register semantics without a VM, for unit tests: returns the byte read. */
uint8_t serial_reg_read(struct serial *serial, unsigned offset);
void serial_reg_write(struct serial *serial, unsigned offset, uint8_t value);

#endif
