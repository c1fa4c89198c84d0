#!/usr/bin/env python3
"""calc-dirty-rate / query-dirty-rate against a guest that dirties memory at
a known rate (the dirty guest, paced on its TSC, reports the rate it
achieved every second; its 512 MiB working set at 128 MiB/s rewrites each
page every 4 s, so what it reports is also the distinct pages per second):
every mode must measure within +-20% of what the guest reports, with and
without a migration running, and with the eBPF counters of the ring's
entries (as root) or without them (KMIG_BPF=0; capabilities dropped), in
which case the harvester counts them and says so.  A hot working set
rewritten as fast as the guest can must measure as its distinct pages in
all three modes, within 25% of each other.

usage: test_dirty_rate.py [--rate MIB/S] [--quick]"""
import argparse
import re
import statistics
import time

from kmiglib import QMPError, Kmig, free_port, require_kvm, wait_migration, workdir

WS, MEM = 512, 640
TOLERANCE = 0.20


def guest_rate(k, since_line):
    """Median of the rates the guest reported on lines after since_line."""
    rates = [int(m.group(1)) for line in k.lines()[since_line:]
             if (m := re.search(r"MiB/s=(\d+)", line))]
    assert rates, f"{k.name}: the guest reported no rate: {k.lines()[-3:]}"
    return statistics.median(rates)


def measure(k, mode, calc_ms, **extra):
    """Run one measurement; returns (query-dirty-rate answer, guest's own rate)."""
    k.wait_lines(r"MiB/s=", 2)
    since = len(k.lines())
    k.qmp.cmd("calc-dirty-rate", **{"calc-time": calc_ms, "calc-time-unit": "millisecond", "mode": mode},
              **extra)
    deadline = time.time() + calc_ms / 1000 + 15
    while True:
        info = k.qmp.cmd("query-dirty-rate", **{"calc-time-unit": "millisecond"})
        if info["status"] == "measured":
            break
        assert info["status"] == "measuring" and "dirty-rate" not in info, info
        assert time.time() < deadline, f"measurement did not end: {info}"
        time.sleep(0.1)
    # the guest's report for the second that covered the window's end
    k.wait_lines(r"MiB/s=", since + 1 + 1)
    return info, guest_rate(k, since)


def check(label, info, truth, mode, pushes_by=None, tolerance=TOLERANCE):
    """pushes_by: in dirty-ring mode, who counted the ring's entries
    ("bpf" or "ring"); the rate itself is always the distinct pages."""
    got = info["dirty-rate"]
    err = abs(got - truth) / truth
    assert info["mode"] == mode and info["calc-time-unit"] == "millisecond", info
    assert info.get("x-kmig-counted-by") == {"dirty-ring": "ring", "dirty-bitmap": "bitmap",
                                             "page-sampling": "sampling"}[mode], info
    if mode == "dirty-ring":
        assert len(info["vcpu-dirty-rate"]) == 1 and info["vcpu-dirty-rate"][0]["id"] == 0, info
        assert abs(info["vcpu-dirty-rate"][0]["dirty-rate"] - got) <= 1, info
        assert info["x-kmig-ring-push-rate"] >= 0, info
        if pushes_by:
            assert info.get("x-kmig-ring-pushes-counted-by") == pushes_by, info
    else:
        assert "vcpu-dirty-rate" not in info and "x-kmig-ring-push-rate" not in info, info
    print(f"{label}: measured {got} MiB/s, expected {truth} MiB/s ({err:+.0%})"
          + (f", ring entries {info['x-kmig-ring-push-rate']} MiB/s counted by "
             f"{info.get('x-kmig-ring-pushes-counted-by')}" if mode == "dirty-ring" else ""))
    assert err <= tolerance, f"{label}: {got} MiB/s is not within {tolerance:.0%} of {truth}"


def telemetry(k):
    """The mode line kmig run prints for a VM with dirty rings:
    'bpf' or 'ring (why the programs are not attached)'."""
    k.qmp.cmd("query-status")  # started
    m = re.search(r"kmig: dirty telemetry: (.*)", k.stderr())
    assert m, f"{k.name}: no telemetry mode line: {k.stderr()!r}"
    return m.group(1)


def expect_error(k, text, **args):
    try:
        k.qmp.cmd("calc-dirty-rate", **args)
    except QMPError as e:
        assert text in str(e), (text, str(e))
        return
    raise AssertionError(f"calc-dirty-rate {args} was accepted")


def ring_vm(wd, rate, name, env=None, prefix=()):
    return Kmig(wd, name, guest="dirty", params=f"ws={WS},rate={rate}", mem=MEM,
                extra=["--dirty-ring", "4096"], env=env, prefix=prefix)


