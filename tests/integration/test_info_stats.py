#!/usr/bin/env python3
"""kmig info (the human view of query-migrate, like HMP 'info migrate') and
kmig run --stats-file (query-migrate's MigrationInfo as JSON lines while a
migration runs).

Without KVM: kmig info and kmig migrate against a fake QMP server that
answers with the seeds' members (remaining, device-state-times), kmig's
extensions and members of unexpected types; unreachable sockets; bad
--stats-* options.  With KVM: a source with --stats-file whose first
migration is cancelled and whose second, throttled for a while, completes;
the file must hold whole JSON lines in time order, one final line per
migration, the last one equal to query-migrate's answer; kmig info on the
source and the destination."""
import json
import os
import re
import socket
import stat
import subprocess
import tempfile
import threading
import time

from kmiglib import Kmig, free_port, kmig_path, require_kvm, wait_migration, workdir

K = kmig_path()


def kmig(args, timeout=60):
    p = subprocess.run([K] + args, capture_output=True, text=True, timeout=timeout)
    assert p.returncode >= 0, f"{args}: killed by signal {-p.returncode}: {p.stderr}"
    return p


class FakeQMP:
    """A QMP server on a unix socket answering from a table: name -> the
    'return' value, a callable returning it, or an Exception for an error."""

    def __init__(self, path, answers):
        self.path = path
        self.answers = answers
        self.calls = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(4)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._client, args=(conn,), daemon=True).start()

    def _client(self, conn):
        f = conn.makefile("rwb")
        try:
            f.write(b'{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, '
                    b'"package": "fake"}, "capabilities": []}}\r\n')
            f.flush()
            for line in f:
                req = json.loads(line)
                name = req["execute"]
                self.calls.append(name)
                ans = {} if name == "qmp_capabilities" else self.answers.get(name)
                if callable(ans):
                    ans = ans()
                if ans is None or isinstance(ans, Exception):
                    msg = {"error": {"class": "GenericError", "desc": str(ans or f"no {name}")}}
                else:
                    msg = {"return": ans}
                if "id" in req:
                    msg["id"] = req["id"]
                # an event in between, as a real server may send
                f.write(b'{"event": "X", "data": {}, "timestamp": {"seconds": 0, "microseconds": 0}}\r\n')
                f.write(json.dumps(msg).encode() + b"\r\n")
                f.flush()
        except (OSError, ValueError):
            pass
        finally:
            conn.close()

    def close(self):
        self.sock.close()
        os.unlink(self.path)


RAM = {"transferred": 52488192, "remaining": 6524928, "total": 134217728, "duplicate": 16102,
       "skipped": 0, "normal": 12763, "normal-bytes": 52277248, "dirty-pages-rate": 1950,
       "mbps": 1016.2, "dirty-sync-count": 3, "postcopy-requests": 0, "page-size": 4096,
       "multifd-bytes": 0, "pages-per-second": 31032, "precopy-bytes": 52488192,
       "downtime-bytes": 0, "postcopy-bytes": 0, "dirty-sync-missed-zero-copy": 0}


def table_rows(out):
    """The device-state-times table of kmig info: [(device, us, share)]."""
    rows, inside = [], False
    for line in out.splitlines():
        if line.startswith("  device ") and "save time" in line:
            inside = True
            continue
        if inside:
            m = re.match(r"^  (\S+)\s+(\d+)\s+([\d.]+)$", line)
            if not m:
                break
            rows.append((m.group(1), int(m.group(2)), float(m.group(3))))
    return rows


