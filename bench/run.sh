#!/usr/bin/env bash
# Run every benchmark; results print as tables and land in bench/out/*.json (+ charts).
set -euo pipefail
cd "$(dirname "$0")/.."
export FORKVM_BUILD=${FORKVM_BUILD:-build}
for b in bench/bench_*.py; do
	/usr/bin/python3 "$b" "$@"
done
