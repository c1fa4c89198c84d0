#!/usr/bin/env bash
# Install QEMU 10.0 from bookworm-backports into a private prefix, leaving the
# system's QEMU 7.2, /etc/apt and /var/lib/apt untouched: apt runs against its
# own sources.list, lists, cache and (empty) status under PREFIX/apt, and the
# .debs are unpacked with dpkg -x, never installed.
# Usage: scripts/qemu10.sh [PREFIX]   -> prints PREFIX/bin/qemu-system-x86_64
set -euo pipefail

PREFIX=${1:-${KMIG_QEMU10_PREFIX:-/var/cache/kmig/qemu10}}
mkdir -p "$PREFIX" && PREFIX=$(cd "$PREFIX" && pwd)
A=$PREFIX/apt ROOT=$PREFIX/root WRAP=$PREFIX/bin/qemu-system-x86_64
CORE=(qemu-system-x86 qemu-system-common qemu-system-data seabios)
# QEMU 10 also searches the system's module dir; 10.0 split the opengl and
# spice modules out of qemu-system-common, so where 7.2 left them there, ship
# ours, else QEMU tries 7.2's and warns "Only modules from the same build".
[ -d /usr/lib/x86_64-linux-gnu/qemu ] && CORE+=(qemu-system-modules-opengl qemu-system-modules-spice)

log() { echo "qemu10: $*" >&2; }
die() { log "error: $*"; exit 1; }
# A finished install is marked by VERSION, written last; trust it only if the
# wrapper still runs and reports the same line.
installed() {
  [ -s "$PREFIX/VERSION" ] && [ -x "$WRAP" ] &&
    [ "$("$WRAP" --version 2>/dev/null | head -n1)" = "$(cat "$PREFIX/VERSION")" ]
}

# The machine's own Debian mirror (it may be a proxy or snapshot), so the
# private apt reaches exactly what the system apt reaches.
mirror() {
  local u=
  [ -r /etc/apt/sources.list.d/debian.sources ] && u=$(awk \
    '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  [ -z "$u" ] && [ -r /etc/apt/sources.list ] && u=$(sed -E \
    -n '/^deb[[:space:]]/{/security/d;s/\[[^]]*\]//;s/^deb[[:space:]]+([^[:space:]]+).*/\1/p}' \
    /etc/apt/sources.list | head -n1)
  echo "${u:-http://deb.debian.org/debian}"
}

# Every Dir:: apt would otherwise take from /etc/apt or /var/lib/apt.
APT_OPTS=(-q -o Dir::Etc::SourceList="$A/sources.list" -o Dir::Etc::SourceParts=/dev/null
  -o Dir::Etc::Preferences=/dev/null -o Dir::Etc::PreferencesParts=/dev/null
  -o Dir::State="$A" -o Dir::State::Lists="$A/lists" -o Dir::State::status="$A/status"
  -o Dir::Cache="$A/cache")
papt() { apt-get "${APT_OPTS[@]}" "$@" >&2; }

apt_setup() {
  local uri key=/usr/share/keyrings/debian-archive-keyring.gpg
  uri=$(mirror)
  mkdir -p "$A/lists/partial" "$A/cache/archives/partial" "$A/debs"
  touch "$A/status"
  # bookworm is there too: a library the system lacks comes from it.
  printf 'deb [signed-by=%s] %s %s main\n' "$key" "$uri" bookworm-backports "$key" "$uri" bookworm \
    >"$A/sources.list"
  log "apt-get update (private lists, $uri)"
  # --error-on=any: a failed fetch must not pass as "old lists used instead".
  papt update --error-on=any || die "apt-get update failed: is the mirror $uri reachable?"
}

# True if the system has $1 installed at a version satisfying "$2 $3".
sys_has() {
  local v
  v=$(dpkg-query -W -f='${db:Status-Abbrev}${Version}\n' "$1" 2>/dev/null | head -n1)
  [ "${v:0:3}" = "ii " ] && { [ -z "${2:-}" ] || dpkg --compare-versions "${v:3}" "$2" "$3"; }
}

# Library packages the .debs depend on that the system lacks or has too old
# are downloaded too, then their own dependencies, to a fixpoint.
fetch_libs() {
  local deb dep name op ver seen=" " more=1
  while [ $more = 1 ]; do
    more=0
    for deb in *.deb; do
      case $seen in *" $deb "*) continue ;; esac
      seen+="$deb "
      while read -r dep; do
        read -r name op ver <<<"${dep//[()]/ }"
        name=${name%:any}
        [[ $name == lib* || $name == zlib* ]] || continue
        if sys_has "$name" "$op" "$ver" || ls "${name}"_*.deb >/dev/null 2>&1; then continue; fi
        log "system lacks $name ${op:-} ${ver:-}: fetching it"
        papt download "$name" || die "cannot download $name"
        more=1
      done < <(dpkg-deb -f "$deb" Depends Pre-Depends | sed 's/^[A-Za-z-]*: //' |
                 tr ',' '\n' | sed 's/|.*//; s/^ *//; /^$/d')
    done
  done
}

