#!/usr/bin/env python3
"""Hostile and broken migration streams.  A proxy between source and
destination cuts the stream at random points or rewrites records, on the
main connection and (multifd) on the RAM channels.  Every time: the
destination refuses with a clear error, writes nothing outside guest RAM,
never starts its guest and exits 1; the source reports 'failed' and its
guest keeps running, still correct.  A connection that does not even open
like a migration (a bad magic, cut inside the header) is dropped instead:
the destination says so, keeps waiting, and then takes the real source."""
import random
import struct
import sys

from kmiglib import (Kmig, Proxy, free_port, require_kvm, verify_passes, wait_dest_running, wait_migration,
                     wait_text, workdir)

MAX_DEVICE = 1 << 20


def patch(rec, off, fmt, value):
    b = bytearray(rec)
    struct.pack_into(fmt, b, off, value)
    return bytes(b)


def first(kind_wanted, fn):
    """Apply fn to the first record of a kind; forward the rest."""
    state = {"done": False}

    def mutate(kind, off, rec):
        if kind == kind_wanted and not state["done"]:
            state["done"] = True
            return fn(rec)
        return rec
    return mutate


def nth(kind_wanted, n, fn):
    state = {"seen": 0}

    def mutate(kind, off, rec):
        if kind == kind_wanted:
            state["seen"] += 1
            if state["seen"] == n:
                return fn(rec)
        return rec
    return mutate


# The source opens its connection with the 32-byte stream header and the
# type of its first record; a connection that does not is no migration:
# the destination drops it and goes on waiting for the real source.
OPENING = 36

# (name, proxy kwargs, what the destination must say when it drops it)
DROPPED_CASES = [
    ("bad magic", dict(mutate=first("header", lambda r: b"NOTKMIG!" + r[8:])),
     "did not open with a kmig stream header"),
    ("header only", dict(cut_at=32), "closed after 32 of the 36 bytes"),
]

