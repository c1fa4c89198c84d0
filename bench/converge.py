"""The `converge` scenario of bench/bench.py: a migration that cannot
converge on its own, and what makes it converge.

A 2-vCPU dirty guest (`ws=64,rate=48,compute=1`): vCPU 0 rewrites a 64 MiB
working set at 48 MiB/s, three times what the 16 MiB/s link
(`max-bandwidth`) carries; vCPU 1 only computes and the guest reports its
progress every second (`work=` chunks per second, next to the writer's
`MiB/s=`).  downtime-limit 300 ms.  Three configurations, interleaved run
by run:

  kmig no limit        plain precopy: the stall signal (x-kmig-stall,
                       3 passes and 5 s without progress) or 60 s, then
                       migrate_cancel
  kmig dirty-limit     the `dirty-limit` capability, vcpu-dirty-limit 1 MB/s:
                       should complete
  QEMU auto-converge   QEMU (7.2 on Debian 12) with `auto-converge`,
                       cpu-throttle-initial 20 / -increment 10, the same
                       guest ELF and link: up to 60 s, then migrate_cancel

Each run samples query-migrate every 250 ms (remaining: the top-level
member on kmig, ram.remaining on QEMU 7.2) and the compute vCPU's chunk
counter in guest RAM (pmemsave), and follows the guest's COM1 log; compute
progress is the compute vCPU's rate during the migration over its own rate
in the 3 s just before `migrate`, in the same VM, by the counter and by
the work= lines (placed on the guest's clock: a throttled writer, which
prints them, prints late).  --smoke runs a short version of the two kmig
configurations (16 MiB working set, about 20 s).

bench.py calls run(), targets(), markdown() and plots(); the results go
into the `converge` section of results.json."""
import dataclasses
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time

import bench as B
from kmiglib import QMPError, free_port

MiB = 1 << 20
SAMPLE_PERIOD = 0.25            # query-migrate
POLL = 0.05                     # the guest's COM1 log
PC_SIZE = 64                    # the dirty guest's per-CPU chunk counter stride
PROGRESS = re.compile(r"dirty: t=(\d+)s .*?MiB/s=(\d+) work=(\d+)")
FINAL = ("completed", "failed", "cancelled")


@dataclasses.dataclass
class Setup:
    """The scenario's shape: the full one, or the short one of --smoke."""
    name: str
    params: dict                # the dirty guest's parameters
    mem_mib: int
    vcpus: int
    link: int                   # max-bandwidth, bytes/s
    stall_iterations: int
    stall_ms: int
    baseline_lines: int         # progress lines (1 s each) before migrate
    dirty_limit: int            # vcpu-dirty-limit, MB/s
    throttle_initial: int       # QEMU cpu-throttle-initial / -increment
    throttle_increment: int
    about: str
    timeout: float = 0          # s before a run is cancelled; 0 = --timeout
    skip_lines: int = 2         # progress lines before the baseline (boot, start)
    tail_s: float = 2           # s of progress lines kept after the migration

    def scenario(self):
        """The bench.Scenario its processes are started from."""
        return B.Scenario(self.name, "dirty", self.params, self.mem_mib, "dirty: start", 0,
                          self.about, vcpus=self.vcpus)


FULL = Setup("converge", {"ws": 64, "rate": 48, "compute": 1}, 256, 2, 16 * MiB, 3, 5000, 3, 1, 20, 10,
             "dirty guest on 2 vCPUs: vCPU 0 rewrites a 64 MiB working set at 48 MiB/s (3x the link), "
             "vCPU 1 computes; 256 MiB RAM, max-bandwidth 16 MiB/s")
# --smoke (about 20 s): a 16 MiB working set, so that a pass takes a
# second, not four; the run without a limit is cancelled after 6 s, stalled
# or not: it only has to cross the same code
SMOKE = Setup("converge-smoke", {"ws": 16, "rate": 48, "compute": 1}, 128, 2, 16 * MiB, 3, 2000, 2, 1, 20, 10,
              "smoke: dirty guest on 2 vCPUs, vCPU 0 rewrites 16 MiB at 48 MiB/s (3x the link), "
              "vCPU 1 computes; 128 MiB RAM, max-bandwidth 16 MiB/s; cancelled after 6 s if not done",
              timeout=6, skip_lines=1, tail_s=0)


@dataclasses.dataclass
class CConfig:
    name: str
    kind: str                   # kmig | qemu
    mode: str                   # none | dirty-limit | auto-converge


CONFIGS = [CConfig("kmig no limit", "kmig", "none"),
           CConfig("kmig dirty-limit", "kmig", "dirty-limit"),
           CConfig("QEMU auto-converge", "qemu", "auto-converge")]
SMOKE_CONFIGS = CONFIGS[:2]

# one query-migrate sample, as stored in results.json
SAMPLE_COLUMNS = ["t_ms", "status", "remaining", "ram.transferred", "x-kmig-stall.stalled",
                  "x-kmig-stall.iterations", "x-kmig-stall.since-ms", "x-kmig-stall.min-remaining",
                  "dirty-limit-throttle-time-per-round", "dirty-limit-ring-full-time",
                  "query-vcpu-dirty-limit vCPU 0 current-rate", "cpu-throttle-percentage"]
SERIAL_COLUMNS = ["t_ms (when the line appeared, since migrate)", "guest t (s; + serial_offset_s = s since "
                  "migrate)", "MiB/s", "work", "printed by: 0 source, 1 destination (after completion)"]


