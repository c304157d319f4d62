#!/usr/bin/env bash
# The nested Linux rig: boot an L1 Linux under QEMU's TCG (which emulates AMD SVM), give it
# /dev/kvm through Debian's kvm-amd module, and run the Linux end-to-end suite (tests/linux)
# inside it against this tree's forkvm build. Results come back over the serial console.
#
#   tests/nested/rig.sh [--kernel 6.1|6.12] [--mem MiB] [--timeout S] [--keep] [--group-size N]
#                       [-- PYTEST-ARGS]
#   tests/nested/rig.sh [...] --run 'SHELL COMMAND'   (debugging: a command instead of pytest)
#
# Exit status: pytest's inside L1 (0 all passed), 2 for a rig failure (named on stderr).
# Timings inside the rig are emulated: correctness only (docs/TESTING.md).
set -euo pipefail
# Under pipefail a reader that stops early (head -1, awk's exit) makes the writer die of
# SIGPIPE and the whole rig exit 141 when the writer had more to say: readers here read to
# the end (a CI run lost a rig run that way: status 141 after 12 s, before L1 booted).
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${FORKVM_BUILD:-build}
CACHE=${FORKVM_CACHE:-$HOME/.cache/forkvm}
NESTED_CACHE=$CACHE/nested
L1_KERNEL=6.1
L1_MEM=${FORKVM_NESTED_MEM:-4096}
TIMEOUT=${FORKVM_NESTED_TIMEOUT:-2400}
# Extra Debian packages in the L2 root filesystem: tests call busybox applets (dmesg, od, dd).
ROOTFS_PACKAGES=${FORKVM_NESTED_ROOTFS_PACKAGES:-busybox-static}
KEEP=0
GROUP_SIZE=${FORKVM_NESTED_GROUP:-0}
RUN_CMD=
PYTEST_ARGS=()

die() { echo "nested rig: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
	case "$1" in
	--kernel) L1_KERNEL=$2; shift 2 ;;
	--mem) L1_MEM=$2; shift 2 ;;
	--timeout) TIMEOUT=$2; shift 2 ;;
	--keep) KEEP=1; shift ;;
	--group-size) GROUP_SIZE=$2; shift 2 ;;
	--run) RUN_CMD=$2; shift 2 ;;
	--) shift; PYTEST_ARGS=("$@"); break ;;
	*) die "unknown argument '$1' (usage: rig.sh [--kernel 6.1|6.12] [--mem MiB] [--timeout S] [--keep] [--group-size N] [-- PYTEST-ARGS])" ;;
	esac
done
case "$GROUP_SIZE" in '' | *[!0-9]*) die "--group-size must be a whole number, not '$GROUP_SIZE'" ;; esac

# L1 CPUs: two. 6.12 patches its own code (static keys and calls) while its other CPU runs it,
# and multi-threaded TCG sometimes still executes the int3 of a patch site afterwards: an
# "Oops: int3" panic in L1 (seen in 2 of 6 runs). One L1 CPU avoids it but made the suite
# about 15x slower (two-vCPU L2 guests on one CPU), single-threaded TCG about 5x; so a run that
# ends without a result is run again by tests/run instead.
case "$L1_KERNEL" in
6.1) META=linux-image-cloud-amd64 TCG_THREAD=multi L1_SMP=2 ;;
6.12) META=linux-image-6.12-cloud-amd64 TCG_THREAD=multi L1_SMP=2 ;;
*) die "--kernel must be 6.1 or 6.12, not '$L1_KERNEL'" ;;
esac

for tool in qemu-system-x86_64 cpio apt-get dpkg-deb /usr/bin/python3 /bin/busybox xz; do
	command -v "$tool" >/dev/null || die "missing $tool (scripts/install-deps.sh installs it)"
done
[ -x "$ROOT/$BUILD/forkvm" ] || die "no $BUILD/forkvm: run 'make tests' first"
[ -x "$ROOT/$BUILD/forkvm-agent" ] || die "no $BUILD/forkvm-agent: run 'make $BUILD/forkvm-agent' first"
/usr/bin/python3 -c 'import pytest, pytest_timeout' 2>/dev/null ||
	die "no pytest/pytest-timeout for /usr/bin/python3 (apt-get install python3-pytest python3-pytest-timeout)"