def ring_cases(wd, rate, quick):
    k = ring_vm(wd, rate, "ring")
    try:
        tele = telemetry(k)
        counted = "bpf" if tele.startswith("bpf") else "ring"  # who counts the ring's entries
        info, truth = measure(k, "dirty-ring", 2000)
        check("dirty-ring, no migration", info, truth, "dirty-ring", counted)
        expect_error(k, "mode dirty-bitmap is not enabled", **{"calc-time": 1, "mode": "dirty-bitmap"})
        # twice at once
        k.qmp.cmd("calc-dirty-rate", **{"calc-time": 1, "mode": "dirty-ring"})
        expect_error(k, "already being measured", **{"calc-time": 1, "mode": "dirty-ring"})
        while k.qmp.cmd("query-dirty-rate")["status"] != "measured":
            time.sleep(0.1)
        info, truth = measure(k, "page-sampling", 1000, **{"sample-pages": 4096})
        assert info["sample-pages"] == 4096, info
        check("page-sampling", info, truth, "page-sampling")
        if quick:
            return
        # with a migration running (a slow link: it stays in precopy)
        port = free_port()
        dst = Kmig(wd, "ring-dst", guest="dirty", params=f"ws={WS},rate={rate}", mem=MEM,
                   extra=["--dirty-ring", "4096"], incoming=f"tcp:127.0.0.1:{port}")
        try:
            k.qmp.cmd("migrate-set-parameters", **{"max-bandwidth": 8 << 20})
            k.qmp.cmd("migrate", uri=f"tcp:127.0.0.1:{port}")
            info, truth = measure(k, "dirty-ring", 2000)
            assert k.qmp.cmd("query-migrate")["status"] == "active"
            check("dirty-ring, migration running", info, truth, "dirty-ring", counted)
            k.qmp.cmd("migrate_cancel")
            assert wait_migration(k.qmp)["status"] == "cancelled"
            assert k.qmp.cmd("query-status")["status"] == "running"
        finally:
            dst.stop()
        # and after it: tracking that the migration and the measurement
        # shared has been released and can start again
        info, truth = measure(k, "dirty-ring", 1000)
        check("dirty-ring, after the migration", info, truth, "dirty-ring", counted)
        print(f"telemetry: {tele}")
    finally:
        k.stop()


def bitmap_cases(wd, rate):
    k = Kmig(wd, "bitmap", guest="dirty", params=f"ws={WS},rate={rate}", mem=MEM, extra=["--dirty-bitmap"])
    try:
        k.qmp.cmd("query-status")
        assert "dirty telemetry" not in k.stderr(), k.stderr()
        info, truth = measure(k, "dirty-bitmap", 2000)
        check("dirty-bitmap", info, truth, "dirty-bitmap")
        expect_error(k, "mode dirty-ring is not enabled", **{"calc-time": 1, "mode": "dirty-ring"})
    finally:
        k.stop()


def fallback_cases(wd, rate):
    """Without the eBPF programs the harvester counts, and says why."""
    cases = [("KMIG_BPF=0", {"KMIG_BPF": "0"}, (), "KMIG_BPF=0"),
             ("no CAP_BPF/CAP_PERFMON/CAP_SYS_ADMIN", None,
              ("setpriv", "--bounding-set", "-bpf,-perfmon,-sys_admin", "--inh-caps", "-all", "--"), "")]
    for label, env, prefix, why in cases:
        k = ring_vm(wd, rate, "fallback" + str(len(why)), env=env, prefix=prefix)
        try:
            tele = telemetry(k)
            assert tele.startswith("ring (") and why in tele, tele
            info, truth = measure(k, "dirty-ring", 2000)
            check(f"dirty-ring, {label}: {tele}", info, truth, "dirty-ring", "ring")
        finally:
            k.stop()


def agreement_cases(wd):
    """The three modes measure the same thing, distinct pages dirtied per
    second: a hot working set rewritten thousands of times a second counts
    once per window (64 MiB in 1 s: 64 MiB/s), within 25% in every mode,
    however many times the dirty ring took each page."""
    hot, calc_ms = 64, 1000
    truth = hot * 1000 // calc_ms
    rates = {}
    k = Kmig(wd, "hot-ring", guest="dirty", params=f"ws={hot},rate=0", mem=MEM, extra=["--dirty-ring", "4096"])
    try:
        for mode, extra in (("dirty-ring", {}), ("page-sampling", {"sample-pages": 4096})):
            info, _ = measure(k, mode, calc_ms, **extra)
            check(f"hot {hot} MiB, {mode}", info, truth, mode, tolerance=0.25)
            rates[mode] = info["dirty-rate"]
            if mode == "dirty-ring":
                pushes = info["x-kmig-ring-push-rate"]
        # one hot MiB: 1 MiB/s, not the hundreds the ring's entries say
        k.stop()
        k = Kmig(wd, "hot1-ring", guest="dirty", params="ws=1,rate=0", mem=MEM, extra=["--dirty-ring", "4096"])
        info, _ = measure(k, "dirty-ring", calc_ms)
        assert info["dirty-rate"] <= 2, f"one hot MiB measured {info}"
        print(f"hot 1 MiB, dirty-ring: {info['dirty-rate']} MiB/s "
              f"(ring entries: {info['x-kmig-ring-push-rate']} MiB/s)")
    finally:
        k.stop()
    k = Kmig(wd, "hot-bitmap", guest="dirty", params=f"ws={hot},rate=0", mem=MEM, extra=["--dirty-bitmap"])
    try:
        info, _ = measure(k, "dirty-bitmap", calc_ms)
        check(f"hot {hot} MiB, dirty-bitmap", info, truth, "dirty-bitmap", tolerance=0.25)
        rates["dirty-bitmap"] = info["dirty-rate"]
    finally:
        k.stop()
    lo, hi = min(rates.values()), max(rates.values())
    assert hi <= lo * 1.25, f"the modes disagree by more than 25%: {rates}"
    print(f"the three modes agree: {rates} MiB/s (ring entries: {pushes} MiB/s)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, default=128)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    require_kvm()
    wd = workdir("dirtyrate")
    ring_cases(wd, args.rate, args.quick)
    bitmap_cases(wd, args.rate)
    agreement_cases(wd)
    fallback_cases(wd, args.rate)
    print("every measurement within 20% of the guest's own rate")


if __name__ == "__main__":
    main()
