#!/usr/bin/env python3
"""kmig benchmark: the same guest ELFs migrated by kmig, by QEMU 10 (the
newest a Debian user can install: bookworm-backports, unpacked into a
private prefix by scripts/qemu10.sh) and by the system's QEMU 7.2, each
driven over QMP exactly like kmig, in one run, next to the raw TCP loopback
limits.

Scenarios (--scenarios, comma-separated; default all):
  idle-1g     idle guest writes 1 GiB of its 1200 MiB once, then idles
  ws64-1g     dirty guest writes 1 GiB once, then rewrites a 64 MiB working
              set as fast as it can during the migration (1200 MiB RAM)
  ws256-1g    the same with a 256 MiB working set
  sparse-16g  idle guest with 16 GiB of RAM, 256 MiB of it written
  idle-1g-2vcpu, ws64-1g-2vcpu
              idle-1g and ws64-1g on 2 vCPUs (the fill, and the working
              set's rewriting, shared by both)
  idle-1g-prealloc, ws64-1g-prealloc
              idle-1g and ws64-1g into a destination whose RAM was faulted
              in before the migration (kmig --mem-prealloc, QEMU
              -mem-prealloc): the migration without the host's cost of
              first touching memory
  ram-path-1g kmig's RAM path alone (bench/ram_path: RAM handlers, stream,
              RAM channels, transport between two processes; no guest, no
              KVM), 1 GiB of 1200 MiB, into fresh memory: runs where
              /dev/kvm does not
  converge    a 2-vCPU guest dirtying 3x what a 16 MiB/s link carries while
              its other vCPU computes: kmig without and with the dirty-limit
              capability, QEMU with auto-converge (bench/converge.py; its
              own three configurations, not the ones below)
  {idle-1g,ws64-1g,ram-path-1g}-{rack,site,lossy}
              the same between two hosts on this machine (network
              namespaces, bench/links.py) over a shaped link: rack 10 Gbit/s
              with 0.2 ms round trip, site 1 Gbit/s with 20 ms (both netem),
              lossy 1 % of the packets lost each way (tc BPF); the raw rows
              are then "raw link", and only the configurations marked (L)
              below run there

Configurations (--configs, comma-separated substrings of these names):
  raw loopback {1 stream,N streams}    bench/loopback.c: the same bytes as
                                       the guest's RAM, no migration
  raw loopback {1 stream,N streams} into fresh memory
                                       the same, each stream received by its
                                       own thread into memory never touched
                                       before, as a destination must
  raw link {1 stream,N streams}        (L) loopback.c across the shaped link
  kmig default                         nothing set: what a user gets
  kmig {1,N}ch copy {ring,bitmap}, kmig Nch zero-copy bitmap  (L: ring)
  kmig {1,N}ch TLS copy ring           (L) TLS 1.3 on every connection,
                                       x509 both ways (kTLS where the kernel
                                       has it, GnuTLS records otherwise)
  kmig Nch TLS (GnuTLS) copy ring      the same with KMIG_KTLS=0: what a
                                       kernel without kTLS gets
  kmig RAM path {1,N}ch, kmig RAM path {1,N}ch TLS
                                       (ram-path-1g*, L)
  QEMU 10 {1 stream,multifd-N} {bitmap,ring}, QEMU 10 multifd-N zero-copy bitmap
                                       (L: bitmap)
  QEMU 10 {1 stream,multifd-N} TLS bitmap   (L) the same certificates
  QEMU 7.2 {1 stream,multifd-N} bitmap

Every figure is the median of --runs runs with min and max; runs of the
configurations are interleaved (run 1 of every configuration, then run 2...)
so that noise from other work on the machine spreads over all of them.
Without /dev/kvm only the scenarios that need no guest run (ram-path-1g),
and, with --qemu-tcg, QEMU's configurations on TCG: on such a host,
`--scenarios idle-1g,ram-path-1g --qemu-tcg --configs TLS` sets kmig's RAM
path with TLS against QEMU 10 with TLS, target (7t), indicative only.
Results go to OUT/<YYYYmmdd-HHMMSS>/ (results.json with every raw sample,
results.md, PNG plots) and OUT/latest points there; the Markdown is also
printed on stdout, progress on stderr.  See --help, and "Method" in
results.md for how each figure is measured."""
import argparse
import dataclasses
import gzip
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC_ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(SRC_ROOT, "tests", "integration"))
from kmiglib import QMP, QMPError, free_port, wait_text  # noqa: E402

# bench/converge.py imports this module as `bench`: run as a script, this
# is __main__, and must not be loaded a second time under that name
sys.modules.setdefault("bench", sys.modules[__name__])
sys.path.insert(0, HERE)
import converge  # noqa: E402
import links  # noqa: E402

MiB = 1 << 20
GiB = 1 << 30
UNLIMITED_BW = 1 << 40          # max-bandwidth for every configuration
QUERY_PERIOD = 0.025            # query-migrate on the source
RSS_PERIOD = 0.020              # /proc/PID/status of both sides
RSS_LIMIT_MIB = 64              # target (e)
FINAL = ("completed", "failed", "cancelled")
GP_TERM = "set terminal pngcairo size 1100,650 font ',10' noenhanced"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def num(v, digits=0):
    """A figure for a progress line; a peer may leave one out (None)."""
    return "?" if v is None else f"{v:.{digits}f}"


# ---------------------------------------------------------------- model

@dataclasses.dataclass
class Scenario:
    name: str
    guest: str                  # idle | dirty
    params: dict                # the guest's key=value parameters
    mem_mib: int
    ready: str                  # COM1 text after which the migration starts
    touched_mib: int            # guest RAM the guest writes (QEMU's RSS baseline)
    about: str
    vcpus: int = 1
    dst_prealloc: bool = False  # destination RAM faulted in before migrating
    needs_kvm: bool = True      # False: ram-path, no guest at all
    link: str = ""              # "": loopback; else a shape of bench/links.py

    def cmdline(self, sep):
        return sep.join(f"{k}={v}" for k, v in self.params.items())


SCENARIOS = {
    "idle-1g": Scenario("idle-1g", "idle", {"fill": 1024}, 1200, "idle: ready", 1024,
                        "idle guest, 1 GiB written once then idle, 1200 MiB RAM, 1 vCPU"),
    "ws64-1g": Scenario("ws64-1g", "dirty", {"fill": 1024, "ws": 64, "rate": 0}, 1200,
                        "dirty: filled", 1024,
                        "dirty guest, 1 GiB written once, then a 64 MiB working set rewritten "
                        "as fast as possible during the migration, 1200 MiB RAM, 1 vCPU"),
    "ws256-1g": Scenario("ws256-1g", "dirty", {"fill": 1024, "ws": 256, "rate": 0}, 1200,
                         "dirty: filled", 1024,
                         "dirty guest, 1 GiB written once, then a 256 MiB working set rewritten "
                         "as fast as possible during the migration, 1200 MiB RAM, 1 vCPU"),
    "sparse-16g": Scenario("sparse-16g", "idle", {"fill": 256}, 16384, "idle: ready", 256,
                           "idle guest, 16 GiB of RAM of which 256 MiB written, 1 vCPU"),
}
for _base in ("idle-1g", "ws64-1g"):
    _s = SCENARIOS[_base]
    SCENARIOS[_base + "-2vcpu"] = dataclasses.replace(
        _s, name=_base + "-2vcpu", vcpus=2, about=_s.about.replace("1 vCPU", "2 vCPUs sharing the work"))
for _base in ("idle-1g", "ws64-1g"):
    _s = SCENARIOS[_base]
    SCENARIOS[_base + "-prealloc"] = dataclasses.replace(
        _s, name=_base + "-prealloc", dst_prealloc=True,
        about=_s.about + "; the destination's RAM preallocated (kmig --mem-prealloc, QEMU -mem-prealloc) "
        "before the migration starts")
SCENARIOS["ram-path-1g"] = Scenario(
    "ram-path-1g", "", {"fill": 1024}, 1200, "", 1024,
    "kmig's RAM path alone (bench/ram_path): 1 GiB of 1200 MiB from a source process to a destination "
    "process over loopback, into fresh memory; no guest and no KVM, the source's pages already mapped as "
    "a guest leaves them", needs_kvm=False)
# the same between two hosts over each link shape (bench/links.py)
for _base in ("idle-1g", "ws64-1g", "ram-path-1g"):
    _s = SCENARIOS[_base]
    for _shape, (_rate, _rtt, _loss, _what) in links.LINKS.items():
        SCENARIOS[f"{_base}-{_shape}"] = dataclasses.replace(
            _s, name=f"{_base}-{_shape}", link=_shape,
            about=_s.about.replace(" over loopback", "") + f"; between two hosts (network namespaces) on {_what}")
SMOKE = Scenario("smoke", "idle", {"fill": 32}, 256, "idle: ready", 32,
                 "smoke test: idle guest, 32 MiB written, 256 MiB RAM, 1 vCPU")
SMOKE_RAM_PATH = Scenario("ram-path-smoke", "", {"fill": 64}, 128, "", 64,
                          "smoke test of the RAM path alone: 64 MiB of 128 MiB, no guest", needs_kvm=False)
SMOKE_RAM_PATH_LOSSY = dataclasses.replace(
    SMOKE_RAM_PATH, name="ram-path-smoke-lossy", link="lossy",
    about=SMOKE_RAM_PATH.about + f"; between two hosts on {links.LINKS['lossy'][3]}")


