#!/usr/bin/env python3
"""Every query-migrate answer kmig gives, on both sides of a migration and
in every state a test can reach (no migration yet, waiting for one, active,
completed, failed, cancelled), must be a MigrationInfo as QEMU's own QAPI
schema declares it: the schema file is read and parsed here
(qapi_schema.py), not copied.  design.md, "Compatibility contract".

Allowed beyond the schema:
  - the seeds' two MigrationInfo members, typed as in their patches:
    'remaining' (uint64) and 'device-state-times'
    ([{name: str, instance-id: uint32, save-time: uint64}]); optional
    (not every kmig emits them yet), but checked when present;
  - members named 'x-kmig*': kmig's own, documented extensions, opaque
    here (a JSON object or scalar).
Anything else undeclared is an error, and so is a declared member of the
wrong type.  Which members are present follows QEMU's
fill_source_migration_info()/fill_destination_migration_info() too.

The schema: $KMIG_QAPI_SCHEMA, else /work/shared/reference/
qemu-qapi-migration.json; exit 77 (skip) when neither exists, or when
/dev/kvm is unusable."""
import json
import os
import re
import sys
import time
from collections import Counter

from kmiglib import QMP, Kmig, Proxy, free_port, require_kvm, skip, wait_dest_running, workdir
from qapi_schema import Schema, opaque_extension, validate

# shared/ sits beside the repository (the work tree, and CI's fresh clone);
# a clone made elsewhere finds the workplace's copy
SCHEMA_CANDIDATES = [
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared",
                 "reference", "qemu-qapi-migration.json"),
    "/work/shared/reference/qemu-qapi-migration.json",
]
DEFAULT_SCHEMA = next((p for p in SCHEMA_CANDIDATES if os.path.exists(p)), SCHEMA_CANDIDATES[0])

# The seeds' type (seeds/device-state-times.patch.txt, its qapi/migration.json
# hunk); used only when the reference schema does not define it itself.
SEED_SCHEMA = """
{ 'struct': 'DeviceSaveStateTime',
  'data': { 'name': 'str', 'instance-id': 'uint32', 'save-time': 'uint64' } }
"""

# MigrationInfo's socket-address is a [SocketAddress], defined in QEMU's
# qapi/sockets.json, which the migration schema includes but this copy does
# not hold: its shape, as QEMU 7.2..10 define it.
SOCKETS_SCHEMA = """
{ 'enum': 'SocketAddressType', 'data': [ 'inet', 'unix', 'vsock', 'fd' ] }
{ 'struct': 'InetSocketAddressBase', 'data': { 'host': 'str', 'port': 'str' } }
{ 'struct': 'InetSocketAddress', 'base': 'InetSocketAddressBase',
  'data': { '*numeric': 'bool', '*to': 'uint16', '*ipv4': 'bool', '*ipv6': 'bool',
            '*keep-alive': 'bool' } }
{ 'struct': 'UnixSocketAddress', 'data': { 'path': 'str', '*abstract': 'bool', '*tight': 'bool' } }
{ 'struct': 'VsockSocketAddress', 'data': { 'cid': 'str', 'port': 'str' } }
{ 'struct': 'FdSocketAddress', 'data': { 'str': 'str' } }
{ 'union': 'SocketAddress', 'base': { 'type': 'SocketAddressType' }, 'discriminator': 'type',
  'data': { 'inet': 'InetSocketAddress', 'unix': 'UnixSocketAddress',
            'vsock': 'VsockSocketAddress', 'fd': 'FdSocketAddress' } }
"""

EXTENSIONS = {
    "MigrationInfo": {
        "remaining": "uint64",
        "device-state-times": ["DeviceSaveStateTime"],
    },
    # kmig's own extensions, in any object: opaque here
    "*": {"x-kmig*": opaque_extension},
}

# Source states in which QEMU fills in the time and RAM stats
# (fill_source_migration_info: populate_time_info + populate_ram_info).
IN_PROGRESS = {"active", "cancelling", "postcopy-device", "postcopy-active", "pre-switchover",
               "device", "postcopy-paused", "postcopy-recover-setup", "postcopy-recover"}
