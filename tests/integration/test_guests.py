#!/usr/bin/env python3
"""The built-in guests are ordinary multiboot ELF files: each must boot
from its file under `kmig run --kernel` and, when QEMU is installed, under
`qemu-system-x86_64 -kernel`, and say the same things on COM1.  verify
also runs in lm=0 (32-bit ring 0, the fullest register checks)."""
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
    if not qemu:
        print("QEMU not installed: the kmig half ran")


if __name__ == "__main__":
    main()
