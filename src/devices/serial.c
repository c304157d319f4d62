/* 8250 UART: enough of the register model for Linux's 8250 driver and the probe guest. */
#include "devices/serial.h"

#include <linux/kvm.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "util/log.h"
#include "core/vm.h"

#define UART_IER_THRI 0x02
#define UART_IIR_NO_INT 0x01
#define UART_IIR_THRI 0x02
#define UART_IIR_FIFO 0xc0
#define UART_LCR_DLAB 0x80
#define UART_LSR_THRE 0x20
#define UART_LSR_TEMT 0x40
#define UART_MCR_LOOP 0x10
#define UART_MSR_DEFAULT 0xb0 /* DCD, DSR, CTS: a cable is present */

struct serial {
	struct vm *vm;
	int irq;
	int out_fd;
	pthread_mutex_t lock;
	struct serial_regs r;
};

static void serial_update_irq(struct serial *s)
{
	bool pending = (s->r.ier & UART_IER_THRI) && s->r.thr_interrupt;

	s->r.iir = (pending ? UART_IIR_THRI : UART_IIR_NO_INT) | (s->r.fcr & 1 ? UART_IIR_FIFO : 0);
	if (!pending || !s->vm || s->vm->fd < 0)
		return;
	/* ISA IRQs are edge-triggered: pulse the line. */
	struct kvm_irq_level level = { .irq = (uint32_t)s->irq, .level = 1 };
	if (ioctl(s->vm->fd, KVM_IRQ_LINE, &level) < 0)
		log_warn("serial: KVM_IRQ_LINE %d: %s", s->irq, strerror(errno));
	level.level = 0;
	ioctl(s->vm->fd, KVM_IRQ_LINE, &level);
}

static void serial_transmit(struct serial *s, uint8_t byte)
{
	if (s->r.mcr & UART_MCR_LOOP)
		return;
	if (s->out_fd >= 0 && write(s->out_fd, &byte, 1) < 0 && errno != EAGAIN)
		log_warn("serial: console write: %s", strerror(errno));
}

uint8_t serial_reg_read(struct serial *s, unsigned offset)
{
	bool dlab = s->r.lcr & UART_LCR_DLAB;

	switch (offset) {
	case 0: return dlab ? s->r.dll : 0; /* no input yet: RBR reads 0 */
	case 1: return dlab ? s->r.dlm : s->r.ier;
	case 2: {
		uint8_t iir = s->r.iir;
		/* Reading IIR acknowledges a THR-empty interrupt. */
		if ((iir & 0x0f) == UART_IIR_THRI) {
			s->r.thr_interrupt = 0;
			serial_update_irq(s);
		}
		return iir;
	}
	case 3: return s->r.lcr;
	case 4: return s->r.mcr;
	case 5: return UART_LSR_THRE | UART_LSR_TEMT;
	case 6: return s->r.mcr & UART_MCR_LOOP ? (uint8_t)((s->r.mcr & 0x0f) << 4) : UART_MSR_DEFAULT;
	default: return s->r.scr;
	}
}

void serial_reg_write(struct serial *s, unsigned offset, uint8_t v)
{
	bool dlab = s->r.lcr & UART_LCR_DLAB;

	switch (offset) {
	case 0:
		if (dlab) {
			s->r.dll = v;
			return;
		}
		serial_transmit(s, v);
		s->r.thr_interrupt = 1; /* the byte left at once: THR is empty again */
		break;
	case 1:
		if (dlab) {
			s->r.dlm = v;
			return;
		}
		/* Enabling THRI while THR is empty raises the interrupt, as on real hardware. */
		if ((v & UART_IER_THRI) && !(s->r.ier & UART_IER_THRI))
			s->r.thr_interrupt = 1;
		s->r.ier = v & 0x0f;
		break;
	case 2: s->r.fcr = v; break;
	case 3: s->r.lcr = v; return;
	case 4: s->r.mcr = v & 0x1f; return;
	case 5: case 6: return; /* read-only */
	default: s->r.scr = v; return;
	}
	serial_update_irq(s);
}

static int serial_access(void *opaque, struct vcpu *vcpu, uint64_t offset, void *data, int len,
			 bool is_write)
{
	struct serial *s = opaque;
	uint8_t *bytes = data;

	pthread_mutex_lock(&s->lock);
	for (int i = 0; i < len && offset + (unsigned)i < 8; i++) {
		if (is_write)
			serial_reg_write(s, (unsigned)offset + (unsigned)i, bytes[i]);
		else
			bytes[i] = serial_reg_read(s, (unsigned)offset + (unsigned)i);
	}
	pthread_mutex_unlock(&s->lock);
	return 0;
}

int serial_create(struct vm *vm, uint16_t port, int irq, int out_fd, struct serial **out)
{
	struct serial *s = calloc(1, sizeof(*s));

	if (!s)
		return log_errno(-ENOMEM, "allocating serial device");
	s->vm = vm;
	s->irq = irq;
	s->out_fd = out_fd;
	s->r.iir = UART_IIR_NO_INT;
	s->r.lsr = UART_LSR_THRE | UART_LSR_TEMT;
	s->r.msr = UART_MSR_DEFAULT;
	pthread_mutex_init(&s->lock, NULL);
	if (vm) {
		struct bus_dev dev = { .name = "serial", .base = port, .len = 8, .opaque = s,
				       .access = serial_access };
		int err = bus_register(&vm->pio, &dev);
		if (err) {
			free(s);
			return err;
		}
	}
	*out = s;
	return 0;
}

void serial_destroy(struct serial *s)
{
	if (!s)
		return;
	pthread_mutex_destroy(&s->lock);
	free(s);
}

void serial_get_regs(struct serial *s, struct serial_regs *regs)
{
	pthread_mutex_lock(&s->lock);
	*regs = s->r;
	pthread_mutex_unlock(&s->lock);
}

void serial_set_regs(struct serial *s, const struct serial_regs *regs)
{
	pthread_mutex_lock(&s->lock);
	s->r = *regs;
	pthread_mutex_unlock(&s->lock);
}
