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
say so, and once the link is back a new migration goes through."""
import argparse
import json
import os
import subprocess
import tempfile
import time

from kmiglib import skip
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


def silent(h, certs):
    h.shape("1gbit")  # slow enough to be mid-transfer when the link goes
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", choices=["clean", "lossy", "silent"], default="clean")
    args = ap.parse_args()
    certs = tempfile.mkdtemp(prefix="kmig-netns-certs-")
    subprocess.run([os.environ["TLS_CERTS"], certs], check=True)
    with TwoHosts() as h:
        if args.shape == "lossy":
            lossy(h, certs)
            return
        if args.shape == "silent":
            silent(h, certs)
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
            assert 60 <= r["MBps"] <= 135, f"{label}: {r['MBps']} MB/s does not look like 1 Gbit/s: {r}"
    subprocess.run(["rm", "-rf", certs])


if __name__ == "__main__":
    main()