@dataclasses.dataclass
class Config:
    name: str
    kind: str                   # raw | kmig | qemu | ramlink
    channels: int = 1           # TCP streams (raw) or RAM channels
    multifd: bool = False
    send_mode: str = ""         # kmig's x-kmig-send-mode: copy | zero-copy
    dirty: str = ""             # ring | bitmap
    fresh: bool = False         # raw: receive into untouched memory
    peer: str = ""              # qemu: "10" | "7.2"
    zero_copy: bool = False     # qemu: the zero-copy-send capability
    default: bool = False       # kmig: nothing set (the untuned default)
    tls: bool = False           # x509 TLS on every connection, both ends verified
    gnutls: bool = False        # kmig TLS: records kept in GnuTLS (KMIG_KTLS=0), no kTLS
    on_links: bool = False      # runs in the shaped-link scenarios too
    over_link: bool = False     # raw: across the link (link scenarios only)
    tcg: bool = False           # qemu: -accel tcg (--qemu-tcg, a host without /dev/kvm)

    def process_env(self):
        """Environment both processes get beyond the bench's own."""
        return {"KMIG_KTLS": "0"} if self.gnutls else None

    def runs_in(self, scen):
        """Guest scenarios take raw, kmig and QEMU configurations; the
        RAM-path ones take raw and ramlink ones.  Over a shaped link, raw
        is the link's own, and only the configurations marked on_links run
        (a few best ones and TLS: a link run is slow)."""
        if self.kind == "raw":
            return self.over_link == bool(scen.link)
        if (self.kind == "ramlink") != (not scen.needs_kvm):
            return False
        return not scen.link or self.kind == "ramlink" or self.on_links



def all_configs(n, smoke=False):
    """Every configuration, in the order of the tables.  n = --channels."""
    cfgs = [Config("raw loopback 1 stream", "raw", 1),
            Config(f"raw loopback {n} streams", "raw", n),
            Config("raw loopback 1 stream into fresh memory", "raw", 1, fresh=True),
            Config(f"raw loopback {n} streams into fresh memory", "raw", n, fresh=True)]
    cfgs += [Config("raw link 1 stream", "raw", 1, over_link=True),
             Config(f"raw link {n} streams", "raw", n, over_link=True)]
    ram_path = [Config("kmig RAM path 1ch", "ramlink", 1, False, "copy"),
                Config(f"kmig RAM path {n}ch", "ramlink", n, True, "copy")]
    ram_path_tls = [Config("kmig RAM path 1ch TLS", "ramlink", 1, False, "copy", tls=True),
                    Config(f"kmig RAM path {n}ch TLS", "ramlink", n, True, "copy", tls=True)]
    if smoke:
        # the smallest set that still crosses every path the full bench
        # needs: one and N channels, both send modes, the RAM path alone,
        # in plaintext and in TLS
        return cfgs[:2] + cfgs[4:] + [Config("kmig 1ch copy ring", "kmig", 1, False, "copy", "ring"),
                                      Config(f"kmig {n}ch zero-copy ring", "kmig", n, True, "zero-copy",
                                             "ring")] + ram_path + ram_path_tls[1:]
    cfgs.append(Config("kmig default", "kmig", 1, default=True))
    for dirty in ("ring", "bitmap"):
        for ch in (1, n):
            cfgs.append(Config(f"kmig {ch}ch copy {dirty}", "kmig", ch, ch > 1, "copy", dirty,
                               on_links=dirty == "ring"))
    cfgs.append(Config(f"kmig {n}ch zero-copy bitmap", "kmig", n, n > 1, "zero-copy", "bitmap"))
    for ch in (1, n):
        cfgs.append(Config(f"kmig {ch}ch TLS copy ring", "kmig", ch, ch > 1, "copy", "ring", tls=True,
                           on_links=True))
    # what a kernel without kTLS gets, beside it: the same TLS in user space
    cfgs.append(Config(f"kmig {n}ch TLS (GnuTLS) copy ring", "kmig", n, n > 1, "copy", "ring", tls=True,
                       gnutls=True))
    cfgs += ram_path + ram_path_tls
    for dirty in ("bitmap", "ring"):
        cfgs.append(Config(f"QEMU 10 1 stream {dirty}", "qemu", 1, False, "", dirty, peer="10",
                           on_links=dirty == "bitmap"))
        cfgs.append(Config(f"QEMU 10 multifd-{n} {dirty}", "qemu", n, True, "", dirty, peer="10",
                           on_links=dirty == "bitmap"))
    cfgs.append(Config(f"QEMU 10 multifd-{n} zero-copy bitmap", "qemu", n, True, "", "bitmap", peer="10",
                       zero_copy=True))
    # QEMU refuses zero-copy-send with TLS: copy, as kmig's TLS rows
    cfgs.append(Config("QEMU 10 1 stream TLS bitmap", "qemu", 1, False, "", "bitmap", peer="10", tls=True,
                       on_links=True))
    cfgs.append(Config(f"QEMU 10 multifd-{n} TLS bitmap", "qemu", n, True, "", "bitmap", peer="10",
                       tls=True, on_links=True))
    cfgs.append(Config("QEMU 7.2 1 stream bitmap", "qemu", 1, False, "", "bitmap", peer="7.2"))
    cfgs.append(Config(f"QEMU 7.2 multifd-{n} bitmap", "qemu", n, True, "", "bitmap", peer="7.2"))
    seen, out = set(), []
    for c in cfgs:              # --channels 1 makes the 1ch and Nch names equal
        if c.name not in seen:
            seen.add(c.name)
            out.append(c)
    return out


# ----------------------------------------------------------- processes

def cpu_seconds(pid):
    """utime+stime of a process (all its threads, dead ones included)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_status(pid):
    """The kB figures of /proc/PID/status we need, or None once it is gone."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                    out[k] = int(v.split()[0])
    except OSError:
        return None
    return out


class Vm:
    """One kmig or QEMU process: its COM1 log, stderr and QMP socket."""

    def __init__(self, argv, wd, name, extra_env=None):
        self.name = name
        self.serial = os.path.join(wd, f"{name}.log")
        self.qmp_path = os.path.join(wd, f"{name}.qmp")
        self.err_path = os.path.join(wd, f"{name}.err")
        self.argv = argv
        self.err = open(self.err_path, "w")
        self.proc = subprocess.Popen(argv, stdout=self.err, stderr=self.err, cwd=wd,
                                     env=dict(os.environ, **extra_env) if extra_env else None)
        self.qmp = None
        self.sent = []          # the configuration commands, for the record

    def connect(self, timeout=60):
        """QMP once the socket is there; fail at once if the process died."""
        deadline = time.time() + timeout
        while not os.path.exists(self.qmp_path):
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} before its QMP "
                                   f"socket appeared: {self.stderr_tail()}")
            if time.time() > deadline:
                raise RuntimeError(f"{self.name}: no QMP socket after {timeout}s")
            time.sleep(0.02)
        self.qmp = QMP(self.qmp_path, timeout=timeout)

    def cmd(self, name, **args):
        self.sent.append({"execute": name, "arguments": args} if args else {"execute": name})
        return self.qmp.cmd(name, **args)

    def stderr_tail(self, n=4):
        try:
            with open(self.err_path, errors="replace") as f:
                lines = [l.strip() for l in f.read().splitlines() if l.strip()]
        except OSError:
            return ""
        # QEMU warns about CPUID bits this host lacks on every start: noise
        lines = [l for l in lines if "host doesn't support requested feature" not in l]
        return " | ".join(lines[-n:])

    def stop(self):
        if self.proc.poll() is None:
            try:
                if self.qmp:
                    self.qmp.cmd("quit")
            except Exception:
                pass
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.qmp:
            self.qmp.close()
        self.err.close()


def kmig_argv(env, cfg, scen, wd, name, incoming):
    a = [env.kmig, "run", "--guest", f"{scen.guest},{scen.cmdline(',')}", "--mem", str(scen.mem_mib),
         "--vcpus", str(scen.vcpus), "--serial", f"{wd}/{name}.log", "--qmp", f"{wd}/{name}.qmp"]
    # both backends named explicitly, but for the default: kmig's own
    # choice is not part of the other labels
    if not cfg.default:
        a += ["--dirty-bitmap"] if cfg.dirty == "bitmap" else ["--dirty-ring", "4096"]
    if incoming:
        a += ["--incoming", "defer"] + (["--mem-prealloc"] if scen.dst_prealloc else [])
    if cfg.tls:
        a += ["--object", tls_object(env, incoming)]
    return env.on("dst" if incoming else "src", a)


def qemu_argv(env, cfg, scen, wd, name, incoming):
    # -enable-kvm is -accel kvm; the ring needs the accel's own option
    accel = ["-accel", "kvm,dirty-ring-size=4096"] if cfg.dirty == "ring" else ["-enable-kvm"]
    if cfg.tcg:
        accel = ["-accel", "tcg"]
    a = [env.qemu_bin(cfg.peer), *accel, "-m", str(scen.mem_mib), "-smp", str(scen.vcpus), "-display", "none",
         "-nodefaults", "-serial", f"file:{wd}/{name}.log",
         "-qmp", f"unix:{wd}/{name}.qmp,server=on,wait=off",
         "-kernel", env.elf(scen.guest), "-append", scen.cmdline(" ")]
    if incoming:
        a += ["-incoming", "defer"] + (["-mem-prealloc"] if scen.dst_prealloc else [])
    elif cfg.zero_copy:
        # zero-copy-send pins the pages it sends: QEMU wants its RAM locked
        a += ["-overcommit", "mem-lock=on"]
    if cfg.tls:
        a += ["-object", tls_object(env, incoming)]
    return env.on("dst" if incoming else "src", a)


