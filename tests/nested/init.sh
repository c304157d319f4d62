#!/bin/busybox sh
# /init of the nested rig's L1 Linux: load kvm-amd, run the Linux suite, print one result line,
# power off. Written into the L1 initramfs by tests/nested/rig.sh.
/bin/busybox --install -s /bin
export PATH=/usr/sbin:/bin:/usr/bin HOME=/root TMPDIR=/tmp
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs -o size=75% tmpfs /tmp
mkdir -p /dev/pts /dev/shm /run/forkvm /dev/hugepages
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t hugetlbfs hugetlbfs /dev/hugepages 2>/dev/null
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
ip link set lo up 2>/dev/null
echo "nested: L1 $(uname -r) up after $(cut -d' ' -f1 /proc/uptime) s"
# Heartbeat on the second serial port (tests/nested/rig.sh): a frozen L1 is told from a slow test.
(while :; do echo . >/dev/ttyS1; sleep 20; done) 2>/dev/null &
rc=2
for m in $(cat /lib/modules/order); do
	insmod /lib/modules/$m.ko 2>/tmp/insmod.err || {
		echo "nested: insmod $m failed: $(cat /tmp/insmod.err)"
	}
done
if [ ! -c /dev/kvm ]; then
	echo "nested: no /dev/kvm after loading $(cat /lib/modules/order | tr '\n' ' ')"
	grep -o -w -E 'svm|vmx' /proc/cpuinfo | sort -u
else
	cd /forkvm
	# Keep kvm.ko's LAPIC static keys from being live-patched while tests run (see the
	# script: multi-threaded TCG can run a stale int3 after text_poke_bp and oops L1).
	python3 /forkvm/pin_apic_keys.py >/tmp/pin.out 2>&1 &
	pin=$!
	for i in $(seq 50); do grep -q . /tmp/pin.out && break; sleep 0.1; done
	grep -q '^pinned$' /tmp/pin.out || echo "nested: warning: $(cat /tmp/pin.out)"
	export FORKVM_BUILD=build FORKVM_CACHE=/root/.cache/forkvm FORKVM_NESTED=1
	export FORKVM_L1_KERNEL="$(cat /forkvm/l1-kernel)" PYTHONDONTWRITEBYTECODE=1
	# L2 guests get no more vCPUs than L1 has CPUs (two vCPUs on one CPU crawl).
	[ "$(cat /forkvm/l1-cpus)" -ge 2 ] || export FORKVM_LINUX_VCPUS=1
	set --
	paths=tests/linux
	while IFS= read -r a; do
		[ -n "$a" ] || continue
		set -- "$@" "$a"
		case "$a" in tests/*) paths= ;; esac
	done </forkvm/pytest-args
	# FORKVM_NESTED_KVMTRACE=1 (rig.sh): L1 records KVM's events and stops recording at the
	# first L2 shutdown exit (a triple fault); the events of that vCPU thread are printed at the
	# end -- what the guest did last, which the VMM cannot see (SVM resets the vCPU first).
	T=/sys/kernel/tracing
	if [ -f /forkvm/kvmtrace ] && { [ -d $T/events ] || mount -t tracefs tracefs $T; }; then
		echo 16384 >$T/buffer_size_kb
		echo 1 >$T/events/kvm/enable
		echo 'traceoff if exit_reason == 127' >$T/events/kvm/kvm_exit/trigger &&
			echo "nested: KVM events recorded until the first L2 shutdown exit"
	fi
	if [ -f /forkvm/run-cmd ]; then
		sh /forkvm/run-cmd
	else
		python3 -m pytest -v -rfEs --durations=20 --color=no -p no:cacheprovider -p pytest_timeout \
			--timeout "${FORKVM_TEST_TIMEOUT:-600}" --timeout-method signal $paths "$@"
	fi
	rc=$?
	kill $pin 2>/dev/null
	if [ -f /forkvm/kvmtrace ] && [ "$(cat $T/tracing_on 2>/dev/null)" = 0 ]; then
		cat $T/trace >/tmp/kvm.trace
		pid=$(grep 'kvm_exit: .* reason shutdown' /tmp/kvm.trace | tail -1 |
			sed -E 's/^ *[^ ]*-([0-9]+) .*/\1/')
		echo "nested: KVM events of thread $pid before its L2 shutdown exit:"
		grep -E -- "-$pid +\[" /tmp/kvm.trace | tail -n 200 | sed 's/^/KVMTRACE /'
	fi
fi
echo "FORKVM-NESTED-RESULT rc=$rc"
sync
poweroff -f
