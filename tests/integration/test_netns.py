#!/usr/bin/env python3
"""kmig's RAM path between two hosts built on this machine (two network
namespaces and a veth pair, tests/integration/netns.py), without KVM:
bench/ram_path's source in one namespace, its destination in the other,
plaintext and TLS, the main connection and multifd channels, on an
unshaped link and on a 1 Gbit/s one (tbf).  Every run compares the
destination's RAM with the source's page by page; on the shaped link the
rate must also show the shape (at most ~1 Gbit/s, and not far below).
--shape lossy: a link that drops 1 % of the packets each way (a tc BPF
program, tests/netem/loss.bpf.c, since this kernel has no netem).
--shape silent: the link goes down in the middle of the transfer, without
a reset; both sides must give up within the I/O timeout (1 s here) and
say so, and once the link is back a new migration goes through.
--shape rack / site: netem links, 10 Gbit/s with a 0.2 ms round trip and
1 Gbit/s with 20 ms; silent-site is the link-down test on the latter (a
20 ms RTT must not trip the 1 s timeout; a dead link must).  These skip
where the kernel has no netem (scripts/kvm-vm.sh has it).
--guest SHAPE: kmig itself between the namespaces: the self-checking guest
migrates from one to the other, plaintext and then in TLS with 4 multifd
channels, on link SHAPE (clean, rack, site, lossy), and checks every page
on arrival.  Needs /dev/kvm."""
import argparse
import json
import os
import subprocess
import tempfile
import time

from kmiglib import (Kmig, require_kvm, skip, tls_mode_expected, verify_passes, wait_dest_running,
                     wait_migration, wait_whole_pass, workdir)
from netns import TwoHosts, acked_bytes

RAM_PATH = os.environ["RAM_PATH"]


def run(h, label, args):
    cmd = h.on_a([RAM_PATH, "--mem", "256", "--fill", "192", "--dst-netns", h.b,
                  "--uri", f"tcp:{h.addr_b}:0", *args])
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, f"{label}: exit {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}"
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["mismatched"] == 0 and r["holes_filled"] == 0, f"{label}: {r}"
    print(f"ok: {label:<34} {r['MBps']:>6.0f} MB/s  {r['seconds']:.2f} s  recv {r['recv_path']}")
    return r


# name: (rate, round trip in ms, the most MB/s the rate lets through)
SHAPES = {"rack": ("10gbit", 0.2, 1250), "site": ("1gbit", 20, 125)}


# scripts/kvm-vm.sh's emulated CPU: ping takes ms by itself, and TCP on a
# delayed link runs far below the shape; the floors are not checked there
EMULATED = os.environ.get("KMIG_IN_VM") == "1"


def netem_shape(h, name):
    rate, rtt, _ = SHAPES[name]
    base = h.rtt_ms()
    h.netem(rate, rtt)
    seen = h.rtt_ms()
    added = seen - base if seen is not None and base is not None else None
    # what the shape added to the round trip ping sees without it
    assert added is not None and rtt * 0.75 <= added <= rtt * 1.5 + 1, \
        f"{name}: ping says {seen} ms round trip, {base} ms unshaped; the shape adds {rtt} ms"
    print(f"{name}: {rate} with {rtt} ms round trip (ping: {seen:.2f} ms, {base:.2f} ms unshaped)")


def shaped(h, certs, name):
    netem_shape(h, name)
    cap = SHAPES[name][2]
    for label, extra in ((f"{name}, main connection", []),
                         (f"{name}, TLS, 4 channels", ["--channels", "4", "--tls", certs]),
                         (f"{name}, 4 channels, 1 s timeout", ["--channels", "4", "--io-timeout", "1000"])):
        r = run(h, label, extra)
        assert r["MBps"] <= cap * 1.08, f"{label}: {r['MBps']} MB/s is more than the link's {cap}: {r}"
        # a window that never opened would give ~3 MB/s at 20 ms
        if EMULATED:
            print(f"   (emulated CPU: the rate's floor is not checked)")
        else:
            assert r["MBps"] >= 30, f"{label}: {r['MBps']} MB/s: TCP never filled the link: {r}"


