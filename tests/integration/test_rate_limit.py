#!/usr/bin/env python3
"""max-bandwidth is honoured smoothly: a migration throttled to a limit is
watched through a proxy that timestamps every byte the source sends (on
every connection, so with multifd the channels' sum is what counts).  The
whole migration must average at most the limit, and no 100 ms window may
carry more than the limit's share plus a small allowance (one record of
about a millisecond's worth, and scheduling jitter): no bursts.

usage: test_rate_limit.py [--limit MIB/S] [--fill MIB] [--channels 0,2]"""
import argparse
import socket
import threading
import time

from kmiglib import Kmig, free_port, require_kvm, wait_dest_running, wait_migration, wait_text, workdir

WINDOW = 0.1


class CountingProxy:
    """Forwards any number of connections to dest_port, recording
    (time, bytes) of what the source sends."""

    def __init__(self, dest_port):
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.dest_port = dest_port
        self.samples = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                src, _ = self.lsock.accept()
            except OSError:
                return
            dst = socket.create_connection(("127.0.0.1", self.dest_port))
            threading.Thread(target=self._pump, args=(src, dst, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(dst, src, False), daemon=True).start()

    def _pump(self, a, b, count):
        try:
            while True:
                data = a.recv(1 << 16)
                if not data:
                    break
                if count:
                    with self.lock:
                        self.samples.append((time.monotonic(), len(data)))
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self.lsock.close()


def worst_window(samples):
    """Most bytes seen in any WINDOW-long interval (sliding)."""
    worst, lo, acc = 0, 0, 0
    for t, n in samples:
        acc += n
        while samples[lo][0] < t - WINDOW:
            acc -= samples[lo][1]
            lo += 1
        worst = max(worst, acc)
    return worst


def one_run(args, channels, wd):
    limit = args.limit << 20
    port = free_port()
    dst = Kmig(wd, f"dst{channels}", guest="idle", params=f"fill={args.fill}", mem=args.mem,
               incoming=f"tcp:127.0.0.1:{port}")
    src = Kmig(wd, f"src{channels}", guest="idle", params=f"fill={args.fill}", mem=args.mem)
    proxy = CountingProxy(port)
    try:
        if not wait_text(src.serial, "idle: ready", 120):
            raise SystemExit("the source guest did not get ready")
        for side in (src, dst):
            if channels:
                side.qmp.cmd("migrate-set-capabilities",
                             capabilities=[{"capability": "multifd", "state": True}])
                side.qmp.cmd("migrate-set-parameters", **{"multifd-channels": channels})
        src.qmp.cmd("migrate-set-parameters", **{"max-bandwidth": limit})
        src.qmp.cmd("migrate", uri=f"tcp:127.0.0.1:{proxy.port}")
        info = wait_migration(src.qmp, timeout=120)
        assert info["status"] == "completed", info
        time.sleep(0.2)
        with proxy.lock:
            samples = list(proxy.samples)
        total = sum(n for _, n in samples)
        span = samples[-1][0] - samples[0][0]
        avg = total / span
        worst = worst_window(samples)
        # a record is capped at ~1 ms of the limit; allow 10 % jitter and
        # two records' worth on top of the window's share
        allowed = limit * WINDOW * 1.10 + 2 * max(4096, limit // 1000) + 65536
        print(f"channels {channels}: {total >> 20} MiB in {span:.2f} s = {avg / (1 << 20):.1f} MiB/s "
              f"(limit {args.limit}); worst {int(WINDOW * 1000)} ms window {worst / (1 << 20):.2f} MiB "
              f"(allowed {allowed / (1 << 20):.2f}); total-time {info['total-time']} ms")
        assert avg <= limit * 1.05, f"average {avg:.0f} B/s is above the limit {limit}"
        assert worst <= allowed, f"a {WINDOW}s window carried {worst} bytes, more than {allowed:.0f}"
        wait_dest_running(dst)
    finally:
        proxy.close()
        src.stop()
        dst.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=32, help="MiB/s")
    ap.add_argument("--fill", type=int, default=48)
    ap.add_argument("--mem", type=int, default=128)
    ap.add_argument("--channels", default="0,2")
    args = ap.parse_args()
    require_kvm()
    wd = workdir("rate-limit")
    for ch in (int(c) for c in args.channels.split(",")):
        one_run(args, ch, wd)
    print("max-bandwidth honoured without bursts")


if __name__ == "__main__":
    main()
