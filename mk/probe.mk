# The probe guest: freestanding, never built with the host's sanitizer flags.
PROBE_CFLAGS := -std=gnu17 -O2 -Wall -Wextra -ffreestanding -fno-pic -fno-pie -mno-red-zone \
                -mgeneral-regs-only -fno-stack-protector -fno-asynchronous-unwind-tables \
                -fno-builtin -fno-tree-loop-distribute-patterns -mcmodel=small
PROBE_SRC := guests/probe/start.S guests/probe/probe.c guests/probe/vsock_drv.c guests/probe/vsock_drv_setup.c \
             guests/probe/blk_drv.c guests/probe/net_drv.c

$(BUILD)/probe.elf: $(PROBE_SRC) guests/probe/probe_abi.h guests/probe/blk_drv.h guests/probe/net_drv.h guests/probe/vsock_drv.h guests/probe/vsock_drv_impl.h src/devices/vsock_proto.h guests/probe/probe.ld
	@mkdir -p $(BUILD)
	$(CC) $(PROBE_CFLAGS) -nostdlib -static -no-pie -Wl,--build-id=none \
		-T guests/probe/probe.ld -o $@ $(PROBE_SRC)

$(BUILD)/probe.bin: $(BUILD)/probe.elf
	objcopy -O binary $< $@

$(BUILD)/probe_blob.o: guests/probe/blob.S $(BUILD)/probe.bin
	$(CC) -c -I$(BUILD) -o $@ $<
