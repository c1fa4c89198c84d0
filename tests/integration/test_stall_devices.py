#!/usr/bin/env python3
"""System-wide remaining, the stall signal and device save times, with
blob devices (iterable devices standing in for VFIO state).

1. A blob that is rewritten faster than a throttled link carries it keeps
   `remaining` (RAM + devices) from falling: the migration must not switch
   over although RAM alone has converged, and the stall signal must rise
   (query-migrate x-kmig-stall, and the X_KMIG_MIGRATION_STALL event).
2. The same device quietened (x-kmig-blob-set) and the link opened: the
   migration completes; device-state-times lists every non-iterable
   device, the blob remainders are timed, the downtime phases add up, the
   destination reports its load times, and it verified the blobs' state.
3. A stream that loses one blob chunk update is refused by the destination
   (the device's manifest does not match)."""
import struct
import time

from kmiglib import Kmig, Proxy, free_port, require_kvm, verify_passes, wait_dest_running, wait_migration, workdir

DEVICES = ["--device", "blob,id=gpu0,size=32M,dirty-rate=256M,stop-copy=2M",
           "--device", "blob,id=nic1,size=4M"]
NON_ITERABLE = {("apic", 0), ("cpu", 0), ("pic", 0), ("pic", 1), ("ioapic", 0), ("pit", 0),
                ("kvmclock", 0), ("serial", 0)}


def stall_then_recover(wd):
    port = free_port()
    dst = Kmig(wd, "dst", params="ws=8,rate=4", incoming=f"tcp:127.0.0.1:{port}", extra=DEVICES)
    src = Kmig(wd, "src", params="ws=8,rate=4", extra=DEVICES)
    try:
        src.wait_lines(r" ok$", 1)
        q = src.qmp
        q.cmd("migrate-set-parameters", **{"max-bandwidth": 32 << 20, "x-kmig-stall-iterations": 2,
                                            "x-kmig-stall-ms": 1000})
        q.cmd("migrate", uri=f"tcp:127.0.0.1:{port}")
        deadline = time.time() + 60
        while True:
            info = q.cmd("query-migrate")
            if info["status"] == "setup":
                time.sleep(0.05)
                continue
            assert info["status"] == "active", info
            assert info["remaining"] >= info["ram"]["remaining"]
            if info.get("x-kmig-stall", {}).get("stalled"):
                break
            assert time.time() < deadline, f"no stall signal: {info}"
            time.sleep(0.2)
        pending = {p["name"]: p["bytes"] for p in info["x-kmig-pending"]}
        assert pending["blob-gpu0"] > 0 and sum(pending.values()) == info["remaining"], info
        events = [e for e in q.events if e["event"] == "X_KMIG_MIGRATION_STALL"]
        assert events and events[-1]["data"]["stalled"] is True, q.events
        print(f"stalled: remaining {info['remaining'] >> 20} MiB (ram {info['ram']['remaining'] >> 10} KiB), "
              f"{info['x-kmig-stall']['iterations']} passes / {info['x-kmig-stall']['since-ms']} ms "
              f"without progress; pending {pending}")

        q.cmd("x-kmig-blob-set", id="gpu0", **{"dirty-rate": 0})
        q.cmd("migrate-set-parameters", **{"max-bandwidth": 0})
        info = wait_migration(q)
        assert info["status"] == "completed", info
        assert "remaining" not in info  # only while active
        times = {(d["name"], d["instance-id"]): d["save-time"] for d in info["device-state-times"]}
        assert set(times) == NON_ITERABLE, times
        it = {d["name"]: d["save-time"] for d in info["x-kmig-iterable-save-times"]}
        assert set(it) == {"ram", "blob-gpu0", "blob-nic1"}, it
        ph = info["x-kmig-downtime-phases"]
        order = ["vcpus-stopped", "iterable-saved", "non-iterable-saved", "end-of-stream", "acknowledged"]
        assert all(ph[a] <= ph[b] for a, b in zip(order, order[1:])), ph
        assert abs(ph["acknowledged"] // 1000 - info["downtime"]) <= 1, (ph, info["downtime"])
        dinfo = dst.qmp.cmd("query-migrate")
        loads = {(d["name"], d["instance-id"]) for d in dinfo["x-kmig-device-load-times"]}
        assert NON_ITERABLE <= loads, dinfo
        wait_dest_running(dst)
        after = verify_passes(dst.wait_lines(r" ok$", 2)[-1])
        assert after and not dst.failures()
        slowest = max(times, key=times.get)
        print(f"completed: downtime {info['downtime']} ms = phases {ph} us; slowest device "
              f"{slowest} {times[slowest]} us; blob remainders {it}; destination loaded "
              f"{len(loads)} devices and verified both blobs")
    finally:
        src.stop()
        dst.stop()


def lost_update(wd):
    """Drop one blob chunk record from the stream: the manifest catches it.

    The chunk dropped is blob-nic1's first: that blob is never rewritten
    (no dirty-rate), so no later copy of the chunk can supersede the lost
    one, and the destination must refuse the stream every time.  (A chunk
    of blob-gpu0, rewritten 8 times a second, may legitimately be sent
    again and arrive whole.)"""
    state = {"dropped": None, "ids": {}}

    def mutate(kind, off, rec):
        if kind == "section":
            name_len = struct.unpack_from("<I", rec, 20)[0]
            state["ids"][struct.unpack_from("<I", rec, 4)[0]] = rec[24:24 + name_len].decode()
        if kind == "part" and state["dropped"] is None:
            section, _, part_kind, index = struct.unpack_from("<IIII", rec, 4)
            if state["ids"].get(section) == "blob-nic1" and part_kind == 1:
                state["dropped"] = index
                return b""
        return rec
    port = free_port()
    dst = Kmig(wd, "dst2", params="ws=8", incoming=f"tcp:127.0.0.1:{port}", extra=DEVICES)
    src = Kmig(wd, "src2", params="ws=8", extra=DEVICES)
    proxy = Proxy(port, mutate=mutate)
    try:
        src.wait_lines(r" ok$", 1)
        src.qmp.cmd("migrate", uri=f"tcp:127.0.0.1:{proxy.port}")
        info = wait_migration(src.qmp)
        seen = f"source {info}; dropped chunk {state['dropped']}; sections {state['ids']}; " \
               f"destination stderr: {dst.stderr()[-2000:]}"
        assert state["dropped"] is not None and info["status"] == "failed", seen
        assert dst.wait_exit(30) == 1, seen
        assert "state incomplete" in dst.stderr(), seen
        status = src.qmp.cmd("query-status")["status"]
        assert status == "running", f"source status {status}; {seen}"
        print(f"lost chunk update refused: {dst.stderr().strip()}")
    finally:
        src.stop()
        dst.stop()


def main():
    require_kvm()
    wd = workdir("stall")
    stall_then_recover(wd)
    lost_update(wd)


if __name__ == "__main__":
    main()
