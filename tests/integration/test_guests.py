#!/usr/bin/env python3
"""The built-in guests are ordinary multiboot ELF files: each must boot
from its file under `kmig run --kernel` and, when QEMU is installed, under
`qemu-system-x86_64 -kernel`, and say the same things on COM1.  verify
also runs in lm=0 (32-bit ring 0, the fullest register checks).

dirty with compute=1 on 2 CPUs: CPU 1 computes instead of writing, and
every progress line reports its chunks per second (work=W > 0) while CPU 0
alone writes at rate=; compute=2 on 2 CPUs leaves no writer, an error with
exit code 3 (QEMU: 7).

idle with dots=10 prints a dot every 10 ms and never a newline: the
--serial file must grow as it prints, and keep every dot at kill -9."""
import os
import re
import shutil
import subprocess
import tempfile
import time

from kmiglib import kmig_path, require_kvm

CASES = [
    # (guest, cmdline, what COM1 must show, how many times)
    ("idle", "fill=8", r"^idle: ready$", 1),
    ("dirty", "ws=8 rate=0", r"^dirty: t=\d+s passes=\d+,\d+ MiB/s=\d+$", 2),
    ("verify", "ws=8 rate=0", r"^verify: t=\d+s passes=\d+,\d+ ok$", 2),
    ("verify", "ws=4 rate=0 lm=0", r"^verify: t=\d+s passes=\d+,\d+ ok$", 2),
]

# dirty compute=1 on 2 CPUs: (cmdline, start line, progress lines to see)
COMPUTE = ("ws=8 rate=50 compute=1", "dirty: start cpus=2 ws=8 MiB rate=50 MiB/s compute=1", 3)
COMPUTE_PROGRESS = re.compile(r"^dirty: t=\d+s passes=\d+,(\d+) MiB/s=(\d+) work=(\d+)$")
# compute=K must leave at least one writer
COMPUTE_ERROR = ("ws=8 compute=2",
                 "dirty: error: compute=2 leaves no CPU to write the working set: "
                 "it must be less than cpus=2")


def wait_for(path, pattern, count, proc, timeout):
    rx = re.compile(pattern)
    deadline = time.time() + timeout
    lines = []
    while time.time() < deadline:
        try:
            lines = open(path, errors="replace").read().splitlines()
        except FileNotFoundError:
            pass
        assert not any("FAIL" in l for l in lines), lines
        if sum(1 for l in lines if rx.search(l)) >= count:
            return lines
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise AssertionError(f"wanted {count}x /{pattern}/ in {path}; got: {lines[-5:]}")


def boot(argv, serial, pattern, count, timeout):
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        lines = wait_for(serial, pattern, count, p, timeout)
    finally:
        p.kill()
        p.wait()
    return lines


def check_compute(lines, where):
    """Every progress line has work= > 0 for the compute CPU, which writes
    nothing (passes entry 0); the one writer keeps to rate=50."""
    cmdline, start, count = COMPUTE
    assert start in lines, f"{where}: no {start!r} in {lines}"
    progress = [l for l in lines if l.startswith("dirty: t=")]
    assert len(progress) >= count, f"{where}: {progress}"
    for l in progress:
        m = COMPUTE_PROGRESS.match(l)
        assert m, f"{where}: progress line {l!r} is not .../MiB/s=R work=W"
        passes1, mibs, work = (int(g) for g in m.groups())
        assert passes1 == 0, f"{where}: the compute CPU completed passes: {l!r}"
        assert work > 0, f"{where}: no compute chunks in an interval: {l!r}"
        assert mibs <= 60, f"{where}: one writer at rate=50 reports MiB/s={mibs}: {l!r}"
    return progress


def boot_error(argv, serial, timeout):
    """Boot a guest that must refuse its parameters: its exit status and COM1."""
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        rc = p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        rc = None
    lines = open(serial, errors="replace").read().splitlines() if os.path.exists(serial) else []
    return rc, lines


