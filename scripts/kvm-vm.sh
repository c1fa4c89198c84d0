#!/usr/bin/env bash
# kvm-vm.sh: run a command where /dev/kvm exists, on a host that has none.
#
# Some hosts (cloud guests without nested virtualization, like the machines
# kmig is developed on) have no /dev/kvm, no kTLS and no netem. This boots
# Debian's own kernel (linux-image-amd64) under QEMU's TCG with -cpu max,
# whose emulated SVM lets that kernel's kvm_amd offer /dev/kvm; the host's /
# is the VM's root (9p), so the command sees the same files, builds and tools.
# Guests then run under real KVM, nested in an emulated CPU: correct, but
# 10-50x slower than on hardware, so time figures from here are no benchmark,
# and tests that need a migration to converge in time may fail for speed.
# One vCPU by default: with two (multi-threaded TCG) nested guests were seen
# to triple-fault and the VM's own kernel to panic ("corrupted stack end"),
# which one vCPU never showed; --cpus 2 is faster but not to be trusted.
#
# Usage: scripts/kvm-vm.sh [--cpus N] [--mem SIZE] [--timeout SECONDS] [--] COMMAND [ARGS...]
#        scripts/kvm-vm.sh --prepare      (download and unpack the kernel only)
# The command runs as root in the current directory; its exit status is this
# script's. Output is the VM's serial console. KMIG_VM_DIR (default
# /var/cache/kmig/vm) holds the kernel; nothing is installed into the host's
# /lib/modules or /boot.
set -euo pipefail

DIR=${KMIG_VM_DIR:-/var/cache/kmig/vm}
CPUS=1 MEM=8G TIMEOUT=3600 PREPARE_ONLY=0
log() { echo "kvm-vm: $*" >&2; }
die() { log "error: $*"; exit 1; }
usage() { sed -n '2,/^set -euo/{/^set/d;s/^# \{0,1\}//;p}' "$0"; }

while [ $# -gt 0 ]; do
	case "$1" in
	--cpus) CPUS=${2:?}; shift 2 ;;
	--mem) MEM=${2:?}; shift 2 ;;
	--timeout) TIMEOUT=${2:?}; shift 2 ;;
	--prepare) PREPARE_ONLY=1; shift ;;
	-h|--help) usage; exit 0 ;;
	--) shift; break ;;
	-*) die "unknown option $1 (see --help)" ;;
	*) break ;;
	esac