def fake_server_checks(tmp):
    # a server with everything: the seeds' members, extensions, and junk
    path = os.path.join(tmp, "fake.qmp")
    info = {
        "status": "active", "setup-time": 3, "total-time": 412, "expected-downtime": 38,
        "ram": RAM, "remaining": 40000000,
        "device-state-times": [
            {"name": "apic", "instance-id": 0, "save-time": 35},
            {"name": "cpu", "instance-id": 0, "save-time": 145},
            {"name": "cpu_common", "instance-id": 1, "save-time": 4},
            "not an object", {"name": "no-time"}, {"save-time": "x"},
            {"name": "PCIBUS", "save-time": 16},
        ],
        "x-kmig": {"dirty-mode": "dirty-ring", "ring-overflows": 2, "passes": 3},
        "x-kmig-stall": {"stalled": True, "iterations": 7},
        "x-kmig-future": [1, 2, 3],
        "vfio": "unexpected", "xbzrle-cache": 5, "blocked-reasons": [],
    }
    fake = FakeQMP(path, {
        "query-migrate": info,
        "query-migrate-capabilities": [{"capability": "events", "state": True},
                                       {"capability": "xbzrle", "state": False}, 7],
        "query-migrate-parameters": {"downtime-limit": 300, "max-bandwidth": 0, "tls-creds": "",
                                     "x-kmig-send-mode": "copy\u001b[2J"},
    })
    try:
        p = kmig(["info", "--qmp", path])
        assert p.returncode == 0, p
        out = p.stdout
        # every parameter kmig has, in the table's order and units; one
        # it does not know (tls-creds) is not shown, escapes are replaced
        assert "parameters: max-bandwidth: 0 bytes/second downtime-limit: 300 ms" in out, out
        assert "tls-creds" not in out and "x-kmig-send-mode: copy" in out and "\x1b" not in out, out
        for want in ("capabilities: events: on", "downtime-limit: 300 ms",
                     "Migration status: active", "total time: 412 ms", "expected downtime: 38 ms",
                     "setup: 3 ms", "Remaining (bytes): 40000000", "transferred ram: 51258 kbytes",
                     "throughput: 1016.20 mbps", "remaining ram: 6372 kbytes", "dirty pages rate: 1950 pages",
                     "kmig:", "  ring-overflows: 2", "  stall: stalled=true iterations=7",
                     "device state save times: 4 devices, 200 us in all"):
            assert want in out, f"{want!r} missing from:\n{out}"
        rows = table_rows(out)
        assert [r[0] for r in rows] == ["cpu/0", "apic/0", "PCIBUS", "cpu_common/1"], out
        assert [r[1] for r in rows] == sorted((r[1] for r in rows), reverse=True)
        assert abs(rows[0][2] - 72.5) < 0.05 and abs(sum(r[2] for r in rows) - 100) < 0.3, rows
        assert "vfio" not in out and "cache size" not in out, out
        print("ok: kmig info against a fake server with every member:\n" + out)

        # migrate: the system-wide remaining and the stall signal in the progress
        n = {"i": 0}

        def migrate_info():
            n["i"] += 1
            if n["i"] < 4:
                return dict(info)
            done = {k: v for k, v in info.items() if k not in ("remaining", "expected-downtime")}
            done.update(status="completed", downtime=5, ram=dict(RAM, remaining=0))
            done["x-kmig-stall"] = {"stalled": False}
            return done
        fake.answers["query-migrate"] = migrate_info
        fake.answers["migrate"] = {}
        p = kmig(["migrate", "--qmp", path, "tcp:127.0.0.1:1"])
        assert p.returncode == 0, p
        active = [l for l in p.stdout.splitlines() if l.startswith("active")]
        assert active and all("remaining (RAM+devices) 38.1 MiB" in l and "STALLED" in l for l in active), p.stdout
        final = [l for l in p.stdout.splitlines() if l.startswith("completed")]
        assert final and "STALLED" not in final[0] and "remaining 0 B" in final[0], p.stdout
        print(f"ok: kmig migrate progress: {active[0]!r} / {final[0]!r}")

        # nothing but junk: printed as far as it makes sense, never a crash
        fake.answers["query-migrate"] = {"status": 3, "ram": "x", "total-time": "abc",
                                         "device-state-times": {"a": 1}, "x-kmig": [1]}
        fake.answers["query-migrate-capabilities"] = {"not": "a list"}
        fake.answers["query-migrate-parameters"] = Exception("no parameters here")
        p = kmig(["info", "--qmp", path])
        assert p.returncode == 0 and "Migration status: none" in p.stdout, p
        assert "total time" not in p.stdout and "transferred" not in p.stdout, p.stdout
        # no migration yet: {}
        fake.answers["query-migrate"] = {}
        p = kmig(["info", "--qmp", path])
        assert p.returncode == 0 and "Migration status: none" in p.stdout, p
        # query-migrate refused: an error
        fake.answers["query-migrate"] = Exception("not now")
        p = kmig(["info", "--qmp", path])
        assert p.returncode == 1 and "not now" in p.stderr, p
        print("ok: junk members ignored; {} shown as no migration; a QMP error exits 1")
    finally:
        fake.close()

    # unreachable sockets: nothing there, and a socket file nobody listens on
    p = kmig(["info", "--qmp", os.path.join(tmp, "nothing.qmp")])
    assert p.returncode == 1 and "cannot connect to QMP socket" in p.stderr and not p.stdout, p
    print(f"ok: unreachable -> exit 1: {p.stderr.strip()}")
    stale = os.path.join(tmp, "stale.qmp")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(stale)
    s.close()
    p = kmig(["info", "--qmp", stale])
    assert p.returncode == 1 and "cannot connect to QMP socket" in p.stderr, p
    p = kmig(["info"])
    assert p.returncode == 2 and "--qmp" in p.stderr, p
    p = kmig(["info", "--help"])
    assert p.returncode == 0 and "Usage: kmig info" in p.stdout, p