def select(names, no_qemu, smoke):
    cfgs = SMOKE_CONFIGS if smoke else CONFIGS
    if no_qemu:
        cfgs = [c for c in cfgs if c.kind != "qemu"]
    if names:
        cfgs = [c for c in cfgs if any(s in c.name for s in names)]
    return cfgs


# ------------------------------------------------------------- one run

class Serial:
    """The guest's COM1 log, read as it grows; each progress line stamped
    with the time it was first seen (s since migrate, negative before)."""

    def __init__(self, path):
        self.path, self.pos, self.partial = path, 0, b""
        self.lines = []         # (t, guest_t, mib_s, work)
        self.other = []         # anything else the guest printed
        self.from_dst = 0       # the last lines are the destination's

    def poll(self, t):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                data = f.read()
        except FileNotFoundError:
            return
        self.pos += len(data)
        *full, self.partial = (self.partial + data).split(b"\n")
        for raw in full:
            line = raw.decode(errors="replace").strip()
            m = PROGRESS.search(line)
            if m:
                self.lines.append((round(t, 3), int(m.group(1)), int(m.group(2)), int(m.group(3))))
            elif line:
                self.other.append(line)


def chunks_addr(elf):
    """Guest-physical address of the dirty guest's per-CPU chunk counters
    (symbol `chunks`, 64 bytes per CPU), or None."""
    try:
        out = subprocess.run(["nm", elf], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"^([0-9a-fA-F]+) [bBdD] chunks$", out, re.M)
    return int(m.group(1), 16) if m else None


class Counter:
    """The compute vCPU's chunk counter (guest RAM, read with pmemsave,
    which QEMU and kmig both have), sampled on the host's clock: a second
    measure of compute progress that does not depend on when the writer
    vCPU gets to print."""

    def __init__(self, vm, env, wd):
        self.vm, self.path = vm, os.path.join(wd, "chunks.bin")
        self.addr = chunks_addr(env.elf("dirty"))
        self.samples = []       # (t, chunks of the compute vCPUs)
        self.error = None if self.addr is not None else "no symbol 'chunks' in dirty.elf (nm)"

    def sample(self, t):
        if self.error:
            return
        try:
            self.vm.qmp.cmd("pmemsave", val=self.addr, size=2 * PC_SIZE, filename=self.path)
            with open(self.path, "rb") as f:
                data = f.read()
            # compute=1 on 2 vCPUs: vCPU 1 computes
            self.samples.append((t, int.from_bytes(data[PC_SIZE:PC_SIZE + 4], "little")))
        except (QMPError, OSError) as e:
            self.error = f"pmemsave: {e}"

    def at(self, t):
        """The count at t, interpolated between samples; None outside."""
        s = self.samples
        for (t1, c1), (t2, c2) in zip(s, s[1:]):
            if t1 <= t <= t2:
                return c1 + (c2 - c1) * (t - t1) / (t2 - t1) if t2 > t1 else c2
        return None

    def rate(self, lo, hi):
        """Chunks per second over [lo, hi], clipped to the samples."""
        if len(self.samples) < 2:
            return None
        lo, hi = max(lo, self.samples[0][0]), min(hi, self.samples[-1][0])
        if hi - lo < 0.2:
            return None
        return (self.at(hi) - self.at(lo)) / (hi - lo)


def intervals(lines, off):
    """(start, end, mib_s, work) per progress line, s since migrate: the
    guest measured each over the guest time since the line before, and
    guest time is host time + off.  The guest's clock, not the time a
    line appeared: the writer vCPU prints them, and a throttled writer
    may print one seconds after it measured it."""
    out, prev = [], None
    for _t, gt, mibs, work, *_ in lines:
        end = gt + off
        start = prev if prev is not None else end - 1
        prev = end
        if end > start:
            out.append((start, end, mibs, work))
    return out


def window(ivs, lo, hi):
    """Means of work= and MiB/s= over [lo, hi] (s since migrate), each line
    weighted by how much of its interval lies inside.  None when no line
    covers any of it."""
    sel = [(min(e, hi) - max(s, lo), m, w) for s, e, m, w in ivs if min(e, hi) > max(s, lo)]
    if not sel:
        return None
    total = sum(d for d, _, _ in sel)
    return {"work": sum(d * w for d, _, w in sel) / total, "mib_s": sum(d * m for d, m, _ in sel) / total,
            "seconds": round(total, 2), "lines": len(sel)}


def configure(vm, cc, setup, downtime_limit):
    if cc.kind == "kmig":
        vm.cmd("migrate-set-capabilities",
               capabilities=[{"capability": "dirty-limit", "state": cc.mode == "dirty-limit"}])
        params = {"max-bandwidth": setup.link, "downtime-limit": downtime_limit,
                  "x-kmig-stall-iterations": setup.stall_iterations, "x-kmig-stall-ms": setup.stall_ms}
        if cc.mode == "dirty-limit":
            params["vcpu-dirty-limit"] = setup.dirty_limit
    else:
        vm.cmd("migrate-set-capabilities", capabilities=[{"capability": "auto-converge", "state": True}])
        params = {"max-bandwidth": setup.link, "downtime-limit": downtime_limit,
                  "cpu-throttle-initial": setup.throttle_initial,
                  "cpu-throttle-increment": setup.throttle_increment}
    vm.cmd("migrate-set-parameters", **params)