def compute_cases(tmp, qemu):
    elf = os.environ["DIRTY_ELF"]
    cmdline, start, count = COMPUTE
    serial = os.path.join(tmp, "compute-kmig.log")
    lines = boot([kmig_path(), "run", "--kernel", elf, "--append", cmdline, "--vcpus", "2",
                  "--mem", "128", "--serial", serial], serial, COMPUTE_PROGRESS.pattern, count, 60)
    progress = check_compute(lines, "kmig")
    print(f"kmig  dirty {cmdline!r}: {progress[0]!r} ... {progress[-1]!r}")

    bad, message = COMPUTE_ERROR
    serial = os.path.join(tmp, "compute-error-kmig.log")
    rc, lines = boot_error([kmig_path(), "run", "--kernel", elf, "--append", bad, "--vcpus", "2",
                            "--mem", "128", "--serial", serial], serial, 60)
    assert rc == 3 and message in lines, f"kmig dirty {bad!r}: exit {rc}, COM1 {lines}"
    print(f"kmig  dirty {bad!r}: exit 3, {message!r}")
    if not qemu:
        return
    serial = os.path.join(tmp, "compute-qemu.log")
    lines = boot([qemu, "-enable-kvm", "-m", "128", "-smp", "2", "-display", "none",
                  "-nodefaults", "-serial", f"file:{serial}", "-kernel", elf,
                  "-append", cmdline], serial, COMPUTE_PROGRESS.pattern, count, 120)
    progress = check_compute(lines, "QEMU")
    print(f"QEMU  dirty {cmdline!r}: {progress[0]!r} ... {progress[-1]!r}")
    serial = os.path.join(tmp, "compute-error-qemu.log")
    rc, lines = boot_error([qemu, "-enable-kvm", "-m", "128", "-smp", "2", "-display", "none",
                            "-nodefaults", "-serial", f"file:{serial}",
                            "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04", "-kernel", elf,
                            "-append", bad], serial, 120)
    assert rc == (3 << 1) | 1 and message in lines, f"QEMU dirty {bad!r}: exit {rc}, COM1 {lines}"
    print(f"QEMU  dirty {bad!r}: exit 7, {message!r}")


def serial_written_through(tmp):
    """A guest that prints without a newline shows in the --serial file as
    it prints (QEMU's file chardev does the same), and a kmig killed with
    -9 loses none of it."""
    serial = os.path.join(tmp, "dots-kmig.log")
    p = subprocess.Popen([kmig_path(), "run", "--guest", "idle,fill=1,lm=0,dots=10", "--mem", "64",
                          "--serial", serial], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(serial, r"^idle: ready$", 1, p, 60)
        sizes = []
        for _ in range(10):
            time.sleep(0.2)
            sizes.append(os.path.getsize(serial))
        text = open(serial).read()
        grew = sum(1 for a, b in zip(sizes, sizes[1:]) if b > a)
        assert grew >= 8 and text.endswith("."), \
            f"serial not written through: sizes every 200 ms {sizes}, file ends {text[-80:]!r}"
        p.kill()
        p.wait()
        after = open(serial).read()
        assert after.startswith(text) and after.endswith("."), f"lost at kill -9: ends {after[-80:]!r}"
        print(f"kmig  idle dots=10: the file grew in {grew} of 9 intervals of 200 ms, "
              f"{after.count('.')} dots, none lost at kill -9")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def main():
    require_kvm()
    tmp = tempfile.mkdtemp(prefix="kmig-guests-")
    qemu = shutil.which("qemu-system-x86_64")
    for n, (guest, cmdline, pattern, count) in enumerate(CASES):
        elf = os.environ[f"{guest.upper()}_ELF"]
        serial = os.path.join(tmp, f"{n}-{guest}-kmig.log")
        lines = boot([kmig_path(), "run", "--kernel", elf, "--append", cmdline, "--vcpus", "2",
                      "--mem", "128", "--serial", serial], serial, pattern, count, 60)
        print(f"kmig  {guest} {cmdline!r}: {lines[0]!r} ... {lines[-1]!r}")
        if not qemu:
            continue
        serial = os.path.join(tmp, f"{n}-{guest}-qemu.log")
        # SeaBIOS is emulated on PVM hosts: give QEMU time to boot
        lines = boot([qemu, "-enable-kvm", "-m", "128", "-smp", "2", "-display", "none",
                      "-nodefaults", "-serial", f"file:{serial}", "-kernel", elf,
                      "-append", cmdline], serial, pattern, count, 120)
        print(f"QEMU  {guest} {cmdline!r}: {lines[0]!r} ... {lines[-1]!r}")
    compute_cases(tmp, qemu)
    serial_written_through(tmp)
    if not qemu:
        print("QEMU not installed: the kmig half ran")


if __name__ == "__main__":
    main()
