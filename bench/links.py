"""Link shapes for bench/bench.py: the migration between two hosts on one
machine (tests/integration/netns.py: two network namespaces joined by a
veth pair), over a shaped link, instead of over loopback.

    rack   10 Gbit/s, 0.2 ms round trip          (netem on both ends)
    site   1 Gbit/s, 20 ms round trip            (netem on both ends)
    lossy  1 % of the packets lost each way, no rate or delay: a tc BPF
           program (tests/netem/loss.bpf.c), which needs no netem

The source runs in host a, the destination in host b, both through
`ip netns exec`; the URI is host b's address.  Where the link cannot be
made (not root, no netem in this kernel, no BPF object), LinkUnavailable
says why and the scenario is reported as not run.  The same shapes as
the integration tests (tests/integration/test_netns.py)."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tests", "integration"))
from netns import TwoHosts  # noqa: E402

# name: (tc rate or None, round trip ms, loss %, what it models)
LINKS = {
    "rack": ("10gbit", 0.2, 0.0, "a rack: 10 Gbit/s, 0.2 ms round trip (netem)"),
    "site": ("1gbit", 20.0, 0.0, "across a site: 1 Gbit/s, 20 ms round trip (netem)"),
    "lossy": (None, 0.0, 1.0, "a lossy link: 1 % of the packets lost each way (tc BPF), no rate or delay"),
}


class LinkUnavailable(RuntimeError):
    """The shape cannot be made on this machine; the message says why."""


class Link:
    """Two hosts joined by one shaped link, for the length of a `with`."""

    def __init__(self, shape, loss_obj):
        if shape not in LINKS:
            raise ValueError(f"unknown link shape {shape!r}")
        self.shape, self.loss_obj = shape, loss_obj
        self.hosts = None
        self.rtt_ms = None          # what ping saw once shaped

    def __enter__(self):
        # TwoHosts skip()s (exits 77) where a test could not go on: here
        # that is a scenario not run, not the end of the bench
        try:
            self.hosts = TwoHosts().__enter__()
        except SystemExit:
            raise LinkUnavailable("cannot make two network namespaces (needs root and iproute2)") from None
        try:
            self._shape()
            self.rtt_ms = self.hosts.rtt_ms()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        if self.hosts:
            self.hosts.__exit__(*exc)
            self.hosts = None

    def _shape(self):
        rate, rtt, loss, _ = LINKS[self.shape]
        if rate:
            try:
                self.hosts.netem(rate, rtt, loss)
            except SystemExit:
                raise LinkUnavailable("this kernel has no netem (sch_netem): the shape needs its delay; "
                                      "scripts/kvm-vm.sh runs the bench in a VM that has it") from None
            return
        if not self.loss_obj or not os.path.exists(self.loss_obj):
            raise LinkUnavailable(f"no loss program {self.loss_obj or 'tests/netem/loss.bpf.o'}: "
                                  "build the tree with clang present")
        try:
            self.hosts.lossy(self.loss_obj)
        except subprocess.CalledProcessError as e:
            raise LinkUnavailable(f"tc cannot attach the loss program: {e.stderr.strip()}") from None

    def counts(self):
        """(packets, dropped) by the loss program so far (lossy only)."""
        return self.hosts.lossy_counts() if LINKS[self.shape][2] and not LINKS[self.shape][0] else None

    def on(self, side, argv):
        """argv run on the source's (a) or the destination's (b) host."""
        ns = self.hosts.a if side == "src" else self.hosts.b
        return ["ip", "netns", "exec", ns, *argv]

    @property
    def dst_ns(self):
        return self.hosts.b

    @property
    def dst_addr(self):
        return self.hosts.addr_b
