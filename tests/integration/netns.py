"""Two hosts on one machine: two network namespaces joined by a veth pair,
with addresses on those interfaces only, and link shapes on both ends.

    with TwoHosts() as h:            # needs root; skip() otherwise
        h.shape("1gbit")             # tbf on both ends, both directions
        subprocess.run(h.on_a(["cmd"]))
        # h.a, h.b: namespace names; h.addr_a, h.addr_b: their addresses

Everything is removed on exit (deleting a namespace deletes its end of
the veth, and so the pair).  Names carry this process's pid, so runs in
parallel do not meet."""
import os
import re
import subprocess

from kmiglib import skip


def _ip(*args):
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class TwoHosts:
    addr_a = "10.77.0.1"
    addr_b = "10.77.0.2"

    def __init__(self):
        if os.geteuid() != 0:
            skip("network namespaces need root")
        tag = os.getpid() % 100000
        self.a, self.b = f"kmig{tag}a", f"kmig{tag}b"
        self.veth_a, self.veth_b = f"kv{tag}a", f"kv{tag}b"

    def __enter__(self):
        try:
            _ip("netns", "add", self.a)
            _ip("netns", "add", self.b)
            _ip("link", "add", self.veth_a, "type", "veth", "peer", "name", self.veth_b)
            for ns, dev, addr in ((self.a, self.veth_a, self.addr_a), (self.b, self.veth_b, self.addr_b)):
                _ip("link", "set", dev, "netns", ns)
                _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
                _ip("-n", ns, "link", "set", dev, "up")
                _ip("-n", ns, "link", "set", "lo", "up")
        except (subprocess.CalledProcessError, FileNotFoundError) as e:
            self.__exit__(None, None, None)
            why = e.stderr.strip() if isinstance(e, subprocess.CalledProcessError) else str(e)
            skip(f"cannot make two network namespaces: {why}")
        return self

    def __exit__(self, *exc):
        for ns in (self.a, self.b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def shape(self, rate, burst="256k", latency="50ms"):
        """A link of rate (tc's words: 1gbit, 10gbit), both directions.
        Delay and loss need netem, which this kernel may lack: see
        docs/transport.md."""
        for ns, dev in ((self.a, self.veth_a), (self.b, self.veth_b)):
            subprocess.run(["tc", "-n", ns, "qdisc", "replace", "dev", dev, "root", "tbf", "rate", rate,
                            "burst", burst, "latency", latency], check=True, capture_output=True)

    def netem(self, rate, rtt_ms, loss_pct=0.0):
        """A link of rate with a round trip of rtt_ms (half of it on each
        end) and loss_pct % of packets lost each way: netem, on both ends.
        skip()s where this kernel has no netem (tc cannot add the qdisc).
        The queue holds a few bandwidth-delay products, so that the shape,
        not the queue, is what limits TCP."""
        for ns, dev in ((self.a, self.veth_a), (self.b, self.veth_b)):
            cmd = ["tc", "-n", ns, "qdisc", "replace", "dev", dev, "root", "netem",
                   "delay", f"{rtt_ms / 2:g}ms", "rate", rate, "limit", "100000"]
            if loss_pct:
                cmd += ["loss", f"{loss_pct:g}%"]
            p = subprocess.run(cmd, capture_output=True, text=True)
            if p.returncode != 0:
                skip(f"this kernel has no netem (tc said: {p.stderr.strip()}): "
                     "scripts/kvm-vm.sh runs the test where it has")

    def rtt_ms(self):
        """The round trip from a to b, as ping measures it (median of 5)."""
        out = subprocess.run(self.on_a(["ping", "-c", "5", "-i", "0.2", "-q", self.addr_b]),
                             capture_output=True, text=True).stdout
        m = re.search(r"= [\d.]+/([\d.]+)/", out)
        return float(m.group(1)) if m else None

    def lossy(self, obj):
        """Drop packets at random on both ends (the tc BPF program obj,
        tests/netem/loss.bpf.c: 1 %), where netem is missing.  The program
        sees packets before segmentation: GSO is turned off, so that a
        drop loses one wire packet, not a 64 KiB train of them."""
        for ns, dev in ((self.a, self.veth_a), (self.b, self.veth_b)):
            _ip("-n", ns, "link", "set", "dev", dev, "gso_max_segs", "1")
            subprocess.run(["tc", "-n", ns, "qdisc", "add", "dev", dev, "clsact"], check=True, capture_output=True)
            subprocess.run(["tc", "-n", ns, "filter", "add", "dev", dev, "egress", "bpf", "direct-action",
                            "obj", obj, "sec", "tc"], check=True, capture_output=True)

    def lossy_counts(self):
        """(packets, dropped) so far by the loss program, both ends: tc's
        own counters of the clsact qdisc it runs in."""
        pkts = dropped = 0
        for ns, dev in ((self.a, self.veth_a), (self.b, self.veth_b)):
            out = subprocess.run(["tc", "-s", "-n", ns, "qdisc", "show", "dev", dev], check=True,
                                 capture_output=True, text=True).stdout
            m = re.search(r"qdisc clsact.*?\n Sent \d+ bytes (\d+) pkt \(dropped (\d+)", out, re.S)
            if m:
                pkts += int(m.group(1))
                dropped += int(m.group(2))
        return pkts, dropped

    def link(self, ns, up):
        """Host ns's end of the link up or down (down: no reset, packets
        just stop)."""
        dev = self.veth_a if ns == self.a else self.veth_b
        _ip("-n", ns, "link", "set", dev, "up" if up else "down")

    def on_a(self, argv):
        return ["ip", "netns", "exec", self.a, *argv]


def acked_bytes(h):
    """Bytes host a's established connections to host b have had
    acknowledged: how far a transfer between them got."""
    out = subprocess.run(["ip", "netns", "exec", h.a, "ss", "-tni", "state", "established", "dst", h.addr_b],
                         capture_output=True, text=True).stdout
    return sum(int(x) for x in re.findall(r"bytes_acked:(\d+)", out))
