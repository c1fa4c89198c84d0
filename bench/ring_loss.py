#!/usr/bin/env python3
"""Does a dirty-ring migration lose guest writes on this host?  Migrates
the self-checking verify guest in lm=0 (32-bit ring 0: the code this host
emulates, whose emulator overflows dirty rings) with QEMU 7.2 and
-accel kvm,dirty-ring-size=N, and with kmig's dirty ring, the same way:
16 MB/s for the first 2 s of precopy, then unlimited.  After the
switchover the destination guest runs for --settle seconds; a FAIL line
on its COM1 is a lost (stale) page.

usage: bench/ring_loss.py [--runs N] [--build DIR] [--ring N] [--ws MIB]"""
import argparse
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
from kmiglib import QMP, free_port, wait_migration, wait_text  # noqa: E402


def one(argv_for, wd, settle):
    port = free_port()
    for f in os.listdir(wd):
        os.unlink(os.path.join(wd, f))
    errs = {n: open(f"{wd}/{n}.err", "w") for n in ("src", "dst")}
    dst = subprocess.Popen(argv_for("dst", f"tcp:127.0.0.1:{port}"), stdout=subprocess.DEVNULL,
                           stderr=errs["dst"])
    src = subprocess.Popen(argv_for("src", None), stdout=subprocess.DEVNULL, stderr=errs["src"])
    try:
        return migrate_and_check(port, wd, settle)
    except (OSError, EOFError) as e:
        tails = {n: open(f"{wd}/{n}.err", errors="replace").read().strip().splitlines()[-1:]
                 for n in ("src", "dst")}
        return f"migration broke ({e.__class__.__name__}); stderr: {tails}"
    finally:
        for p in (src, dst):
            p.kill()
            p.wait()
        for f in errs.values():
            f.close()


def migrate_and_check(port, wd, settle):
    sq, dq = QMP(f"{wd}/src.qmp", 60), QMP(f"{wd}/dst.qmp", 60)
    if not wait_text(f"{wd}/src.log", " ok", 300):
        raise RuntimeError("source guest did not start")
    sq.cmd("migrate-set-parameters", **{"max-bandwidth": 16 << 20})
    sq.cmd("migrate", uri=f"tcp:127.0.0.1:{port}")
    time.sleep(2)
    sq.cmd("migrate-set-parameters", **{"max-bandwidth": 1 << 40})
    info = wait_migration(sq, timeout=600)
    if info["status"] != "completed":
        return "migration " + info["status"]
    time.sleep(settle)
    log = open(f"{wd}/dst.log", errors="replace").read()
    fails = [l for l in log.splitlines() if "FAIL" in l]
    return fails[0] if fails else "ok"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--ring", type=int, default=4096)
    ap.add_argument("--ws", type=int, default=8)
    ap.add_argument("--settle", type=float, default=6)
    args = ap.parse_args()
    elf = os.path.join(args.build, "kvm", "guests", "verify.elf")
    kmig = os.path.join(args.build, "tools", "kmig")
    wd = "/tmp/kmig-ringloss"
    os.makedirs(wd, exist_ok=True)
    cmdline = f"ws={args.ws} rate=0 lm=0"

    def qemu(name, inc):
        a = ["qemu-system-x86_64", "-accel", f"kvm,dirty-ring-size={args.ring}", "-m", "256", "-smp", "2",
             "-display", "none", "-nodefaults", "-serial", f"file:{wd}/{name}.log",
             "-qmp", f"unix:{wd}/{name}.qmp,server=on,wait=off", "-kernel", elf, "-append", cmdline]
        return a + (["-incoming", inc] if inc else [])

    def kmig_ring(name, inc):
        a = [kmig, "run", "--kernel", elf, "--append", cmdline, "--mem", "256", "--vcpus", "2",
             "--dirty-ring", str(args.ring), "--serial", f"{wd}/{name}.log", "--qmp", f"{wd}/{name}.qmp"]
        return a + (["--incoming", inc] if inc else [])

    configs = [("kmig dirty ring", kmig_ring)]
    if shutil.which("qemu-system-x86_64"):
        configs.append((f"QEMU 7.2 dirty-ring-size={args.ring}", qemu))
    for name, fn in configs:
        results = [one(fn, wd, args.settle) for _ in range(args.runs)]
        lost = sum(1 for r in results if "FAIL" in r)
        broke = sum(1 for r in results if r != "ok" and "FAIL" not in r)
        print(f"{name}: {lost} of {args.runs} migrations lost guest writes, {broke} did not complete")
        for r in results:
            print(f"    {r}")


if __name__ == "__main__":
    main()