download() {
  cd "$A/debs" && rm -f ./*.deb
  # apt fetches as _apt when it can; let it write here.
  id _apt >/dev/null 2>&1 && chown _apt "$A/debs"
  log "downloading ${CORE[*]} from bookworm-backports"
  papt download "${CORE[@]/%//bookworm-backports}" || die "cannot download ${CORE[*]}"
  fetch_libs
}

# Directories in ROOT holding shared libraries (only if a library was fetched;
# QEMU's modules are not named lib*).
libdirs() {
  find "$ROOT" -maxdepth 4 -name 'lib*.so*' -printf '%h\n' 2>/dev/null | sort -u | paste -sd: -
}

# Unpack everything, then let ldd prove the binary and its modules resolve
# every library (the system's, or the ones fetched into ROOT).
extract() {
  local deb miss; rm -rf "${ROOT:?}" "${PREFIX:?}/bin" "$PREFIX/VERSION"
  for deb in "$A"/debs/*.deb; do dpkg -x "$deb" "$ROOT"; done
  miss=$({ LD_LIBRARY_PATH=$(libdirs) ldd "$ROOT/usr/bin/qemu-system-x86_64" \
    "$ROOT"/usr/lib/*/qemu/*.so || true; } | awk '/not found/ {print $1}' | sort -u | xargs)
  [ -z "$miss" ] || die "libraries not found after extraction: $miss"
}

write_wrapper() {
  local mods ld env=
  mods=$(find "$ROOT/usr/lib" -mindepth 2 -maxdepth 2 -type d -name qemu -print -quit)
  [ -n "$mods" ] || die "no QEMU module directory under $ROOT/usr/lib"
  ld=$(libdirs)
  [ -z "$ld" ] || env="export LD_LIBRARY_PATH='$ld'\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
  mkdir -p "$PREFIX/bin"
  # -L dirs are searched before QEMU's built-in /usr/share ones: ours win.
  cat >"$WRAP" <<EOF
#!/bin/sh
# Generated by kmig scripts/qemu10.sh: QEMU 10 from a private prefix.
export QEMU_MODULE_DIR='$mods'
$env
exec '$ROOT/usr/bin/qemu-system-x86_64' -L '$ROOT/usr/share/qemu' -L '$ROOT/usr/share/seabios' "\$@"
EOF
  chmod 755 "$WRAP"
}

# QMP must answer, and a pc machine must run the prefix's SeaBIOS (its banner
# on the debug port names the version), which also proves -L and modules work.
verify() {
  local v out accel=kvm log=$PREFIX/verify-bios.log qmp='{"execute":"qmp_capabilities"}'
  v=$("$WRAP" --version | head -n1) || die "wrapper does not run"
  [[ $v == "QEMU emulator version 10.0"* ]] || die "unexpected version: $v"
  [ -w /dev/kvm ] || { accel=tcg; log "no usable /dev/kvm: verifying with -accel tcg"; }
  out=$(printf '%s\n{"execute":"quit"}\n' "$qmp" | timeout 30 "$WRAP" -machine none \
    -accel $accel -display none -qmp stdio 2>&1) || die "qemu -machine none -accel $accel failed"
  grep -q '"return"' <<<"$out" || die "QMP did not answer (-machine none)"
  ! grep -m1 module <<<"$out" >&2 || die "QEMU failed to load one of its modules"
  rm -f "$log"
  { echo "$qmp"; for _ in $(seq 100); do grep -qs SeaBIOS "$log" && break; sleep 0.1; done
    echo '{"execute":"quit"}'; } | timeout 30 "$WRAP" -machine pc -accel $accel -display none \
    -nodefaults -qmp stdio -chardev file,id=dbg,path="$log" \
    -device isa-debugcon,iobase=0x402,chardev=dbg >/dev/null || die "pc machine failed to start"
  grep -s "SeaBIOS (version" "$log" | grep -qF "$(dpkg-deb -f "$A"/debs/seabios_*.deb Version)" ||
    die "pc machine did not run the prefix's SeaBIOS (see $log)"
  log "verified: $v; QMP answers; pc boots SeaBIOS ($accel)"
  echo "$v" >"$PREFIX/VERSION"
}

main() {
  installed && { echo "$WRAP"; exit 0; }
  # One installer per prefix at a time; the loser finds the winner's install.
  exec 9>"$PREFIX/.lock" && flock 9
  installed && { echo "$WRAP"; exit 0; }
  command -v apt-get >/dev/null || die "needs apt-get (Debian)"
  apt_setup
  download
  extract
  write_wrapper
  verify
  echo "$WRAP"
}

main
