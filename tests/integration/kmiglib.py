"""Helpers for kmig's integration tests: real guests on /dev/kvm, real
sockets, real QMP.  Each test is a small script; exit 77 means skipped
(meson understands it), with the reason printed.

Nothing here knows kmig's internals: processes are driven over QMP exactly
as a management tool would drive QEMU, and the migration stream is parsed
from docs/stream-format.md, independently of the C codec."""

import json
import os
import random
import re
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

SKIP = 77


def skip(reason):
    print(f"SKIP: {reason}")
    sys.exit(SKIP)


def require_kvm():
    if not os.path.exists("/dev/kvm"):
        skip("/dev/kvm does not exist (no KVM on this host)")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        skip("/dev/kvm is not accessible (run as root or in the kvm group)")


def tls_mode_expected():
    """What x-kmig.tls shows for a TLS migration on this kernel: ktls where
    it offers the "tls" ULP, gnutls (records in user space) elsewhere."""
    try:
        with open("/proc/sys/net/ipv4/tcp_available_ulp") as f:
            return "ktls" if "tls" in f.read().split() else "gnutls"
    except OSError:
        return "gnutls"


def kmig_path():
    p = os.environ.get("KMIG")
    if not p or not os.path.exists(p):
        sys.exit(f"KMIG environment variable must name the kmig binary (got {p!r})")
    return p


def free_port():
    """A port for a destination to listen on, below the kernel's ephemeral
    range: a port bind(0) handed out could be handed out again (to a proxy
    or a client socket of a test running in parallel) before the
    destination binds it."""
    lo = 20000
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            eph = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        eph = 32768
    hi = max(lo + 1000, eph)
    while True:
        port = random.randrange(lo, hi)
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            s.close()


class QMPError(Exception):
    def __init__(self, error):
        super().__init__(f"{error.get('class')}: {error.get('desc')}")
        self.error = error


class QMP:
    """A minimal QMP client, written against QEMU's protocol."""

    def __init__(self, path, timeout=10.0):
        deadline = time.time() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.time() > deadline:
                    raise
                time.sleep(0.05)
        self.sock.settimeout(60)
        self.buf = b""
        self.events = []
        self.greeting = self._read()
        assert "QMP" in self.greeting, self.greeting
        self.cmd("qmp_capabilities")

    def _read(self):
        while b"\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("QMP connection closed")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def cmd(self, name, **args):
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            r = self._read()
            if "event" in r:
                self.events.append(r)
                continue
            if "error" in r:
                raise QMPError(r["error"])
            return r["return"]

    def close(self):
        self.sock.close()


