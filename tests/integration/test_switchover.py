#!/usr/bin/env python3
"""The switchover waits while the passes still shrink the rest fast.

A dirty guest (fill=256 MiB once, then a 64 MiB working set rewritten as
fast as it can, a few hundred MB/s here) migrates over an unlimited link
with downtime-limit 300 ms.  Its bulk pass leaves what the guest dirtied
meanwhile, tens of MiB: that already fits the limit, and QEMU would stop
there (measured: ~64 MiB left, ~17 ms of downtime at the pass's rate).  kmig must run at
least one more pass (x-kmig.shrink-passes >= 1, passes >= 2), because that
pass leaves far less for the stop; the downtime must stay within the
limit, and the switchover's expected-downtime must be what it was when
decided (present, and no more than the limit).  The stall signal must
not have fired.  The rule's arithmetic (when it stops, the cap, no
overflow) is tested in tests/unit/savevm/test_switchover.c."""
from kmiglib import Kmig, free_port, require_kvm, wait_dest_running, wait_migration, workdir


def main():
    require_kvm()
    wd = workdir("switchover")
    port = free_port()
    params = "fill=256,ws=64,rate=0"
    dst = Kmig(wd, "dst", guest="dirty", params=params, mem=512, incoming=f"tcp:127.0.0.1:{port}")
    src = Kmig(wd, "src", guest="dirty", params=params, mem=512)
    try:
        src.wait_lines("dirty: filled", timeout=120)
        src.qmp.cmd("migrate-set-parameters", **{"downtime-limit": 300, "max-bandwidth": 0})
        src.qmp.cmd("migrate", uri=f"tcp:127.0.0.1:{port}")
        info = wait_migration(src.qmp)
        assert info["status"] == "completed", f"migration did not complete: {info}"
        x = info["x-kmig"]
        assert "shrink-passes" in x, f"x-kmig has no shrink-passes: {x}"
        assert x["shrink-passes"] >= 1, (f"switched over at the first fit: passes {x['passes']}, "
                                         f"shrink-passes {x['shrink-passes']}")
        assert x["passes"] >= 2 and x["shrink-passes"] < x["passes"], x
        assert info["downtime"] <= 300, f"downtime {info['downtime']} ms > downtime-limit 300"
        exp = x.get("switchover-expected-downtime")
        assert exp is not None and exp <= 300, f"switchover-expected-downtime {exp}"
        assert not info.get("x-kmig-stall", {}).get("stalled"), info.get("x-kmig-stall")
        wait_dest_running(dst)
        print(f"ok: {x['passes']} passes of which {x['shrink-passes']} after the rest fit; "
              f"downtime {info['downtime']} ms (expected {exp}), total {info['total-time']} ms, "
              f"{info['ram']['transferred'] >> 20} MiB")
    finally:
        src.stop()
        dst.stop()


if __name__ == "__main__":
    main()
