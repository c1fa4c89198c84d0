#!/usr/bin/env python3
"""Dirty limit: a migration that cannot converge, made to converge.

A guest on 2 vCPUs: vCPU 0 rewrites a 64 MiB working set at 48 MiB/s, three
times what the 16 MiB/s link carries; vCPU 1 only computes (the dirty
guest's compute=1) and reports its progress (work= chunks per second).

1. set-vcpu-dirty-limit on vCPU 0 alone, no migration: its dirty rate
   (calc-dirty-rate, dirty-ring) falls to the limit, vCPU 1's progress
   does not; cancel-vcpu-dirty-limit restores the rate.
2. Migration without dirty-limit: the stall signal fires, the migration
   does not complete; it is cancelled and the guest runs on.
3. The same with the dirty-limit capability: it completes, with downtime
   within the limit, while the computing vCPU keeps within 10% of its
   unthrottled progress; query-migrate shows QEMU's dirty-limit figures;
   the limits end with the migration.

Bounded: every wait has a deadline; about a minute in all."""
import re
import statistics
import time

from kmiglib import QMPError, Kmig, free_port, require_kvm, wait_dest_running, wait_migration, workdir

PARAMS = "ws=64,rate=48,compute=1"
LINK = 16 << 20
DOWNTIME = 300


def work_rates(k, since):
    return [int(m.group(1)) for line in k.lines()[since:] if (m := re.search(r" work=(\d+)", line))]


def writer_rate(k, since):
    return [int(m.group(1)) for line in k.lines()[since:] if (m := re.search(r"MiB/s=(\d+)", line))]


def wait_reports(k, n, timeout=20):
    """The next n progress lines; returns the index of the first."""
    since = len(k.lines())
    k.wait_lines(r" work=", since + n, timeout=timeout)
    return since


def vm(wd, name, incoming=None):
    return Kmig(wd, name, guest="dirty", params=PARAMS, mem=256, vcpus=2,
                extra=["--dirty-ring", "4096"], incoming=incoming)


def calc_vcpu_rates(k):
    k.qmp.cmd("calc-dirty-rate", **{"calc-time": 1, "mode": "dirty-ring"})
    deadline = time.time() + 10
    while (info := k.qmp.cmd("query-dirty-rate"))["status"] != "measured":
        assert time.time() < deadline, info
        time.sleep(0.1)
    return [v["dirty-rate"] for v in info["vcpu-dirty-rate"]]


def direct_limit(wd):
    k = vm(wd, "direct")
    try:
        since = wait_reports(k, 3)
        base_work = statistics.median(work_rates(k, since))
        before = calc_vcpu_rates(k)
        k.qmp.cmd("set-vcpu-dirty-limit", **{"cpu-index": 0, "dirty-rate": 8})
        lim = k.qmp.cmd("query-vcpu-dirty-limit")
        assert [e["cpu-index"] for e in lim] == [0] and lim[0]["limit-rate"] == 8, lim
        since = wait_reports(k, 1)
        during = calc_vcpu_rates(k)
        since = wait_reports(k, 3)
        work = statistics.median(work_rates(k, since))
        lim = k.qmp.cmd("query-vcpu-dirty-limit")
        k.qmp.cmd("cancel-vcpu-dirty-limit", **{"cpu-index": 0})
        assert k.qmp.cmd("query-vcpu-dirty-limit") == []
        wait_reports(k, 1)
        after = calc_vcpu_rates(k)
        print(f"direct: vCPU dirty rates {before} MiB/s -> limit 8 on vCPU 0 -> {during} "
              f"(query-vcpu-dirty-limit {lim}) -> cancelled -> {after}; "
              f"compute {base_work} -> {work} chunks/s")
        assert during[0] <= 8 * 1.25, during
        assert after[0] >= 2 * during[0], (during, after)
        assert work >= 0.9 * base_work, (base_work, work)
    finally:
        k.stop()