# --- the L1 kernel: Debian's cloud kernel package, cached per version ------------------------
kernel_pkg() {
	local dep
	dep=$(apt-cache depends "$META" 2>/dev/null | awk '!f && /Depends: linux-image-/ {print $2; f = 1}')
	if [ -z "$dep" ]; then
		apt-get update -qq >/dev/null 2>&1 || true
		dep=$(apt-cache depends "$META" 2>/dev/null | awk '!f && /Depends: linux-image-/ {print $2; f = 1}')
	fi
	[ -n "$dep" ] || die "cannot resolve the kernel package behind $META (apt-cache depends $META)"
	echo "$dep"
}

fetch_kernel() {
	local pkg=$1 ver dir tmp
	ver=$(apt-cache policy "$pkg" | awk '/Candidate:/ {print $2}')
	[ -n "$ver" ] && [ "$ver" != "(none)" ] || die "$pkg has no candidate version (apt-get update?)"
	dir=$NESTED_CACHE/${pkg}_${ver//:/_}
	if [ ! -f "$dir/.complete" ]; then
		tmp=$(mktemp -d "$NESTED_CACHE/.fetch.XXXXXX")
		(cd "$tmp" && apt-get download -q -o APT::Sandbox::User=root "$pkg=$ver" >/dev/null) ||
			die "apt-get download $pkg=$ver failed"
		dpkg-deb -x "$tmp"/*.deb "$tmp/root" || die "unpacking $pkg failed"
		touch "$tmp/root/.complete"
		rm -rf "$dir"
		mv "$tmp/root" "$dir"
		rm -rf "$tmp"
	fi
	echo "$dir"
}

mkdir -p "$NESTED_CACHE"
KPKG=$(kernel_pkg)
KDIR=$(fetch_kernel "$KPKG")
KVER=$(ls "$KDIR/lib/modules" | sed -n 1p)
BZIMAGE=$KDIR/boot/vmlinuz-$KVER
[ -f "$BZIMAGE" ] || die "$KPKG has no boot/vmlinuz-$KVER"

# --- the L2 guest image: built now, so it carries this tree's agent -------------------------
build_l2_image() {
	"$ROOT/$BUILD/forkvm" image build --cache "$CACHE" --agent "$ROOT/$BUILD/forkvm-agent" \
		--out "$1" >"$WORK/image-build.log" 2>&1 ||
		die "forkvm image build failed: $(tail -n 5 "$WORK/image-build.log")"
}

# --- assemble the L1 initramfs ----------------------------------------------------------------
WORK=$(mktemp -d /tmp/forkvm-nested.XXXXXX)
cleanup() { [ "$KEEP" = 1 ] && echo "nested rig: kept $WORK" >&2 || rm -rf "$WORK"; }
trap cleanup EXIT
STAGE=$WORK/root
mkdir -p "$STAGE"/{bin,dev,proc,sys,tmp,run,root,etc,lib/modules,forkvm/build,usr/bin}

cp /bin/busybox "$STAGE/bin/busybox"
# Modules: kvm-amd and what it depends on, decompressed (busybox insmod reads plain .ko).
add_module() {
	local name=$1 f deps d # d too: the recursion must not change the caller's loop variable
	f=$(find "$KDIR/lib/modules/$KVER" \( -name "$name.ko" -o -name "$name.ko.xz" -o -name "$name.ko.zst" \) -print -quit)
	[ -n "$f" ] || die "$KPKG has no module $name"
	case "$f" in
	*.xz) xz -dc "$f" >"$STAGE/lib/modules/$name.ko" ;;
	*.zst) zstd -qdc "$f" >"$STAGE/lib/modules/$name.ko" ;;
	*) cp "$f" "$STAGE/lib/modules/$name.ko" ;;
	esac
	deps=$(strings "$STAGE/lib/modules/$name.ko" | awk '!f && sub(/^depends=/, "") {print; f = 1}')
	for d in ${deps//,/ }; do
		[ -f "$STAGE/lib/modules/$d.ko" ] || add_module "$d"
		grep -qx "$d" "$WORK/modorder" 2>/dev/null || echo "$d" >>"$WORK/modorder"
	done
}
: >"$WORK/modorder"
# kvm-amd for L2; TUN, veth and nftables (with conntrack, NAT, reject) for `forkvm run --net`
# (src/net/): L1 has no modprobe, so nothing is loaded on demand.
for m in irqbypass kvm kvm-amd tun veth nf_tables nft_ct nft_chain_nat nft_nat nft_masq \
	nft_reject_inet nft_reject_ipv4; do
	add_module "$m"
	grep -qx "$m" "$WORK/modorder" || echo "$m" >>"$WORK/modorder"
done
cp "$WORK/modorder" "$STAGE/lib/modules/order"

# forkvm: the binary, the agent, the test suite, the L2 image.
cp "$ROOT/$BUILD/forkvm" "$ROOT/$BUILD/forkvm-agent" "$STAGE/forkvm/build/"
# The VM process binary: `forkvm run` continues there (docs/ARCHITECTURE.md, "Two binaries").
[ -x "$ROOT/$BUILD/vmm/forkvm" ] || die "no $BUILD/vmm/forkvm: run 'make tests' first"
mkdir -p "$STAGE/forkvm/build/vmm"
cp "$ROOT/$BUILD/vmm/forkvm" "$STAGE/forkvm/build/vmm/"
mkdir -p "$STAGE/forkvm/tests"
cp -r "$ROOT/tests/linux" "$ROOT/tests/integration" "$ROOT/tests/conftest.py" "$STAGE/forkvm/tests/"
mkdir -p "$STAGE/forkvm/sdk"
cp -r "$ROOT/sdk/python" "$STAGE/forkvm/sdk/" # tests/linux/test_daemon.py drives forkvmd with it
find "$STAGE/forkvm/tests" "$STAGE/forkvm/sdk" -name __pycache__ -prune -exec rm -rf {} +
mkdir -p "$STAGE/root/.cache/forkvm"
build_l2_image "$STAGE/root/.cache/forkvm/image"
# The L2 root filesystem (python3 from Debian's packages): `forkvm run --linux` boots from the
# cached one, so the suite runs the product's path. Little free space: the initramfs carries
# every byte of it (cpio keeps no holes); each VM's writes go to its own overlay anyway.
"$ROOT/$BUILD/forkvm" image build --rootfs --packages "$ROOTFS_PACKAGES" --free 48 \
	--cache "$CACHE" --agent "$ROOT/$BUILD/forkvm-agent" \
	--out "$STAGE/root/.cache/forkvm/rootfs" >"$WORK/rootfs-build.log" 2>&1 ||
	die "forkvm image build --rootfs failed: $(tail -n 5 "$WORK/rootfs-build.log")"
# e2fsprogs for tests that make ext4 disks in L1 (busybox's mke2fs has no -d).
mkdir -p "$STAGE/usr/sbin"
for t in mke2fs e2fsck debugfs; do cp -L "/sbin/$t" "$STAGE/usr/sbin/$t"; done
ln -s mke2fs "$STAGE/usr/sbin/mkfs.ext4"

# Python 3 and pytest from this host, enough to run the suite.
PYLIB=/usr/lib/python3.11
cp /usr/bin/python3.11 "$STAGE/usr/bin/python3"
mkdir -p "$STAGE$PYLIB" "$STAGE/usr/lib/python3/dist-packages"
(cd "$PYLIB" && tar --exclude=./test --exclude=./idlelib --exclude=./tkinter --exclude=./turtledemo \
	--exclude=./lib2to3 --exclude=./ensurepip --exclude=./pydoc_data --exclude='./config-*' \
	--exclude=./site-packages -cf - .) | tar -xf - -C "$STAGE$PYLIB"
for p in pytest _pytest pluggy iniconfig packaging attr py py.py pytest_timeout.py; do
	[ -e "/usr/lib/python3/dist-packages/$p" ] &&
		cp -r "/usr/lib/python3/dist-packages/$p" "$STAGE/usr/lib/python3/dist-packages/"
done

# Shared libraries of every ELF file we ship, at their host paths, and libnftables, which the
# VMM opens at run time (dlopen, src/net/net_nft.c) so ldd does not list it.
NFT_LIB=$(ldconfig -p | awk '!f && /libnftables\.so\.1 .*x86-64/ {print $NF; f = 1}')
[ -n "$NFT_LIB" ] || die "libnftables.so.1 not found (Debian package libnftables1)"
{
	echo "$NFT_LIB"
	find "$STAGE" -type f \( -perm -u+x -o -name '*.so*' \) -print
} | while read -r f; do
	[ "$(head -c 4 "$f" | od -An -c | tr -d ' ')" = '177ELF' ] || continue
	case $f in "$STAGE"*) ;; *) echo "$f" ;; esac
	ldd "$f" 2>/dev/null | awk '/=> \// {print $3} /^\t\/lib64/ {print $1}' || true
done | sort -u | while read -r lib; do
	mkdir -p "$STAGE$(dirname "$lib")"
	cp -L "$lib" "$STAGE$lib"
done
[ -e "$STAGE/lib64/ld-linux-x86-64.so.2" ] || { mkdir -p "$STAGE/lib64"; cp -L /lib64/ld-linux-x86-64.so.2 "$STAGE/lib64/"; }

cp "$ROOT/tests/nested/init.sh" "$STAGE/init"
cp "$ROOT/tests/nested/pin_apic_keys.py" "$STAGE/forkvm/"
chmod 755 "$STAGE/init"
echo "$L1_KERNEL" >"$STAGE/forkvm/l1-kernel"
echo "$L1_SMP" >"$STAGE/forkvm/l1-cpus"

# The base initramfs: everything but what one L1 boot is asked to run, which goes into a small
# second archive appended to it (the kernel unpacks concatenated cpio archives in order).
(cd "$STAGE" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet) >"$WORK/base.cpio" ||
	die "writing the L1 initramfs failed"

# --- boot L1 and run the suite ----------------------------------------------------------------
CONSOLE=$WORK/console.log
# L1 under multi-threaded TCG occasionally dies while the kernel patches its own code at boot
# (an int3 oops in early SMP bring-up). Nothing of forkvm has run then: boot again, at most
# twice. Once /init has said it is up, whatever happens counts.
# A stalled L1 (no console output for STALL_S seconds; each test has 600 s inside) is killed,
# so a hang costs minutes, not the whole timeout. L1's /init also writes a heartbeat to a
# second serial port every 20 s: when that stops for HEARTBEAT_S, L1 itself is frozen (not a
# slow test) and is killed sooner.
STALL_S=${FORKVM_NESTED_STALL:-720}
HEARTBEAT_S=${FORKVM_NESTED_HEARTBEAT_STALL:-150}
# L1's CPU model. Virtual GIF and virtual VMLOAD/VMSAVE are off: L2 (a plain Linux guest) needs
# neither, and L1 kernels have overflowed their stacks running with an L2 GS base after a
# #VMEXIT (docs/TESTING.md, "Groups and reruns"); these are the newest parts of TCG's SVM emulation.
L1_CPU=${FORKVM_NESTED_CPU:-max,-vgif,-v-vmsave-vmload}

# One fresh L1 runs pytest with the arguments given (or the --run command). Prints its console;
# returns pytest's status inside L1, or 2 with the reason on stderr when L1 gave no result.
boot_l1() {
	local tag=$1 attempt qpid tpid stalled age beat qrc result
	shift
	rm -rf "$WORK/args"
	mkdir -p "$WORK/args/forkvm"
	printf '%s\n' "$@" >"$WORK/args/forkvm/pytest-args"
	[ -z "$RUN_CMD" ] || printf '%s\n' "$RUN_CMD" >"$WORK/args/forkvm/run-cmd"
	[ "${FORKVM_NESTED_KVMTRACE:-0}" != 1 ] || : >"$WORK/args/forkvm/kvmtrace"
	(cd "$WORK/args" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet) |
		cat "$WORK/base.cpio" - >"$WORK/l1.cpio" || { echo "nested rig: writing the L1 initramfs failed" >&2; return 2; }
	echo "nested rig: L1 $KPKG ($KVER)$tag, $(du -m "$WORK/l1.cpio" | cut -f1) MiB initramfs, ${L1_MEM} MiB, TCG thread=$TCG_THREAD, -cpu $L1_CPU, $L1_SMP CPU(s), timeout ${TIMEOUT} s" >&2
	for attempt in 1 2 3; do
		: >"$CONSOLE"
		rm -f "$WORK/heartbeat"
		timeout -k 10 "$TIMEOUT" qemu-system-x86_64 -accel tcg,thread=$TCG_THREAD -cpu "$L1_CPU" \
			-smp "$L1_SMP" -m "$L1_MEM" -nographic -no-reboot -nodefaults -serial stdio \
			-serial "file:$WORK/heartbeat" \
			-kernel "$BZIMAGE" -initrd "$WORK/l1.cpio" \
			-append "console=ttyS0 panic=-1 quiet loglevel=3 rdinit=/init" </dev/null >"$CONSOLE" 2>&1 &
		qpid=$!
		tail -n +1 -f --pid="$qpid" "$CONSOLE" &
		tpid=$!
		stalled=0
		while kill -0 "$qpid" 2>/dev/null; do
			sleep 10
			age=$(($(date +%s) - $(stat -c %Y "$CONSOLE")))
			beat=0
			[ ! -s "$WORK/heartbeat" ] || beat=$(($(date +%s) - $(stat -c %Y "$WORK/heartbeat")))
			if [ "$age" -gt "$STALL_S" ] || [ "$beat" -gt "$HEARTBEAT_S" ]; then
				stalled=1
				if [ "$beat" -gt "$HEARTBEAT_S" ]; then
					echo "nested rig: L1 ($KVER) gave no heartbeat for $beat s (console silent for $age s): frozen, killing it" >&2
				else
					echo "nested rig: L1 ($KVER) printed nothing for $age s: stalled, killing it" >&2
				fi
				kill "$qpid" 2>/dev/null
				break
			fi
		done
		qrc=0
		wait "$qpid" || qrc=$?
		wait "$tpid" 2>/dev/null || true
		[ "$stalled" = 0 ] || break
		grep -q "nested: L1 .* up after" "$CONSOLE" && break
		[ "$qrc" = 124 ] && break
		echo "nested rig: L1 ($KVER) died before its /init ran (attempt $attempt); booting it again" >&2
	done
	result=$(sed -n 's/.*FORKVM-NESTED-RESULT rc=\([0-9]*\).*/\1/p' "$CONSOLE" | tail -1)
	[ -z "$result" ] || return "$result"
	if [ "$stalled" = 1 ]; then
		echo "nested rig: L1 ($KVER)$tag stalled (no output or no heartbeat, see above); last console lines:" >&2
	elif [ "$qrc" = 124 ]; then
		echo "nested rig: L1 ($KVER)$tag did not finish within $TIMEOUT s; last console lines:" >&2
	else
		echo "nested rig: L1 ($KVER)$tag ended (qemu status $qrc) without a result line; last console lines:" >&2
	fi
	tail -n 20 "$CONSOLE" >&2
	return 2
}

# Groups: with --group-size N, the pytest arguments (test ids) are cut into groups of at most N,
# each run in a fresh L1 (reusing the initramfs), so an L1 that dies costs the rest of its group,
# not the rest of the suite. The exit status is the worst group's: 2 if any L1 gave no result.
if [ -n "$RUN_CMD" ] || [ "$GROUP_SIZE" = 0 ] || [ "${#PYTEST_ARGS[@]}" -le "$GROUP_SIZE" ]; then
	rc=0
	boot_l1 "" "${PYTEST_ARGS[@]}" || rc=$?
	exit "$rc"
fi
n=${#PYTEST_ARGS[@]}
ngroups=$(((n + GROUP_SIZE - 1) / GROUP_SIZE))
per=$(((n + ngroups - 1) / ngroups)) # balanced: 46 in groups of 12 -> 12, 12, 12, 10
worst=0
for ((g = 0; g * per < n; g++)); do
	rc=0
	boot_l1 " [group $((g + 1)) of $ngroups]" "${PYTEST_ARGS[@]:g*per:per}" || rc=$?
	echo "nested rig: group $((g + 1)) of $ngroups: status $rc" >&2
	if [ "$rc" = 2 ] || { [ "$worst" != 2 ] && [ "$rc" -gt "$worst" ]; }; then worst=$rc; fi
done
exit "$worst"