CASES = [
    # (name, proxy kwargs, what the destination must say)
    ("unsupported version", dict(mutate=first("header", lambda r: patch(r, 8, "<I", 7))), "version"),
    ("guest size mismatch", dict(mutate=first("header", lambda r: patch(r, 16, "<Q", 512 << 20))), "MiB"),
    ("unknown section", dict(mutate=first("section", lambda r: r[:24] + b"x" + r[25:])), "unknown section"),
    ("duplicate section", dict(mutate=first("section", lambda r: r + r)), "duplicate section"),
    ("page outside guest RAM", dict(mutate=first("ram", lambda r: patch(r, 12, "<Q", 0x7fff00000000))),
     "outside guest RAM"),
    ("page just past the end of RAM", dict(mutate=first("ram", lambda r: patch(r, 12, "<Q", 256 << 20))),
     "outside guest RAM"),
    ("device state past its bound", dict(mutate=first("device", lambda r: patch(r, 8, "<I", MAX_DEVICE + 1))),
     "exceeds"),
    ("torn device state", dict(mutate=nth("device", 2, lambda r: patch(r, 12, "<I", 0xdead))), "state"),
    ("device sent twice", dict(mutate=first("device", lambda r: r + r)), "twice"),
    ("cut inside a device record", dict(mutate=first("device", lambda r: (r[: len(r) // 2], "cut"))),
     "truncated"),
    ("cut before the end marker", dict(mutate=first("eof", lambda r: None)), "truncated"),
    ("end marker with wrong page count", dict(mutate=first("eof", lambda r: patch(r, 12, "<Q", 1))),
     "does not match"),
]

# The same, with RAM on 2 channels (multifd): the channels' own records.
MULTIFD_CASES = [
    ("channel from another migration", dict(mutate=first("chan-hello", lambda r: patch(r, 16, "<Q", 42))),
     "does not belong"),
    ("channel with a bad magic", dict(mutate=first("chan-hello", lambda r: b"KMIGSTRM" + r[8:])),
     "bad channel magic"),
    ("more channels announced than open", dict(mutate=first("channels", lambda r: patch(r, 4, "<I", 3))),
     "does not belong"),
    ("CHANNELS record twice", dict(mutate=first("channels", lambda r: r + r)), "sent twice"),
    ("page outside guest RAM on a channel",
     dict(mutate=first("chan-ram", lambda r: patch(r, 12, "<Q", 0x7fff00000000))), "outside guest RAM"),
    ("epoch out of order on a channel", dict(mutate=first("chan-pass-end", lambda r: patch(r, 4, "<I", 9))),
     "epoch"),
    ("channel end with wrong page count", dict(mutate=first("chan-eof", lambda r: patch(r, 12, "<Q", 7))),
     "does not match"),
    ("channel cut before its end", dict(mutate=first("chan-eof", lambda r: None)), "truncated"),
]


# Into a destination started with --mem-prealloc, which reads pages straight
# into its mapping instead of splicing them into the memfd: (name, proxy
# kwargs, expected text, channels)
PREALLOC_CASES = [
    ("page outside guest RAM", dict(mutate=first("ram", lambda r: patch(r, 12, "<Q", 0x7fff00000000))),
     "outside guest RAM", 0),
    ("cut inside page data", dict(cut_at=3 << 20), "truncated", 0),
    ("page outside guest RAM on a channel",
     dict(mutate=first("chan-ram", lambda r: patch(r, 12, "<Q", 0x7fff00000000))), "outside guest RAM", 2),
]


def dropped_case(wd, n, name, proxy_kw, expect):
    """The destination drops the connection, says why, and still takes the
    real source afterwards: nothing lost, its guest then runs."""
    port = free_port()
    dst = Kmig(wd, f"dst{n}", params="ws=16", incoming=f"tcp:127.0.0.1:{port}")
    src = Kmig(wd, f"src{n}", params="ws=16")
    proxy = Proxy(port, **proxy_kw)
    try:
        src.wait_lines(r" ok$", 1)
        src.qmp.cmd("migrate", uri=f"tcp:127.0.0.1:{proxy.port}")
        info = wait_migration(src.qmp)
        assert info["status"] == "failed", f"{name}: source status {info}"
        dropped = wait_text(dst.stderr_path, "dropped an incoming connection", 10)
        err = dst.stderr()
        assert dropped, f"{name}: the destination did not say it dropped the connection: {err!r}"
        assert expect in err, f"{name}: destination said: {err!r}"
        assert dst.proc.poll() is None, f"{name}: the destination exited ({dst.proc.returncode})"
        assert dst.qmp.cmd("query-status")["status"] == "inmigrate"
        assert not dst.lines(), f"{name}: destination guest ran: {dst.lines()}"
        # the real source, straight to the destination
        src.qmp.cmd("migrate", uri=f"tcp:127.0.0.1:{port}")
        info = wait_migration(src.qmp)
        assert info["status"] == "completed", f"{name}: then the real migration: {info}"
        wait_dest_running(dst)
        n_ok = len(dst.wait_lines(r" ok$", 1))
        dst.wait_lines(r" ok$", n_ok + 2, timeout=20)
        assert not dst.failures(), dst.failures()
        print(f"ok: {name}: destination dropped it ({err.strip().splitlines()[-1][:110]}), "
              f"then took the real source: completed, guest whole")
    finally:
        src.stop()
        dst.stop()


def run_case(wd, n, name, proxy_kw, expect, channels=0, dst_extra=()):
    port = free_port()
    dst = Kmig(wd, f"dst{n}", params="ws=16", incoming=f"tcp:127.0.0.1:{port}", extra=dst_extra)
    src = Kmig(wd, f"src{n}", params="ws=16")
    proxy = Proxy(port, **proxy_kw)
    try:
        src.wait_lines(r" ok$", 1)
        for side in (src, dst) if channels else ():
            side.qmp.cmd("migrate-set-capabilities", capabilities=[{"capability": "multifd", "state": True}])
            side.qmp.cmd("migrate-set-parameters", **{"multifd-channels": channels})
        src.qmp.cmd("migrate", uri=f"tcp:127.0.0.1:{proxy.port}")
        info = wait_migration(src.qmp)
        assert info["status"] == "failed", f"{name}: source status {info}"
        code = dst.wait_exit(30)
        assert code == 1, f"{name}: destination exit status {code}"
        err = dst.stderr()
        assert expect.lower() in err.lower(), f"{name}: destination said: {err!r}"
        assert not dst.lines(), f"{name}: destination guest ran: {dst.lines()}"
        # the source guest resumed and is still correct
        assert src.qmp.cmd("query-status")["status"] == "running"
        before = verify_passes(src.wait_lines(r" ok$")[-1])
        n_ok = len(src.wait_lines(r" ok$"))
        src.wait_lines(r" ok$", n_ok + 2, timeout=20)
        after = verify_passes(src.wait_lines(r" ok$")[-1])
        assert after > before and not src.failures()
        print(f"ok: {name}: destination refused ({err.strip().splitlines()[-1][:110]}); "
              f"source: {info.get('error-desc', '')[:80]!r}, guest still running")
    finally:
        src.stop()
        dst.stop()


def main():
    require_kvm()
    wd = workdir("badstream")
    n = 0
    for name, kw, expect in DROPPED_CASES:
        dropped_case(wd, n, name, kw, expect)
        n += 1
    for name, kw, expect in CASES:
        run_case(wd, n, name, kw, expect)
        n += 1
    for name, kw, expect in MULTIFD_CASES:
        run_case(wd, n, "multifd: " + name, kw, expect, channels=2)
        n += 1
    for name, kw, expect, channels in PREALLOC_CASES:
        run_case(wd, n, "preallocated: " + name, kw, expect, channels=channels, dst_extra=["--mem-prealloc"])
        n += 1
    rng = random.Random(int(sys.argv[1]) if len(sys.argv) > 1 else 4242)
    for i in range(6):
        cut = rng.choice([rng.randrange(1, 32), rng.randrange(32, 4096), rng.randrange(4096, 8 << 20)])
        if cut < OPENING:
            dropped_case(wd, n, f"cut at byte {cut}", dict(cut_at=cut), f"closed after {cut} of the 36 bytes")
        else:
            run_case(wd, n, f"cut at byte {cut}", dict(cut_at=cut), "truncated")
        n += 1
    print(f"{n} broken streams refused; source guest kept running every time")


if __name__ == "__main__":
    main()
