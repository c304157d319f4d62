/* 8250 UART register model without a VM: output, DLAB, THR-empty interrupt, loopback, state. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "devices/serial.h"
#include "x86/layout.h"

enum { THR = 0, RBR = 0, DLL = 0, IER = 1, DLM = 1, IIR = 2, FCR = 2, LCR = 3, MCR = 4, LSR = 5,
       MSR = 6, SCR = 7 };

#define LCR_DLAB 0x80
#define IER_THRI 0x02
#define IIR_NO_INT 0x01
#define IIR_THRI 0x02
#define LSR_THRE 0x20
#define LSR_TEMT 0x40
#define MCR_LOOP 0x10

struct fixture {
	struct serial *s;
	int rd, wr;
};

static int setup(void **state)
{
	static struct fixture f;
	int fds[2];

	if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0)
		return -1;
	f.rd = fds[0];
	f.wr = fds[1];
	if (serial_create(NULL, LAYOUT_SERIAL_PORT, LAYOUT_SERIAL_IRQ, f.wr, &f.s))
		return -1;
	*state = &f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	serial_destroy(f->s);
	close(f->rd);
	close(f->wr);
	return 0;
}

/* Everything written to the console so far (non-blocking). */
static size_t drain(struct fixture *f, char *buf, size_t len)
{
	ssize_t n = read(f->rd, buf, len - 1);

	if (n < 0) {
		assert_int_equal(errno, EAGAIN);
		n = 0;
	}
	buf[n] = '\0';
	return (size_t)n;
}

static void test_initial_state(void **state)
{
	struct fixture *f = *state;
	struct serial_regs r;

	serial_get_regs(f->s, &r);
	assert_int_equal(r.iir, IIR_NO_INT);
	assert_int_equal(r.ier, 0);
	assert_int_equal(r.lcr, 0);
	assert_int_equal(r.thr_interrupt, 0);
	assert_int_equal(serial_reg_read(f->s, IIR), IIR_NO_INT);
	assert_int_equal(serial_reg_read(f->s, IER), 0);
	assert_int_equal(serial_reg_read(f->s, RBR), 0);
	assert_int_equal(serial_reg_read(f->s, MSR), 0xb0); /* DCD, DSR, CTS */
}

static void test_thr_write_reaches_out_fd(void **state)
{
	struct fixture *f = *state;
	const char *msg = "hello\n";
	char buf[64];

	for (const char *p = msg; *p; p++)
		serial_reg_write(f->s, THR, (uint8_t)*p);
	assert_int_equal(drain(f, buf, sizeof(buf)), strlen(msg));
	assert_string_equal(buf, msg);
	/* Nothing else was written. */
	assert_int_equal(drain(f, buf, sizeof(buf)), 0);
}

static void test_dlab_selects_divisor_latch(void **state)
{
	struct fixture *f = *state;
	char buf[16];

	serial_reg_write(f->s, LCR, LCR_DLAB | 0x03);
	serial_reg_write(f->s, DLL, 0x0c);
	serial_reg_write(f->s, DLM, 0x01);
	assert_int_equal(serial_reg_read(f->s, DLL), 0x0c);
	assert_int_equal(serial_reg_read(f->s, DLM), 0x01);
	assert_int_equal(serial_reg_read(f->s, LCR), LCR_DLAB | 0x03);
	/* Divisor writes are not output and do not touch IER. */
	assert_int_equal(drain(f, buf, sizeof(buf)), 0);

	serial_reg_write(f->s, LCR, 0x03);
	assert_int_equal(serial_reg_read(f->s, IER), 0);
	assert_int_equal(serial_reg_read(f->s, RBR), 0);
	serial_reg_write(f->s, IER, 0x05);
	serial_reg_write(f->s, THR, 'x');
	assert_int_equal(drain(f, buf, sizeof(buf)), 1);
	assert_string_equal(buf, "x");

	/* Back under DLAB the latch kept its value and IER is hidden. */
	serial_reg_write(f->s, LCR, LCR_DLAB);
	assert_int_equal(serial_reg_read(f->s, DLL), 0x0c);
	assert_int_equal(serial_reg_read(f->s, DLM), 0x01);

	struct serial_regs r;
	serial_get_regs(f->s, &r);
	assert_int_equal(r.dll, 0x0c);
	assert_int_equal(r.dlm, 0x01);
	assert_int_equal(r.ier, 0x05);
}