done
[ "$PREPARE_ONLY" = 1 ] || [ $# -gt 0 ] || die "no command given (see --help)"
[ "$(id -u)" -eq 0 ] || die "needs root (the VM's root is the host's /, shared read-write)"

# Modules the VM loads from its initramfs to reach its root, in load order.
EARLY=(netfs fscache 9pnet 9p virtio_ring virtio 9pnet_virtio
	virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci)
# Modules loaded once the root is there: KVM, kTLS, veth and tc's qdiscs.
# aesni_intel: udev would load it by CPU feature on a real host; without it
# the kernel's gcm(aes) is generic C, and kTLS runs at half GnuTLS's rate
LATE=(kvm_amd tls aesni_intel ghash_clmulni_intel veth sch_netem sch_tbf sch_fq sch_ingress cls_bpf act_bpf)
# Anything else the kernel asks for (kTLS's ciphers: gcm(aes), chacha20)
# comes through its modprobe helper, pointed at DIR's modules.

need_pkgs() {
	local missing=() p
	for p in qemu-system-x86 busybox-static kmod cpio; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return
	log "installing ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# linux-image-amd64 depends on exactly one versioned image package.
fetch_kernel() {
	local pkg kver
	pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
		awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
	[ -n "$pkg" ] || { apt-get update -qq >/dev/null; pkg=$(apt-cache depends linux-image-amd64 |
		awk '/Depends: linux-image-[0-9]/ {print $2; exit}'); }
	[ -n "$pkg" ] || die "apt knows no linux-image-amd64"
	kver=${pkg#linux-image-}
	log "fetching $pkg"
	rm -rf "$DIR/root" "$DIR"/*.deb
	(cd "$DIR" && apt-get download -q "$pkg" >/dev/null) || die "apt-get download $pkg failed"
	dpkg-deb -x "$DIR"/"$pkg"_*.deb "$DIR/root"
	rm -f "$DIR"/*.deb
	depmod -b "$DIR/root" "$kver"
	echo "$kver" > "$DIR/KVER"
}

build_initrd() {
	local kver=$1 ird=$DIR/initrd.d m f
	rm -rf "$ird" && mkdir -p "$ird"/{bin,proc,sys,dev,host,mods}
	cp /bin/busybox "$ird/bin/"
	for a in sh mount insmod chroot cat sed; do ln -s busybox "$ird/bin/$a"; done
	for m in "${EARLY[@]}"; do
		f=$(modprobe -d "$DIR/root" -S "$kver" --show-depends "$m" | awk '/^insmod/ {p=$2} END {print p}')
		[ -n "$f" ] || die "module $m not in $kver"
		cp "$f" "$ird/mods/$m.ko"
	done
	printf '%s\n' "${EARLY[@]}" > "$ird/modlist"
	# PID 1: reach the host's / over 9p and hand over to the job's stage 2
	cat > "$ird/init" <<-'EOF'
	#!/bin/sh
	mount -t proc proc /proc; mount -t devtmpfs dev /dev
	for m in $(cat /modlist); do insmod /mods/$m.ko; done
	job=$(sed -n 's/.*kmigjob=\([^ ]*\).*/\1/p' /proc/cmdline)
	mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=loose host /host &&
		exec chroot /host /bin/sh "$job/stage2"
	echo "kvm-vm: the host's / could not be mounted"
	echo o > /proc/sysrq-trigger
	EOF
	chmod +x "$ird/init"
	(cd "$ird" && find . | cpio -o -H newc 2>/dev/null | gzip -1) > "$DIR/initrd.gz"
}

prepare() {
	mkdir -p "$DIR"
	[ -s "$DIR/READY" ] && [ -s "$DIR/initrd.gz" ] && return
	need_pkgs
	fetch_kernel
	build_initrd "$(cat "$DIR/KVER")"
	cat "$DIR/KVER" > "$DIR/READY"
}

# Stage 2 runs chrooted into the host's /: fresh /proc, /sys, /dev, a private
# /tmp and /run (unix sockets do not work over 9p), the late modules, then
# the command. Its exit status goes to the job directory, on the host.
write_stage2() {
	local job=$1 kver=$2; shift 2
	{
		echo '#!/bin/sh'
		echo 'mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev'
		echo 'mkdir -p /dev/pts /dev/shm; mount -t devpts devpts /dev/pts; mount -t tmpfs shm /dev/shm'
		echo 'mount -t tmpfs tmp /tmp; mount -t tmpfs run /run'
		echo 'mount -t bpf bpf /sys/fs/bpf; mount -t tracefs tracefs /sys/kernel/tracing'
		echo 'mount -t debugfs debugfs /sys/kernel/debug; mount -t cgroup2 cgroup2 /sys/fs/cgroup'
		echo 'export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root KMIG_IN_VM=1'
		printf 'printf "#!/bin/sh\\nexec modprobe -d %q -S %q \\"\\$@\\"\\n" > /run/modprobe\n' "$DIR/root" "$kver"
		echo 'chmod +x /run/modprobe; echo /run/modprobe > /proc/sys/kernel/modprobe'
		printf 'for m in %s; do /run/modprobe $m || echo "kvm-vm: no module $m"; done\n' "${LATE[*]}"
		echo 'ip link set lo up'
		echo '[ -c /dev/kvm ] || echo "kvm-vm: the VM has no /dev/kvm (no SVM in -cpu max?)"'
		printf 'cd %q || exit 1\n' "$PWD"
		printf '%q ' "$@"; echo
		printf 'echo $? > %q\n' "$job/rc"
		echo 'sync; echo o > /proc/sysrq-trigger; sleep 10'
	} > "$job/stage2"
}

prepare
[ "$PREPARE_ONLY" = 1 ] && exit 0
KVER=$(cat "$DIR/READY")
JOB=$(mktemp -d "$DIR/job.XXXXXX")
trap 'rm -rf "$JOB"' EXIT
write_stage2 "$JOB" "$KVER" "$@"
# -no-reboot and panic=-1: a kernel panic ends QEMU instead of looping
timeout --foreground -k 10 "$TIMEOUT" qemu-system-x86_64 \
	-accel tcg,thread=multi -cpu max -smp "$CPUS" -m "$MEM" \
	-nographic -no-reboot -nodefaults -serial stdio \
	-kernel "$DIR/root/boot/vmlinuz-$KVER" -initrd "$DIR/initrd.gz" \
	-append "console=ttyS0 quiet loglevel=3 panic=-1 mitigations=off kmigjob=$JOB" \
	-virtfs "local,path=/,mount_tag=host,security_model=passthrough,multidevs=remap,id=host0" \
	</dev/null || log "QEMU ended with status $?"
[ -s "$JOB/rc" ] || die "the VM ended before the command did (see the console above)"
exit "$(cat "$JOB/rc")"
