#!/usr/bin/env python3
"""The fast RAM paths: every way RAM can leave the source must deliver the
same memory.

verify part: for every send mode (copy, zero-copy) x channels (1 = one
stream, no multifd; N > 1 = the multifd capability with multifd-channels=N)
x dirty backend (ring, bitmap), live-migrate the self-checking 'verify'
guest (2 vCPUs rewriting 32 MiB as fast as they can) with a first second of
precopy throttled to 16 MB/s, so that pages are dirtied while they are in
flight and sent again.  Nothing may be lost: the destination's guest keeps
passing its checks for a while (a lost, stale, zeroed or torn page or a
corrupted register makes it print FAIL and exit 3), and both kmig
processes exit 0 after 'quit'.

scatter part: the 'idle' guest with fill=64 scatter=1 (docs/guests.md)
leaves pattern pages, zero pages that are populated, holes, and pages that
are zero but for their last dword.  After the migration, QEMU's pmemsave
dumps all of low RAM on the (postmigrate) source and on the destination:
the files must be byte-identical, and the fill area must hold exactly what
the guest wrote.  The source's counters must show the zero pages as
'duplicate', about fill/2 'normal' pages (the pattern and last-dword
pages, plus the guest image), and far fewer bytes than RAM (holes are
skipped, not sent as zero pages).  Where the host lets us see it (the
memfd's SEEK_DATA/SEEK_HOLE), the holes must still be holes afterwards on
both sides: the source did not read them through its mapping, the
destination did not populate them.

How the knobs are set (QEMU's names; the destination starts with
'--incoming defer', gets its knobs, then migrate-incoming, as libvirt
drives QEMU; the source gets its knobs before migrate):
  channels > 1:  migrate-set-capabilities multifd=true and
                 migrate-set-parameters multifd-channels=N, on both ends;
  zero-copy:     with multifd, the capability zero-copy-send=true on the
                 source (QEMU's way); with one channel, kmig's parameter
                 x-kmig-send-mode=zero-copy;
  copy:          x-kmig-send-mode=copy on the source.  If this kmig does
                 not know x-kmig-send-mode, copy with one channel runs as
                 the default path (the only one such a kmig has), with a
                 NOTE; every other refusal is a failure.

prealloc (--prealloc): the destination runs with --mem-prealloc, so pages
arrive into memory that is already there: all of its RAM must be populated
before the migration (the memfd has no hole) and still after it, and the
checks above must hold all the same (scatter: the destination's never-
touched pages are populated zero pages there, by design, not holes).

usage: test_ram_paths.py [--part verify|scatter|all] [--modes copy,zero-copy]
                         [--channels 1,3] [--backends ring,bitmap] [--runs N]
                         [--prealloc]
Exit status: 0 all passed, 1 any failure, 77 skipped (no /dev/kvm, not root)."""
import argparse
import hashlib
import os
import struct
import sys
import time
import traceback

from kmiglib import (Kmig, QMPError, free_port, require_kvm, skip, verify_passes, wait_dest_running, wait_migration,
                     workdir)

PAGE = 4096
WS_BASE = 0x400000          # the guests' working area (docs/guests.md)
IDLE_XOR = 0xDEADBEEF
LOW_RAM_END = 3 << 30


class Refused(Exception):
    """kmig refused a knob this combination needs."""


# ---- setting the knobs ------------------------------------------------------

def configure(k, side, mode, channels):
    """Set what one end needs for (mode, channels); returns a description."""
    done = []
    caps = []
    if channels > 1:
        caps.append({"capability": "multifd", "state": True})
    if side == "src" and mode == "zero-copy" and channels > 1:
        caps.append({"capability": "zero-copy-send", "state": True})
    try:
        if caps:
            k.qmp.cmd("migrate-set-capabilities", capabilities=caps)
            done += [f"{c['capability']}=on" for c in caps]
        if channels > 1:
            k.qmp.cmd("migrate-set-parameters", **{"multifd-channels": channels})
            done.append(f"multifd-channels={channels}")
    except QMPError as e:
        raise Refused(f"{side}: {', '.join(c['capability'] for c in caps)} / multifd-channels={channels} "
                      f"refused: {e}")
    if side == "src" and not (mode == "zero-copy" and channels > 1):
        try:
            k.qmp.cmd("migrate-set-parameters", **{"x-kmig-send-mode": mode})
            done.append(f"x-kmig-send-mode={mode}")
        except QMPError as e:
            if mode == "copy" and channels == 1:
                print(f"  NOTE: {side}: x-kmig-send-mode refused ({e}); "
                      f"running the default path, which is the copy path of such a kmig")
                done.append("(default send path)")
            else:
                raise Refused(f"{side}: x-kmig-send-mode={mode} refused: {e}")
    return " ".join(done) or "(defaults)"