static void test_ier_thri_raises_thr_empty_interrupt(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(serial_reg_read(f->s, IIR), IIR_NO_INT);
	serial_reg_write(f->s, IER, IER_THRI);
	assert_int_equal(serial_reg_read(f->s, IER), IER_THRI);
	/* THR is empty, so enabling THRI raises the interrupt at once. */
	assert_int_equal(serial_reg_read(f->s, IIR), IIR_THRI);
	/* Reading IIR acknowledged it. */
	assert_int_equal(serial_reg_read(f->s, IIR), IIR_NO_INT);
	assert_int_equal(serial_reg_read(f->s, IIR), IIR_NO_INT);
}

static void test_thr_write_rearms_interrupt(void **state)
{
	struct fixture *f = *state;
	char buf[16];

	serial_reg_write(f->s, IER, IER_THRI);
	assert_int_equal(serial_reg_read(f->s, IIR), IIR_THRI);
	assert_int_equal(serial_reg_read(f->s, IIR), IIR_NO_INT);
	serial_reg_write(f->s, THR, 'a');
	assert_int_equal(serial_reg_read(f->s, IIR), IIR_THRI);
	assert_int_equal(serial_reg_read(f->s, IIR), IIR_NO_INT);
	/* Re-writing IER with THRI already set does not raise a new one. */
	serial_reg_write(f->s, IER, IER_THRI);
	assert_int_equal(serial_reg_read(f->s, IIR), IIR_NO_INT);
	drain(f, buf, sizeof(buf));
}

static void test_no_interrupt_while_thri_disabled(void **state)
{
	struct fixture *f = *state;
	char buf[16];

	serial_reg_write(f->s, THR, 'a');
	assert_int_equal(serial_reg_read(f->s, IIR), IIR_NO_INT);
	serial_reg_write(f->s, IER, 0x01); /* receive interrupt only */
	assert_int_equal(serial_reg_read(f->s, IIR), IIR_NO_INT);
	/* Disabling THRI hides a pending interrupt. */
	serial_reg_write(f->s, IER, IER_THRI);
	serial_reg_write(f->s, IER, 0);
	assert_int_equal(serial_reg_read(f->s, IIR), IIR_NO_INT);
	drain(f, buf, sizeof(buf));
}

static void test_fifo_enable_shows_in_iir(void **state)
{
	struct fixture *f = *state;

	serial_reg_write(f->s, FCR, 0x07);
	assert_int_equal(serial_reg_read(f->s, IIR), 0xc0 | IIR_NO_INT);
	serial_reg_write(f->s, IER, IER_THRI);
	assert_int_equal(serial_reg_read(f->s, IIR), 0xc0 | IIR_THRI);
	assert_int_equal(serial_reg_read(f->s, IIR), 0xc0 | IIR_NO_INT);
	serial_reg_write(f->s, FCR, 0);
	assert_int_equal(serial_reg_read(f->s, IIR), IIR_NO_INT);
}

static void test_lsr_always_reports_transmitter_empty(void **state)
{
	struct fixture *f = *state;
	char buf[16];

	assert_int_equal(serial_reg_read(f->s, LSR), LSR_THRE | LSR_TEMT);
	serial_reg_write(f->s, THR, 'z');
	assert_int_equal(serial_reg_read(f->s, LSR), LSR_THRE | LSR_TEMT);
	serial_reg_write(f->s, LSR, 0x00); /* read-only */
	assert_int_equal(serial_reg_read(f->s, LSR), LSR_THRE | LSR_TEMT);
	serial_reg_write(f->s, LCR, LCR_DLAB);
	assert_int_equal(serial_reg_read(f->s, LSR), LSR_THRE | LSR_TEMT);
	serial_reg_write(f->s, MCR, MCR_LOOP);
	assert_int_equal(serial_reg_read(f->s, LSR), LSR_THRE | LSR_TEMT);
	drain(f, buf, sizeof(buf));
}