def migrate(wd, name, dirty_limit):
    port = free_port()
    dst = vm(wd, name + "-dst", incoming=f"tcp:127.0.0.1:{port}")
    src = vm(wd, name + "-src")
    try:
        since = wait_reports(src, 3)
        base_work = statistics.median(work_rates(src, since))
        q = src.qmp
        q.cmd("migrate-set-parameters", **{"max-bandwidth": LINK, "downtime-limit": DOWNTIME,
                                            "x-kmig-stall-iterations": 3, "x-kmig-stall-ms": 4000,
                                            "vcpu-dirty-limit": 1})
        if dirty_limit:
            q.cmd("migrate-set-capabilities", capabilities=[{"capability": "dirty-limit", "state": True}])
        start = len(src.lines())
        t0 = time.time()
        q.cmd("migrate", uri=f"tcp:127.0.0.1:{port}")
        samples, limited, engaged_at, figures = [], [], None, (0, 0)
        while True:
            info = q.cmd("query-migrate")
            if info["status"] not in ("setup", "active"):
                break
            if info["status"] == "active":
                samples.append((round(time.time() - t0, 1), info["remaining"]))
            if "dirty-limit-throttle-time-per-round" in info:
                if engaged_at is None:
                    engaged_at = len(src.lines())
                    engaged_t = time.time() - t0
                limited = q.cmd("query-vcpu-dirty-limit")
                figures = max(figures, (info["dirty-limit-throttle-time-per-round"],
                                        info["dirty-limit-ring-full-time"]))
            if not dirty_limit and info.get("x-kmig-stall", {}).get("stalled"):
                break
            assert time.time() - t0 < 60, f"{name}: neither completed nor stalled in 60 s: {info}"
            time.sleep(0.25)
        if not dirty_limit:
            assert info["status"] == "active" and info["x-kmig-stall"]["stalled"], info
            work = statistics.median(work_rates(src, start) or [0])
            q.cmd("migrate_cancel")
            assert wait_migration(q)["status"] == "cancelled"
            assert q.cmd("query-status")["status"] == "running"
            print(f"without dirty-limit: stalled after {time.time() - t0:.1f} s, remaining "
                  f"{info['remaining'] >> 20} MiB (min {info['x-kmig-stall']['min-remaining'] >> 20}), "
                  f"compute {base_work} -> {work} chunks/s; cancelled, guest runs on")
            return samples
        assert info["status"] == "completed", info
        assert engaged_at is not None, "the dirty limit never engaged"
        assert sorted(e["cpu-index"] for e in limited) == [0, 1], limited
        assert all(e["limit-rate"] == 1 for e in limited), limited
        # the writer slept: QEMU's figure of it is there
        assert figures[0] > 0, figures
        work = statistics.median(work_rates(src, engaged_at) or [0])
        assert info["downtime"] <= DOWNTIME, info
        assert q.cmd("query-vcpu-dirty-limit") == [], "the migration's limits outlived it"
        wait_dest_running(dst)
        dst.wait_lines(r" work=", 2, timeout=20)
        print(f"with dirty-limit: completed in {info['total-time']} ms, downtime {info['downtime']} ms "
              f"(limit {DOWNTIME}), limit engaged at {engaged_t:.1f} s, most throttle-time-per-round / "
              f"ring-full-time seen {figures} us, "
              f"limits {limited}; compute {base_work} -> {work} chunks/s "
              f"({(work - base_work) / base_work:+.1%})")
        assert work >= 0.9 * base_work, (base_work, work)
        return samples
    finally:
        src.stop()
        dst.stop()


def arg_errors(wd):
    k = Kmig(wd, "bitmapvm", guest="dirty", params="ws=8", mem=64, extra=["--dirty-bitmap"])
    try:
        for cmd, args, text in [
            ("set-vcpu-dirty-limit", {"dirty-rate": 10}, "dirty-ring-size"),
            ("migrate-set-capabilities", {"capabilities": [{"capability": "dirty-limit", "state": True}]},
             "dirty-ring-size"),
        ]:
            try:
                k.qmp.cmd(cmd, **args)
                raise AssertionError(f"{cmd} accepted on a bitmap VM")
            except QMPError as e:
                assert text in str(e), str(e)
    finally:
        k.stop()
    k = vm(wd, "args")
    try:
        for args, text in [({"cpu-index": 2, "dirty-rate": 10}, "incorrect cpu index"),
                           ({"cpu-index": -5, "dirty-rate": 10}, "incorrect cpu index")]:
            try:
                k.qmp.cmd("set-vcpu-dirty-limit", **args)
                raise AssertionError(f"set-vcpu-dirty-limit {args} accepted")
            except QMPError as e:
                assert text in str(e), str(e)
    finally:
        k.stop()
    print("argument errors: refused with QEMU's messages")


def main():
    require_kvm()
    wd = workdir("dirtylimit")
    arg_errors(wd)
    direct_limit(wd)
    migrate(wd, "free", dirty_limit=False)
    migrate(wd, "limited", dirty_limit=True)


if __name__ == "__main__":
    main()