def tls_object(env, server):
    """The same x509 credentials object for kmig and QEMU (QEMU's names):
    the destination is the TLS server and checks the source's certificate
    (verify-peer), the source checks the destination's."""
    side = "server" if server else "client"
    return f"tls-creds-x509,id=tls0,endpoint={side},dir={env.certs()}/{side},verify-peer=on"


def configure(vm, cfg, role, downtime_limit):
    """The migration knobs, on each side before the source's migrate (QEMU's
    rule for multifd: the destination is set up before it listens)."""
    if (cfg.kind == "kmig" and not cfg.default) or cfg.multifd:
        # kmig 1ch says multifd off explicitly: the label must be what ran
        caps = [{"capability": "multifd", "state": cfg.multifd}]
        if cfg.zero_copy:
            caps.append({"capability": "zero-copy-send", "state": True})
        vm.cmd("migrate-set-capabilities", capabilities=caps)
    params = {}
    if cfg.multifd:
        params["multifd-channels"] = cfg.channels
    if cfg.tls:
        params["tls-creds"] = "tls0"
        if role == "src":
            # the test certificate names localhost, not the link's address
            params["tls-hostname"] = "localhost"
    if role == "src":
        # QEMU 7.2 defaults to 128 MiB/s: every configuration runs unlimited
        params["max-bandwidth"] = UNLIMITED_BW
        params["downtime-limit"] = downtime_limit
        if cfg.kind == "kmig" and not cfg.default:
            params["x-kmig-send-mode"] = cfg.send_mode
    if params:
        vm.cmd("migrate-set-parameters", **params)


# ------------------------------------------------------------ one run

class SetupError(RuntimeError):
    """The configuration itself was refused: later runs would fail alike."""


def rss_beyond_mib(kind, st, touched_mib):
    """Memory a side uses beyond guest RAM, MiB.  kmig's guest RAM is a
    memfd (RssShmem), so everything else is RssAnon + RssFile; QEMU's is
    anonymous memory, so: VmRSS less the RAM the guest wrote (all of it
    on a preallocated destination)."""
    if kind == "kmig":
        return (st.get("RssAnon", 0) + st.get("RssFile", 0)) / 1024
    return st.get("VmRSS", 0) / 1024 - touched_mib


def migrate_once(env, cfg, scen, opts):
    """One migration.  Returns the run's record: figures when it completed,
    'error' (and whatever was sampled) when it did not."""
    wd = tempfile.mkdtemp(prefix="run-", dir=env.workdir)
    uri = f"tcp:{env.dst_addr()}:{free_port()}"
    make = kmig_argv if cfg.kind == "kmig" else qemu_argv
    run = {"ok": False, "remaining_samples": [], "rss_samples": []}
    vms = []
    try:
        dst = Vm(make(env, cfg, scen, wd, "dst", True), wd, "dst", cfg.process_env())
        vms.append(dst)
        src = Vm(make(env, cfg, scen, wd, "src", False), wd, "src", cfg.process_env())
        vms.append(src)
        run["argv"] = {"src": src.argv, "dst": dst.argv}
        dst.connect()
        src.connect()
        try:
            configure(dst, cfg, "dst", opts.downtime_limit)
            configure(src, cfg, "src", opts.downtime_limit)
            dst.cmd("migrate-incoming", uri=uri)
        except QMPError as e:
            raise SetupError(f"configuration refused: {e}") from e
        finally:
            run["qmp"] = {"src": src.sent, "dst": dst.sent}
        if not wait_text(src.serial, scen.ready, opts.boot_timeout):
            why = f"exited with {src.proc.returncode}: {src.stderr_tail()}" \
                if src.proc.poll() is not None else f"not within {opts.boot_timeout}s"
            raise RuntimeError(f"source guest never printed '{scen.ready}' ({why})")
        follow(src, dst, cfg, scen, uri, opts, run)
    except (RuntimeError, OSError, EOFError, QMPError, ValueError) as e:
        run["error"] = str(e)
        run["stage"] = "setup" if isinstance(e, SetupError) else "run"
        # each side's own words: a crashed QEMU's assertion (7.2's dirty
        # ring), a kmig destination's reason for dropping the stream
        tails = [f"{v.name} stderr: {v.stderr_tail()}" for v in vms
                 if v.stderr_tail() and v.stderr_tail() not in run["error"]]
        if tails:
            run["error"] += " [" + "; ".join(tails) + "]"
    finally:
        for v in vms:
            v.stop()
        shutil.rmtree(wd, ignore_errors=True)
    return run


def follow(src, dst, cfg, scen, uri, opts, run):
    """Start the migration and sample it until the destination runs."""
    pids = (src.proc.pid, dst.proc.pid)
    cpu0 = [cpu_seconds(p) for p in pids]
    peak = [float("-inf"), float("-inf")]
    raw_peak = [{}, {}]

    def sample_rss(t, sides=(0, 1)):
        row = [round(t * 1000, 1), None, None]
        for i in sides:
            st = proc_status(pids[i])
            if st is None:
                continue
            b = rss_beyond_mib(cfg.kind, st, scen.mem_mib if i == 1 and scen.dst_prealloc
                               else scen.touched_mib)
            row[1 + i] = round(b, 2)
            if b > peak[i]:
                peak[i], raw_peak[i] = b, st
        run["rss_samples"].append(row)

    t0 = time.monotonic()
    src.cmd("migrate", uri=uri)
    next_q = next_r = t0
    info, expected, remaining = {}, None, None
    while True:
        now = time.monotonic()
        if now >= next_r:
            sample_rss(now - t0)
            next_r = max(next_r + RSS_PERIOD, now)
        if now >= next_q:
            info = src.qmp.cmd("query-migrate")
            status = info.get("status", "none")
            # QEMU >= 8 and kmig report the VM-wide figure; 7.2 only RAM's
            remaining = info.get("remaining", info.get("ram", {}).get("remaining"))
            if status == "active" and "expected-downtime" in info:
                expected = info["expected-downtime"]
            run["remaining_samples"].append(
                [round((now - t0) * 1000, 1), status, remaining,
                 info.get("ram", {}).get("transferred"), info.get("expected-downtime")])
            if status in FINAL:
                break
            next_q = max(next_q + QUERY_PERIOD, now)
        if now - t0 > opts.timeout:
            # a working set that outruns the link never converges (QEMU has
            # no auto-converge here): give up, cleanly
            try:
                src.qmp.cmd("migrate_cancel")
            except (QMPError, OSError, EOFError):
                pass
            raise RuntimeError(f"did not complete in {opts.timeout}s (status {info.get('status')}, "
                               f"remaining {remaining} B): cancelled")
        time.sleep(max(0.0, min(next_q, next_r) - time.monotonic()))
    cpu_src = cpu_seconds(pids[0]) - cpu0[0]
    run["final_info"] = info
    if info["status"] != "completed":
        raise RuntimeError(f"migration {info['status']}: {info.get('error-desc', '')}")
    # QEMU's source completes before its destination has loaded the last
    # bytes: the destination's CPU and RSS count until it runs.
    deadline = time.monotonic() + 30
    while True:
        now = time.monotonic()
        sample_rss(now - t0, sides=(1,))
        st = dst.qmp.cmd("query-status")["status"]
        if st == "running":
            break
        if now > deadline:
            raise RuntimeError(f"source completed, but the destination is '{st}' 30s later")
        time.sleep(0.01)
    cpu_dst = cpu_seconds(pids[1]) - cpu0[1]
    total, ram = info["total-time"], info["ram"]
    run.update({
        "ok": True,
        "total_ms": total,
        "downtime_ms": info.get("downtime"),
        "setup_ms": info.get("setup-time"),
        # kmig keeps the estimate the switchover was decided on; the last
        # one seen while active may be from the pass before, or the limit
        # itself when the first pass converged between two samples
        "expected_downtime_ms": info.get("x-kmig", {}).get("switchover-expected-downtime", expected),
        "transferred": ram["transferred"],
        # passes over the dirty log: how hard the migration had to work to converge
        "dirty_syncs": ram.get("dirty-sync-count"),
        "throughput_MBps": ram["transferred"] / 1e6 / (total / 1000) if total else None,
        "cpu_s_src": cpu_src, "cpu_s_dst": cpu_dst, "cpu_s": cpu_src + cpu_dst,
        "cpu_s_per_gib": (cpu_src + cpu_dst) / (ram["transferred"] / GiB) if ram["transferred"] else None,
        "rss_beyond_src_mib": peak[0], "rss_beyond_dst_mib": peak[1],
        "rss_peak_status_kB": {"src": raw_peak[0], "dst": raw_peak[1]},
    })
    check_label(cfg, info, run)


def check_label(cfg, info, run):
    """A run counts only if it ran what its label says: kmig reports its
    dirty tracking, RAM channels and send mode in x-kmig."""
    xk = info.get("x-kmig", {})
    want = {"channels": cfg.channels if cfg.multifd else 0}
    if not cfg.default:
        want.update({"dirty-mode": f"dirty-{cfg.dirty}", "send-mode": cfg.send_mode})
    wrong = [f"{k} {xk[k]!r} (asked for {v!r})" for k, v in want.items() if k in xk and xk[k] != v]
    if cfg.kind == "kmig":
        # x-kmig.tls: "none" in plaintext (absent before kmig had TLS)
        run["tls_mode"] = "off" if xk.get("tls", "none") == "none" else xk["tls"]
        asked = "gnutls" if cfg.gnutls else "TLS" if cfg.tls else "plaintext"
        if (run["tls_mode"] != "off") != cfg.tls or (cfg.gnutls and run["tls_mode"] != "gnutls"):
            wrong.append(f"tls {run['tls_mode']!r} (asked for {asked})")
    elif cfg.tls:
        run["tls_mode"] = "gnutls"      # QEMU has no kTLS: GnuTLS records in user space
    if cfg.kind == "kmig" and wrong:
        run["ok"] = False
        run["stage"] = "run"
        run["error"] = "ran something else than its label: " + ", ".join(wrong)