def once(env, cc, setup, opts):
    """One run; returns its record.  'ok' says the harness ran it to an
    outcome (completed, stalled, timeout, failed), not that it converged."""
    wd = tempfile.mkdtemp(prefix="converge-", dir=env.workdir)
    uri = f"tcp:127.0.0.1:{free_port()}"
    scen = setup.scenario()
    # QEMU 7.2 with the dirty ring asserts under migration (see the other
    # scenarios): QEMU tracks with the bitmap, kmig needs the ring
    cfg = B.Config(cc.name, cc.kind, dirty="ring" if cc.kind == "kmig" else "bitmap")
    make = B.kmig_argv if cc.kind == "kmig" else B.qemu_argv
    run = {"ok": False, "outcome": "error", "samples": [], "serial": []}
    try:
        # two spinning vCPUs fill a small host: other work on it shows
        with open("/proc/loadavg") as f:
            run["loadavg_before"] = f.read().split()[:3]
    except OSError:
        pass
    vms = []
    serial = None
    try:
        dst = B.Vm(make(env, cfg, scen, wd, "dst", True), wd, "dst")
        vms.append(dst)
        src = B.Vm(make(env, cfg, scen, wd, "src", False), wd, "src")
        vms.append(src)
        run["argv"] = {"src": src.argv, "dst": dst.argv}
        dst.connect()
        src.connect()
        try:
            configure(src, cc, setup, opts.downtime_limit)
            dst.cmd("migrate-incoming", uri=uri)
        except QMPError as e:
            raise B.SetupError(f"configuration refused: {e}") from e
        finally:
            run["qmp"] = {"src": src.sent, "dst": dst.sent}
        serial = Serial(src.serial)
        follow(src, dst, cc, setup, opts, uri, serial, run, env)
    except (RuntimeError, OSError, EOFError, QMPError, ValueError) as e:
        run["ok"] = False
        run["outcome"] = "error"
        run["error"] = str(e)
        run["stage"] = "setup" if isinstance(e, B.SetupError) else "run"
        tails = [f"{v.name} stderr: {v.stderr_tail()}" for v in vms
                 if v.proc.poll() is not None and v.stderr_tail() and v.stderr_tail() not in run["error"]]
        if tails:
            run["error"] += " [" + "; ".join(tails) + "]"
    finally:
        if serial:
            n = len(serial.lines)
            run["serial"] = [[round(t * 1000, 1), gt, m, w, int(i >= n - serial.from_dst)]
                             for i, (t, gt, m, w) in enumerate(serial.lines)]
            if serial.other:
                run["serial_other"] = serial.other[-20:]
        for v in vms:
            v.stop()
        shutil.rmtree(wd, ignore_errors=True)
    return run


