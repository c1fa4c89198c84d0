#!/usr/bin/env python3
"""A migration driver written for QEMU's QMP, as management tools write
them: it knows nothing of kmig.  It takes the source and destination
command lines (with @QMP@ for the QMP socket path and @PORT@ for the
migration port), and drives them purely over QMP.

    qemu_style_migrate.py --src 'CMD ...' --dst 'CMD ...'

Checks: greeting, negotiation, query-status, migrate-set-parameters,
query-migrate-parameters, migrate, polling query-migrate until
completed, MigrationInfo member types per QEMU's schema, final states
(source postmigrate, destination running)."""
import argparse
import json
import shlex
import socket
import subprocess
import sys
import tempfile
import time

from kmiglib import free_port


class QMP:
    def __init__(self, path):
        for _ in range(600):
            try:
                self.s = socket.socket(socket.AF_UNIX)
                self.s.connect(path)
                break
            except OSError:
                self.s.close()
                time.sleep(0.05)
        else:
            raise SystemExit(f"no QMP socket at {path}")
        self.f = self.s.makefile("rw")
        greeting = json.loads(self.f.readline())
        assert set(greeting["QMP"]) >= {"version", "capabilities"}, greeting
        self.version = greeting["QMP"]["version"]
        self.execute("qmp_capabilities")

    def execute(self, cmd, **arguments):
        msg = {"execute": cmd, "id": f"{cmd}-{time.time()}"}
        if arguments:
            msg["arguments"] = arguments
        self.f.write(json.dumps(msg) + "\n")
        self.f.flush()
        while True:
            r = json.loads(self.f.readline())
            if "event" in r:
                assert set(r["timestamp"]) == {"seconds", "microseconds"}, r
                continue
            assert r.get("id") == msg["id"], (msg, r)
            if "error" in r:
                raise RuntimeError(f"{cmd}: {r['error']['class']}: {r['error']['desc']}")
            return r["return"]


INT_FIELDS = ["transferred", "remaining", "total", "duplicate", "normal", "normal-bytes",
              "dirty-sync-count", "page-size", "pages-per-second"]


def check_types(info):
    assert isinstance(info["status"], str)
    for k in ("total-time", "setup-time", "expected-downtime", "downtime"):
        if k in info:
            assert isinstance(info[k], int) and info[k] >= 0, (k, info[k])
    if "ram" in info:
        for k in INT_FIELDS:
            assert isinstance(info["ram"][k], int) and info["ram"][k] >= 0, (k, info["ram"])
        assert isinstance(info["ram"]["mbps"], (int, float))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", required=True)
    ap.add_argument("--dst", required=True)
    ap.add_argument("--ready", help="wait until the source's serial log has this text")
    ap.add_argument("--serial", help="source serial log path (with @DIR@)")
    ap.add_argument("--defer", action="store_true",
                    help="the destination was started with 'incoming defer': send migrate-incoming")
    args = ap.parse_args()
    d = tempfile.mkdtemp(prefix="qmpdrv-")
    port = free_port()

    def expand(cmd, name):
        return [a.replace("@QMP@", f"{d}/{name}.qmp").replace("@PORT@", str(port))
                .replace("@DIR@", d) for a in shlex.split(cmd)]
    dst = subprocess.Popen(expand(args.dst, "dst"))
    src = subprocess.Popen(expand(args.src, "src"))
    try:
        sq, dq = QMP(f"{d}/src.qmp"), QMP(f"{d}/dst.qmp")
        assert dq.execute("query-status")["status"] == "inmigrate"
        if args.defer:
            dq.execute("migrate-incoming", uri=f"tcp:127.0.0.1:{port}")
        if args.ready:
            log = args.serial.replace("@DIR@", d)
            for _ in range(6000):
                try:
                    if args.ready in open(log, errors="replace").read():
                        break
                except FileNotFoundError:
                    pass
                time.sleep(0.1)
        st = sq.execute("query-status")
        assert st["status"] == "running" and st["running"] is True, st
        assert sq.execute("query-migrate") == {}
        sq.execute("migrate-set-parameters", **{"downtime-limit": 500, "max-bandwidth": 1 << 34})
        p = sq.execute("query-migrate-parameters")
        assert p["downtime-limit"] == 500 and p["max-bandwidth"] == 1 << 34, p
        sq.execute("migrate", uri=f"tcp:127.0.0.1:{port}")
        while True:
            info = sq.execute("query-migrate")
            check_types(info)
            if info["status"] in ("completed", "failed", "cancelled"):
                break
            time.sleep(0.1)
        assert info["status"] == "completed", info
        assert "downtime" in info and "total-time" in info, info
        assert sq.execute("query-status")["status"] == "postmigrate"
        for _ in range(100):
            if dq.execute("query-status")["status"] == "running":
                break
            time.sleep(0.1)
        assert dq.execute("query-status")["status"] == "running"
        print(f"{sq.version}: migrated in {info['total-time']} ms, downtime {info['downtime']} ms, "
              f"{info['ram']['transferred']} bytes")
        for q in (sq, dq):
            q.execute("quit")
    finally:
        for p in (src, dst):
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    sys.exit(main())