def ramlink_once(env, cfg, scen, opts):
    """kmig's RAM path alone (bench/ram_path), into fresh memory."""
    argv = [env.ram_path, "--mem", str(scen.mem_mib), "--fill", str(scen.touched_mib),
            "--channels", str(cfg.channels if cfg.multifd else 0), "--send", cfg.send_mode]
    try:
        if cfg.tls:
            argv += ["--tls", env.certs()]
        if env.link:
            # the destination in host b (ram_path enters it), the source in a
            argv = env.on("src", argv + ["--dst-netns", env.link.dst_ns, "--uri", f"tcp:{env.dst_addr()}:0"])
        out = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
    except (subprocess.SubprocessError, OSError, ValueError, IndexError, RuntimeError) as e:
        err = getattr(e, "stderr", "") or ""
        return {"ok": False, "error": f"{e} {err.strip()}".strip(), "stage": "run"}
    cpu = r["src_cpu"] + r["dst_cpu"]
    run = {"ok": True, "total_ms": r["seconds"] * 1000, "transferred": r["bytes"],
           "throughput_MBps": r["MBps"], "cpu_s_src": r["src_cpu"], "cpu_s_dst": r["dst_cpu"], "cpu_s": cpu,
           "cpu_s_per_gib": cpu / (r["bytes"] / GiB), "recv_path": r["recv_path"],
           "tls_mode": r.get("tls", "off"), "argv": argv}
    if (run["tls_mode"] != "off") != cfg.tls:
        run.update(ok=False, stage="run", error=f"ran with tls {run['tls_mode']!r}: not what its label says")
    return run


def raw_once(env, cfg, scen, opts):
    """The loopback limit: as many bytes as the guest has RAM, no migration."""
    nbytes = scen.mem_mib * MiB
    argv = [env.loopback(), *(["--fresh"] if cfg.fresh else [])]
    if env.link:
        argv = env.on("src", argv + ["--dst-netns", env.link.dst_ns, "--addr", env.dst_addr()])
    try:
        out = subprocess.run(argv + [str(cfg.channels), str(nbytes)], capture_output=True,
                             text=True, timeout=300, check=True).stdout
        r = json.loads(out)
    except (subprocess.SubprocessError, OSError, ValueError, RuntimeError) as e:
        err = getattr(e, "stderr", "") or ""
        return {"ok": False, "error": f"{e} {err.strip()}".strip(), "stage": "run"}
    return {"ok": True, "total_ms": r["seconds"] * 1000, "transferred": r["bytes"],
            "throughput_MBps": r["bytes"] / 1e6 / r["seconds"], "loopback": r}


# ------------------------------------------------------- environment

class Env:
    def __init__(self, build, workdir):
        self.build = os.path.abspath(build)
        self.kmig = os.path.join(self.build, "tools", "kmig")
        self.ram_path = os.path.join(self.build, "bench", "ram_path")
        self.workdir = workdir
        self._loopback = None
        self._certs = None
        self.link = None            # the scenario's links.Link, or None: loopback
        self.kvm = True             # /dev/kvm usable (prepare() finds out)
        # QEMU 10 comes from a private prefix (scripts/qemu10.sh), 7.2 is
        # the system's: both in one run, without one replacing the other
        self.qemus = {"10": None, "7.2": system_qemu_72()}

    @property
    def qemu(self):
        """The QEMU a configuration without a peer runs (converge): the
        newest one there is."""
        return self.qemus["10"] or self.qemus["7.2"]

    def qemu_bin(self, peer):
        return self.qemus.get(peer) if peer else self.qemu

    def install_qemu10(self):
        """scripts/qemu10.sh: QEMU 10 from bookworm-backports into
        /var/cache/kmig/qemu10 (or $KMIG_QEMU10_PREFIX), once; it prints
        the wrapper that runs it."""
        script = os.path.join(SRC_ROOT, "scripts", "qemu10.sh")
        log("bench: QEMU 10 (scripts/qemu10.sh: bookworm-backports into a private prefix)")
        r = subprocess.run(["bash", script], capture_output=True, text=True)
        if r.returncode == 0 and r.stdout.strip():
            self.qemus["10"] = r.stdout.strip().splitlines()[-1]
        else:
            log(f"bench: QEMU 10 not installed: {r.stderr.strip().splitlines()[-1:] or r.returncode}: "
                "its configurations fail")

    def elf(self, guest):
        return os.path.join(self.build, "kvm", "guests", f"{guest}.elf")

    def on(self, side, argv):
        """argv run on the source's or the destination's host."""
        return self.link.on(side, argv) if self.link else argv

    def dst_addr(self):
        return self.link.dst_addr if self.link else "127.0.0.1"

    def loss_obj(self):
        return os.path.join(self.build, "tests", "netem", "loss.bpf.o")

    def certs(self):
        """A throwaway CA and certificates (build/tests/tls/tls-certs:
        server/ and client/ in QEMU's file names), made once per run."""
        if not self._certs:
            d = os.path.join(self.workdir, "certs")
            r = subprocess.run([os.path.join(self.build, "tests", "tls", "tls-certs"), d],
                               capture_output=True, text=True)
            if r.returncode:
                raise RuntimeError(f"cannot make the TLS certificates: {r.stderr.strip()}")
            self._certs = d
        return self._certs

    def loopback(self):
        """bench/loopback.c, built with cc into the build directory when it
        is missing or older than its source."""
        if self._loopback:
            return self._loopback
        src = os.path.join(HERE, "loopback.c")
        out_dir = os.path.join(self.build, "bench")
        if not os.access(self.build, os.W_OK):
            out_dir = self.workdir
        os.makedirs(out_dir, exist_ok=True)
        exe = os.path.join(out_dir, "loopback")
        if not os.path.exists(exe) or os.path.getmtime(exe) < os.path.getmtime(src):
            cc = os.environ.get("CC", "cc")
            r = subprocess.run([cc, "-O2", "-Wall", "-pthread", "-o", exe, src],
                               capture_output=True, text=True)
            if r.returncode:
                raise RuntimeError(f"cannot build {src}: {r.stderr.strip()}")
        self._loopback = exe
        return exe


def system_qemu_72():
    """The system's qemu-system-x86_64, when it is 7.2 (Debian bookworm's)."""
    q = shutil.which("qemu-system-x86_64")
    if not q:
        return None
    r = subprocess.run([q, "--version"], capture_output=True, text=True)
    return q if "version 7.2" in r.stdout else None