class Kmig:
    """One `kmig run` process with its serial log and QMP socket.  Every
    instance a test makes is remembered: if the test fails, what each one
    showed last is printed (see seen())."""

    instances = []

    def __init__(self, workdir, name, guest="verify", params="", mem=256, vcpus=1,
                 incoming=None, extra=(), kernel=None, append=None, env=None, prefix=()):
        """env: extra environment variables; prefix: a command to run kmig
        under (e.g. setpriv dropping capabilities)."""
        self.name = name
        self.serial = os.path.join(workdir, f"{name}.log")
        self.qmp_path = os.path.join(workdir, f"{name}.qmp")
        self.stderr_path = os.path.join(workdir, f"{name}.err")
        args = [kmig_path(), "run", "--mem", str(mem), "--vcpus", str(vcpus),
                "--serial", self.serial, "--qmp", self.qmp_path]
        if kernel:
            args += ["--kernel", kernel]
            if append:
                args += ["--append", append]
        else:
            args += ["--guest", guest + ("," + params if params else "")]
        if incoming:
            args += ["--incoming", incoming]
        args += list(extra)
        self.args = list(prefix) + args
        self.err = open(self.stderr_path, "w")
        self.proc = subprocess.Popen(self.args, stdout=self.err, stderr=self.err,
                                     env=dict(os.environ, **env) if env else None)
        self._qmp = None
        self.last_seen = None
        Kmig.instances.append(self)

    @property
    def qmp(self):
        if self._qmp is None:
            self._qmp = QMP(self.qmp_path)
        return self._qmp

    def lines(self):
        try:
            with open(self.serial, errors="replace") as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []

    def stderr(self):
        with open(self.stderr_path, errors="replace") as f:
            return f.read()

    def wait_lines(self, pattern, count=1, timeout=30):
        rx = re.compile(pattern)
        deadline = time.time() + timeout
        while time.time() < deadline:
            got = [l for l in self.lines() if rx.search(l)]
            if len(got) >= count:
                return got
            if any("FAIL" in l for l in self.lines()):
                raise AssertionError(f"{self.name}: guest reported failure: "
                                     + "\n".join(self.lines()[-5:]))
            if self.proc.poll() is not None and len(got) < count:
                break
            time.sleep(0.05)
        raise AssertionError(f"{self.name}: waited for {count}x /{pattern}/; serial:\n"
                             + "\n".join(self.lines()[-10:]) + "\nstderr:\n" + self.stderr())

    def failures(self):
        return [l for l in self.lines() if "FAIL" in l]

    def wait_exit(self, timeout=30):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def _statuses(self):
        """query-status and query-migrate, asked on a fresh connection with
        a short timeout (the test's own connection may be mid-command)."""
        if self.proc.poll() is not None:
            return f"exited with status {self.proc.returncode}"
        try:
            q = QMP(self.qmp_path, timeout=1.0)
            q.sock.settimeout(2.0)
            try:
                st = q.cmd("query-status")
                mig = q.cmd("query-migrate")
            finally:
                q.close()
        except Exception as e:  # a process that no longer answers is news too
            return f"running, QMP does not answer ({e!r})"
        keep = {k: mig[k] for k in ("status", "error-desc", "total-time", "downtime") if k in mig}
        return f"run state {st.get('status')}; migration {keep}"

    def seen(self):
        """What this process showed: its state, its statuses, and the tails
        of its stderr and of the guest's serial output."""
        try:
            err = self.stderr().splitlines()[-15:]
        except OSError:
            err = ["(no stderr file)"]
        return "\n".join([f"--- {self.name}: {' '.join(self.args)}",
                          f"    {self._statuses()}",
                          "    stderr (last lines):"] + ["      " + l for l in err] +
                         ["    guest serial (last lines):"] + ["      " + l for l in self.lines()[-10:]])

    def stop(self):
        try:
            self.last_seen = self.seen()
        except Exception as e:
            self.last_seen = f"--- {self.name}: could not look ({e!r})"
        if self.proc.poll() is None:
            try:
                self.qmp.cmd("quit")
            except Exception:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._qmp:
            self._qmp.close()
        self.err.close()


def report_seen(exc_type, exc, tb):
    """On a failed test: the traceback, then what every kmig process of
    the test showed (a flaky failure must say what it saw)."""
    sys.__excepthook__(exc_type, exc, tb)
    if Kmig.instances and not issubclass(exc_type, (SystemExit, KeyboardInterrupt)):
        print("=== what the test's kmig processes showed", file=sys.stderr)
        for k in Kmig.instances:
            try:
                print(k.last_seen or k.seen(), file=sys.stderr)
            except Exception as e:
                print(f"--- {k.name}: could not look ({e!r})", file=sys.stderr)


sys.excepthook = report_seen

# The destination starts its vCPUs right after it acknowledged the stream,
# which is when the source reports "completed"; docs/qmp.md ("When the
# destination runs") bounds the gap.
DEST_START_TIMEOUT = 10


def wait_dest_running(dst, timeout=DEST_START_TIMEOUT):
    """Wait, as a management tool must, for the destination of a migration
    the source reported completed to run: its own query-migrate says
    completed once its vCPUs run."""
    deadline = time.time() + timeout
    while True:
        st = dst.qmp.cmd("query-status")
        if st["status"] == "running":
            return st
        mig = dst.qmp.cmd("query-migrate")
        if mig.get("status") == "failed" or time.time() > deadline:
            raise AssertionError(f"{dst.name}: not running {timeout}s after the source completed: "
                                 f"query-status {st}, query-migrate {mig}")
        time.sleep(0.02)


