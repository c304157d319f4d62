#!/usr/bin/env bash
# Install every Debian package forkvm builds, tests and benchmarks with (idempotent, root).
set -euo pipefail

PACKAGES=(
	build-essential clang libclang-rt-14-dev pkg-config
	libjansson-dev libcmocka-dev libmicrohttpd-dev libcurl4-openssl-dev libsqlite3-dev
	liburing-dev libseccomp-dev libxxhash-dev libzstd-dev liblzma-dev liblz4-dev zlib1g-dev libssl-dev
	libarchive-dev e2fsprogs # rootfs images: tar streams, mkfs.ext4 -d, debugfs
	python3 python3-pytest python3-pytest-timeout
	busybox-static cpio lz4 xz-utils gnuplot-nox
	qemu-system-x86 # the nested Linux rig (tests/nested)
	openssl # test certificates for the daemon's HTTPS (tests/integration/test_daemon.py)
	nodejs # the TypeScript SDK (sdk/typescript) and its tests; npm: below
	strace # tests/integration/test_cli_daemon.py: no daemon socket, no libcurl loaded
	libmnl-dev libnftables-dev nftables # VM networking (src/net/, docs/NET.md): rtnetlink, nft rules
	iproute2 util-linux # tests/integration/test_net_host.py looks with ip and nsenter
)

missing=()
for p in "${PACKAGES[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# npm: Debian's nodejs needs its npm package; NodeSource's nodejs ships npm itself and
# conflicts with Debian's, so the package is only wanted when the command is missing.
command -v npm >/dev/null 2>&1 || dpkg-query -W -f='${Status}' npm 2>/dev/null | grep -q "install ok installed" ||
	missing+=(npm)
if [ ${#missing[@]} -eq 0 ]; then
	exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: need root to install: ${missing[*]}" >&2
	exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
