# Linux guests end to end (tests/linux). `make test-linux` runs the suite directly on a host
# whose KVM runs guest kernels natively (VT-x/AMD-V); `make test-nested` runs it inside the
# nested rig (an L1 Linux under QEMU's TCG with kvm-amd) on both L1 host kernels, which works
# on any host, this PVM one included. `make test` runs the nested rig too (tests/run).
test-linux: tests
	/usr/bin/python3 -m pytest -v -s -p no:cacheprovider tests/linux

test-nested: tests $(BUILD)/forkvm-agent
	FORKVM_HOST_TESTS=0 tests/run

.PHONY: test-linux test-nested
