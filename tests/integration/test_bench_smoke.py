#!/usr/bin/env python3
"""The benchmark still runs: `bench/bench.py --smoke` (idle guest, 32 MiB of
256 MiB, one run of the raw loopback and of kmig with 1 and N channels; and
kmig's RAM path alone, 64 MiB, with 1 and N channels and N in TLS, over
loopback and between two network namespaces on the lossy link) into a
temporary results directory, then its results.json must hold every
configuration it planned, each completed with sane figures (the TLS row
really in TLS, the lossy link really dropping), and results.md must exist.
Without /dev/kvm the guest scenario must be reported as not run, and the
RAM path must still run.  This guards the harness (QMP knobs, sampling,
links, TLS, output), not the numbers."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

from kmiglib import kmig_path, skip

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.join(HERE, "..", "..", "bench", "bench.py")


def check_run(scenario, name, kind, run, ram_mib, touched_mib):
    """Every figure of one run present and plausible; returns the problems."""
    bad = []
    if not run.get("ok"):
        return [f"{scenario}/{name}: failed: {run.get('error')}"]
    total = run.get("total_ms")
    if not (isinstance(total, (int, float)) and total > 0):
        bad.append(f"total_ms {total!r}")
    if not (run.get("throughput_MBps") or 0) > 0:
        bad.append(f"throughput_MBps {run.get('throughput_MBps')!r}")
    if kind == "raw":
        if run.get("transferred") != ram_mib << 20:
            bad.append(f"raw loopback moved {run.get('transferred')} bytes, not {ram_mib} MiB")
    elif kind == "ramlink":
        if not touched_mib << 20 <= (run.get("transferred") or 0) <= 2 * (ram_mib << 20):
            bad.append(f"transferred {run.get('transferred')!r} for {touched_mib} MiB written")
        if ("TLS" in name) != (run.get("tls_mode") in ("ktls", "gnutls")):
            bad.append(f"tls_mode {run.get('tls_mode')!r}")
        for k in ("cpu_s", "cpu_s_src", "cpu_s_dst"):
            if not (isinstance(run.get(k), (int, float)) and 0 <= run[k] < 60):
                bad.append(f"{k} {run.get(k)!r}")
    else:
        # at least what the guest wrote went over; at most all RAM plus
        # a little resent
        if not touched_mib << 20 <= (run.get("transferred") or 0) <= 2 * (ram_mib << 20):
            bad.append(f"transferred {run.get('transferred')!r} for {touched_mib} MiB written")
        dt = run.get("downtime_ms")
        if not (isinstance(dt, (int, float)) and 0 <= dt <= total):
            bad.append(f"downtime_ms {dt!r} (total {total})")
        # /proc's CPU times tick every 10 ms: a short migration may read 0
        for k in ("cpu_s", "cpu_s_src", "cpu_s_dst"):
            if not (isinstance(run.get(k), (int, float)) and 0 <= run[k] < 60):
                bad.append(f"{k} {run.get(k)!r}")
        for k in ("rss_beyond_src_mib", "rss_beyond_dst_mib"):
            if not (isinstance(run.get(k), (int, float)) and 0 < run[k] < 4096):
                bad.append(f"{k} {run.get(k)!r}")
        if not run.get("remaining_samples") or not run.get("rss_samples"):
            bad.append("no samples")
        elif run["remaining_samples"][-1][1] != "completed":
            bad.append(f"last query-migrate sample {run['remaining_samples'][-1]!r}")
    return [f"{scenario}/{name}: {b}" for b in bad]


def expected(sname, n):
    if sname.startswith("ram-path"):
        raw = "raw link" if sname.endswith("-lossy") else "raw loopback"
        return {f"{raw} 1 stream", f"{raw} {n} streams", "kmig RAM path 1ch", f"kmig RAM path {n}ch",
                f"kmig RAM path {n}ch TLS"}
    return {"raw loopback 1 stream", f"raw loopback {n} streams", "kmig 1ch copy ring",
            f"kmig {n}ch zero-copy ring"}


def main():
    kvm = os.path.exists("/dev/kvm") and os.access("/dev/kvm", os.R_OK | os.W_OK)
    if os.geteuid() != 0:
        skip("not root: the benchmark runs as root (it reads its guests' /proc and may apt-get)")
    build = os.path.dirname(os.path.dirname(os.path.abspath(kmig_path())))
    out = tempfile.mkdtemp(prefix="kmig-bench-smoke-")
    try:
        r = subprocess.run([sys.executable, BENCH, "--smoke", "--build", build, "--out", out],
                           capture_output=True, text=True, timeout=300)
        print(r.stderr, end="")
        if r.returncode:
            print(r.stdout)
            sys.exit(f"bench.py --smoke exited with {r.returncode}")
        latest = os.path.join(out, "latest")
        with open(os.path.join(latest, "results.json")) as f:
            res = json.load(f)
        md = os.path.join(latest, "results.md")
        assert os.path.getsize(md) > 0, "results.md is empty"
        with open(md) as f:
            assert "| config |" in f.read(), "results.md has no table"
        problems = []
        # the lossy link needs the tc BPF program, built where clang is
        lossy = os.path.exists(os.path.join(build, "tests", "netem", "loss.bpf.o"))
        want_scens = {"ram-path-smoke"} | ({"smoke"} if kvm else set()) | \
            ({"ram-path-smoke-lossy"} if lossy else set())
        if set(res["scenarios"]) != want_scens:
            problems.append(f"scenarios {sorted(res['scenarios'])}, expected {sorted(want_scens)}")
        if not kvm and "smoke" not in res.get("skipped", {}):
            problems.append(f"no /dev/kvm, but the guest scenario is not reported as not run: "
                            f"{res.get('skipped')!r}")
        if not lossy and "ram-path-smoke-lossy" not in res.get("skipped", {}):
            problems.append("no loss program, but the lossy scenario is not reported as not run")
        for sname, sc in res["scenarios"].items():
            link = sc.get("link") or {}
            if sname.endswith("-lossy") and not (link.get("packets") and link.get("dropped", 0) > 0):
                problems.append(f"{sname}: the link dropped nothing: {link!r}")
            names = set(sc["configs"])
            n = res["options"]["channels"]
            missing = expected(sname, n) - names
            if missing:
                problems.append(f"{sname}: configurations missing: {sorted(missing)}")
            for name, e in sc["configs"].items():
                if not e["runs"]:
                    problems.append(f"{sname}/{name}: no run recorded")
                for run in e["runs"]:
                    problems += check_run(sname, name, e["kind"], run, sc["mem_mib"],
                                          sc["params"].get("fill", 0))
                if e["runs"] and not e["summary"].get("total_ms"):
                    problems.append(f"{sname}/{name}: no summary")
        for p in problems:
            print("FAIL:", p)
        if problems:
            sys.exit(1)
        print(f"bench smoke: {sum(len(s['configs']) for s in res['scenarios'].values())} configurations, "
              f"all completed with sane figures; results.md written"
              + ("" if kvm else "; no /dev/kvm: the guest scenario reported as not run"))
    finally:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