def follow(src, dst, cc, setup, opts, uri, serial, run, env):
    counter = Counter(src, env, os.path.dirname(src.serial))
    # the unthrottled rate: the last baseline_lines progress lines, and
    # the compute counter over the same seconds
    start = time.monotonic()
    need = setup.baseline_lines + setup.skip_lines
    next_c = 0
    while len(serial.lines) < need:
        if src.proc.poll() is not None:
            raise RuntimeError(f"source exited with {src.proc.returncode} before {need} progress lines: "
                               f"{src.stderr_tail()} {' | '.join(serial.other[-3:])}")
        if time.monotonic() - start > opts.boot_timeout:
            raise RuntimeError(f"source guest printed {len(serial.lines)} progress lines in "
                               f"{opts.boot_timeout}s, not {need}: {' | '.join(serial.other[-3:])}")
        time.sleep(POLL)
        now = time.monotonic()
        serial.poll(now)        # rebased below
        if len(serial.lines) >= setup.skip_lines and now >= next_c:
            counter.sample(now)
            next_c = now + SAMPLE_PERIOD
    counter.sample(time.monotonic())
    t0, wall0 = time.monotonic(), time.time()
    src.cmd("migrate", uri=uri)
    serial.lines = [(round(t - t0, 3), gt, m, w) for t, gt, m, w in serial.lines]
    counter.samples = [(t - t0, c) for t, c in counter.samples]
    # guest time -> s since migrate: the lines before migrate appeared
    # within POLL of being printed, the earliest relative to its t= is
    # the closest
    off = min(t - gt for t, gt, _m, _w in serial.lines)
    run["serial_offset_s"] = round(off, 3)
    ivs = intervals(serial.lines, off)
    base = window(ivs[-setup.baseline_lines:], ivs[-setup.baseline_lines][0], ivs[-1][1])
    run.update({"baseline": base, "base_work": base["work"], "base_mib_s": base["mib_s"]})
    run["counter_addr"] = counter.addr
    cbase = counter.rate(-setup.baseline_lines, 0.0)
    run["base_counter"] = cbase

    dl = cc.mode == "dirty-limit"
    info, next_q = {}, t0
    ev = {"stall_s": None, "engage_s": None, "limits_s": None, "throttle_s": None}
    figures = {"throttle_time_per_round_max_us": None, "ring_full_time_max_us": None,
               "throttle_pct_max": None, "throttle_pct_final": None, "min_remaining": None}
    outcome = None
    while True:
        now = time.monotonic()
        t = now - t0
        serial.poll(t)
        if now >= next_q:
            counter.sample(t)
            info = src.qmp.cmd("query-migrate")
            status = info.get("status", "none")
            rem = info.get("remaining", info.get("ram", {}).get("remaining"))
            stall = info.get("x-kmig-stall")
            stalled = bool(stall.get("stalled")) if isinstance(stall, dict) else None
            thr = info.get("dirty-limit-throttle-time-per-round")
            ring = info.get("dirty-limit-ring-full-time")
            pct = info.get("cpu-throttle-percentage")
            cur = None
            if dl and status == "active":
                lim = src.qmp.cmd("query-vcpu-dirty-limit")
                if lim and ev["limits_s"] is None:
                    ev["limits_s"] = round(t, 3)
                cur = next((e.get("current-rate") for e in lim if e.get("cpu-index") == 0), None)
            run["samples"].append([round(t * 1000, 1), status, rem, info.get("ram", {}).get("transferred"),
                                   stalled, stall.get("iterations") if isinstance(stall, dict) else None,
                                   stall.get("since-ms") if isinstance(stall, dict) else None,
                                   stall.get("min-remaining") if isinstance(stall, dict) else None,
                                   thr, ring, cur, pct])
            if status == "active" and rem is not None:
                mr = figures["min_remaining"]
                figures["min_remaining"] = rem if mr is None else min(mr, rem)
            if stalled and ev["stall_s"] is None:
                ev["stall_s"] = round(t, 3)
                run["stall_info"] = stall
            if thr is not None:
                if ev["engage_s"] is None:
                    ev["engage_s"] = round(t, 3)
                for k, v in (("throttle_time_per_round_max_us", thr), ("ring_full_time_max_us", ring)):
                    if v is not None:
                        figures[k] = max(figures[k] or 0, v)
            if pct is not None and status == "active":
                figures["throttle_pct_final"] = pct
                figures["throttle_pct_max"] = max(figures["throttle_pct_max"] or 0, pct)
                if pct > 0 and ev["throttle_s"] is None:
                    ev["throttle_s"] = round(t, 3)
            if status in FINAL:
                outcome = "completed" if status == "completed" else status
                break
            if cc.mode == "none" and stalled:
                outcome = "stalled"
                break
            if t > (setup.timeout or opts.timeout):
                outcome = "timeout"
                break
            next_q = max(next_q + SAMPLE_PERIOD, now)
        time.sleep(max(0.0, min(next_q, time.monotonic() + POLL) - time.monotonic()))
    end = time.monotonic() - t0
    t_stop = end
    if outcome == "completed":
        # the source's guest stopped at the switchover: its count is final
        counter.sample(time.monotonic() - t0)
    run["final_info"] = info
    if outcome != "completed":
        run["remaining_at_end"] = next((s[2] for s in reversed(run["samples"]) if s[2] is not None), None)
    if outcome in ("stalled", "timeout"):
        # as a management tool would: give up on it, the guest runs on
        src.qmp.cmd("migrate_cancel")
        deadline = time.monotonic() + 30
        while True:
            serial.poll(time.monotonic() - t0)
            st = src.qmp.cmd("query-migrate").get("status")
            if st in FINAL:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"migrate_cancel: still '{st}' 30 s later")
            time.sleep(0.1)
        run["after_cancel"] = {"migration": st, "vm": src.qmp.cmd("query-status")["status"]}
    for e in src.qmp.events:
        if e.get("event") == "X_KMIG_MIGRATION_STALL" and e.get("data", {}).get("stalled"):
            ts = e.get("timestamp", {})
            run["stall_event_s"] = round(ts.get("seconds", 0) + ts.get("microseconds", 0) / 1e6 - wall0, 3)
            break
    run.update(ev)
    run.update(figures)
    run["outcome"] = outcome
    run["end_s"] = round(end, 3)
    if outcome == "completed":
        run["total_s"] = info["total-time"] / 1000
        run["downtime_ms"] = info.get("downtime")
        # the window ends when the source stopped the guest
        end = min(end, run["total_s"])
        if dl:
            run["limits_after"] = src.qmp.cmd("query-vcpu-dirty-limit")
        deadline = time.monotonic() + 30
        while (st := dst.qmp.cmd("query-status")["status"]) != "running":
            if time.monotonic() > deadline:
                raise RuntimeError(f"source completed, but the destination is '{st}' 30 s later")
            time.sleep(0.05)
    # a throttled writer prints late: the lines it measured up to the end,
    # and a couple after it, come from the source (cancelled) or the
    # destination (completed; the guest's clock goes on there)
    follow_tail = serial if outcome != "completed" else Serial(dst.serial)
    deadline = time.monotonic() + setup.tail_s + 2
    last = max(gt for _t, gt, _m, _w in serial.lines)
    while time.monotonic() < deadline:
        follow_tail.poll(time.monotonic() - t0)
        if follow_tail.lines and follow_tail.lines[-1][1] + off >= t_stop + setup.tail_s:
            break
        time.sleep(POLL)
    if follow_tail is not serial:
        run["serial_dst"] = [[round(t * 1000, 1), gt, m, w] for t, gt, m, w in follow_tail.lines]
        serial.lines += [ln for ln in follow_tail.lines if ln[1] > last]
        serial.from_dst = sum(1 for ln in follow_tail.lines if ln[1] > last)
    run["ok"] = True
    ivs = intervals(serial.lines, off)
    during = window(ivs, 0.0, end)
    run["during"] = during
    throttled_from = ev["engage_s"] if ev["engage_s"] is not None else (
        ev["limits_s"] if ev["limits_s"] is not None else ev["throttle_s"])
    throttled = window(ivs, throttled_from, end) if throttled_from is not None else None
    run["throttled"] = throttled
    bw = run["base_work"]
    run["compute_ratio"] = during["work"] / bw if during and bw else None
    run["compute_ratio_throttled"] = throttled["work"] / bw if throttled and bw else None
    run["writer_mib_s"] = during["mib_s"] if during else None
    run["writer_mib_s_throttled"] = throttled["mib_s"] if throttled else None
    # the same from the compute vCPU's chunk counter (sampled, not printed)
    run["counter"] = [[round(t * 1000, 1), c] for t, c in counter.samples]
    if counter.error:
        run["counter_error"] = counter.error
    c_during = counter.rate(0.0, end)
    c_thr = counter.rate(throttled_from, end) if throttled_from is not None else None
    run["counter_during"], run["counter_throttled"] = c_during, c_thr
    run["counter_ratio"] = c_during / cbase if c_during is not None and cbase else None
    run["counter_ratio_throttled"] = c_thr / cbase if c_thr is not None and cbase else None


