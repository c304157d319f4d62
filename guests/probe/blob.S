/* Embeds the probe guest image into the forkvm binary so `forkvm run` needs no extra files. */
	.section .rodata
	.globl probe_image_start, probe_image_end
	.balign 16
probe_image_start:
	.incbin "probe.bin"
probe_image_end:

	.section .note.GNU-stack, "", @progbits