def describe_paths(info):
    """What kmig says it used, for the log only (names not final)."""
    k = info.get("x-kmig", {})
    words = ("mode", "channel", "zero", "zc", "multifd", "send")
    used = {n: v for n, v in k.items() if any(w in n for w in words)}
    ram = info.get("ram", {})
    used["multifd-bytes"] = ram.get("multifd-bytes")
    used["dirty-sync-missed-zero-copy"] = ram.get("dirty-sync-missed-zero-copy")
    return ", ".join(f"{n}={v}" for n, v in used.items())


def stop_both(src, dst):
    """quit both; returns their exit statuses (None if one had to be killed)."""
    codes = []
    for k in (src, dst):
        k.stop()
        codes.append(k.proc.returncode)
    return codes


# ---- part (a): the verify guest over every path ----------------------------

def verify_run(args, wd, mode, channels, backend, n):
    port = free_port()
    extra = ["--dirty-bitmap"] if backend == "bitmap" else ["--dirty-ring", "4096"]
    params = f"ws={args.ws},rate=0,lm=1"
    tag = f"{mode}-{channels}ch-{backend}-{n}"
    dst = Kmig(wd, f"dst-{tag}", params=params, mem=args.mem, vcpus=2, incoming="defer",
               extra=extra + dst_extra(args))
    src = Kmig(wd, f"src-{tag}", params=params, mem=args.mem, vcpus=2, extra=extra)
    try:
        knobs_dst = configure(dst, "dst", mode, channels)
        # listen only once configured, as libvirt does with QEMU
        dst.qmp.cmd("migrate-incoming", uri=f"tcp:127.0.0.1:{port}")
        knobs_src = configure(src, "src", mode, channels)
        src.wait_lines(r" ok$", 2)
        prealloc = check_preallocated(dst, args.mem, "before migrating") if args.prealloc else ""
        before = verify_passes(src.wait_lines(r" ok$")[-1])
        src.qmp.cmd("migrate-set-parameters", **{"downtime-limit": 300, "max-bandwidth": 16 << 20})
        src.qmp.cmd("migrate", uri=f"tcp:127.0.0.1:{port}")
        # a second of slow precopy while the guest dirties at full speed,
        # then the link opens up
        time.sleep(1)
        src.qmp.cmd("migrate-set-parameters", **{"max-bandwidth": 0})
        info = wait_migration(src.qmp)
        assert info["status"] == "completed", \
            f"migration did not complete: {info}; destination stderr: {dst.stderr().strip()[-600:]!r}"
        assert src.qmp.cmd("query-status")["status"] == "postmigrate"
        wait_dest_running(dst)
        # pages dirtied in flight were sent again: more than the working set
        ws_pages = args.ws << 8
        normal = info["ram"]["normal"]
        assert normal > ws_pages, (f"only {normal} pages sent for a {ws_pages}-page working set "
                                   f"rewritten during precopy: nothing was re-sent?")
        # the guest goes on, checking every page before it rewrites it
        lines = dst.wait_lines(r" ok$", 3, timeout=30)
        after = verify_passes(lines[-1])
        assert len(after) == 2 and all(a > b for a, b in zip(after, before)), (before, after)
        time.sleep(0.5)
        fails = dst.failures() + src.failures()
        assert not fails, f"guest reported: {fails}"
        if args.prealloc:
            check_preallocated(dst, args.mem, "after the migration")
        codes = stop_both(src, dst)
        assert codes == [0, 0], f"exit statuses after quit: source {codes[0]}, destination {codes[1]}"
        print(f"  ok   {tag}: dst [{knobs_dst}{' --mem-prealloc: ' + prealloc if prealloc else ''}] "
              f"src [{knobs_src}]; total {info['total-time']} ms, "
              f"downtime {info['downtime']} ms, {info['ram']['transferred'] >> 20} MiB, {normal} pages, "
              f"{info['ram']['dirty-sync-count']} syncs; passes {before} -> {after}; "
              f"used: {describe_paths(info)}")
    finally:
        src.stop()
        dst.stop()


