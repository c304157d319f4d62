/* Probe guest entry: the VMM starts each vCPU here at CPL3 with rdi = vCPU id, rsi = mailbox. */
	.section .text.entry, "ax"
	.globl _start
_start:
	/* rsp = 16-byte aligned stack top from the VMM; call keeps the ABI's alignment. */
	call	probe_main
	ud2	/* probe_main never returns; if it did, the fault ends the VM visibly */

	.section .note.GNU-stack, "", @progbits
