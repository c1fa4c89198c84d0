#!/usr/bin/env python3
"""kmig's QMP client (kmig migrate, kmig info) against servers that
misbehave: nested too deep, endless, of the wrong types, silent, not QMP,
with escape codes; and Ctrl-C on kmig migrate.  Each must end in bounded
time with a clear message: no death by signal, no json-glib criticals, no
raw escape codes on the terminal, memory bounded.  Needs no KVM: the
server is a script."""
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from kmiglib import kmig_path

K = kmig_path()
GREETING = b'{"QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 0}, "package": ""}, "capabilities": []}}\n'


class FakeServer:
    """A unix-socket QMP server whose conversation is the function talk(conn, server)."""

    def __init__(self, tmp, talk):
        self.path = os.path.join(tmp, f"q{time.monotonic_ns()}.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(4)
        self.talk = talk
        self.seen = []          # commands received
        self.error = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        try:
            conn, _ = self.sock.accept()
            with conn:
                self.talk(conn, self)
        except Exception as e:  # a client that leaves mid-write is expected
            self.error = repr(e)

    def read_cmd(self, f):
        line = f.readline()
        if not line:
            return None
        msg = json.loads(line)
        self.seen.append(msg.get("execute"))
        return msg

    def close(self):
        self.sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def reply(conn, msg, ret):
    conn.sendall(json.dumps({"return": ret, "id": msg.get("id")}).encode() + b"\n")


def negotiated(conn, srv):
    """Greet, answer qmp_capabilities; return the file for more commands."""
    f = conn.makefile("rb")
    conn.sendall(GREETING)
    msg = srv.read_cmd(f)
    reply(conn, msg, {})
    return f


def run_client(args, srv, timeout, expect_rc, expect_text):
    t0 = time.monotonic()
    p = subprocess.run([K] + args + ([] if args[0] == "info" else ["tcp:127.0.0.1:1"]),
                       capture_output=True, text=True, timeout=timeout)
    took = time.monotonic() - t0
    out = p.stdout + p.stderr
    where = f"kmig {args[0]}: exit {p.returncode} after {took:.1f} s, server saw {srv.seen}, " \
            f"server error {srv.error}; output:\n{out[-2000:]}"
    assert p.returncode >= 0, "killed by signal " + where
    assert p.returncode == expect_rc, f"expected exit {expect_rc}: " + where
    assert expect_text.lower() in out.lower(), f"expected {expect_text!r}: " + where
    assert "CRITICAL" not in out and "\x1b" not in out, "criticals or raw escapes: " + where
    return p, took


def case(tmp, name, talk, args, expect_rc, expect_text, max_seconds):
    srv = FakeServer(tmp, talk)
    try:
        full = [args[0], "--qmp", srv.path] + args[1:]
        p, took = run_client(full, srv, max_seconds + 20, expect_rc, expect_text)
        assert took < max_seconds, f"{name}: took {took:.1f} s (limit {max_seconds})"
        line = (p.stderr.strip() or p.stdout.strip()).splitlines()[-1][:100]
        print(f"ok: {name:<28} {took:5.1f} s  -> {line}")
    finally:
        srv.close()


def deep_greeting(conn, srv):
    conn.sendall(b"[" * 100000 + b"]" * 100000 + b"\n")
    time.sleep(2)


def deep_reply(conn, srv):
    f = negotiated(conn, srv)
    srv.read_cmd(f)
    conn.sendall(b'{"return": ' + b"[" * 100000 + b"]" * 100000 + b', "id": 2}\n')
    time.sleep(2)


def endless_line(conn, srv):
    f = negotiated(conn, srv)
    srv.read_cmd(f)
    chunk = b'{"return": "' + b"a" * 65536
    conn.sendall(chunk)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:        # 400 MB and more if let run
        conn.sendall(b"a" * 65536)


def silent(conn, srv):
    time.sleep(30)


def garbage(conn, srv):
    conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
    time.sleep(30)


def status_not_string(conn, srv):
    f = negotiated(conn, srv)
    while True:
        msg = srv.read_cmd(f)
        if msg is None:
            return
        if msg["execute"] == "migrate":
            reply(conn, msg, {})
        else:
            reply(conn, msg, {"status": 5, "ram": {"total": "x", "remaining": [1]}})


def escape_error(conn, srv):
    f = negotiated(conn, srv)
    msg = srv.read_cmd(f)
    conn.sendall(json.dumps({"error": {"class": "GenericError",
                                       "desc": "\x1b]0;owned\x07\x1b[31mred\x1b[0m failure"},
                             "id": msg["id"]}).encode() + b"\n")
    time.sleep(1)


def escape_failed_status(conn, srv):
    f = negotiated(conn, srv)
    while True:
        msg = srv.read_cmd(f)
        if msg is None:
            return
        if msg["execute"] == "migrate":
            reply(conn, msg, {})
        else:
            reply(conn, msg, {"status": "failed", "error-desc": "\x1b[2Jwiped \x1b[31mscreen"})


def events_then_wrong_types(conn, srv):
    """Events, replies to other ids and a reply whose id is a string come
    before the real one; info must still print its table."""
    f = negotiated(conn, srv)
    while True:
        msg = srv.read_cmd(f)
        if msg is None:
            return
        conn.sendall(b'{"event": "STOP", "timestamp": {"seconds": "x"}}\n')
        conn.sendall(json.dumps({"return": {}, "id": "nonsense"}).encode() + b"\n")
        conn.sendall(json.dumps({"return": {}, "id": 1e300}).encode() + b"\n")
        if msg["execute"] == "query-migrate":
            reply(conn, msg, {"status": "active", "total-time": "long", "ram": {"total": 2e100}})
        else:
            reply(conn, msg, [] if "capabilities" in msg["execute"] else {})


def cancel_on_ctrl_c(tmp):
    """Ctrl-C on kmig migrate sends migrate_cancel and reports the end."""
    state = {"cancelled": False}

    def talk(conn, srv):
        f = negotiated(conn, srv)
        while True:
            msg = srv.read_cmd(f)
            if msg is None:
                return
            if msg["execute"] == "migrate_cancel":
                state["cancelled"] = True
                reply(conn, msg, {})
            elif msg["execute"] == "query-migrate":
                reply(conn, msg, {"status": "cancelled" if state["cancelled"] else "active",
                                  "ram": {"total": 1 << 30, "remaining": 1 << 29, "transferred": 1 << 29}})
            else:
                reply(conn, msg, {})

    srv = FakeServer(tmp, talk)
    try:
        p = subprocess.Popen([K, "migrate", "--qmp", srv.path, "tcp:127.0.0.1:1"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)
        t0 = time.monotonic()
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=20)
        took = time.monotonic() - t0
        where = f"exit {p.returncode}, server saw {srv.seen}:\n{out[-1500:]}\n{err[-1500:]}"
        assert p.returncode == 1, where
        assert "migrate_cancel" in srv.seen, where
        assert "cancelling the migration" in err and "Summary: cancelled" in out, where
        assert took < 5, f"took {took:.1f} s: " + where
        print(f"ok: {'ctrl-c cancels':<28} {took:5.1f} s  -> {err.strip().splitlines()[-1]}")
    finally:
        srv.close()
    # a second Ctrl-C leaves at once, exit 130
    state["cancelled"] = False

    def never_ends(conn, srv):
        f = negotiated(conn, srv)
        while True:
            msg = srv.read_cmd(f)
            if msg is None:
                return
            if msg["execute"] == "migrate_cancel":
                time.sleep(30)    # a server slow to answer the cancel
            reply(conn, msg, {"status": "active"} if msg["execute"] == "query-migrate" else {})

    srv = FakeServer(tmp, never_ends)
    try:
        p = subprocess.Popen([K, "migrate", "--qmp", srv.path, "tcp:127.0.0.1:1"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)
        p.send_signal(signal.SIGINT)
        time.sleep(0.5)
        t0 = time.monotonic()
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=20)
        took = time.monotonic() - t0
        where = f"exit {p.returncode}, server saw {srv.seen}:\n{out[-1500:]}\n{err[-1500:]}"
        assert p.returncode == 130 and "interrupted again" in err, where
        assert took < 3, f"took {took:.1f} s: " + where
        print(f"ok: {'second ctrl-c leaves':<28} {took:5.1f} s  -> {err.strip().splitlines()[-1]}")
    finally:
        srv.close()


def main():
    tmp = tempfile.mkdtemp(prefix="kmig-qmpc-")
    for cmd in ("info", "migrate"):
        case(tmp, f"{cmd}: greeting 100000 deep", deep_greeting, [cmd], 1, "nesting too deep", 4)
        case(tmp, f"{cmd}: reply 100000 deep", deep_reply, [cmd], 1, "nesting too deep", 4)
        case(tmp, f"{cmd}: endless line", endless_line, [cmd], 1, "message too large", 8)
        case(tmp, f"{cmd}: silent server", silent, [cmd], 1, "nothing from the server in 5000 ms", 9)
        case(tmp, f"{cmd}: not a QMP server", garbage, [cmd], 1, "did not greet like a QMP server", 3)
        case(tmp, f"{cmd}: escape codes in error", escape_error, [cmd], 1, "?]0;owned??[31mred?[0m failure", 4)
    case(tmp, "migrate: status not a string", status_not_string, ["migrate"], 1, 'no "status" string', 4)
    case(tmp, "migrate: escapes in error-desc", escape_failed_status, ["migrate"], 1, "?[2Jwiped ?[31mscreen", 4)
    case(tmp, "info: wrong types, events", events_then_wrong_types, ["info"], 0, "Migration status: active", 4)
    cancel_on_ctrl_c(tmp)
    print("every misbehaving server was survived")


if __name__ == "__main__":
    sys.exit(main())