def option_checks(tmp):
    for args, rc, text in (
            (["--stats-period", "9", "--stats-file", "x"], 2, "invalid --stats-period"),
            (["--stats-period", "3600001", "--stats-file", "x"], 2, "invalid --stats-period"),
            (["--stats-period", "abc", "--stats-file", "x"], 2, "invalid --stats-period"),
            (["--stats-period", "100"], 2, "--stats-period needs --stats-file"),
            (["--stats-file", "/nonexistent/dir/s.jsonl"], 1, "cannot open stats file")):
        p = kmig(["run", "--guest", "idle"] + args)
        assert p.returncode == rc and text in p.stderr, (args, p)
        print(f"ok: kmig run {' '.join(args)} -> {rc}: {p.stderr.strip()}")
    p = kmig(["run", "--help"])
    assert "--stats-file PATH" in p.stdout and "x-kmig-timestamp-ms" in p.stdout, p.stdout


def read_lines(path):
    with open(path, "rb") as f:
        data = f.read()
    assert not data or data.endswith(b"\n"), "the last line is not whole"
    return [json.loads(l) for l in data.decode().splitlines()]


def main():
    tmp = tempfile.mkdtemp(prefix="kmig-info-")
    fake_server_checks(tmp)
    option_checks(tmp)
    require_kvm()

    wd = workdir("info-stats")
    src_stats = os.path.join(wd, "src-stats.jsonl")
    dst_stats = os.path.join(wd, "dst-stats.jsonl")
    with open(src_stats, "w") as f:
        f.write("left over from before\n")   # truncated at start
    period = 250
    port1, port2 = free_port(), free_port()
    start_ms = time.time() * 1000
    dst1 = Kmig(wd, "dst1", params="ws=32", incoming=f"tcp:127.0.0.1:{port1}")
    src = Kmig(wd, "src", params="ws=32",
               extra=["--stats-file", src_stats, "--stats-period", str(period)])
    dst2 = None
    try:
        src.wait_lines(r" ok$", 1)
        assert os.path.getsize(src_stats) == 0, "not truncated at start"
        umask = os.umask(0)
        os.umask(umask)
        assert stat.S_IMODE(os.stat(src_stats).st_mode) == 0o644 & ~umask

        # 1: slow, cancelled: its lines end with one 'cancelled' line
        src.qmp.cmd("migrate-set-parameters", **{"max-bandwidth": 8 << 20})
        src.qmp.cmd("migrate", uri=f"tcp:127.0.0.1:{port1}")
        time.sleep(0.8)
        src.qmp.cmd("migrate_cancel")
        assert wait_migration(src.qmp)["status"] == "cancelled"
        dst1.wait_exit(30)
        time.sleep(0.3)
        first = read_lines(src_stats)
        assert first and first[-1]["status"] == "cancelled", first[-1:]

        # 2: throttled for 1.5 s, then unlimited: completes
        dst2 = Kmig(wd, "dst2", params="ws=32", incoming=f"tcp:127.0.0.1:{port2}",
                    extra=["--stats-file", dst_stats])
        src.qmp.cmd("migrate", uri=f"tcp:127.0.0.1:{port2}")
        time.sleep(1.0)
        p = kmig(["info", "--qmp", src.qmp_path])
        assert p.returncode == 0 and "Migration status: active" in p.stdout, p
        assert "Remaining (bytes): " in p.stdout and "kmig:" in p.stdout, p.stdout
        print("kmig info while active (throttled):\n" + p.stdout)
        time.sleep(0.5)
        src.qmp.cmd("migrate-set-parameters", **{"max-bandwidth": 0})
        final = wait_migration(src.qmp)
        assert final["status"] == "completed", final
        time.sleep(0.3)   # a check of the stats file is at most 50 ms away
        lines = read_lines(src_stats)
        end_ms = time.time() * 1000

        # every line: a MigrationInfo with a status and the timestamp, in order
        assert len(lines) >= 2, lines
        stamps = [l["x-kmig-timestamp-ms"] for l in lines]
        assert all(isinstance(t, int) for t in stamps), stamps
        assert all(a <= b for a, b in zip(stamps, stamps[1:])), stamps
        assert start_ms - 1000 <= stamps[0] and stamps[-1] <= end_ms + 1000, (start_ms, stamps, end_ms)
        statuses = [l["status"] for l in lines]
        assert statuses.count("cancelled") == 1 and statuses.count("completed") == 1, statuses
        assert statuses[-1] == "completed" and statuses.index("cancelled") < len(statuses) - 1
        assert all(s in ("setup", "active", "cancelling", "device") for s in statuses
                   if s not in ("cancelled", "completed")), statuses
        second = lines[len(first):]
        running2 = [l for l in second if l["status"] == "active"]
        # 1.5 s and more at a 250 ms period
        assert len(running2) >= 4, statuses
        # the last line is query-migrate's answer, member for member
        last = dict(lines[-1])
        del last["x-kmig-timestamp-ms"]
        assert last == final, (last, final)
        assert last["ram"]["transferred"] == final["ram"]["transferred"]
        print(f"stats file: {len(lines)} lines ({len(first)} for the cancelled migration), "
              f"statuses {statuses[0]}..{statuses[-1]}, "
              f"{(stamps[-1] - stamps[0]) / 1000:.1f} s; last line == query-migrate "
              f"(transferred {final['ram']['transferred']})")
        gaps = [b - a for a, b in zip(stamps[len(first):], stamps[len(first) + 1:])]
        print(f"gaps between lines of the second migration (ms): {gaps}")

        # kmig info after completion
        p = kmig(["info", "--qmp", src.qmp_path])
        assert p.returncode == 0, p
        out = p.stdout
        assert "Migration status: completed" in out, out
        assert f"total time: {final['total-time']} ms" in out, out
        assert f"downtime: {final['downtime']} ms" in out, out
        assert f"transferred ram: {final['ram']['transferred'] >> 10} kbytes" in out, out
        assert "Remaining (bytes)" not in out or "remaining" in final
        if final.get("device-state-times"):
            rows = table_rows(out)
            assert len(rows) == len(final["device-state-times"]), out
            assert [r[1] for r in rows] == sorted((r[1] for r in rows), reverse=True), rows
            assert rows[0][1] == max(d["save-time"] for d in final["device-state-times"])
        print("kmig info on the source after completion:\n" + out)

        # the destination's own file: its migration, one final line
        dlines = read_lines(dst_stats)
        assert dlines and dlines[-1]["status"] == "completed", dlines[-1:]
        assert [l["status"] for l in dlines].count("completed") == 1
        p = kmig(["info", "--qmp", dst2.qmp_path])
        assert p.returncode == 0 and "Migration status: completed" in p.stdout, p
        print(f"destination stats file: {len(dlines)} lines, last {dlines[-1]['status']}")
    finally:
        src.stop()
        dst1.stop()
        if dst2:
            dst2.stop()
    # a quit after completion adds nothing
    assert read_lines(src_stats) == lines
    print("kmig info and --stats-file: all checks passed")


if __name__ == "__main__":
    main()