static void test_loopback_suppresses_output(void **state)
{
	struct fixture *f = *state;
	char buf[16];

	serial_reg_write(f->s, MCR, MCR_LOOP | 0x0b);
	assert_int_equal(serial_reg_read(f->s, MCR), MCR_LOOP | 0x0b);
	serial_reg_write(f->s, THR, 'L');
	assert_int_equal(drain(f, buf, sizeof(buf)), 0);
	/* In loopback the modem status mirrors MCR's low nibble. */
	assert_int_equal(serial_reg_read(f->s, MSR), 0xb0);
	serial_reg_write(f->s, MCR, MCR_LOOP);
	assert_int_equal(serial_reg_read(f->s, MSR), 0x00);
	serial_reg_write(f->s, MCR, MCR_LOOP | 0x01);
	assert_int_equal(serial_reg_read(f->s, MSR), 0x10);
	/* Leaving loopback sends output again. */
	serial_reg_write(f->s, MCR, 0x03);
	serial_reg_write(f->s, THR, 'O');
	assert_int_equal(drain(f, buf, sizeof(buf)), 1);
	assert_string_equal(buf, "O");
	assert_int_equal(serial_reg_read(f->s, MSR), 0xb0);
}

static void test_register_masks_and_scratch(void **state)
{
	struct fixture *f = *state;

	serial_reg_write(f->s, IER, 0xff);
	assert_int_equal(serial_reg_read(f->s, IER), 0x0f);
	serial_reg_write(f->s, MCR, 0xff);
	assert_int_equal(serial_reg_read(f->s, MCR), 0x1f);
	serial_reg_write(f->s, MSR, 0x00); /* read-only */
	assert_int_equal(serial_reg_read(f->s, MSR), 0x0f << 4);
	serial_reg_write(f->s, SCR, 0xa7);
	assert_int_equal(serial_reg_read(f->s, SCR), 0xa7);
	serial_reg_write(f->s, MCR, 0);
}

static void test_get_set_regs_round_trip(void **state)
{
	struct fixture *f = *state;
	struct serial_regs in = { .ier = 0x03, .iir = IIR_THRI, .lcr = LCR_DLAB | 0x1b, .mcr = 0x0b,
				  .lsr = LSR_THRE | LSR_TEMT, .msr = 0xb0, .scr = 0x42, .dll = 0x60,
				  .dlm = 0x02, .fcr = 0x00, .thr_interrupt = 1 };
	struct serial_regs out;

	serial_set_regs(f->s, &in);
	serial_get_regs(f->s, &out);
	assert_memory_equal(&in, &out, sizeof(in));
	/* The restored state drives the register model. */
	assert_int_equal(serial_reg_read(f->s, DLL), 0x60);
	assert_int_equal(serial_reg_read(f->s, DLM), 0x02);
	assert_int_equal(serial_reg_read(f->s, SCR), 0x42);
	assert_int_equal(serial_reg_read(f->s, LCR), LCR_DLAB | 0x1b);
	assert_int_equal(serial_reg_read(f->s, IIR), IIR_THRI);
	assert_int_equal(serial_reg_read(f->s, IIR), IIR_NO_INT);
	serial_get_regs(f->s, &out);
	assert_int_equal(out.thr_interrupt, 0);
}

static void test_state_follows_register_writes(void **state)
{
	struct fixture *f = *state;
	struct serial_regs r;
	char buf[16];

	serial_reg_write(f->s, LCR, 0x03);
	serial_reg_write(f->s, IER, IER_THRI);
	serial_reg_write(f->s, SCR, 0x99);
	serial_get_regs(f->s, &r);
	assert_int_equal(r.lcr, 0x03);
	assert_int_equal(r.ier, IER_THRI);
	assert_int_equal(r.thr_interrupt, 1);
	assert_int_equal(r.iir, IIR_THRI);
	assert_int_equal(r.scr, 0x99);
	drain(f, buf, sizeof(buf));
}

static void test_no_output_fd(void **state)
{
	struct serial *s;

	assert_int_equal(serial_create(NULL, LAYOUT_SERIAL_PORT, LAYOUT_SERIAL_IRQ, -1, &s), 0);
	serial_reg_write(s, THR, 'q'); /* dropped quietly */
	assert_int_equal(serial_reg_read(s, LSR), LSR_THRE | LSR_TEMT);
	serial_destroy(s);
	serial_destroy(NULL);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_initial_state),
		T(test_thr_write_reaches_out_fd),
		T(test_dlab_selects_divisor_latch),
		T(test_ier_thri_raises_thr_empty_interrupt),
		T(test_thr_write_rearms_interrupt),
		T(test_no_interrupt_while_thri_disabled),
		T(test_fifo_enable_shows_in_iir),
		T(test_lsr_always_reports_transmitter_empty),
		T(test_loopback_suppresses_output),
		T(test_register_masks_and_scratch),
		T(test_get_set_regs_round_trip),
		T(test_state_follows_register_writes),
		cmocka_unit_test(test_no_output_fd),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
