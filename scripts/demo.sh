#!/usr/bin/env bash
# Demo: boot the probe guest, command it, pause/resume it, and print what each step cost.
set -euo pipefail
cd "$(dirname "$0")/.."
FORKVM=${FORKVM:-build/forkvm}
dir=$(mktemp -d)
sock="$dir/demo.sock"
trap '"$FORKVM" stop "$sock" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT

ms() { date +%s%N; }
elapsed() { echo "$(( ($(date +%s%N) - $1) / 1000 )) us"; }

echo "== forkvm demo: probe guest on KVM ($(nproc) cores)"
t=$(ms)
pid=$("$FORKVM" run --detach --socket "$sock" --mem 512M --vcpus 2 | cut -d' ' -f1)
"$FORKVM" probe ping "$sock" >/dev/null
echo "boot -> first ping:        $(elapsed "$t")"
uid=$(awk '/^Uid:/ {print $2}' "/proc/$pid/status")
if [ -L "$sock" ]; then
	echo "VMM pid $pid: jailed (uid $uid, no capabilities, writes only $(readlink "$sock" | cut -d/ -f1))"
else
	echo "VMM pid $pid: NOT jailed (uid $uid; FORKVM_JAIL=0 or --no-jail, or not root)"
fi
t=$(ms)
"$FORKVM" probe ping "$sock" >/dev/null
echo "one ping (CLI round trip): $(elapsed "$t")"
t=$(ms)
"$FORKVM" probe fill "$sock" --gpa 4M --len 256M --seed 7 >/dev/null
echo "guest fills 256 MiB:       $(elapsed "$t")"
guest=$("$FORKVM" probe checksum "$sock" --gpa 4M --len 256M | sed 's/.*"checksum":"\([^"]*\)".*/\1/')
host=$("$FORKVM" probe memhash "$sock" --gpa 4M --len 256M | sed 's/.*"checksum":"\([^"]*\)".*/\1/')
echo "guest checksum $guest, host hash $host: $([ "$guest" = "$host" ] && echo match || echo MISMATCH)"
"$FORKVM" probe dirty "$sock" --pages 1024 --vcpu 1 >/dev/null
sleep 0.2
pause_us=$("$FORKVM" pause "$sock" | sed 's/.*"pause_us":\([0-9.]*\).*/\1/')
echo "pause (guest dirtying):    ${pause_us} us until every vCPU parked"
"$FORKVM" resume "$sock" >/dev/null
"$FORKVM" probe dirty "$sock" --pages 0 --vcpu 1 >/dev/null
guest=$("$FORKVM" probe checksum "$sock" --gpa 4M --len 256M | sed 's/.*"checksum":"\([^"]*\)".*/\1/')
export FORKVM_RUN_DIR="$dir"
out=$("$FORKVM" branch "$sock" --strategy cow --count 3 --name demo)
echo "branch (cow) into 3 children: source paused $(echo "$out" | sed 's/.*"paused_us":\([0-9.]*\).*/\1/') us," \
	"all ready in $(echo "$out" | sed 's/.*"total_ms":\([0-9.]*\).*/\1/') ms"
for k in 0 1 2; do
	h=$("$FORKVM" probe checksum "demo-$k" --gpa 4M --len 256M | sed 's/.*"checksum":"\([^"]*\)".*/\1/')
	echo "  child demo-$k: checksum $h ($([ "$h" = "$guest" ] && echo 'the source'"'"'s warm state' || echo MISMATCH))"
done
"$FORKVM" probe fill demo-0 --gpa 4M --len 64M --seed 99 >/dev/null
echo "  demo-0 writes 64 MiB: demo-0 $("$FORKVM" probe checksum demo-0 --gpa 4M --len 256M | sed 's/.*"checksum":"\([^"]*\)".*/\1/')," \
	"demo-1 $("$FORKVM" probe checksum demo-1 --gpa 4M --len 256M | sed 's/.*"checksum":"\([^"]*\)".*/\1/') (isolated)"
for k in 0 1 2; do "$FORKVM" stop "demo-$k" >/dev/null; done
"$FORKVM" template stop demo.template >/dev/null
"$FORKVM" status "$sock" | grep -E '"(state|mem_bytes|pause_count)"'
"$FORKVM" stop "$sock"
echo "stopped; benchmarks: make bench"
