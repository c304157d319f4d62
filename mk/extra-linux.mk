# Linux guests end to end: boot the image, talk to the agent over vsock. Needs a host whose
# KVM runs guest kernels natively (VT-x/AMD-V); elsewhere the test skips with the reason.
test-linux: tests
	/usr/bin/python3 -m pytest -v -s -p no:cacheprovider tests/integration/test_linux_e2e.py

.PHONY: test-linux