def apt_install(pkg, why):
    """Install a Debian package the bench needs; False if we cannot."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return False
    log(f"bench: installing {pkg} ({why})")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", pkg]
    if subprocess.run(cmd, env=env, capture_output=True).returncode:
        # the package lists may never have been fetched on a fresh machine
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
        if subprocess.run(cmd, env=env, capture_output=True).returncode:
            return False
    return True


def host_info(env):
    def read(path):
        try:
            with open(path) as f:
                return f.read()
        except OSError:
            return ""
    cpuinfo = read("/proc/cpuinfo")
    m = re.search(r"^model name\s*:\s*(.*)$", cpuinfo, re.M)
    mem = re.search(r"^MemTotal:\s*(\d+)", read("/proc/meminfo"), re.M)
    qemu = {}
    for peer, q in env.qemus.items():
        if q:
            r = subprocess.run([q, "--version"], capture_output=True, text=True)
            qemu[peer] = r.stdout.splitlines()[0] if r.stdout else None
    rev = subprocess.run(["git", "-C", SRC_ROOT, "describe", "--always", "--dirty"],
                         capture_output=True, text=True).stdout.strip() or None
    return {
        "cpu_model": m.group(1).strip() if m else platform.processor(),
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "mem_total_mib": int(mem.group(1)) // 1024 if mem else None,
        "qemu": qemu,
        "kvm": os.access("/dev/kvm", os.R_OK | os.W_OK),
        "kmig_git": rev,
        "python": platform.python_version(),
        # shmem THP (kmig's memfd) vs anonymous THP (QEMU's RAM) shape the
        # cost of first touching guest RAM on the destination
        "thp_enabled": read("/sys/kernel/mm/transparent_hugepage/enabled").strip(),
        "thp_shmem_enabled": read("/sys/kernel/mm/transparent_hugepage/shmem_enabled").strip(),
    }


# ---------------------------------------------------------- statistics

METRICS = ("total_ms", "downtime_ms", "expected_downtime_ms", "throughput_MBps", "cpu_s", "cpu_s_src",
           "cpu_s_dst", "cpu_s_per_gib", "rss_beyond_src_mib", "rss_beyond_dst_mib", "transferred",
           "setup_ms", "downtime_over_expected", "dirty_syncs")


def summarize(runs):
    ok = [r for r in runs if r.get("ok")]
    for r in ok:
        if r.get("expected_downtime_ms") and r.get("downtime_ms") is not None:
            r["downtime_over_expected"] = r["downtime_ms"] / r["expected_downtime_ms"]
    out = {}
    for k in METRICS:
        v = [r[k] for r in ok if r.get(k) is not None]
        if v:
            out[k] = {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v)}
    return out


def med(entry, key):
    s = entry["summary"].get(key)
    return s["median"] if s else None


# ------------------------------------------------------------ markdown

def fmt_stat(s, digits=0):
    if not s:
        return "-"
    f = f"{{:.{digits}f}}"
    if s["n"] == 1 or s["min"] == s["max"]:
        return f.format(s["median"])
    return f"{f.format(s['median'])} ({f.format(s['min'])}-{f.format(s['max'])})"


def scenario_table(sc):
    rows = ["| config | total ms | downtime ms | expected-downtime ms | MB/s | CPU s | "
            "peak RSS beyond RAM src / dst MiB | dirty syncs |", "|---|---|---|---|---|---|---|---|"]
    notes = []
    for name, e in sc["configs"].items():
        runs, s = e["runs"], e["summary"]
        failed = [r for r in runs if not r.get("ok")]
        label = name
        modes = sorted({r["tls_mode"] for r in runs if r.get("ok") and r.get("tls_mode") not in (None, "off")})
        if modes:
            label += f" [{', '.join(modes)}]"
        if failed and len(failed) < len(runs):
            label += f" ({len(failed)}/{len(runs)} runs failed)"
        for i, r in enumerate(runs):
            if not r.get("ok"):
                notes.append(f"- {name}, run {i + 1}: {r.get('error', 'failed')}")
        if not s:
            rows.append(f"| {label} | failed | failed | failed | failed | failed | failed | failed |")
            continue
        if e["kind"] == "raw":
            rows.append(f"| {label} | {fmt_stat(s.get('total_ms'))} | - | - | "
                        f"{fmt_stat(s.get('throughput_MBps'))} | - | - | - |")
            continue
        if e["kind"] == "ramlink":
            rows.append(f"| {label} | {fmt_stat(s.get('total_ms'))} | - | - | "
                        f"{fmt_stat(s.get('throughput_MBps'))} | {fmt_stat(s.get('cpu_s'), 2)} | - | - |")
            continue
        rows.append(f"| {label} | {fmt_stat(s.get('total_ms'))} | {fmt_stat(s.get('downtime_ms'))} | "
                    f"{fmt_stat(s.get('expected_downtime_ms'))} | {fmt_stat(s.get('throughput_MBps'))} | "
                    f"{fmt_stat(s.get('cpu_s'), 2)} | {fmt_stat(s.get('rss_beyond_src_mib'), 1)} / "
                    f"{fmt_stat(s.get('rss_beyond_dst_mib'), 1)} | {fmt_stat(s.get('dirty_syncs'))} |")
    return rows, notes


METHOD = """\
- Every configuration migrates the same guest ELF (`build/kvm/guests/*.elf`;
  QEMU runs it with `-kernel ELF -append ARGS`, kmig with `kmig run --guest`)
  from a source to a destination process on 127.0.0.1, with the scenario's
  vCPUs, `max-bandwidth` 2^40 (unlimited), `downtime-limit` {dl} ms; the
  destination starts with `-incoming defer` / `--incoming defer` and gets its
  capabilities before `migrate-incoming`; the migration starts when the
  source guest prints its ready line (`idle: ready`, `dirty: filled`).
- QEMU 10 is QEMU 10.0 from Debian's bookworm-backports suite, unpacked into
  a private prefix by `scripts/qemu10.sh` (its own apt lists; run with `-L`
  for its data and SeaBIOS and `QEMU_MODULE_DIR`); QEMU 7.2 is the system's
  qemu-system-x86.  The targets are judged against QEMU 10.
- kmig: `multifd` on with `multifd-channels` N for N channels (off, the main
  stream, for 1ch); `x-kmig-send-mode` `copy` or `zero-copy`; `--dirty-bitmap`
  or `--dirty-ring 4096`.  "kmig default" sets nothing but the two
  parameters above (kmig's own defaults: one connection, send mode and
  dirty tracking chosen by kmig).  QEMU: `multifd` + `multifd-channels` N for
  multifd-N (its default zero-page detection, in the channels);
  `-accel kvm,dirty-ring-size=4096` for ring; "zero-copy" adds the
  `zero-copy-send` capability and, on the source, `-overcommit mem-lock=on`.
  "(TCG)" (--qemu-tcg) runs QEMU with `-accel tcg` instead: on a host
  without /dev/kvm, only target (7t) looks at those rows.
  The exact QMP commands of every run are in results.json (`qmp`).  A kmig
  run counts only if its `x-kmig` reports the dirty tracking, channels and
  send mode of its label.  On loopback the kernel copies MSG_ZEROCOPY data
  anyway when it reaches the local receiver: zero-copy shows what its
  machinery costs, not the copy it saves on a real NIC.
- total ms, downtime ms: the source's `query-migrate` `total-time` and
  `downtime` once completed (QEMU's figures are its source's view).
  expected-downtime ms: kmig: `x-kmig.switchover-expected-downtime`, the
  estimate its switchover was decided on; QEMU: the last
  `expected-downtime` seen while `active` (sampled every {qp} ms, as is `remaining`: the top-level member where it
  exists (kmig, QEMU >= 8), `ram.remaining` otherwise (QEMU 7.2)).
  MB/s: `ram.transferred` / total time (10^6 bytes).
- CPU s: utime+stime of both processes (`/proc/PID/stat`, all threads),
  delta from just before `migrate` to completion on the source and to the
  destination reporting `running`.  It includes the guest's vCPU threads: in
  the ws scenarios they rewrite memory on a whole core throughout.
