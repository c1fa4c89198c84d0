#!/usr/bin/env python3
"""TLS against plaintext on kmig's RAM path (bench/ram_path), in one run.

Modes, run alternately --runs times each so that the machine's noise falls
on all of them alike:
  plain   no TLS (io_uring send, splice receive)
  ktls    TLS with the keys in the kernel (where it has the "tls" ULP)
  gnutls  TLS records in user space (KMIG_KTLS=0)
for the main connection and for --channels multifd channels.  Prints one
line per run and a table of medians with each TLS mode's share of
plaintext.  No KVM needed: ram_path moves a RAM image between two
processes.  Usage: bench/tls_path.py [--build build] [--runs 5] [--mem 1200]
[--fill 1024] [--channels 4]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile


def kernel_has_ktls():
    try:
        with open("/proc/sys/net/ipv4/tcp_available_ulp") as f:
            return "tls" in f.read().split()
    except OSError:
        return False


def one(build, mode, channels, a, certs):
    cmd = [os.path.join(build, "bench", "ram_path"), "--mem", str(a.mem), "--fill", str(a.fill)]
    if channels > 1:
        cmd += ["--channels", str(channels)]
    env = dict(os.environ)
    if mode != "plain":
        cmd += ["--tls", certs]
    if mode == "gnutls":
        env["KMIG_KTLS"] = "0"
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        sys.exit(f"tls_path: {' '.join(cmd)} failed ({out.returncode}):\n{out.stderr}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    if r.get("mismatched"):
        sys.exit(f"tls_path: {mode} {channels}ch: {r['mismatched']} pages arrived wrong")
    return r


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--build", default="build")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--mem", type=int, default=1200)
    p.add_argument("--fill", type=int, default=1024)
    p.add_argument("--channels", type=int, default=4)
    a = p.parse_args()
    modes = ["plain", "ktls", "gnutls"] if kernel_has_ktls() else ["plain", "gnutls"]
    if "ktls" not in modes:
        print("tls_path: this kernel has no \"tls\" ULP: no kTLS row")
    results = {}
    with tempfile.TemporaryDirectory(prefix="kmig-tls-bench-") as certs:
        subprocess.run([os.path.join(a.build, "tests", "tls", "tls-certs"), certs], check=True,
                       capture_output=True)
        certs = os.path.join(certs)
        for run in range(a.runs):
            for ch in (1, a.channels):
                for m in modes:
                    r = one(a.build, m, ch, a, certs)
                    results.setdefault((m, ch), []).append(r["MBps"])
                    print(f"run {run} {m:6} {ch}ch: {r['MBps']:5} MB/s recv {r['recv_path']:6} "
                          f"src cpu {r['src_cpu']:.2f} dst cpu {r['dst_cpu']:.2f}", flush=True)
    print(f"\nmedians of {a.runs} runs, {a.fill} MiB of data in {a.mem} MiB:")
    print("| path | " + " | ".join(f"{m} MB/s" for m in modes) + " | " +
          " | ".join(f"{m} / plain" for m in modes[1:]) + " |")
    print("|---" * (1 + 2 * len(modes) - 1) + "|")
    for ch in (1, a.channels):
        med = {m: statistics.median(results[(m, ch)]) for m in modes}
        row = [f"{med[m]:.0f} ({min(results[(m, ch)])}-{max(results[(m, ch)])})" for m in modes]
        ratio = [f"{100 * med[m] / med['plain']:.0f} %" for m in modes[1:]]
        name = "main connection" if ch == 1 else f"{ch} multifd channels"
        print(f"| {name} | " + " | ".join(row) + " | " + " | ".join(ratio) + " |")


if __name__ == "__main__":
    main()
