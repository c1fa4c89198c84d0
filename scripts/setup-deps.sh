#!/usr/bin/env bash
# Install the Debian packages kmig needs to build and test, if any is missing.
# Idempotent and quiet when everything is already there.
set -euo pipefail

PKGS=(
  meson ninja-build pkg-config gcc make binutils
  libglib2.0-dev libjson-glib-dev liburing-dev libbpf-dev libcmocka-dev
  libgnutls28-dev  # TLS for migration (QEMU's choice)
  iproute2  # ip and tc: the two-host tests (network namespaces, link shapes)
  iputils-ping  # the two-host tests check a shaped link's round trip
  clang bpftool linux-libc-dev python3
  gnuplot-nox  # the plots of bench/bench.py (make bench, kmig bench)
)
# QEMU is the peer the benchmarks compare against; the tests use it to prove
# the built-in guests boot the same way under QEMU's -kernel.
[ "${KMIG_WITH_QEMU:-1}" = 1 ] && PKGS+=(qemu-system-x86)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=
[ "$(id -u)" -ne 0 ] && SUDO=sudo
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
