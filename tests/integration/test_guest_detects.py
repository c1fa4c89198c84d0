#!/usr/bin/env python3
"""The self-checking guest must *detect* damage, not hope it away.  A proxy
delivers a well-formed stream in which one working-set page is damaged in
every record that carries it: its bytes flipped, or the page replaced by a
zero-page header (a lost page).  The destination accepts the stream (it is
valid), and the guest, on its next pass over that page, prints FAIL and
exits with code 3."""
import re
import struct

from kmiglib import Kmig, Proxy, free_port, require_kvm, wait_migration, workdir

WS_BASE = 4 << 20      # verify's working set starts at 4 MiB (docs/guests.md)
# a bounded dirty rate, so that the migration through the Python proxy
# converges on an emulated CPU too (scripts/kvm-vm.sh: a few MB/s there)
WS_MIB = 8
RATE = 2


def damage(mode):
    state = {"target": None, "hits": 0}

    def mutate(kind, off, rec):
        if kind != "ram":
            return rec
        count = struct.unpack_from("<I", rec, 8)[0]
        hdrs = list(struct.unpack_from(f"<{count}Q", rec, 12))
        payload = 12 + 8 * count
        normal_idx = 0
        out_hdrs, out_pages = [], []
        for h in hdrs:
            gpa, zero = h & ~0xFFF, h & 1
            page = b"" if zero else rec[payload + 4096 * normal_idx: payload + 4096 * (normal_idx + 1)]
            if not zero:
                normal_idx += 1
            in_ws = WS_BASE <= gpa < WS_BASE + (WS_MIB << 20)
            if state["target"] is None and in_ws and not zero:
                state["target"] = gpa
            if gpa == state["target"]:
                state["hits"] += 1
                if mode == "flip" and not zero:
                    page = page[:100] + bytes([page[100] ^ 0xFF]) + page[101:]
                elif mode == "drop":
                    h, page = gpa | 1, b""
            out_hdrs.append(h)
            out_pages.append(page)
        return (rec[:12] + struct.pack(f"<{count}Q", *out_hdrs) + b"".join(out_pages))
    return mutate, state


def run(wd, mode):
    port = free_port()
    dst = Kmig(wd, f"dst-{mode}", params=f"ws={WS_MIB},rate={RATE}", incoming=f"tcp:127.0.0.1:{port}")
    src = Kmig(wd, f"src-{mode}", params=f"ws={WS_MIB},rate={RATE}")
    mutate, state = damage(mode)
    proxy = Proxy(port, mutate=mutate)
    try:
        src.wait_lines(r" ok$", 1)
        src.qmp.cmd("migrate", uri=f"tcp:127.0.0.1:{proxy.port}")
        info = wait_migration(src.qmp)
        assert info["status"] == "completed", info
        assert state["target"] is not None and state["hits"] > 0
        code = dst.wait_exit(60)
        fails = dst.failures()
        assert code == 3, f"{mode}: guest should exit 3 after detecting the damage, got {code}; " \
                          f"serial: {dst.lines()[-3:]}"
        m = re.search(r"page=0x([0-9a-fA-F]+)", fails[0]) if fails else None
        assert m and int(m.group(1), 16) == state["target"], fails
        print(f"ok: {mode} page 0x{state['target']:x} (in {state['hits']} records): guest said {fails[0]!r}")
    finally:
        src.stop()
        dst.stop()


def main():
    require_kvm()
    wd = workdir("detect")
    run(wd, "flip")
    run(wd, "drop")


if __name__ == "__main__":
    main()