# --------------------------------------------------------- all of it

METRICS = ("total_s", "end_s", "downtime_ms", "stall_s", "engage_s", "limits_s", "throttle_s", "base_work",
           "compute_ratio", "compute_ratio_throttled", "writer_mib_s", "writer_mib_s_throttled",
           "base_counter", "counter_ratio", "counter_ratio_throttled", "base_mib_s",
           "throttle_pct_final", "throttle_pct_max", "remaining_at_end", "min_remaining",
           "throttle_time_per_round_max_us")


def summarize(runs):
    ok = [r for r in runs if r.get("ok")]
    out = {}
    for k in METRICS:
        v = [r[k] for r in ok if r.get(k) is not None]
        if v:
            out[k] = {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v)}
    out["outcomes"] = {}
    for r in runs:
        out["outcomes"][r.get("outcome", "error")] = out["outcomes"].get(r.get("outcome", "error"), 0) + 1
    return out


def run(env, cfgs, opts, smoke=False):
    """Every run of every configuration, interleaved.  Returns the
    results.json section."""
    setup = SMOKE if smoke else FULL
    sec = {"about": setup.about, "setup": dataclasses.asdict(setup), "downtime_limit": opts.downtime_limit,
           "timeout": setup.timeout or opts.timeout, "sample_period_ms": SAMPLE_PERIOD * 1000,
           "sample_columns": SAMPLE_COLUMNS, "serial_columns": SERIAL_COLUMNS,
           "configs": {c.name: {**dataclasses.asdict(c), "runs": [], "summary": {}} for c in cfgs}}
    runs = 1 if smoke else opts.runs
    dead = {}
    for i in range(runs):
        for c in cfgs:
            e = sec["configs"][c.name]
            if c.name in dead:
                e["runs"].append({"ok": False, "outcome": "error", "stage": "skipped",
                                  "error": f"not run: run {dead[c.name]} was refused the same configuration"})
                continue
            if c.kind == "qemu" and not env.qemu:
                r = {"ok": False, "outcome": "error", "stage": "setup",
                     "error": "qemu-system-x86_64 not installed"}
            else:
                r = once(env, c, setup, opts)
            e["runs"].append(r)
            if r.get("stage") == "setup":
                dead[c.name] = i + 1
            B.log(f"[{setup.name}] {c.name} run {i + 1}/{runs}: {describe(r)}")
    for e in sec["configs"].values():
        e["summary"] = summarize(e["runs"])
    return sec


def describe(r):
    if not r.get("ok"):
        return f"FAILED: {r.get('error')}"
    n = B.num
    msg = r["outcome"]
    if r["outcome"] == "completed":
        msg += f" in {n(r['total_s'], 1)} s, downtime {r['downtime_ms']} ms"
    else:
        msg += f" at {n(r['end_s'], 1)} s, remaining {n((r.get('remaining_at_end') or 0) / MiB, 1)} MiB"
    for k, what in (("stall_s", "stall"), ("engage_s", "dirty limit engaged"), ("throttle_s", "throttle on")):
        if r.get(k) is not None and not (k == "stall_s" and r["outcome"] == "stalled"):
            msg += f", {what} at {r[k]:.1f} s"
    if r.get("throttle_pct_final") is not None:
        msg += f", cpu-throttle {r['throttle_pct_final']}%"
    if r.get("base_counter"):
        msg += f"; compute (counter) {n(r['base_counter'], 1)}/s before"
        if r.get("counter_ratio") is not None:
            msg += f", {n(r['counter_ratio'] * 100)}% of that during"
        if r.get("counter_ratio_throttled") is not None:
            msg += f", {n(r['counter_ratio_throttled'] * 100)}% once throttled"
    msg += f"; work= {n(r.get('base_work'), 1)}/s before"
    if r.get("during"):
        msg += f", {n(r['during']['work'], 1)}/s during ({n(r['compute_ratio'] * 100)}%)"
    if r.get("throttled"):
        msg += f", {n(r['throttled']['work'], 1)}/s once throttled ({n(r['compute_ratio_throttled'] * 100)}%)"
    if r.get("writer_mib_s") is not None:
        msg += f"; writer {n(r['base_mib_s'])} -> {n(r['writer_mib_s'])} MiB/s"
    if r.get("writer_mib_s_throttled") is not None:
        msg += f" ({n(r['writer_mib_s_throttled'], 1)} once throttled)"
    return msg


