#!/usr/bin/env python3
"""kmig benchmark: the same guest ELF migrated by kmig and by QEMU
(Debian's qemu-system-x86, driven over QMP), in the same run, plus the raw
loopback limit.  Every figure is the median of --runs runs, with min and
max.  Writes bench/results/<timestamp>.json and a Markdown table.

Scenario now: 'idle-1g' — the idle guest fills 1 GiB, then idles; the
migration starts once it reports ready.

usage: bench/bench.py [--build DIR] [--runs N] [--fill MIB] [--no-qemu]"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
from kmiglib import QMP, free_port, wait_migration, wait_text  # noqa: E402


def cpu_seconds(pid):
    """utime+stime of a running process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Instance:
    def __init__(self, argv, qmp, serial):
        self.qmp_path, self.serial = qmp, serial
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.qmp = QMP(qmp, timeout=30)

    def stop(self):
        try:
            self.qmp.cmd("quit")
        except Exception:
            pass
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def kmig_argv(kmig, mem, fill, wd, name, incoming=None, bitmap=False):
    a = [kmig, "run", "--guest", f"idle,fill={fill}", "--mem", str(mem),
         "--serial", f"{wd}/{name}.log", "--qmp", f"{wd}/{name}.qmp"]
    if bitmap:
        a.append("--dirty-bitmap")
    if incoming:
        a += ["--incoming", incoming]
    return a


def qemu_argv(elf, mem, fill, wd, name, incoming=None):
    a = ["qemu-system-x86_64", "-enable-kvm", "-m", str(mem), "-smp", "1", "-display", "none",
         "-nodefaults", "-serial", f"file:{wd}/{name}.log",
         "-qmp", f"unix:{wd}/{name}.qmp,server=on,wait=off",
         "-kernel", elf, "-append", f"fill={fill}"]
    if incoming:
        a += ["-incoming", incoming]
    return a


def migrate_once(make_argv, fill, wd, boot_timeout):
    port = free_port()
    uri = f"tcp:127.0.0.1:{port}"
    dst = Instance(make_argv("dst", uri), f"{wd}/dst.qmp", f"{wd}/dst.log")
    src = Instance(make_argv("src", None), f"{wd}/src.qmp", f"{wd}/src.log")
    try:
        if not wait_text(src.serial, "idle: ready", boot_timeout):
            raise RuntimeError(f"{src.serial}: no 'idle: ready' within {boot_timeout}s")
        # QEMU 7.2 defaults to 128 MiB/s; every configuration runs unlimited
        src.qmp.cmd("migrate-set-parameters", **{"max-bandwidth": 1 << 40})
        cpu0 = cpu_seconds(src.proc.pid) + cpu_seconds(dst.proc.pid)
        src.qmp.cmd("migrate", uri=uri)
        info = wait_migration(src.qmp, timeout=600)
        cpu = cpu_seconds(src.proc.pid) + cpu_seconds(dst.proc.pid) - cpu0
        if info["status"] != "completed":
            raise RuntimeError(f"migration {info['status']}: {info.get('error-desc')}")
        ram = info["ram"]
        return {"total_ms": info["total-time"], "downtime_ms": info["downtime"],
                "transferred": ram["transferred"],
                "throughput_MBps": ram["transferred"] / 1e6 / (info["total-time"] / 1000),
                "cpu_s": cpu}
    finally:
        src.stop()
        dst.stop()
        for f in os.listdir(wd):
            os.unlink(os.path.join(wd, f))


def raw_loopback(nbytes):
    """One TCP stream, plain send/recv of nbytes: the wire's limit here."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    got = [0]

    def sink():
        c, _ = srv.accept()
        while True:
            d = c.recv(1 << 20)
            if not d:
                break
            got[0] += len(d)
        c.close()
    t = threading.Thread(target=sink)
    t.start()
    s = socket.create_connection(("127.0.0.1", port))
    buf = b"\x5a" * (1 << 20)
    t0 = time.time()
    for _ in range(nbytes >> 20):
        s.sendall(buf)
    s.close()
    t.join()
    dt = time.time() - t0
    srv.close()
    return {"total_ms": dt * 1000, "throughput_MBps": got[0] / 1e6 / dt}


def summarize(runs, key):
    v = [r[key] for r in runs]
    return {"median": statistics.median(v), "min": min(v), "max": max(v)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--fill", type=int, default=1024, help="MiB the guest writes (default 1024)")
    ap.add_argument("--no-qemu", action="store_true")
    args = ap.parse_args()
    kmig = os.path.join(args.build, "tools", "kmig")
    elf = os.path.join(args.build, "kvm", "guests", "idle.elf")
    mem = args.fill + 176
    wd = "/tmp/kmig-bench"
    os.makedirs(wd, exist_ok=True)
    # same order every run; QEMU's dirty ring variant is left out on
    # purpose: on this host it loses guest writes (see README)
    configs = {
        "kmig dirty-ring": lambda n, inc: kmig_argv(kmig, mem, args.fill, wd, n, inc),
        "kmig dirty-bitmap": lambda n, inc: kmig_argv(kmig, mem, args.fill, wd, n, inc, bitmap=True),
    }
    if not args.no_qemu and shutil.which("qemu-system-x86_64"):
        configs["QEMU 7.2 (bitmap, 1 stream)"] = lambda n, inc: qemu_argv(elf, mem, args.fill, wd, n, inc)
    results = {"scenario": f"idle guest, {args.fill} MiB written, {mem} MiB RAM, 1 vCPU",
               "host": f"{os.cpu_count()} CPUs; " + open("/proc/cpuinfo").read().split("model name")[1]
               .split("\n")[0].strip(": "),
               "date": time.strftime("%Y-%m-%d %H:%M"), "configs": {}}
    raw = [raw_loopback(args.fill << 20) for _ in range(args.runs)]
    results["configs"]["raw TCP loopback (1 stream)"] = {
        "total_ms": summarize(raw, "total_ms"), "throughput_MBps": summarize(raw, "throughput_MBps")}
    for name, make in configs.items():
        runs = []
        for i in range(args.runs):
            r = migrate_once(make, args.fill, wd, boot_timeout=600)
            print(f"{name} run {i + 1}: {r}", flush=True)
            runs.append(r)
        results["configs"][name] = {k: summarize(runs, k) for k in runs[0]}
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    out = os.path.join(HERE, "results", time.strftime("%Y%m%d-%H%M%S") + ".json")
    with open(out, "w") as f:
        json.dump(results, f, indent=2)
    print(f"\n{results['scenario']}; {results['host']}; median (min-max) of {args.runs} runs\n")
    print("| configuration | total time (ms) | downtime (ms) | throughput (MB/s) | CPU s src+dst |")
    print("|---|---|---|---|---|")
    for name, r in results["configs"].items():
        def cell(k, fmt="{:.0f}"):
            if k not in r:
                return "-"
            s = r[k]
            return f"{fmt.format(s['median'])} ({fmt.format(s['min'])}-{fmt.format(s['max'])})"
        print(f"| {name} | {cell('total_ms')} | {cell('downtime_ms')} | {cell('throughput_MBps')} | "
              f"{cell('cpu_s', '{:.2f}')} |")
    print(f"\nresults: {out}")


if __name__ == "__main__":
    main()
