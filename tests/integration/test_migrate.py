#!/usr/bin/env python3
"""Live-migrate the self-checking 'verify' guest between two kmig processes
while every vCPU rewrites its working set, several times, and check on the
destination that it keeps running and that its self-check keeps passing
(a lost page, a torn page or a corrupted register makes it print FAIL and
exit with code 3).

usage: test_migrate.py [--backend ring|bitmap] [--vcpus N] [--runs N]
                       [--ws MIB] [--rate MIB/S] [--mem MIB] [--ring N]
                       [--expect-overflow] [--throttle S] [--lm 0|1]
                       [--channels N] [--send-mode auto|copy|zero-copy]
                       [--bpf on|off]

With --expect-overflow the ring must overflow (the guest's 32-bit code is
emulated on this host, where the kernel pushes past a full ring) and every
overflow must be recovered with nothing lost.  With the eBPF guard attached
(--bpf on, as root) the recovery must be exact: the overwritten entries'
pages named and resent, and no whole-RAM resync.  --bpf off (KMIG_BPF=0)
tests the fallback: the harvester detects the overflow and resyncs."""
import argparse
import os
import subprocess
import sys
import time

from kmiglib import (Kmig, free_port, require_kvm, skip, verify_passes, wait_dest_running, wait_migration,
                     workdir)


def one_run(args, n, wd):
    port = free_port()
    extra = ["--dirty-bitmap"] if args.backend == "bitmap" else ["--dirty-ring", str(args.ring)]
    params = f"ws={args.ws},rate={args.rate},lm={args.lm}"
    env = {"KMIG_BPF": "0"} if args.bpf == "off" else None
    dst = Kmig(wd, f"dst{n}", params=params, mem=args.mem, vcpus=args.vcpus,
               incoming=f"tcp:127.0.0.1:{port}", extra=extra, env=env)
    src = Kmig(wd, f"src{n}", params=params, mem=args.mem, vcpus=args.vcpus, extra=extra, env=env)
    try:
        src.wait_lines(r" ok$", 2)
        before = verify_passes(src.wait_lines(r" ok$")[-1])
        for side in (src, dst):
            if args.channels:
                side.qmp.cmd("migrate-set-capabilities",
                             capabilities=[{"capability": "multifd", "state": True}])
                side.qmp.cmd("migrate-set-parameters", **{"multifd-channels": args.channels})
            side.qmp.cmd("migrate-set-parameters", **{"x-kmig-send-mode": args.send_mode})
        src.qmp.cmd("migrate-set-parameters", **{"downtime-limit": args.downtime})
        if args.throttle:
            # a long, slow precopy first: the guest dirties at full speed
            # against a slow link (16 MiB/s), then the link opens up
            src.qmp.cmd("migrate-set-parameters", **{"max-bandwidth": args.throttle_bw << 20})
        src.qmp.cmd("migrate", uri=f"tcp:127.0.0.1:{port}")
        if args.throttle:
            time.sleep(args.throttle)
            # (a guest that dirties little may converge even at 16 MB/s)
            src.qmp.cmd("migrate-set-parameters", **{"max-bandwidth": 0})
        info = wait_migration(src.qmp)
        assert info["status"] == "completed", info
        assert src.qmp.cmd("query-status")["status"] == "postmigrate"
        wait_dest_running(dst)
        # the guest goes on, checking every page it rewrites, on the destination
        lines = dst.wait_lines(r" ok$", 3, timeout=30)
        after = verify_passes(lines[-1])
        assert len(after) == args.vcpus, lines[-1]
        assert all(a > b for a, b in zip(after, before)), (before, after)
        assert not dst.failures() and not src.failures()
        time.sleep(0.5)
        assert not dst.failures()
        k = info.get("x-kmig", {})
        print(f"run {n}: {args.backend} {args.vcpus} vCPU ws={args.ws}MiB rate={args.rate} lm={args.lm}: "
              f"total {info['total-time']} ms, downtime {info['downtime']} ms, "
              f"{info['ram']['transferred'] >> 20} MiB, {info['ram']['dirty-sync-count']} syncs, "
              f"overflows {k.get('ring-overflows')}, resyncs {k.get('ring-resyncs')}, "
              f"full exits {k.get('ring-full-exits')}, guard {k.get('dirty-telemetry')} named "
              f"{k.get('ring-lost-pages')} pages, channels {k.get('channels')}, "
              f"{k.get('send-mode')}; passes {before} -> {after}; lost pages: 0")
        if args.backend == "ring" and args.bpf == "off":
            assert k.get("dirty-telemetry") == "ring" and "KMIG_BPF=0" in k.get("telemetry-why", ""), k
        return k
    finally:
        src.stop()
        dst.stop()