def lossy(h, certs):
    obj = os.environ.get("NETEM_LOSS", "")
    if not obj:
        skip("no lossy link: clang cannot build tests/netem/loss.bpf.c")
    try:
        h.lossy(obj)
    except subprocess.CalledProcessError as e:
        skip(f"no lossy link: tc cannot attach the BPF program: {e.stderr.strip()}")
    for label, extra in (("1 % loss, main connection", []),
                         ("1 % loss, TLS, 4 channels", ["--channels", "4", "--tls", certs])):
        pkts0, dropped0 = h.lossy_counts()
        run(h, label, extra)
        pkts, dropped = h.lossy_counts()
        pkts, dropped = pkts - pkts0, dropped - dropped0
        # the link really lost about 1 % (binomial: far above 0.5 % here)
        assert dropped >= pkts * 0.005, f"{label}: only {dropped} of {pkts} packets dropped"
        print(f"   the link dropped {dropped} of {pkts} packets ({100 * dropped / pkts:.2f} %)")


SILENT_TIMEOUT_MS = 1000


def silent(h, certs, site=False):
    # slow enough to be mid-transfer when the link goes
    if site:
        netem_shape(h, "site")
    else:
        h.shape("1gbit")
    for label, extra in (("link down, main connection", []),
                         ("link down, TLS, 4 channels", ["--channels", "4", "--tls", certs])):
        cmd = h.on_a([RAM_PATH, "--mem", "512", "--fill", "448", "--dst-netns", h.b, "--uri",
                      f"tcp:{h.addr_b}:0", "--io-timeout", str(SILENT_TIMEOUT_MS), *extra])
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while acked_bytes(h) < (64 << 20) and p.poll() is None:
            time.sleep(0.02)
        # the fault must meet a transfer still under way
        assert p.poll() is None, f"{label}: ended before the link went down: {p.communicate()}"
        h.link(h.b, False)
        t0 = time.time()
        out, err = p.communicate(timeout=60)
        took = time.time() - t0
        h.link(h.b, True)
        assert p.returncode == 1, f"{label}: exit {p.returncode}: {out} {err}"
        assert took <= SILENT_TIMEOUT_MS / 1000 + 1.5, f"{label}: noticed after {took:.2f} s: {err}"
        assert err.count("timed out") >= 2, f"{label}: both sides must name the timeout: {err}"
        print(f"ok: {label:<34} both sides gave up after {took:.2f} s: {err.strip()}")
        time.sleep(0.3)
        run(h, label.replace("link down", "link back"), extra)


def guest_shape(h, shape):
    if shape in SHAPES:
        netem_shape(h, shape)
    elif shape == "lossy":
        obj = os.environ.get("NETEM_LOSS", "")
        if not obj:
            skip("no lossy link: clang cannot build tests/netem/loss.bpf.c")
        h.lossy(obj)


def tls_objects(certs, side):
    if side == "dst":
        return ["--object", f"tls-creds-x509,id=tls0,endpoint=server,dir={certs}/server",
                "--object", "authz-simple,id=auth0,identity=O=kmig,,CN=kmig-src"]
    return ["--object", f"tls-creds-x509,id=tls0,endpoint=client,dir={certs}/client"]