def median_run(entry):
    """The run of median length (for the plots): among the runs that
    reached an outcome, the one whose end_s is the median (the lower of the
    two middle ones)."""
    ok = sorted((r for r in entry["runs"] if r.get("ok")), key=lambda r: r["end_s"])
    if ok:
        return ok[(len(ok) - 1) // 2]
    return next((r for r in entry["runs"] if r.get("samples")), None)


# ---------------------------------------------------------- verdicts

def targets(sec):
    out = []
    dl = sec["downtime_limit"]
    cfgs = sec["configs"]
    name = "converge" if sec["setup"]["name"] == "converge" else sec["setup"]["name"]
    e = cfgs.get("kmig dirty-limit")
    if e:
        runs = e["runs"]
        done = [r for r in runs if r.get("outcome") == "completed"]
        s = e["summary"]
        text = (f"(f) {name}: kmig dirty-limit completes every run, with downtime ≤ downtime-limit {dl} ms "
                f"and the compute vCPU's progress during the migration ≥ 90% of the "
                f"{sec['setup']['baseline_lines']} s before")
        if not done:
            out.append((f"{text}: no run completed ({fmt_outcomes(s['outcomes'], len(runs), sec['timeout'])})",
                        "**MISS**"))
        else:
            worst_dt = max(r["downtime_ms"] for r in done)

            def medr(k):
                v = [r[k] for r in done if r.get(k) is not None]
                return statistics.median(v) if v else None
            # judged on the counter (sampled on the host's clock); the
            # work= lines where there is no counter
            cr, wr = medr("counter_ratio"), medr("compute_ratio")
            judge = cr if cr is not None else wr
            ct, wt = medr("counter_ratio_throttled"), medr("compute_ratio_throttled")

            def p(v):
                return "?" if v is None else f"{v:.0%}"
            ok = len(done) == len(runs) and worst_dt <= dl and judge is not None and judge >= 0.9
            out.append((f"{text}: {len(done)}/{len(runs)} completed, worst downtime {worst_dt} ms, compute "
                        f"{p(cr)} by the counter, {p(wr)} by work= (medians; once the limit engaged "
                        f"{p(ct)} / {p(wt)})", "**PASS**" if ok else "**MISS**"))
    e = cfgs.get("kmig no limit")
    if e:
        runs = e["runs"]
        ran = [r for r in runs if r.get("ok")]
        text = f"(f) {name}: kmig without dirty-limit does not converge (within {sec['timeout']:.0f} s)"
        if not ran:
            out.append((f"{text}: n/a (no run reached an outcome)", "N/A"))
        else:
            done = [r for r in ran if r["outcome"] == "completed"]
            out.append((f"{text}: {fmt_outcomes(e['summary']['outcomes'], len(runs), sec['timeout'])}",
                        "**PASS**" if not done else "**MISS**"))
    return out


def fmt_outcomes(outcomes, n, timeout):
    words = {"completed": "completed", "stalled": "stalled, cancelled",
             "timeout": f"not completed in {timeout:.0f} s, cancelled", "failed": "failed",
             "cancelled": "cancelled", "error": "error"}
    return ", ".join(f"{words.get(k, k)} {v}/{n}" for k, v in outcomes.items())


# ---------------------------------------------------------- markdown

def cell(s, digits=0, scale=1, pct=False):
    """median (min-max) of a summary entry; min-max left out when they
    print the same."""
    if not s:
        return "-"

    def f(v):
        return f"{v * scale:.{digits}%}" if pct else f"{v * scale:.{digits}f}"
    lo, mid, hi = f(s["min"]), f(s["median"]), f(s["max"])
    return mid if lo == hi else f"{mid} ({lo}-{hi})"


def markdown(sec):
    o = sec["setup"]
    bl = o["baseline_lines"]
    lines = [f"## {o['name']}", "",
             f"{sec['about']}; downtime-limit {sec['downtime_limit']} ms; "
             f"{'one run' if all(len(e['runs']) == 1 for e in sec['configs'].values()) else 'median (min-max)'}"
             f" per configuration.  Compute: the compute vCPU's progress during the migration over its "
             f"rate in the {bl} s before `migrate` (same VM); first from its chunk counter (read with "
             f"`pmemsave` every {int(SAMPLE_PERIOD * 1000)} ms), then from the guest's `work=` lines.", "",
             "| config | outcome | total s | downtime ms | stall / limit engaged / throttle on, s | "
             "compute during migration: counter / work= | once throttled: counter / work= | "
             "writer MiB/s before / during / once throttled | remaining at end MiB | "
             "QEMU cpu-throttle % final |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for name, e in sec["configs"].items():
        s, runs = e["summary"], e["runs"]
        for i, r in enumerate(runs):
            if not r.get("ok"):
                notes.append(f"- {name}, run {i + 1}: {r.get('error', 'failed')}")
            elif r.get("counter_error"):
                notes.append(f"- {name}, run {i + 1}: no compute counter: {r['counter_error']}")
        outcome = fmt_outcomes(s["outcomes"], len(runs), sec["timeout"])
        if not any(r.get("ok") for r in runs):
            lines.append(f"| {name} | {outcome} |" + " - |" * 8)
            continue
        key, what = {"none": ("stall_s", "stall"), "dirty-limit": ("engage_s", "engaged"),
                     "auto-converge": ("throttle_s", "throttle")}[e["mode"]]
        when = s.get(key) or (s.get("limits_s") if e["mode"] == "dirty-limit" else None)
        when = f"{what} {cell(when, 1)}" if when else "-"

        def pair(a, b):
            x, y = cell(s.get(a), pct=True), cell(s.get(b), pct=True)
            return "-" if x == y == "-" else f"{x} / {y}"

        def medn(k, digits=0):
            v = s.get(k)
            return "-" if not v else f"{v['median']:.{digits}f}"
        writer = f"{medn('base_mib_s')} / {medn('writer_mib_s')} / {medn('writer_mib_s_throttled', 1)}"
        rem = cell(s.get("remaining_at_end"), 1, 1 / MiB)
        lines.append(f"| {name} | {outcome} | {cell(s.get('total_s'), 1)} | {cell(s.get('downtime_ms'))} | "
                     f"{when} | {pair('counter_ratio', 'compute_ratio')} | "
                     f"{pair('counter_ratio_throttled', 'compute_ratio_throttled')} | {writer} | {rem} | "
                     f"{cell(s.get('throttle_pct_final'))} |")
    lines += ["", "writer MiB/s: medians of the runs (the writer's own `MiB/s=` lines).", ""]
    if notes:
        lines += ["Notes:", ""] + notes + [""]
    for p in sec.get("plots", []):
        lines.append(f"![{p}]({p})")
    if sec.get("plots"):
        lines.append("")
    return lines


METHOD = """\
- converge: the dirty guest (`{params}`) on {vcpus} vCPUs, {mem} MiB, the same
  ELF for kmig (`kmig run --guest dirty,... --vcpus {vcpus} --dirty-ring 4096`)
  and QEMU (`-smp {vcpus} -kernel dirty.elf -append '...'`, `-enable-kvm`:
  the dirty bitmap, QEMU 7.2's ring asserts under migration); source and
  destination on 127.0.0.1, `max-bandwidth` {link} MiB/s and
  `downtime-limit` {dl} ms for all three.  kmig no limit: `dirty-limit`
  off, `x-kmig-stall-iterations` {si}, `x-kmig-stall-ms` {sm}; the run ends
  when `query-migrate` shows `x-kmig-stall.stalled` (stall s: the first
  sample that did) or after {to:.0f} s, with `migrate_cancel`.  kmig
  dirty-limit: capability `dirty-limit`, `vcpu-dirty-limit` {lim} MB/s
  (engaged s: the first sample with `dirty-limit-throttle-time-per-round`).
  QEMU: capability `auto-converge`, `cpu-throttle-initial` {ti},
  `cpu-throttle-increment` {tinc}; `migrate_cancel` after {to:.0f} s
  (throttle from: the first sample with `cpu-throttle-percentage` > 0;
  final: the last one while active).
- `query-migrate` every {sp} ms: remaining is the top-level member (kmig),
  `ram.remaining` (QEMU 7.2).  The guest's COM1 log is read every {poll} ms.
  A progress line (`dirty: t=Ns ... MiB/s=M work=W`) holds what the guest
  measured from its line before to its `t=` (guest time, TSC); guest time
  is mapped to the host's by the lines before `migrate` (the earliest a
  line appeared relative to its `t=`), not by when a line appears: the
  writer vCPU prints them, and once throttled it prints some seconds late.
  Compute progress by `work=` (compute chunks per second of vCPU 1): its
  mean over the migration (from `migrate` to the source's `total-time`, or
  to the cancel), each line weighted by how much of its interval lies
  inside, over the same mean of the {bl} lines just before `migrate` in the
  same VM; "once throttled": from the engage / throttle time on.  writer
  MiB/s: the same means of `MiB/s=`.
- Compute progress by the counter: vCPU 1's chunk counter (the guest's
  `chunks` array, its address from `nm dirty.elf`) read with `pmemsave`
  (QEMU's command; kmig has it too) every {sp} ms from {bl} s before
  `migrate` on, and once more after completion: chunks per second over the
  migration (or once throttled) over chunks per second in the {bl} s before.
  It does not depend on the writer vCPU printing in time, so the target is
  judged on it (`work=` where there is no counter).
- The plots show the run of median length (end time) of each
  configuration."""


def method(sec):
    o = sec["setup"]
    return METHOD.format(params=",".join(f"{k}={v}" for k, v in o["params"].items()), vcpus=o["vcpus"],
                         mem=o["mem_mib"], link=o["link"] // MiB, dl=sec["downtime_limit"],
                         si=o["stall_iterations"], sm=o["stall_ms"], to=sec["timeout"], lim=o["dirty_limit"],
                         ti=o["throttle_initial"], tinc=o["throttle_increment"],
                         sp=int(SAMPLE_PERIOD * 1000), poll=int(POLL * 1000), bl=o["baseline_lines"])


# ------------------------------------------------------------- plots

STYLE = {"kmig no limit": ("#d62728", 1), "kmig dirty-limit": ("#2ca02c", 1), "QEMU auto-converge": ("#1f77b4", 2)}


def plots(sec, out_dir, term):
    """converge-remaining.png (remaining over time) and
    converge-compute.png (compute progress and writer rate over time), the
    median-length run of each configuration.  Returns (base, script)
    pairs for bench.py to run gnuplot on."""
    name = sec["setup"]["name"]
    chosen = [(n, median_run(e), e) for n, e in sec["configs"].items()]
    chosen = [(n, r, e) for n, r, e in chosen if r and r.get("samples")]
    if not chosen:
        return []
    made = []
    o = sec["setup"]
    thresh = o["link"] * sec["downtime_limit"] / 1000 / MiB

    def title(n, r, e):
        if not r.get("ok"):
            return f"{n}: {r.get('outcome')}"
        if r["outcome"] == "completed":
            t = f"{n}: completed {r['total_s']:.1f} s, downtime {r['downtime_ms']} ms"
        elif r["outcome"] == "stalled":
            t = f"{n}: stall at {r['stall_s']:.1f} s, cancelled"
        else:
            t = f"{n}: {r['outcome']} at {r['end_s']:.0f} s, cancelled"
        if e["mode"] == "dirty-limit" and r.get("engage_s") is not None:
            t += f" (limit engaged {r['engage_s']:.1f} s)"
        if e["mode"] == "auto-converge" and r.get("throttle_pct_final") is not None:
            t += f" (cpu-throttle {r.get('throttle_s') or 0:.0f} s on, final {r['throttle_pct_final']}%)"
        return t

    def marks(r, e):
        """(time, label) of the run's events, for vertical lines."""
        m = []
        for k, what in (("stall_s", "stall"), ("engage_s", "limit"), ("throttle_s", "throttle")):
            if r.get(k) is not None and (k != "stall_s" or e["mode"] == "none"):
                m.append((r[k], what))
        return m

    # remaining
    base = os.path.join(out_dir, f"{name}-remaining")
    with open(base + ".dat", "w") as f:
        for n, r, _ in chosen:
            f.write(f"# {n}\n")
            for s in r["samples"]:
                if s[2] is not None:
                    f.write(f"{s[0] / 1000:.3f} {s[2] / MiB:.3f}\n")
            f.write("\n\n")
    arrows = [f"set arrow from graph 0, first {thresh:.2f} to graph 1, first {thresh:.2f} nohead dt 3 "
              "lc rgb 'gray40'",
              f"set label {B.gp_str(f'switchover threshold {thresh:.1f} MiB (link x downtime-limit)')} "
              f"at graph 0.01, first {thresh:.2f} offset 0,0.7 tc rgb 'gray30'"]
    for n, r, e in chosen:
        color = STYLE.get(n, ("black", 1))[0]
        for t, what in marks(r, e):
            arrows.append(f"set arrow from {t:.3f}, graph 0 to {t:.3f}, graph 1 nohead dt 3 lc rgb '{color}'")
            arrows.append(f"set label {B.gp_str(what)} at {t:.3f}, graph 0.97 offset 0.3,0 tc rgb '{color}'")
    plot = ", ".join(f"{B.gp_str(base + '.dat')} index {i} using 1:2 with lines lw 2 "
                     f"lc rgb '{STYLE.get(n, ('black', 1))[0]}' dt {STYLE.get(n, ('black', 1))[1]} "
                     f"title {B.gp_str(title(n, r, e))}"
                     for i, (n, r, e) in enumerate(chosen))
    head = (f"{name}: remaining over time, {o['params'].get('ws')} MiB rewritten at "
            f"{o['params'].get('rate')} MiB/s, link {o['link'] // MiB} MiB/s, downtime-limit "
            f"{sec['downtime_limit']} ms (median-length run)")
    made.append((base, "\n".join([
        term, f"set output {B.gp_str(base + '.png')}", f"set title {B.gp_str(head)}",
        "set xlabel 'seconds since migrate'", "set ylabel 'remaining (MiB)'",
        "set key below left Left reverse", "set grid", "set yrange [0:*]", "set xrange [0:*]",
        *arrows, f"plot {plot}"])))

    # compute progress: the counter's rate over the last second (as % of
    # its rate before migrate), and the work= lines as steps (each holds
    # from the line before it to itself); the writer's MiB/s= below
    base = os.path.join(out_dir, f"{name}-compute")
    blocks = []                 # (config, what, data column)
    with open(base + ".dat", "w") as f:
        for n, r, _ in chosen:
            cs, cb = r.get("counter") or [], r.get("base_counter")
            if len(cs) > 1 and cb:
                f.write(f"# {n}: counter: t_s, compute % of before\n")
                j = 0
                for t, c in cs:
                    while j + 1 < len(cs) and cs[j + 1][0] <= t - 1000:
                        j += 1
                    tj, cj = cs[j]
                    if t - tj >= 900:
                        f.write(f"{(t + tj) / 2000:.3f} {(c - cj) / ((t - tj) / 1000) / cb * 100:.1f}\n")
                f.write("\n\n")
                blocks.append((n, "counter", 2))
            bw = r.get("base_work")
            f.write(f"# {n}: work= lines: t_s, compute % of before, writer MiB/s\n")
            for start, end, mibs, work in intervals(r.get("serial", []), r.get("serial_offset_s") or 0):
                pct = work / bw * 100 if bw else 0
                f.write(f"{start:.3f} {pct:.1f} {mibs}\n{end:.3f} {pct:.1f} {mibs}\n")
            f.write("\n\n")
            blocks.append((n, "work=", 3))

    def color(n):
        return STYLE.get(n, ("black", 1))[0]
    top = ", ".join(
        f"{B.gp_str(base + '.dat')} index {i} using 1:2 with lines "
        + (f"lw 2 lc rgb '{color(n)}' title {B.gp_str(n + ' (counter)')}" if what == "counter" else
           f"lw 1 dt 2 lc rgb '{color(n)}' title {B.gp_str(n + ' (work= lines)')}")
        for i, (n, what, _c) in enumerate(blocks))
    bottom = ", ".join(f"{B.gp_str(base + '.dat')} index {i} using 1:3 with lines lw 2 lc rgb '{color(n)}' "
                       f"title {B.gp_str(n)}" for i, (n, what, _c) in enumerate(blocks) if what == "work=")
    ends = []
    for n, r, e in chosen:
        end = r.get("total_s") if r.get("outcome") == "completed" else r.get("end_s")
        if end is not None:
            ends.append(f"set arrow from {end:.3f}, graph 0 to {end:.3f}, graph 1 nohead dt 3 lc rgb '{color(n)}'")
    ylabel = f"compute (% of the {o['baseline_lines']} s before migrate)"
    made.append((base, "\n".join([
        term.replace("size 1100,650", "size 1100,900"), f"set output {B.gp_str(base + '.png')}",
        "set multiplot layout 2,1 title " + B.gp_str(
            f"{name}: compute vCPU progress and writer vCPU dirty rate (median-length run; "
            "dotted: migrate, and each run's end)"),
        "set grid", "set key top right opaque box maxrows 3", "set xlabel 'seconds since migrate'",
        "set arrow 100 from 0, graph 0 to 0, graph 1 nohead dt 3 lc rgb 'gray40'", *ends,
        f"set ylabel {B.gp_str(ylabel)}",
        "set yrange [0:*]",
        f"plot {top}",
        "set ylabel 'writer (MiB/s)'", "set key bottom left opaque box maxrows 3", f"plot {bottom}",
        "unset multiplot"])))
    return made