TERMINAL = {"completed", "failed", "cancelled"}

# When the seeds' members appear: remaining from populate_global_info(), in
# the in-progress branch only; device-state-times in the completed branch only.
SEED_PRESENCE_RULES = True

SLOW_BW = 8 << 20          # max-bandwidth while the 'active' state is sampled
ACTIVE_SAMPLES = 8


# ---- a QMP client that also notices duplicate member names ---------------

class DupDict(dict):
    dups = ()


def _pairs(pairs):
    d = DupDict()
    dups = []
    for k, v in pairs:
        if k in d:
            dups.append(k)
        d[k] = v
    if dups:
        d.dups = dups
    return d


class StrictQMP(QMP):
    def _read(self):
        while b"\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("QMP connection closed")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line, object_pairs_hook=_pairs)


class StrictKmig(Kmig):
    @property
    def qmp(self):
        if self._qmp is None:
            self._qmp = StrictQMP(self.qmp_path)
        return self._qmp


def duplicate_members(value, path="$"):
    out = []
    if isinstance(value, dict):
        for k in getattr(value, "dups", ()):
            out.append(f"{path}: member {k!r} appears more than once")
        for k, v in value.items():
            out += duplicate_members(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += duplicate_members(v, f"{path}[{i}]")
    return out


# ---- presence rules --------------------------------------------------------

def presence_errors(info, side):
    st = info.get("status")
    errs = []

    def need(member, why):
        if member not in info:
            errs.append(f"$: {member!r} is missing; {why}")

    def forbid(member, why):
        if member in info:
            errs.append(f"$: {member!r} is present; {why}")

    if st == "none":
        errs.append("$: 'status': 'none' is never returned by QEMU: before any migration "
                    "query-migrate returns {} (status absent)")
    if side == "source":
        if st in IN_PROGRESS or st == "completed":
            need("ram", f"QEMU always reports 'ram' when status is {st!r}")
        else:
            forbid("ram", f"QEMU reports 'ram' only while active or when completed (status {st!r})")
        if st in IN_PROGRESS - {"postcopy-active"}:
            need("expected-downtime", f"QEMU always reports it while status is {st!r}")
        else:
            forbid("expected-downtime", f"QEMU reports it only while active (status {st!r})")
        if st == "completed":
            need("downtime", "QEMU always reports it when completed")
        elif st != "postcopy-active":
            forbid("downtime", f"QEMU reports it only when completed (status {st!r})")
    else:
        for m in ("ram", "downtime", "expected-downtime"):
            forbid(m, f"QEMU's destination never reports it (status {st!r})")
    if st != "failed":
        forbid("error-desc", f"QEMU reports it only when failed (status {st!r})")
    if SEED_PRESENCE_RULES:
        if not (side == "source" and st in IN_PROGRESS):
            forbid("remaining", "the seed reports it (populate_global_info) only on the source "
                   f"while migration is in progress ({side}, status {st!r})")
        if not (side == "source" and st == "completed"):
            forbid("device-state-times", "the seed reports it only on the source once completed "
                   f"({side}, status {st!r})")
    return errs


# ---- the checker -------------------------------------------------------------

class Checker:
    def __init__(self, schema):
        self.schema = schema
        self.counts = Counter()
        self.members_seen = Counter()
        self.samples = {}
        self.errors = []

    def query(self, k, side, label, waiting=False):
        info = k.qmp.cmd("query-migrate")
        self.check(info, side, label, waiting)
        return info

    def check(self, info, side, label, waiting=False):
        st = info.get("status", "(absent)") if isinstance(info, dict) else "(not an object)"
        errs = validate(info, "MigrationInfo", self.schema, "$", EXTENSIONS)
        errs += duplicate_members(info)
        if isinstance(info, dict):
            errs += presence_errors(info, side)
            if waiting and info.get("status") not in (None, "setup"):
                # measured: QEMU 7.2 -incoming tcp:... answers {} (plus
                # socket-address) until the source connects; 'active' means
                # a stream is being loaded
                errs.append(f"$.status: {info.get('status')!r} while the destination is still "
                            "waiting for the source to connect; QEMU reports no status (or "
                            "'setup') until the stream arrives")
            for m in ("remaining", "device-state-times"):
                if m in info:
                    self.members_seen[m] += 1
            for m in info:
                if m.startswith("x-kmig"):
                    self.members_seen[m] += 1
        key = (side, st + (" (before the source connected)" if waiting else ""))
        self.counts[key] += 1
        self.samples.setdefault(key, info)
        n = self.counts[key]
        for e in errs:
            self.errors.append(f"[{label}: {side}, status {st}, response #{n}] {e}")

    def wait_terminal(self, k, label, timeout=120):
        deadline = time.time() + timeout
        while True:
            info = self.query(k, "source", label)
            if info.get("status") in TERMINAL:
                return info
            if time.time() > deadline:
                raise AssertionError(f"{label}: migration did not finish in {timeout}s: {info}")
            time.sleep(0.05)


# ---- the parser and the validator check themselves first -------------------

def self_check(schema):
    problems = []
    info = schema.struct("MigrationInfo")
    stats = schema.struct("MigrationStats")
    if info is None or stats is None:
        return ["the schema defines no MigrationInfo or no MigrationStats"]
    im, sm = schema.members("MigrationInfo"), schema.members("MigrationStats")
    if len(im) < 15:
        problems.append(f"MigrationInfo: only {len(im)} members parsed")
    if any(not m.optional for m in im.values()):
        problems.append("MigrationInfo: every member should be optional ({} is valid)")
    if len(sm) < 12:
        problems.append(f"MigrationStats: only {len(sm)} members parsed")
    for name, typ in (("transferred", "int"), ("remaining", "int"), ("total", "int"),
                      ("mbps", "number"), ("dirty-sync-count", "int")):
        m = sm.get(name)
        if m is None or m.type != typ or m.optional:
            problems.append(f"MigrationStats.{name}: expected required {typ}, parsed {m}")
    for name, typ in (("status", "MigrationStatus"), ("ram", "MigrationStats"),
                      ("downtime", "int"), ("error-desc", "str"), ("blocked-reasons", ["str"]),
                      ("postcopy-latency", "uint64")):
        if name not in im or im[name].type != typ:
            problems.append(f"MigrationInfo.{name}: expected {typ}, parsed {im.get(name)}")
    st = schema.enum("MigrationStatus")
    if st is None or not {"none", "setup", "active", "completed", "failed", "cancelled",
                          "cancelling", "device"} <= set(st.values):
        problems.append(f"MigrationStatus: parsed {st and st.values}")
    if schema.command_returns("query-migrate") != "MigrationInfo":
        problems.append("query-migrate should return MigrationInfo")

    ram = {k: 0 for k in sm}
    ram["mbps"] = 1.5
    good = [
        {},
        {"status": "failed", "error-desc": "x"},
        {"status": "active", "ram": ram, "expected-downtime": 300, "remaining": 0,
         "x-kmig": {"a": [1]}, "x-kmig-note": "s"},
        {"status": "completed", "ram": dict(ram, mbps=0), "downtime": 1,
         "device-state-times": [{"name": "cpu", "instance-id": 0, "save-time": 12}]},
    ]
    bad = [
        {"status": "nonsense"},
        {"status": True},
        {"total-time": 1.0},
        {"total-time": True},
        {"postcopy-blocktime": -1},
        {"postcopy-blocktime": 1 << 32},
        {"ram": dict(ram, transferred="1")},
        {"ram": dict(ram, mbps=float("nan"))},
        {"ram": {k: v for k, v in ram.items() if k != "total"}},
        {"ram": dict(ram, skipped=0)},
        {"blocked-reasons": "x"},
        {"unknown-member": 1},
        {"remaining": -1},
        {"remaining": 1.0},
        {"device-state-times": [{"name": "cpu", "instance-id": 1 << 32, "save-time": 1}]},
        {"device-state-times": [{"name": "cpu", "instance-id": 0}]},
        {"device-state-times": {"name": "cpu", "instance-id": 0, "save-time": 1}},
        {"device-state-times": [{"name": "cpu", "instance-id": 0, "save-time": 1, "x": 1}]},
        {"x-kmig": None},
        {"x-kmig": None},
        {"xkmig": {}},
    ]
    for v in good:
        errs = validate(v, "MigrationInfo", schema, "$", EXTENSIONS)
        if errs:
            problems.append(f"validator rejects a conforming value {v}: {errs}")
    for v in bad:
        if not validate(v, "MigrationInfo", schema, "$", EXTENSIONS):
            problems.append(f"validator accepts a non-conforming value {v}")
    if not presence_errors({"status": "active"}, "source"):
        problems.append("presence rules accept 'active' without ram")
    if not presence_errors({"status": "cancelled", "downtime": 1}, "source"):
        problems.append("presence rules accept downtime when cancelled")
    if not duplicate_members(json.loads('{"a": {"b": 1, "b": 2}}', object_pairs_hook=_pairs)):
        problems.append("duplicate member names go unnoticed")
    return problems


# ---- the scenarios ----------------------------------------------------------

def completed(ck, wd):
    label = "completed"
    port = free_port()
    dst = StrictKmig(wd, "c-dst", params="ws=32", incoming=f"tcp:127.0.0.1:{port}")
    src = StrictKmig(wd, "c-src", params="ws=32")
    try:
        src.wait_lines(r" ok$", 1)
        for _ in range(2):
            ck.query(src, "source", label + "/before")
            ck.query(dst, "destination", label + "/waiting", waiting=True)
        src.qmp.cmd("migrate-set-parameters", **{"max-bandwidth": SLOW_BW})
        src.qmp.cmd("migrate", uri=f"tcp:127.0.0.1:{port}")
        active = 0
        deadline = time.time() + 30
        while active < ACTIVE_SAMPLES and time.time() < deadline:
            info = ck.query(src, "source", label + "/during")
            if info.get("status") in TERMINAL:
                break
            active += info.get("status") == "active"
            ck.query(dst, "destination", label + "/during")
            time.sleep(0.2)
        if active < 3:
            ck.errors.append(f"[{label}] saw only {active} 'active' answers at {SLOW_BW >> 20} MiB/s "
                             "(the test could not sample the active state)")
        src.qmp.cmd("migrate-set-parameters", **{"max-bandwidth": 0})
        info = ck.wait_terminal(src, label + "/during")
        assert info["status"] == "completed", f"{label}: {info}"
        for _ in range(3):
            ck.query(src, "source", label + "/after")
        deadline = time.time() + 20
        while ck.query(dst, "destination", label + "/after").get("status") != "completed":
            assert time.time() < deadline, "destination never reported completed"
            time.sleep(0.05)
        for _ in range(2):
            ck.query(dst, "destination", label + "/after")
        wait_dest_running(dst)
        dst.wait_lines(r" ok$", 1)
        assert not dst.failures() and not src.failures()
    finally:
        src.stop()
        dst.stop()


def failed(ck, wd):
    label = "failed"
    port = free_port()
    dst = StrictKmig(wd, "f-dst", params="ws=16", incoming=f"tcp:127.0.0.1:{port}")
    src = StrictKmig(wd, "f-src", params="ws=16")
    proxy = Proxy(port, cut_at=5000)
    try:
        src.wait_lines(r" ok$", 1)
        ck.query(src, "source", label + "/before")
        ck.query(dst, "destination", label + "/waiting", waiting=True)
        src.qmp.cmd("migrate", uri=f"tcp:127.0.0.1:{proxy.port}")
        info = ck.wait_terminal(src, label)
        assert info["status"] == "failed", f"{label}: {info}"
        for _ in range(3):
            ck.query(src, "source", label + "/after")
        assert dst.wait_exit(30) == 1, "destination should refuse a cut stream"
        assert src.qmp.cmd("query-status")["status"] == "running"
    finally:
        src.stop()
        dst.stop()


def cancelled(ck, wd):
    label = "cancelled"
    port = free_port()
    dst = StrictKmig(wd, "x-dst", params="ws=32", incoming=f"tcp:127.0.0.1:{port}")
    src = StrictKmig(wd, "x-src", params="ws=32")
    try:
        src.wait_lines(r" ok$", 1)
        ck.query(src, "source", label + "/before")
        ck.query(dst, "destination", label + "/waiting", waiting=True)
        src.qmp.cmd("migrate-set-parameters", **{"max-bandwidth": SLOW_BW})
        src.qmp.cmd("migrate", uri=f"tcp:127.0.0.1:{port}")
        deadline = time.time() + 20
        while True:
            info = ck.query(src, "source", label + "/during")
            if (info.get("status") == "active"
                    and info.get("ram", {}).get("transferred", 0) > (1 << 20)):
                break
            assert info.get("status") not in TERMINAL, f"{label}: ended before cancel: {info}"
            assert time.time() < deadline, f"{label}: never active: {info}"
            time.sleep(0.05)
        src.qmp.cmd("migrate_cancel")
        info = ck.wait_terminal(src, label + "/cancelling")
        assert info["status"] == "cancelled", f"{label}: {info}"
        for _ in range(3):
            ck.query(src, "source", label + "/after")
        assert src.qmp.cmd("query-status")["status"] == "running"
        dst.wait_exit(30)
    finally:
        src.stop()
        dst.stop()


def main():
    path = os.environ.get("KMIG_QAPI_SCHEMA", DEFAULT_SCHEMA)
    if not os.path.exists(path):
        skip(f"QEMU's QAPI schema {path} is not here (set KMIG_QAPI_SCHEMA)")
    schema = Schema.from_file(path)
    if "DeviceSaveStateTime" not in schema.types:
        schema.add_source(SEED_SCHEMA, "<seed: device-state-times>")
    if "SocketAddress" not in schema.types:
        schema.add_source(SOCKETS_SCHEMA, "<qapi/sockets.json: SocketAddress>")
    problems = self_check(schema)
    if problems:
        print("the schema parser or validator is broken:")
        for p in problems:
            print("  " + p)
        sys.exit(1)
    print(f"schema {path}: {len(schema.types)} types, {len(schema.commands)} commands; "
          f"MigrationInfo {len(schema.members('MigrationInfo'))} members, "
          f"MigrationStats {len(schema.members('MigrationStats'))} members"
          + (f"; not read: {', '.join(schema.includes)} (defines "
             f"{', '.join(schema.undefined_types())})" if schema.includes else ""))

    require_kvm()
    wd = workdir("qapi")
    ck = Checker(schema)
    for scenario in (completed, failed, cancelled):
        scenario(ck, wd)

    print("query-migrate answers validated against MigrationInfo:")
    order = ["(absent)", "none", "setup", "active", "cancelling", "device", "completed",
             "failed", "cancelled"]

    def rank(key):
        st = key[1].split(" ")[0]
        return (key[1] == st, order.index(st) if st in order else 99)
    for side in ("source", "destination"):
        for key in sorted(ck.counts, key=rank):
            if key[0] == side:
                print(f"  {side:12} {key[1]:10} {ck.counts[key]:4}   "
                      f"e.g. {json.dumps(ck.samples[key])[:150]}")
    print(f"  total {sum(ck.counts.values())}")
    seen = ", ".join(f"{m} x{n}" for m, n in sorted(ck.members_seen.items())) or "none"
    print(f"extension members seen: {seen}")
    for m in ("remaining", "device-state-times"):
        if m not in ck.members_seen:
            print(f"  (kmig does not emit '{m}' yet: its type was not exercised)")

    if ck.errors:
        print(f"\n{len(ck.errors)} conformance errors:")
        for e in ck.errors:
            print("  " + e)
        # the same defect in many answers: one line each
        kinds = Counter(re.sub(r"-?\d+(\.\d+)?(e[-+]?\d+)?", "N", e.split("] ", 1)[1])
                        for e in ck.errors)
        print(f"\n{len(kinds)} distinct:")
        for k, n in kinds.most_common():
            print(f"  {n:4} x {k}")
        sys.exit(1)
    print("all conform")


if __name__ == "__main__":
    main()