def ring_probe():
    """test-bpf ring-probe's verdict on this kernel: 'ring-probe:
    overflows ...' or 'ring-probe: stops at capacity ...'; '' where it
    could not tell."""
    exe = os.environ.get("TEST_BPF", "")
    if not exe:
        return ""
    p = subprocess.run([exe, "ring-probe"], capture_output=True, text=True, timeout=120)
    return next((l.strip() for l in p.stdout.splitlines() if l.startswith("ring-probe:")), "")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", default="ring", choices=["ring", "bitmap"])
    ap.add_argument("--vcpus", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--ws", type=int, default=32)
    ap.add_argument("--rate", type=int, default=0)
    ap.add_argument("--mem", type=int, default=256)
    ap.add_argument("--lm", type=int, default=1, choices=[0, 1],
                    help="guest works in 64-bit ring 3 (1, native on PVM hosts) or 32-bit ring 0 "
                         "(0, emulated on PVM hosts: the path on which this kernel overflows rings)")
    ap.add_argument("--ring", type=int, default=4096)
    ap.add_argument("--downtime", type=int, default=300)
    ap.add_argument("--throttle", type=float, default=0,
                    help="seconds of precopy at 16 MB/s before the link opens up")
    ap.add_argument("--throttle-bw", type=int, default=16, help="MiB/s of the link while throttled")
    ap.add_argument("--expect-overflow", action="store_true")
    ap.add_argument("--channels", type=int, default=0, help="multifd channels (0 = multifd off)")
    ap.add_argument("--send-mode", default="auto", choices=["auto", "copy", "zero-copy"])
    ap.add_argument("--bpf", default="on", choices=["on", "off"],
                    help="off: KMIG_BPF=0, no eBPF guard (the harvester's detection and resync)")
    args = ap.parse_args()
    require_kvm()
    wd = workdir("migrate")
    overflows = resyncs = named = 0
    telemetry = set()
    for n in range(args.runs):
        k = one_run(args, n, wd)
        overflows += k.get("ring-overflows", 0)
        resyncs += k.get("ring-resyncs", 0)
        named += k.get("ring-lost-pages", 0)
        telemetry.add(k.get("dirty-telemetry"))
    if args.expect_overflow and not overflows:
        probe = ring_probe()
        if "stops at capacity" in probe:
            skip(f"no ring overflow to detect: this kernel stops the vCPU at the dirty ring's capacity "
                 f"({probe}); the runs above lost no page")
        sys.exit(f"expected the ring to overflow (this test provokes it, and {probe or 'the probe'} says "
                 "this kernel does), but none was detected")
    if args.expect_overflow and telemetry == {"bpf"}:
        # the eBPF guard named every overwritten entry: no full resync
        assert named > 0 and resyncs == 0, (overflows, named, resyncs)
    print(f"{args.runs} migrations, 0 lost pages, {overflows} ring overflows detected and recovered "
          f"({telemetry}: {named} pages named by the eBPF guard, {resyncs} whole-RAM resyncs)")


if __name__ == "__main__":
    main()