def migrate_guest(h, wd, certs, n, tls):
    """The verify guest from host a to host b; every page checked there."""
    port = 7400 + n
    # a bounded dirty rate (2 MiB/s), so that the slowest shape, and an
    # emulated CPU (scripts/kvm-vm.sh), still converge; a pass takes 4 s
    params = "ws=8,rate=2"
    dst = Kmig(wd, f"dst{n}", params=params, incoming="defer", prefix=["ip", "netns", "exec", h.b],
               extra=tls_objects(certs, "dst") if tls else [])
    src = Kmig(wd, f"src{n}", params=params, prefix=["ip", "netns", "exec", h.a],
               extra=tls_objects(certs, "src") if tls else [])
    try:
        caps = [{"capability": "multifd", "state": tls}]
        for k in (dst, src):
            k.qmp.cmd("migrate-set-capabilities", capabilities=caps)
            if tls:
                k.qmp.cmd("migrate-set-parameters", **{"multifd-channels": 4, "tls-creds": "tls0"})
        if tls:
            dst.qmp.cmd("migrate-set-parameters", **{"tls-authz": "auth0"})
            # the certificate names localhost and 127.0.0.1, not host b's address
            src.qmp.cmd("migrate-set-parameters", **{"tls-hostname": "localhost"})
        dst.qmp.cmd("migrate-incoming", uri=f"tcp:{h.addr_b}:{port}")
        src.wait_lines(r" ok$", 2)
        src.qmp.cmd("migrate", uri=f"tcp:{h.addr_b}:{port}")
        info = wait_migration(src.qmp, timeout=300)
        assert info["status"] == "completed", info
        wait_dest_running(dst)
        before = verify_passes(src.wait_lines(r" ok$")[-1])
        after = wait_whole_pass(dst, before)
        assert info["x-kmig"]["tls"] == (tls_mode_expected() if tls else "none"), info["x-kmig"]
        mb = info["ram"]["transferred"] / max(info["total-time"], 1) / 1000
        print(f"ok: {'TLS (' + info['x-kmig']['tls'] + '), 4 channels' if tls else 'plaintext':<28} "
              f"total {info['total-time']} ms, downtime {info['downtime']} ms, {mb:.0f} MB/s; "
              f"passes {before} -> {after}, every page checked on host b")
    finally:
        src.stop()
        dst.stop()


def guest(h, certs, shape):
    require_kvm()
    guest_shape(h, shape)
    wd = workdir("netns-guest")
    for n, tls in enumerate((False, True)):
        migrate_guest(h, wd, certs, n, tls)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", choices=["clean", "lossy", "silent", "rack", "site", "silent-site"],
                    default="clean")
    ap.add_argument("--guest", choices=["clean", "lossy", "rack", "site"])
    args = ap.parse_args()
    certs = tempfile.mkdtemp(prefix="kmig-netns-certs-")
    subprocess.run([os.environ["TLS_CERTS"], certs], check=True)
    with TwoHosts() as h:
        if args.guest:
            guest(h, certs, args.guest)
            return
        if args.shape == "lossy":
            lossy(h, certs)
            return
        if args.shape in ("silent", "silent-site"):
            silent(h, certs, site=args.shape == "silent-site")
            return
        if args.shape in SHAPES:
            shaped(h, certs, args.shape)
            return
        run(h, "unshaped, main connection", [])
        run(h, "unshaped, 4 channels", ["--channels", "4"])
        run(h, "unshaped, TLS, 4 channels", ["--channels", "4", "--tls", certs])
        h.shape("1gbit")
        # a pass longer than the I/O timeout: the main connection idles
        # while the RAM channels carry it, and that must not trip it
        for label, extra in (("1 Gbit/s, main connection", []),
                             ("1 Gbit/s, TLS, 4 channels", ["--channels", "4", "--tls", certs]),
                             ("1 Gbit/s, 4 channels, 1 s timeout", ["--channels", "4", "--io-timeout", "1000"])):
            r = run(h, label, extra)
            # 125 MB/s on the wire; the stream's own bytes are all counted
            assert r["MBps"] <= 135, f"{label}: {r['MBps']} MB/s is more than 1 Gbit/s carries: {r}"
            if EMULATED:
                print("   (emulated CPU: the rate's floor is not checked)")
            else:
                assert r["MBps"] >= 60, f"{label}: {r['MBps']} MB/s does not look like 1 Gbit/s: {r}"
    subprocess.run(["rm", "-rf", certs])


if __name__ == "__main__":
    main()
