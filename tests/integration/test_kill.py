#!/usr/bin/env python3
"""kill -9 of either side in the middle of a migration (issue 11):

1. The destination killed while the source is in precopy: the source
   notices within seconds (its connection closes), reports failed, and its
   self-checking guest runs on; a new migrate to a fresh destination then
   completes with nothing lost.
2. The source killed in precopy: the destination notices within seconds,
   fails, exits 1, and never started a guest.
3. SIGHUP, SIGTERM and SIGINT end kmig run cleanly, its QMP socket file
   removed; the file kill -9 leaves is replaced by the next run.
4. The destination's listener: its real port in socket-address, closed
   once the migration ended.

The migration is throttled (16 MiB/s) so that it is certainly in precopy
when the kill comes."""
import os
import signal
import socket
import time

from kmiglib import (Kmig, free_port, require_kvm, verify_passes, wait_dest_running, wait_migration,
                     workdir)


def start_throttled(src, port):
    src.qmp.cmd("migrate-set-parameters", **{"max-bandwidth": 16 << 20})
    src.qmp.cmd("migrate", uri=f"tcp:127.0.0.1:{port}")
    deadline = time.time() + 10
    while src.qmp.cmd("query-migrate").get("status") != "active":
        assert time.time() < deadline, src.qmp.cmd("query-migrate")
        time.sleep(0.05)
    time.sleep(0.5)


def kill_destination(wd):
    port, port2 = free_port(), free_port()
    dst = Kmig(wd, "dst", params="ws=8", mem=512, incoming=f"tcp:127.0.0.1:{port}")
    src = Kmig(wd, "src", params="ws=8", mem=512)
    dst2 = None
    try:
        src.wait_lines(r" ok$", 1)
        start_throttled(src, port)
        t0 = time.time()
        dst.proc.send_signal(signal.SIGKILL)
        info = wait_migration(src.qmp, timeout=30)
        took = time.time() - t0
        assert info["status"] == "failed", info
        assert took < 5, f"the source noticed the dead destination after {took:.1f} s: {info}"
        assert src.qmp.cmd("query-status")["status"] == "running"
        n = len(src.wait_lines(r" ok$", 1))
        src.wait_lines(r" ok$", n + 1, timeout=10)
        # a fresh destination: the migration goes through, nothing lost
        dst2 = Kmig(wd, "dst2", params="ws=8", mem=512, incoming=f"tcp:127.0.0.1:{port2}")
        src.qmp.cmd("migrate-set-parameters", **{"max-bandwidth": 0})
        src.qmp.cmd("migrate", uri=f"tcp:127.0.0.1:{port2}")
        info2 = wait_migration(src.qmp)
        assert info2["status"] == "completed", info2
        wait_dest_running(dst2)
        lines = dst2.wait_lines(r" ok$", 2, timeout=30)
        assert verify_passes(lines[-1]) and not dst2.failures(), dst2.failures()
        print(f"destination killed: source failed after {took:.2f} s ({info.get('error-desc')}), "
              f"guest ran on; a new migration completed in {info2['total-time']} ms, guest verified")
    finally:
        src.stop()
        dst.stop()
        if dst2:
            dst2.stop()


def kill_source(wd):
    port = free_port()
    dst = Kmig(wd, "dst3", params="ws=8", mem=512, incoming=f"tcp:127.0.0.1:{port}")
    src = Kmig(wd, "src3", params="ws=8", mem=512)
    try:
        src.wait_lines(r" ok$", 1)
        start_throttled(src, port)
        t0 = time.time()
        src.proc.send_signal(signal.SIGKILL)
        code = dst.wait_exit(10)
        took = time.time() - t0
        assert code == 1, f"destination exit {code} {took:.1f} s after the source died: {dst.stderr()}"
        assert "incoming migration failed" in dst.stderr(), dst.stderr()
        assert not dst.lines(), f"the destination's guest ran: {dst.lines()[-3:]}"
        print(f"source killed: destination failed and exited 1 after {took:.2f} s: "
              f"{dst.stderr().strip().splitlines()[-1]}")
    finally:
        src.stop()
        dst.stop()


def signals(wd):
    """SIGHUP, SIGTERM and SIGINT stop kmig run cleanly: exit 0, its QMP
    socket file removed.  After kill -9 the file stays (nothing can remove
    it), and the next kmig run on the same path replaces it."""
    for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        k = Kmig(wd, f"sig{int(sig)}", guest="idle")
        try:
            k.qmp.cmd("query-status")
            k.proc.send_signal(sig)
            code = k.wait_exit(10)
            assert code == 0, f"{sig.name}: exit status {code}: {k.stderr()}"
            assert not os.path.exists(k.qmp_path), f"{sig.name}: {k.qmp_path} left behind"
            print(f"{sig.name}: exit 0, QMP socket removed")
        finally:
            k.stop()
    k = Kmig(wd, "killed", guest="idle")
    try:
        k.qmp.cmd("query-status")
        k.proc.send_signal(signal.SIGKILL)
        k.proc.wait(10)
    finally:
        k.stop()
    assert os.path.exists(k.qmp_path)
    again = Kmig(wd, "killed", guest="idle")
    try:
        assert again.qmp.cmd("query-status")["status"] == "running"
        print("kill -9: the socket file left behind was replaced by the next kmig run")
    finally:
        again.stop()


def listener(wd):
    """Like QEMU: a destination on tcp:HOST:0 tells its real port in
    query-migrate socket-address, and stops listening once its migration
    ended, so a second source fails at once instead of hanging active."""
    dst = Kmig(wd, "ldst", params="ws=8", incoming="tcp:127.0.0.1:0")
    src = Kmig(wd, "lsrc", params="ws=8")
    src2 = Kmig(wd, "lsrc2", guest="idle")
    try:
        info = dst.qmp.cmd("query-migrate")
        addrs = info.get("socket-address")
        assert addrs and addrs[0]["type"] == "inet" and addrs[0]["host"] == "127.0.0.1", info
        port = int(addrs[0]["port"])
        assert port > 0 and "status" not in info, info
        src.wait_lines(r" ok$", 1)
        src.qmp.cmd("migrate", uri=f"tcp:127.0.0.1:{port}")
        assert wait_migration(src.qmp)["status"] == "completed", src.qmp.cmd("query-migrate")
        wait_dest_running(dst)
        info = dst.qmp.cmd("query-migrate")
        assert "socket-address" not in info and info["status"] == "completed", info
        try:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
            raise AssertionError(f"the destination still listens on {port} after completing")
        except ConnectionRefusedError:
            pass
        t0 = time.time()
        src2.qmp.cmd("migrate", uri=f"tcp:127.0.0.1:{port}")
        info = wait_migration(src2.qmp, timeout=30)
        took = time.time() - t0
        assert info["status"] == "failed" and took < 10, (info, took)
        assert src2.qmp.cmd("query-status")["status"] == "running"
        print(f"listener: port {port} from socket-address; closed after completion; a second source "
              f"failed after {took:.1f} s: {info.get('error-desc')}")
    finally:
        src2.stop()
        src.stop()
        dst.stop()


def main():
    require_kvm()
    wd = workdir("kill")
    kill_destination(wd)
    kill_source(wd)
    signals(wd)
    listener(wd)


if __name__ == "__main__":
    main()