# ---- part (b): scatter, pmemsave on both ends -------------------------------

def expected_fill_page(i):
    p = WS_BASE + i * PAGE
    v = struct.pack("<I", (p ^ IDLE_XOR) & 0xFFFFFFFF)
    kind = i % 4
    if kind == 0:
        return v * (PAGE // 4)
    if kind == 3:
        return bytes(PAGE - 4) + v
    return bytes(PAGE)


def dst_extra(args):
    return ["--mem-prealloc"] if args.prealloc else []


def check_preallocated(k, mem_mib, when):
    """--prealloc: the destination's whole RAM is populated (one data range
    covering the memfd), or an AssertionError saying when it was not."""
    ranges = memfd_data_ranges(k.proc.pid)
    if ranges is None:
        return "not observable"
    covered = sum(e - s for s, e in ranges)
    assert covered == mem_mib << 20, (f"destination started with --mem-prealloc has {covered >> 20} of "
                                      f"{mem_mib} MiB of RAM populated {when}")
    return "all RAM populated"


def memfd_data_ranges(pid):
    """The populated ranges of a kmig's guest-RAM memfd, [(start, end)], or
    None if it cannot be seen."""
    fd_dir = f"/proc/{pid}/fd"
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return None
    for n in names:
        try:
            target = os.readlink(os.path.join(fd_dir, n))
        except OSError:
            continue
        if not target.startswith("/memfd:kmig-guest-ram"):
            continue
        try:
            fd = os.open(os.path.join(fd_dir, n), os.O_RDONLY)
        except OSError:
            return None
        try:
            size = os.fstat(fd).st_size
            out, pos = [], 0
            while pos < size:
                try:
                    data = os.lseek(fd, pos, os.SEEK_DATA)
                except OSError:
                    break           # ENXIO: holes only from here
                hole = os.lseek(fd, data, os.SEEK_HOLE)
                out.append((data, hole))
                pos = hole
            return out
        finally:
            os.close(fd)
    return None


def populated(ranges, off):
    return any(s <= off < e for s, e in ranges)


def hole_pages_populated(pid, fill_pages):
    """How many of the never-touched pages (i%4 == 2) are populated in the
    memfd (low RAM: RAM offset = guest physical address), or None."""
    ranges = memfd_data_ranges(pid)
    if ranges is None:
        return None
    return sum(1 for i in range(2, fill_pages, 4) if populated(ranges, WS_BASE + i * PAGE))


def first_difference(a, b):
    with open(a, "rb") as fa, open(b, "rb") as fb:
        off = 0
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                for i in range(0, max(len(x), len(y)), PAGE):
                    if x[i:i + PAGE] != y[i:i + PAGE]:
                        return off + i
            if not x:
                return None
            off += len(x)


def check_fill_area(path, fill_pages):
    """The fill area as the guest wrote it; returns (bad pages, first bad gpa)."""
    bad, first = 0, None
    with open(path, "rb") as f:
        f.seek(WS_BASE)
        for i in range(fill_pages):
            if f.read(PAGE) != expected_fill_page(i):
                bad += 1
                first = first if first is not None else WS_BASE + i * PAGE
    return bad, first


def sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def scatter_run(args, wd, mode, channels, n):
    port = free_port()
    fill = args.fill
    fill_pages = fill << 8
    params = f"fill={fill},scatter=1,lm=1"
    tag = f"scatter-{mode}-{channels}ch-{n}"
    dst = Kmig(wd, f"dst-{tag}", guest="idle", params=params, mem=args.scatter_mem, vcpus=2,
               incoming="defer", extra=dst_extra(args))
    src = Kmig(wd, f"src-{tag}", guest="idle", params=params, mem=args.scatter_mem, vcpus=2)
    try:
        knobs_dst = configure(dst, "dst", mode, channels)
        # listen only once configured, as libvirt does with QEMU
        dst.qmp.cmd("migrate-incoming", uri=f"tcp:127.0.0.1:{port}")
        knobs_src = configure(src, "src", mode, channels)
        src.wait_lines(r"^idle: ready$", timeout=60)
        # are holes observable here?  (shmem THP, or a memfd we cannot
        # open, would hide them; then those checks are skipped)
        holes_before = hole_pages_populated(src.proc.pid, fill_pages)
        observable = holes_before == 0
        if not observable:
            print(f"  NOTE: holes not observable on this host (source: {holes_before} of the "
                  f"{fill_pages // 4} never-touched pages populated before migrating): hole checks skipped")
        if args.prealloc:
            check_preallocated(dst, args.scatter_mem, "before migrating")
        src.qmp.cmd("migrate", uri=f"tcp:127.0.0.1:{port}")
        info = wait_migration(src.qmp)
        assert info["status"] == "completed", \
            f"migration did not complete: {info}; destination stderr: {dst.stderr().strip()[-600:]!r}"
        assert src.qmp.cmd("query-status")["status"] == "postmigrate"
        wait_dest_running(dst)

        # memory first, before anything else can touch it
        low = min(args.scatter_mem << 20, LOW_RAM_END)
        files = {}
        for side, k in (("src", src), ("dst", dst)):
            if side == "dst" and args.prealloc:
                check_preallocated(dst, args.scatter_mem, "after the migration")
            elif observable:
                pop = hole_pages_populated(k.proc.pid, fill_pages)
                assert pop == 0, (f"{side}: {pop} of the {fill_pages // 4} never-touched pages are "
                                  f"populated after the migration"
                                  + (" (read through the mapping?)" if side == "src" else
                                     " (holes were sent or written)"))
            files[side] = os.path.join(wd, f"{tag}-{side}.bin")
            k.qmp.cmd("pmemsave", val=0, size=low, filename=files[side])
            assert os.path.getsize(files[side]) == low, f"{side}: pmemsave wrote the wrong size"
        diff = first_difference(files["src"], files["dst"])
        assert diff is None, (f"low RAM differs between source and destination, first at guest "
                              f"physical 0x{diff:x} (page {(diff - WS_BASE) // PAGE} of the fill area)"
                              if diff is not None and diff >= WS_BASE else
                              f"low RAM differs between source and destination at 0x{diff:x}")
        bad, first = check_fill_area(files["dst"], fill_pages)
        assert not bad, f"{bad} fill pages are not what the guest wrote, first at 0x{first:x}"
        digest = sha(files["src"])
        for f in files.values():
            os.unlink(f)

        # the counters: zero pages as headers, holes not at all
        ram = info["ram"]
        normal, dup, sent = ram["normal"], ram["duplicate"], ram["transferred"]
        want_normal = fill_pages // 2          # i%4 == 0 and i%4 == 3
        want_zero = fill_pages // 4            # i%4 == 1
        slack = args.slack << 8                # the image, stacks, page tables, low memory
        assert dup >= want_zero, (f"duplicate={dup}: the {want_zero} populated zero pages should go as "
                                  f"zero-page headers")
        assert dup <= want_zero + slack, (f"duplicate={dup}: far more than the {want_zero} zero pages "
                                          f"written: were holes sent as zero pages?")
        assert want_normal <= normal <= want_normal + slack, (
            f"normal={normal}, expected {want_normal} (+ up to {slack} for the guest image): "
            + ("a last-dword page taken for zero?" if normal < want_normal else "zero pages sent whole?"))
        assert sent < low // 4, (f"transferred {sent} bytes of {low} bytes of low RAM: holes were not "
                                 f"skipped?")
        assert sent >= normal * PAGE, f"transferred {sent} < {normal} whole pages"
        assert not src.failures() and not dst.failures()
        codes = stop_both(src, dst)
        assert codes == [0, 0], f"exit statuses after quit: source {codes[0]}, destination {codes[1]}"
        holes = ("not observable" if not observable else
                 "unpopulated on the source, the destination's all RAM (--mem-prealloc)" if args.prealloc
                 else "unpopulated on both ends")
        print(f"  ok   {tag}: dst [{knobs_dst}] src [{knobs_src}]; {low >> 20} MiB of low RAM identical "
              f"(sha256 {digest}), fill area as written; normal {normal} (pattern {want_normal}), "
              f"duplicate {dup} (zero pages {want_zero}), transferred {sent >> 10} KiB; holes "
              f"{holes}; used: {describe_paths(info)}")
    finally:
        src.stop()
        dst.stop()


