#!/usr/bin/env python3
"""'A script written for QEMU's QMP migration must work against kmig with
only the command line changed': run the same QEMU-style driver
(qemu_style_migrate.py) against kmig, and, when QEMU is installed, against
QEMU itself with the same guest ELF."""
import os
import shutil
import subprocess
import sys

from kmiglib import kmig_path, require_kvm

HERE = os.path.dirname(os.path.abspath(__file__))
DRIVER = os.path.join(HERE, "qemu_style_migrate.py")


def drive(src, dst, defer=False):
    cmd = [sys.executable, DRIVER, "--src", src, "--dst", dst,
           "--ready", "idle: ready", "--serial", "@DIR@/src.log"] + (["--defer"] if defer else [])
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    print(r.stdout + r.stderr)
    assert r.returncode == 0, f"driver failed against: {src}"


def main():
    require_kvm()
    k = kmig_path()
    common = f"{k} run --guest idle,fill=16 --mem 64 --qmp @QMP@"
    drive(f"{common} --serial @DIR@/src.log",
          f"{common} --serial @DIR@/dst.log --incoming tcp:127.0.0.1:@PORT@")
    drive(f"{common} --serial @DIR@/src.log",
          f"{common} --serial @DIR@/dst.log --incoming defer", defer=True)
    qemu = shutil.which("qemu-system-x86_64")
    if not qemu:
        print("QEMU not installed: only the kmig half ran")
        return
    elf = os.environ["IDLE_ELF"]
    q = (f"{qemu} -enable-kvm -m 64 -display none -nodefaults -qmp unix:@QMP@,server=on,wait=off "
         f"-kernel {elf} -append fill=16")
    drive(f"{q} -serial file:@DIR@/src.log",
          f"{q} -serial file:@DIR@/dst.log -incoming tcp:127.0.0.1:@PORT@")
    drive(f"{q} -serial file:@DIR@/src.log",
          f"{q} -serial file:@DIR@/dst.log -incoming defer", defer=True)


if __name__ == "__main__":
    main()