def verify_passes(line):
    """'verify: t=3s passes=12,11 ok' -> [12, 11]"""
    m = re.search(r"passes=([\d,]+)", line)
    return [int(x) for x in m.group(1).split(",")] if m else []


def wait_whole_pass(dst, before, timeout=90):
    """The verify guest's passes on the destination once one more than
    before (its passes on the source) is done there: a whole pass over
    the working set checked after the migration."""
    after, deadline = before, time.time() + timeout
    while after <= before and time.time() < deadline:
        after = verify_passes(dst.wait_lines(r" ok$", 2, timeout=60)[-1])
        time.sleep(0.5)
    assert after > before and not dst.failures(), (before, after, dst.failures())
    return after


def wait_text(path, text, timeout):
    """True once the file at path contains text, False after timeout s."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with open(path, errors="replace") as f:
                if text in f.read():
                    return True
        except FileNotFoundError:
            pass
        time.sleep(0.2)
    return False


def wait_migration(qmp, timeout=int(os.environ.get("KMIG_WAIT_TIMEOUT", "120"))):
    deadline = time.time() + timeout
    while time.time() < deadline:
        info = qmp.cmd("query-migrate")
        if info.get("status") in ("completed", "failed", "cancelled"):
            return info
        time.sleep(0.05)
    raise AssertionError(f"migration did not finish in {timeout}s: {info}")


def workdir(prefix):
    return tempfile.mkdtemp(prefix=f"kmig-{prefix}-")


# ---- the stream format (docs/stream-format.md), parsed independently ----

REC_SECTION, REC_RAM, REC_PART, REC_DEVICE, REC_PASS_END, REC_EOF = 1, 2, 3, 4, 5, 0x7F
REC_CHANNELS = 6
HEADER_SIZE = 32
CHAN_HELLO_SIZE = 24
CHAN_MAGIC = b"KMIGCHAN"


class StreamReader:
    """Splits a byte stream into records as they arrive.  feed() returns
    complete records: (kind, offset, bytes) with offset in the stream."""

    def __init__(self, channel=False):
        """channel: a multifd RAM channel (hello, then RAM, PASS_END and
        EOF records), whose kinds get a "chan-" prefix."""
        self.buf = b""
        self.pos = 0
        self.header_done = False
        self.channel = channel

    def _need(self, n):
        return len(self.buf) >= n

    def feed(self, data):
        self.buf += data
        out = []
        while True:
            rec = self._next()
            if rec is None:
                return out
            out.append(rec)

    def _take(self, n, kind):
        if self.channel:
            kind = "chan-" + kind
        rec = (kind, self.pos, self.buf[:n])
        self.buf = self.buf[n:]
        self.pos += n
        return rec

    def _next(self):
        if not self.header_done:
            size, kind = (CHAN_HELLO_SIZE, "hello") if self.channel else (HEADER_SIZE, "header")
            if not self._need(size):
                return None
            self.header_done = True
            return self._take(size, kind)
        if not self._need(4):
            return None
        if self.buf.startswith(b"KMIG"):  # after EOF and the ACK: the source's COMMIT (version 2)
            return self._take(16, "commit") if self._need(16) else None
        (t,) = struct.unpack_from("<I", self.buf)
        if t == REC_SECTION:
            if not self._need(24):
                return None
            name_len = struct.unpack_from("<I", self.buf, 20)[0]
            return self._take(24 + name_len, "section") if self._need(24 + name_len) else None
        if t == REC_RAM:
            if not self._need(12):
                return None
            count = struct.unpack_from("<I", self.buf, 8)[0]
            if not self._need(12 + 8 * count):
                return None
            hdrs = struct.unpack_from(f"<{count}Q", self.buf, 12)
            normal = sum(1 for h in hdrs if not h & 1)
            n = 12 + 8 * count + 4096 * normal
            return self._take(n, "ram") if self._need(n) else None
        if t in (REC_PART, REC_DEVICE):
            if not self._need(12):
                return None
            n = 12 + struct.unpack_from("<I", self.buf, 8)[0]
            return self._take(n, "device" if t == REC_DEVICE else "part") if self._need(n) else None
        if t == REC_PASS_END:
            return self._take(8, "pass-end") if self._need(8) else None
        if t == REC_EOF:
            return self._take(20, "eof") if self._need(20) else None
        if t == REC_CHANNELS:
            return self._take(20, "channels") if self._need(20) else None
        raise ValueError(f"unknown record type {t} at stream offset {self.pos}")


class Proxy:
    """Forwards a migration's connections, letting a test cut or rewrite the
    source-to-destination stream.  mutate(kind, offset, record) returns the
    bytes to forward, None to cut the connection there, or (bytes, "cut")
    to forward bytes and then cut.  The first connection is the main
    stream; later ones (multifd RAM channels) are parsed as channels and
    their kinds start with "chan-"; cut_at applies to the main stream.
    Which is which is told by each connection's magic, not by its order."""

    def __init__(self, dest_port, mutate=None, cut_at=None):
        # never the destination's own port (free_port() only reserved it
        # briefly): the proxy would forward to itself
        while True:
            self.lsock = socket.socket()
            self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.lsock.bind(("127.0.0.1", 0))
            self.port = self.lsock.getsockname()[1]
            if self.port != dest_port:
                break
            self.lsock.close()
        self.lsock.listen(16)
        self.dest_port = dest_port
        self.mutate = mutate
        self.cut_at = cut_at
        self.forwarded = 0
        self.cut = False
        self.lock = threading.Lock()  # mutate() runs on one connection at a time
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _back(self, src, dst):
        try:
            while True:
                data = dst.recv(65536)
                if not data:
                    break
                src.sendall(data)
        except OSError:
            pass

    def _run(self):
        src, _ = self.lsock.accept()
        # the destination must see the main connection first, as it would
        # without a proxy (the source opens channels only after it)
        dst = socket.create_connection(("127.0.0.1", self.dest_port))
        threading.Thread(target=self._channels, daemon=True).start()
        self._forward(src, dst)
        self.lsock.close()

    def _channels(self):
        while True:
            try:
                src, _ = self.lsock.accept()
            except OSError:
                return
            try:
                dst = socket.create_connection(("127.0.0.1", self.dest_port))
            except OSError:  # the destination gave up already
                src.close()
                continue
            threading.Thread(target=self._forward, args=(src, dst), daemon=True).start()

    def _forward(self, src, dst):
        threading.Thread(target=self._back, args=(src, dst), daemon=True).start()
        first = b""
        try:
            while len(first) < 8:
                data = src.recv(8 - len(first))
                if not data:
                    break
                first += data
        except OSError:
            pass
        main = not first.startswith(CHAN_MAGIC)
        reader = StreamReader(channel=not main) if self.mutate else None
        try:
            while True:
                data, first = first or src.recv(65536), b""
                if not data:
                    break
                if main and self.cut_at is not None and self.forwarded + len(data) >= self.cut_at:
                    dst.sendall(data[: self.cut_at - self.forwarded])
                    self.forwarded = self.cut_at
                    self.cut = True
                    break
                if reader:
                    for kind, off, rec in reader.feed(data):
                        with self.lock:
                            out = self.mutate(kind, off, rec)
                        cut = out is None or isinstance(out, tuple)
                        if isinstance(out, tuple):
                            out = out[0]
                        if out:
                            dst.sendall(out)
                            if main:
                                self.forwarded += len(out)
                        if cut:
                            self.cut = True
                            raise StopIteration
                else:
                    dst.sendall(data)
                    if main:
                        self.forwarded += len(data)
        except (OSError, StopIteration):
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