# ---- driver -------------------------------------------------------------------

def csv(kind, allowed=None):
    def parse(s):
        items = [x.strip() for x in s.split(",") if x.strip()]
        if kind is int:
            items = [int(x) for x in items]
            if any(not 1 <= x <= 255 for x in items):
                raise argparse.ArgumentTypeError("channels must be 1..255")
        elif allowed and any(x not in allowed for x in items):
            raise argparse.ArgumentTypeError(f"choose from {','.join(allowed)}")
        if not items:
            raise argparse.ArgumentTypeError("empty list")
        return items
    return parse


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["verify", "scatter", "all"], default="all")
    ap.add_argument("--modes", type=csv(str, ["copy", "zero-copy"]), default=["copy", "zero-copy"])
    ap.add_argument("--channels", type=csv(int), default=[1, 3])
    ap.add_argument("--backends", type=csv(str, ["ring", "bitmap"]), default=["ring", "bitmap"])
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--prealloc", action="store_true",
                    help="destinations run with --mem-prealloc (all RAM populated before, and after)")
    ap.add_argument("--ws", type=int, default=32, help="verify: working set, MiB")
    ap.add_argument("--mem", type=int, default=256, help="verify: guest RAM, MiB")
    ap.add_argument("--fill", type=int, default=64, help="scatter: fill area, MiB")
    ap.add_argument("--scatter-mem", type=int, default=256, help="scatter: guest RAM, MiB")
    ap.add_argument("--slack", type=int, default=4,
                    help="scatter: MiB of pages beyond the fill area's that may be sent (image etc.)")
    args = ap.parse_args()
    require_kvm()
    if os.geteuid() != 0:
        skip("not root: the memfd checks read other processes' /proc/PID/fd")
    wd = workdir("ram-paths")
    results = []

    def run(name, fn, *a):
        t0 = time.time()
        try:
            fn(*a)
            results.append((name, True, ""))
        except Refused as e:
            print(f"  FAIL {name}: {e}")
            results.append((name, False, str(e)))
        except Exception as e:
            print(f"  FAIL {name}: {e}")
            traceback.print_exc(limit=2, file=sys.stdout)
            results.append((name, False, str(e)))
        print(f"       ({time.time() - t0:.1f} s)")

    if args.part in ("verify", "all"):
        print(f"verify guest, 2 vCPUs rewriting {args.ws} MiB, 1 s of precopy at 16 MB/s, then unlimited; "
              f"checks: completed, guest's page and register checks pass on the destination, "
              f"no FAIL, exit 0 after quit")
        for mode in args.modes:
            for ch in args.channels:
                for backend in args.backends:
                    for n in range(args.runs):
                        run(f"verify {mode} {ch}ch {backend} #{n}", verify_run, args, wd, mode, ch, backend, n)
    if args.part in ("scatter", "all"):
        print(f"idle guest fill={args.fill} scatter=1 on {args.scatter_mem} MiB; checks: low RAM identical "
              f"on both ends (pmemsave), counters show zero pages as duplicate and holes skipped")
        for mode in args.modes:
            for ch in args.channels:
                for n in range(args.runs):
                    run(f"scatter {mode} {ch}ch #{n}", scatter_run, args, wd, mode, ch, n)

    failed = [r for r in results if not r[1]]
    print(f"{len(results) - len(failed)} of {len(results)} passed")
    for name, _, why in failed:
        print(f"  failed: {name}: {why.splitlines()[0] if why else ''}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