- Peak RSS beyond guest RAM, per side: `/proc/PID/status` every {rp} ms
  during the migration; kmig's guest RAM is a memfd (RssShmem), so beyond =
  RssAnon + RssFile; QEMU's guest RAM is anonymous, so beyond = VmRSS minus
  the RAM the guest wrote (the scenario's fill), which also counts the few
  MiB of firmware, image and page tables the guest touched besides.
- raw loopback: `bench/loopback.c` pushes as many bytes as the guest has RAM
  over 1 or N TCP streams with send()/recv() of 1 MiB, each side walking its
  own 64 MiB buffer (memory bandwidth paid on both sides, no page faults).
  "into fresh memory": each stream received by its own thread with
  splice(2) into its own memfd nobody has touched (socket -> pipe -> file:
  one copy, no page zeroed first, no lock shared between the streams), so
  the receivers first-touch every page as a migration destination must, in
  parallel: the host's limit for a fresh destination.
- ram-path-1g: `build/bench/ram_path` runs kmig's RAM handlers, stream, RAM
  channels and transport between two processes with no guest (no KVM): the
  source's 1 GiB is filled and mapped before the clock starts, the
  destination's RAM is fresh; time from the source's set-up to the
  destination's EOF, CPU of both processes over the same span, and the
  destination's RAM is compared with the source's page by page.
- *-prealloc scenarios: the destination is started with kmig run
  --mem-prealloc / qemu -mem-prealloc, so all its RAM is faulted in before
  migrate-incoming; the figures are then the migration's alone.  RSS beyond
  RAM on such a QEMU destination is VmRSS less all guest RAM.
- TLS rows: `tls-creds-x509` objects with QEMU's names and files on both
  sides, for kmig and QEMU alike (`endpoint=server` on the destination,
  `client` on the source, `verify-peer=on` on both: each end checks the
  other's certificate against a throwaway CA made by
  `build/tests/tls/tls-certs` at the start of the run); `tls-creds` on both,
  `tls-hostname` localhost on the source.  Every connection is TLS, the
  multifd channels too.  kmig hands the keys to the kernel (kTLS) where it
  has the "tls" ULP and says so in `x-kmig.tls` (the label shows it in
  brackets: ktls or gnutls); QEMU always encrypts with GnuTLS in user space
  and refuses `zero-copy-send` with TLS, so its TLS rows copy.
- *-rack, *-site, *-lossy: the source runs in one network namespace, the
  destination in another, joined by a veth pair (bench/links.py, the
  integration tests' tests/integration/netns.py), through `ip netns exec`;
  the URI is the destination host's address.  rack and site are netem on
  both ends (rate, and half the round trip each way; the queue holds a few
  bandwidth-delay products); lossy is a tc BPF program dropping 1 % of the
  packets each way with GSO off, so that a drop is one wire packet (the
  count it dropped is under the table).  "raw link" is loopback.c across
  the same link.  Only a few configurations run there (the best of each
  kind, and TLS): a run over 1 Gbit/s is slow.  dirty syncs:
  `ram.dirty-sync-count`, the passes over the dirty log it took to converge.
- Each cell: median (min-max) over the runs that completed; a failed run is
  listed under its table with its error and left out of the figures."""


FRESH_SCENARIOS = ("idle-1g", "ws64-1g", "ws256-1g", "idle-1g-2vcpu", "ws64-1g-2vcpu")
PREALLOC_SCENARIOS = ("idle-1g-prealloc", "ws64-1g-prealloc")


def targets(results, downtime_limit):
    """The targets of the issue "Faster than the newest QEMU", each (text,
    verdict), judged against QEMU 10 in the same run."""
    out = []
    scen = results["scenarios"]

    def configs(s, kind, where=lambda n: True):
        return {n: e for n, e in scen[s]["configs"].items()
                if e["kind"] == kind and e["summary"] and where(n)} if s in scen else {}

    def best(s, kind, key, lowest=True, where=lambda n: True):
        c = {n: e for n, e in configs(s, kind, where).items() if med(e, key) is not None}
        if not c:
            return None, None
        n = (min if lowest else max)(c, key=lambda n: med(c[n], key))
        return n, med(c[n], key)

    def verdict(ok):
        return "**PASS**" if ok else "**MISS**"

    def judge(text, a, b, limit, higher=False, why=None):
        """a/b against limit, or n/a when a side did not complete."""
        if a[1] is None or b[1] is None:
            out.append((f"{text}: n/a ({why or 'no completed run of ' + (a[0] or b[0] or 'one side')})", "N/A"))
            return
        r = a[1] / b[1] if b[1] else float("inf")
        out.append((f"{text}: {a[0]} {a[1]:.0f} vs {b[0]} {b[1]:.0f}, ratio {r:.2f}",
                    verdict(r >= limit if higher else r <= limit)))

    def q10(n):
        # TCG runs are judged only in (7t): a KVM guest against a TCG
        # one is no comparison
        return n.startswith("QEMU 10") and "(TCG)" not in n

    def q10_tcg(n):
        return n.startswith("QEMU 10") and "(TCG)" in n

    def fresh(n):
        return "fresh" in n

    def nch(n):
        return "ch" in n and " 1ch" not in n

    # 1. total time into a fresh destination, best and untuned default
    for s in FRESH_SCENARIOS:
        if s not in scen:
            continue
        q = best(s, "qemu", "total_ms", where=q10)
        judge(f"(1) {s}: kmig best total ms ≤ 0.67 × QEMU 10's best", best(s, "kmig", "total_ms"), q, 0.67)
        judge(f"(1) {s}: kmig default total ms ≤ 0.8 × QEMU 10's best",
              best(s, "kmig", "total_ms", where=lambda n: n == "kmig default"), q, 0.8)
    # 2. channels scale into a fresh destination; 3. against the raw limit
    for s in ("idle-1g", "ws64-1g", "ram-path-1g"):
        if s not in scen:
            continue
        kind = "ramlink" if s == "ram-path-1g" else "kmig"
        judge(f"(2) {s}: kmig N channels throughput ≥ 1.5 × 1 channel's",
              best(s, kind, "throughput_MBps", lowest=False, where=nch),
              best(s, kind, "throughput_MBps", lowest=False, where=lambda n: not nch(n)), 1.5, higher=True)
        judge(f"(3) {s}: kmig best throughput ≥ 85% of the raw N streams into fresh memory",
              best(s, kind, "throughput_MBps", lowest=False),
              best(s, "raw", "throughput_MBps", lowest=False, where=lambda n: fresh(n) and "streams" in n),
              0.85, higher=True)
    # 4. preallocated destination
    for s in PREALLOC_SCENARIOS:
        if s not in scen:
            continue
        judge(f"(4) {s}: kmig best total ms ≤ 0.8 × QEMU 10's best", best(s, "kmig", "total_ms"),
              best(s, "qemu", "total_ms", where=q10), 0.8)
        judge(f"(4) {s}: kmig best throughput ≥ 90% of the raw N streams",
              best(s, "kmig", "throughput_MBps", lowest=False),
              best(s, "raw", "throughput_MBps", lowest=False, where=lambda n: not fresh(n) and "streams" in n),
              0.9, higher=True)
    # 5. CPU per GiB, where the guest is idle (the processes' CPU is the
    # migration's alone)
    if "idle-1g" in scen:
        judge("(5) idle-1g: kmig best CPU s per GiB (source + destination) ≤ 0.75 × QEMU 10's best",
              best("idle-1g", "kmig", "cpu_s_per_gib"), best("idle-1g", "qemu", "cpu_s_per_gib", where=q10), 0.75)

    def tls(n):
        return "TLS" in n

    def plain(n):
        return not tls(n)

    # 6. downtime, every scenario, every kmig configuration's median, like
    # with like: plaintext against QEMU's plaintext, TLS against its TLS
    for s, sc in scen.items():
        for what, like in (("", plain), (" TLS", tls)):
            k = {n: e for n, e in configs(s, "kmig", like).items() if med(e, "downtime_ms") is not None}
            q = best(s, "qemu", "downtime_ms", where=lambda n: q10(n) and like(n))
            if not k:
                continue
            worst = max(k, key=lambda n: med(k[n], "downtime_ms"))
            wd = med(k[worst], "downtime_ms")
            if q[1] is None:
                out.append((f"(6) {s}: kmig{what} downtime ≤ QEMU 10{what}'s: n/a (no completed QEMU 10{what} run)",
                            "N/A"))
            else:
                out.append((f"(6) {s}: every kmig{what} config's downtime ≤ QEMU 10{what}'s best: worst {worst} "
                            f"{wd:.0f} ms vs {q[0]} {q[1]:.0f} ms", verdict(wd <= q[1])))
    # 7. TLS (the issue "Between two real hosts"): throughput against QEMU
    # 10 with TLS, and the share of kmig's own plaintext that TLS keeps
    for s in ("idle-1g", "ws64-1g", "ram-path-1g"):
        kind = "ramlink" if s == "ram-path-1g" else "kmig"
        if not configs(s, kind, tls):
            continue
        if kind == "kmig":
            judge(f"(7) {s}: kmig TLS throughput ≥ 2 × QEMU 10 TLS",
                  best(s, "kmig", "throughput_MBps", lowest=False, where=tls),
                  best(s, "qemu", "throughput_MBps", lowest=False, where=lambda n: q10(n) and tls(n)), 2.0,
                  higher=True)
        judge(f"(7) {s}: kmig TLS throughput ≥ 60% of kmig plaintext",
              best(s, kind, "throughput_MBps", lowest=False, where=tls),
              best(s, kind, "throughput_MBps", lowest=False, where=plain), 0.6, higher=True)
    # 7t. without /dev/kvm (--qemu-tcg): kmig's RAM path with TLS against
    # QEMU 10 with TLS on TCG, an idle guest: both do the same work per
    # page (read, encrypt, send, receive into fresh memory), but kmig's
    # side has no guest and no dirty tracking: indicative only
    # (a dirtying guest under TCG dirties at TCG's pace: idle-1g only)
    if configs("idle-1g", "qemu", lambda n: q10_tcg(n) and tls(n)):
        judge("(7t) indicative, no KVM: kmig RAM path TLS (ram-path-1g) ≥ 2 × QEMU 10 TLS on TCG (idle-1g)",
              best("ram-path-1g", "ramlink", "throughput_MBps", lowest=False, where=tls),
              best("idle-1g", "qemu", "throughput_MBps", lowest=False, where=lambda n: q10_tcg(n) and tls(n)),
              2.0, higher=True, why="needs completed TLS runs of both ram-path-1g and idle-1g")
    # 8. over every link shape: no slower than QEMU 10, in plaintext and TLS
    for s, sc in scen.items():
        if not sc.get("link") or not configs(s, "kmig"):
            continue
        for what, like in (("", plain), (" TLS", tls)):
            judge(f"(8) {s}: kmig{what} best total ms ≤ QEMU 10{what}'s best",
                  best(s, "kmig", "total_ms", where=like),
                  best(s, "qemu", "total_ms", where=lambda n: q10(n) and like(n)), 1.0)
    if "sparse-16g" in scen:
        judge("(6) sparse-16g: kmig best total ms ≤ 2 × idle-1g's", best("sparse-16g", "kmig", "total_ms"),
              best("idle-1g", "kmig", "total_ms"), 2.0, why="needs completed kmig runs of both scenarios")
    # memory beyond guest RAM (the earlier issue's bound), worst run of any
    # kmig configuration
    for side in ("src", "dst"):
        key = f"rss_beyond_{side}_mib"
        worst = None
        for s, sc in scen.items():
            for n, e in sc["configs"].items():
                if e["kind"] != "kmig" or key not in e["summary"]:
                    continue
                v = e["summary"][key]["max"]
                if worst is None or v > worst[0]:
                    worst = (v, s, n)
        if worst:
            v, s, n = worst
            out.append((f"(m) kmig peak RSS beyond guest RAM ≤ {RSS_LIMIT_MIB} MiB, {side}: worst {v:.1f} MiB "
                        f"({s}, {n})", verdict(v <= RSS_LIMIT_MIB)))
    return out


def markdown(results):
    h, o = results["host"], results["options"]
    qemu = h["qemu"] if isinstance(h["qemu"], str) else \
        "; ".join(f"QEMU {p}: {v}" for p, v in (h["qemu"] or {}).items() if v) or "QEMU not installed"
    lines = [f"# kmig benchmark, {results['date']}", "",
             f"Host: {h['cpu_model']}, {h['cpus']} CPUs, {h['mem_total_mib']} MiB, kernel {h['kernel']}, "
             f"/dev/kvm {'usable' if h.get('kvm', True) else 'missing'}; {qemu}; kmig {h['kmig_git']}.",
             f"Runs: {o['runs']} per configuration (median (min-max)); channels N = {o['channels']}; "
             f"downtime-limit {o['downtime_limit']} ms; per-migration timeout {o['timeout']} s.", ""]
    for name, why in results.get("skipped", {}).items():
        lines += [f"- {name}: not run: {why}"]
    if results.get("skipped"):
        lines.append("")
    for name, sc in results["scenarios"].items():
        lines += [f"## {name}", "", sc["about"] + ".", ""]
        if sc.get("link"):
            lk = sc["link"]
            text = f"Link: {lk['shape']}, ping's round trip {num(lk.get('ping_rtt_ms'), 2)} ms once shaped"
            if lk.get("packets"):
                text += (f"; the loss program dropped {lk['dropped']} of {lk['packets']} packets "
                         f"({100 * lk['dropped'] / lk['packets']:.2f} %) over all runs")
            lines += [text + ".", ""]
        rows, notes = scenario_table(sc)
        lines += rows + [""]
        if notes:
            lines += ["Failed runs:", ""] + notes + [""]
        for p in sc.get("plots", []):
            lines.append(f"![{p}]({p})")
        if sc.get("plots"):
            lines.append("")
    if results.get("converge"):
        lines += converge.markdown(results["converge"])
    lines += ["## Targets", ""]
    for text, v in results["targets"]:
        lines.append(f"- {v} {text}")
    if results.get("plots_note"):
        lines += ["", results["plots_note"]]
    lines += ["", "## Method", ""]
    if results["scenarios"]:
        lines.append(METHOD.format(dl=o["downtime_limit"], qp=int(QUERY_PERIOD * 1000),
                                   rp=int(RSS_PERIOD * 1000)))
    if results.get("converge"):
        lines.append(converge.method(results["converge"]))
    lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------- plots

def gp_str(s):
    return "'" + s.replace("'", "''") + "'"


def run_gnuplot(sec, made):
    """Write each (base, script) pair's .gp and run gnuplot on it; the PNGs
    made are listed in sec["plots"].  Without gnuplot only the scripts."""
    gp = shutil.which("gnuplot")
    sec["plots"] = []
    for base, script in made:
        with open(base + ".gp", "w") as f:
            f.write(script + "\n")
        if gp:
            r = subprocess.run([gp, base + ".gp"], capture_output=True, text=True)
            if r.returncode == 0:
                sec["plots"].append(os.path.basename(base) + ".png")
            else:
                log(f"bench: gnuplot failed on {base}.gp: {r.stderr.strip()}")


def plots(results, out_dir):
    """PNGs with gnuplot: remaining over time (first run of each config),
    throughput and downtime bars (median, min-max).  The .dat and .gp files
    stay next to them."""
    term = GP_TERM
    for name, sc in results["scenarios"].items():
        made = []
        base = os.path.join(out_dir, f"remaining-{name}")
        series = []
        with open(base + ".dat", "w") as f:
            for cname, e in sc["configs"].items():
                run = next((r for r in e["runs"] if r.get("ok") and r.get("remaining_samples")),
                           next((r for r in e["runs"] if r.get("remaining_samples")), None))
                if not run:
                    continue
                f.write(f"# {cname}\n")
                for t, _st, rem, *_ in run["remaining_samples"]:
                    if rem is not None:
                        f.write(f"{t / 1000:.3f} {rem / MiB:.3f}\n")
                f.write("\n\n")
                series.append(cname)
        if series:
            # gnuplot cycles 8 colours: QEMU's lines are dashed so that no
            # two configurations look alike
            plot = ", ".join(f"{gp_str(base + '.dat')} index {i} using 1:2 with lines lw 2 "
                             f"dt {2 if c.startswith('QEMU') else 1} title {gp_str(c)}"
                             for i, c in enumerate(series))
            script = "\n".join([term, f"set output {gp_str(base + '.png')}",
                                f"set title {gp_str(f'{name}: remaining over time (first run)')}",
                                "set xlabel 'seconds since migrate'", "set ylabel 'remaining (MiB)'",
                                "set key outside right top", "set grid", f"plot {plot}"])
            made.append((base, script))
        for key, unit, kinds in (("throughput_MBps", "MB/s", ("raw", "kmig", "qemu")),
                                 ("downtime_ms", "ms", ("kmig", "qemu"))):
            what = key.split("_")[0]
            base = os.path.join(out_dir, f"{what}-{name}")
            rows = [(c, e["summary"][key]) for c, e in sc["configs"].items()
                    if e["kind"] in kinds and key in e["summary"]]
            if not rows:
                continue
            with open(base + ".dat", "w") as f:
                for c, s in rows:
                    f.write(f"\"{c}\" {s['median']} {s['min']} {s['max']}\n")
            script = "\n".join([term, f"set output {gp_str(base + '.png')}",
                                f"set title {gp_str(f'{name}: {what}, median (min-max)')}",
                                f"set ylabel {gp_str(unit)}", "set style data histograms",
                                "set style histogram errorbars gap 1 lw 1",
                                "set style fill solid 0.6 border -1", "set boxwidth 0.8",
                                "set xtics rotate by 30 right", "set yrange [0:*]", "set offsets 0, 0, graph 0.05, 0",
                                "set grid ytics",
                                "set bmargin 10",
                                f"plot {gp_str(base + '.dat')} using 2:3:4:xtic(1) notitle"])
            made.append((base, script))
        run_gnuplot(sc, made)


# ---------------------------------------------------------------- main

def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        description="kmig vs QEMU live-migration benchmark (see the top of bench/bench.py)")
    ap.add_argument("--build", default=os.path.join(SRC_ROOT, "build"), help="meson build directory")
    ap.add_argument("--runs", type=int, help="runs per configuration (default 3, at least 3 for the full "
                    "bench; 1 with --smoke)")
    ap.add_argument("--channels", type=int, default=4, help="N: streams/channels of the N configs (default 4)")
    ap.add_argument("--scenarios", help=f"comma-separated, from: {', '.join(SCENARIOS)}, converge "
                    "(default all)")
    ap.add_argument("--configs", help="comma-separated substrings: run the configurations whose name "
                    "contains one (e.g. 'kmig 1ch,QEMU 1 stream bitmap')")
    ap.add_argument("--no-qemu", action="store_true", help="leave out the QEMU configurations")
    ap.add_argument("--qemu-tcg", action="store_true",
                    help="run QEMU's configurations on TCG (-accel tcg), named '... (TCG)', so that a host "
                         "without /dev/kvm still measures QEMU's transport (TLS above all) against kmig's RAM "
                         "path; kmig's guest configurations still need /dev/kvm; no target compares a TCG "
                         "run but (7t)")
    ap.add_argument("--smoke", action="store_true", help="tiny run (< 60 s): idle guest 32 MiB of 256 MiB, "
                    "1 run, raw loopback, kmig 1ch copy and Nch zero-copy (ring), no QEMU; a short "
                    "converge (16 MiB working set, kmig without and with dirty-limit); the RAM path "
                    "alone, 64 MiB, 1ch, Nch and Nch TLS, over loopback and over the lossy link")
    ap.add_argument("--out", default=os.path.join(HERE, "results"),
                    help="results root: writes OUT/<timestamp>/ and OUT/latest (default bench/results)")
    ap.add_argument("--report", metavar="RESULTS_JSON",
                    help="run nothing: render results.md, the targets and the plots again from an earlier "
                         "run's results.json (or .json.gz) into a new OUT/<timestamp>/")
    ap.add_argument("--downtime-limit", type=int, default=300, help="ms (default 300)")
    ap.add_argument("--timeout", type=float, default=60, help="seconds before a migration that has not "
                    "completed is cancelled and counted as failed (default 60)")
    ap.add_argument("--boot-timeout", type=float, default=300,
                    help="seconds to wait for the source guest's ready line (default 300)")
    a = ap.parse_args(argv)
    if a.channels < 1 or a.channels > 64:
        ap.error("--channels must be 1..64")
    if a.smoke and a.qemu_tcg:
        ap.error("--qemu-tcg and --smoke: the smoke run has no QEMU")
    if a.smoke:
        a.runs = a.runs or 1
        a.no_qemu = True
    elif a.runs is None:
        a.runs = 3
    elif a.runs < 3 and not (a.scenarios or a.configs):
        ap.error("the full bench needs --runs 3 or more (medians of fewer are not worth publishing); "
                 "narrow it with --scenarios or --configs for a quick look")
    if a.runs < 1:
        ap.error("--runs must be at least 1")
    return a


def select(args):
    """(scenarios, their configurations, converge's configurations: [] =
    converge not run)."""
    conv = args.smoke
    if args.smoke:
        scens = [SMOKE, SMOKE_RAM_PATH, SMOKE_RAM_PATH_LOSSY]
    else:
        names = [s.strip() for s in args.scenarios.split(",")] if args.scenarios \
            else list(SCENARIOS) + ["converge"]
        bad = [n for n in names if n not in SCENARIOS and n != "converge"]
        if bad:
            sys.exit(f"bench: unknown scenario(s) {', '.join(bad)}; known: {', '.join(SCENARIOS)}, converge")
        conv = "converge" in names
        scens = [SCENARIOS[n] for n in names if n != "converge"]
    cfgs = all_configs(args.channels, args.smoke)
    if args.no_qemu:
        cfgs = [c for c in cfgs if c.kind != "qemu"]
    if args.qemu_tcg:
        cfgs = tcg_configs(cfgs)
    subs = [s.strip() for s in args.configs.split(",") if s.strip()] if args.configs else None
    if subs:
        cfgs = [c for c in cfgs if any(s in c.name for s in subs)]
    ccfgs = converge.select(subs, args.no_qemu, args.smoke) if conv else []
    if subs and not cfgs and not ccfgs:
        sys.exit(f"bench: --configs {args.configs!r} matches no configuration; names: "
                 + "; ".join(c.name for c in all_configs(args.channels))
                 + "; converge: " + "; ".join(c.name for c in converge.CONFIGS))
    if not cfgs:
        scens = []
    return scens, cfgs, ccfgs


def tcg_configs(cfgs):
    """--qemu-tcg: every QEMU configuration on TCG instead of KVM, named so
    ("(TCG)"); the dirty ring is KVM's, so QEMU's ring ones go.  Under TCG
    QEMU's migration thread does the same work per page (read, encrypt,
    send) as under KVM, so for an idle guest its throughput still says what
    its transport costs, on a host where kmig has only its RAM path."""
    out = []
    for c in cfgs:
        if c.kind != "qemu":
            out.append(c)
        elif c.dirty != "ring":
            out.append(dataclasses.replace(c, name=c.name + " (TCG)", tcg=True))
    return out


def make_out_dir(root):
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_dir, n = os.path.join(root, stamp), 1
    while os.path.exists(out_dir):      # two runs within one second
        n += 1
        out_dir = os.path.join(root, f"{stamp}-{n}")
    os.makedirs(out_dir)
    return out_dir


def dump_json(obj, path):
    text = json.dumps(obj, indent=2)

    # a flat array (a sample, a list of numbers) on one line: the raw
    # samples would otherwise take one line per number
    def flat(m):
        try:
            return json.dumps(json.loads(m.group(0)))
        except ValueError:
            return m.group(0)
    text = re.sub(r"\[[^\[\]{}]*\]", flat, text)
    with open(path, "w") as f:
        f.write(text + "\n")


def link_latest(root, out_dir):
    latest = os.path.join(root, "latest")
    tmp = latest + ".tmp"
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(os.path.basename(out_dir), tmp)
    if os.path.isdir(latest) and not os.path.islink(latest):
        shutil.rmtree(latest)
    os.replace(tmp, latest)


def load_results(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        return json.load(f)


def write_report(results, args, plots_note=None):
    """Targets, plots, results.json and results.md into a new OUT/<stamp>/."""
    dl = results["options"]["downtime_limit"]
    results["targets"] = targets(results, dl)
    if results.get("converge"):
        results["targets"] += converge.targets(results["converge"])
    results["plots_note"] = plots_note
    out_dir = make_out_dir(args.out)
    plots(results, out_dir)
    if results.get("converge"):
        run_gnuplot(results["converge"], converge.plots(results["converge"], out_dir, GP_TERM))
    md = markdown(results)
    dump_json(results, os.path.join(out_dir, "results.json"))
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(md)
    link_latest(args.out, out_dir)
    print(md)
    return out_dir


def rerender(args):
    """--report: the figures of an earlier run, judged and drawn by this
    version of the script (summaries recomputed from the raw runs)."""
    results = load_results(args.report)
    for sc in results["scenarios"].values():
        for e in sc["configs"].values():
            e["summary"] = summarize(e["runs"])
    out_dir = write_report(results, args)
    log(f"bench: report of {args.report} in {out_dir}")
    return 0


def kvm_usable():
    return os.path.exists("/dev/kvm") and os.access("/dev/kvm", os.R_OK | os.W_OK)


def prepare(args, scens, cfgs, ccfgs):
    """The environment: what the selected runs need, built or installed.
    Returns (env, the guest scenarios left out and why, plots note)."""
    env = Env(args.build, tempfile.mkdtemp(prefix="kmig-bench-"))
    skipped = {}
    env.kvm = kvm_usable()
    if not env.kvm:
        tcg = any(c.tcg for c in cfgs)
        for s in scens:
            if s.needs_kvm and not tcg:
                skipped[s.name] = "no /dev/kvm on this host: the guests need KVM"
            elif s.needs_kvm:
                log(f"bench: {s.name}: QEMU on TCG only; kmig's guests need /dev/kvm")
        if ccfgs:
            skipped["converge"] = "no /dev/kvm on this host: the guests need KVM"
        for name, why in skipped.items():
            log(f"bench: {name} not run: {why}")
    guests = [s for s in scens if s.needs_kvm and s.name not in skipped]
    missing = [p for p in [env.kmig] * bool(guests) + [env.elf(s.guest) for s in guests]
               + [env.elf("dirty")] * bool(ccfgs and "converge" not in skipped)
               + [env.ram_path] * any(not s.needs_kvm for s in scens)
               if not os.path.exists(p)]
    if missing:
        sys.exit(f"bench: {', '.join(missing)} missing: build first (ninja -C {args.build})")
    wants_qemu = guests or (ccfgs and "converge" not in skipped)
    if wants_qemu and any(c.kind == "qemu" and c.peer == "10" for c in cfgs) or \
            (ccfgs and "converge" not in skipped and any(c.kind == "qemu" for c in ccfgs)):
        env.install_qemu10()
    if wants_qemu and any(c.kind == "qemu" and c.peer == "7.2" for c in cfgs) and not env.qemus["7.2"]:
        if apt_install("qemu-system-x86", "the QEMU 7.2 configurations"):
            env.qemus["7.2"] = system_qemu_72()
        if not env.qemus["7.2"]:
            log("bench: QEMU 7.2 (the system's qemu-system-x86_64) not there: its configurations fail")
    plots_note = None
    if not shutil.which("gnuplot") and not args.smoke:
        apt_install("gnuplot-nox", "the plots")
    if not shutil.which("gnuplot"):
        plots_note = "Plots skipped: gnuplot is not installed (apt-get install gnuplot-nox); " \
                     "the .gp/.dat files to make them are in this directory."
        log(f"bench: {plots_note}")
    return env, skipped, plots_note


def one_run(env, c, scen, args):
    if c.kind == "qemu" and not env.qemu_bin(c.peer):
        return {"ok": False, "stage": "setup", "error": f"QEMU {c.peer} not installed"}
    if c.kind == "raw":
        return raw_once(env, c, scen, args)
    if c.kind == "ramlink":
        return ramlink_once(env, c, scen, args)
    return migrate_once(env, c, scen, args)


def progress(r, c):
    if not r.get("ok"):
        return f"FAILED: {r.get('error')}"
    msg = f"total {num(r['total_ms'])} ms, {num(r['throughput_MBps'])} MB/s"
    if c.tls:
        msg += f", TLS {r.get('tls_mode')}"
    if c.kind == "ramlink":
        msg += f", CPU {num(r['cpu_s'], 2)} s ({r['recv_path']})"
    elif c.kind != "raw":
        msg += (f", downtime {r['downtime_ms']} ms, expected {r['expected_downtime_ms']}"
                f", CPU {num(r['cpu_s'], 2)} s, RSS beyond "
                f"{num(r['rss_beyond_src_mib'], 1)}/{num(r['rss_beyond_dst_mib'], 1)} MiB")
    return msg


def run_scenario(env, scen, cfgs, args):
    """Every configuration that fits the scenario, --runs times, interleaved."""
    cfgs = [c for c in cfgs if c.runs_in(scen) and (env.kvm or c.kind != "kmig")]
    sc = {"about": scen.about, "guest": scen.guest, "params": scen.params, "mem_mib": scen.mem_mib,
          "vcpus": scen.vcpus, "configs": {c.name: {**dataclasses.asdict(c), "runs": [], "summary": {}}
                                           for c in cfgs}}
    if not scen.link:
        run_configs(env, scen, cfgs, args, sc)
        return sc
    # raises links.LinkUnavailable before any run where the shape cannot be made
    with links.Link(scen.link, env.loss_obj()) as link:
        env.link = link
        rate, rtt, loss, what = links.LINKS[scen.link]
        sc["link"] = {"shape": scen.link, "rate": rate, "rtt_ms": rtt, "loss_pct": loss, "about": what,
                      "ping_rtt_ms": link.rtt_ms}
        log(f"[{scen.name}] link {scen.link}: {what}; ping round trip {num(link.rtt_ms, 2)} ms")
        c0 = link.counts()
        try:
            run_configs(env, scen, cfgs, args, sc)
        finally:
            env.link = None
        c1 = link.counts()
        if c0 and c1:
            sc["link"]["packets"], sc["link"]["dropped"] = c1[0] - c0[0], c1[1] - c0[1]
    return sc


def run_configs(env, scen, cfgs, args, sc):
    """--runs rounds of every configuration; the figures into sc."""
    dead = {}           # config -> the setup error that later runs would repeat
    for i in range(args.runs):
        for c in cfgs:
            e = sc["configs"][c.name]
            if c.name in dead:
                e["runs"].append({"ok": False, "stage": "skipped",
                                  "error": f"not run: run {dead[c.name]} was refused the same configuration"})
                continue
            r = one_run(env, c, scen, args)
            e["runs"].append(r)
            if r.get("stage") == "setup":
                dead[c.name] = i + 1
            log(f"[{scen.name}] {c.name} run {i + 1}/{args.runs}: {progress(r, c)}")
    for e in sc["configs"].values():
        e["summary"] = summarize(e["runs"])


def main(argv=None):
    args = parse_args(argv)
    if args.report:
        return rerender(args)
    scens, cfgs, ccfgs = select(args)
    env, skipped, plots_note = prepare(args, scens, cfgs, ccfgs)
    results = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "host": host_info(env),
               "options": {"runs": args.runs, "channels": args.channels, "smoke": args.smoke,
                           "downtime_limit": args.downtime_limit, "timeout": args.timeout,
                           "max_bandwidth": UNLIMITED_BW, "query_period_ms": QUERY_PERIOD * 1000,
                           "rss_period_ms": RSS_PERIOD * 1000},
               "method": METHOD.format(dl=args.downtime_limit, qp=int(QUERY_PERIOD * 1000),
                                       rp=int(RSS_PERIOD * 1000)),
               "skipped": skipped, "scenarios": {}}
    t_start = time.monotonic()
    try:
        for scen in scens:
            if scen.name in skipped:
                continue
            try:
                results["scenarios"][scen.name] = run_scenario(env, scen, cfgs, args)
            except links.LinkUnavailable as e:
                skipped[scen.name] = f"link {scen.link} not made: {e}"
                log(f"bench: {scen.name} not run: {skipped[scen.name]}")
        if ccfgs and "converge" not in skipped:
            results["converge"] = converge.run(env, ccfgs, args, smoke=args.smoke)
    finally:
        shutil.rmtree(env.workdir, ignore_errors=True)
    results["elapsed_s"] = round(time.monotonic() - t_start, 1)
    out_dir = write_report(results, args, plots_note)
    log(f"bench: results in {out_dir} (and {os.path.join(args.out, 'latest')}), "
        f"{results['elapsed_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
