#!/usr/bin/env python3
"""Resources exhausted on the source, the guest unharmed (issue 11):

1. The guest's serial output and the --stats-file both go to /dev/full
   (every write fails with ENOSPC).  kmig says so once for each, keeps
   running the guest, and migrates it: the destination's self-checking
   guest carries on with nothing lost.
2. A peer gone silent without closing: the destination accepts the
   source's connection through a proxy that forwards the first MiB and
   then holds the link open, forwarding nothing.  With x-kmig-io-timeout
   at 2 s on both sides, the source fails within a few seconds with a
   message naming the silent side and runs its guest on; the destination
   fails and exits 1."""
import socket
import threading
import time

from kmiglib import (Kmig, free_port, require_kvm, wait_dest_running, wait_migration, workdir)


def full_files(wd):
    port = free_port()
    dst = Kmig(wd, "dst", params="ws=8", incoming=f"tcp:127.0.0.1:{port}")
    src = Kmig(wd, "src", params="ws=8", extra=["--serial", "/dev/full", "--stats-file", "/dev/full"])
    try:
        time.sleep(1.5)
        assert src.qmp.cmd("query-status")["status"] == "running"
        src.qmp.cmd("migrate", uri=f"tcp:127.0.0.1:{port}")
        info = wait_migration(src.qmp)
        assert info["status"] == "completed", info
        wait_dest_running(dst)
        dst.wait_lines(r" ok$", 2, timeout=30)
        assert not dst.failures(), dst.failures()
        err = src.stderr()
        assert err.count("serial output '/dev/full'") == 1, err
        assert err.count("stats file '/dev/full'") == 1, err
        print("source: every write to its serial and stats files failed; said once each, migrated, "
              "destination guest verified")
    finally:
        src.stop()
        dst.stop()


class HoldingProxy:
    """Forwards the first `limit` bytes of the source's main connection,
    then reads and forwards nothing more, holding both sockets open."""

    def __init__(self, dest_port, limit):
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(8)
        self.port = self.ls.getsockname()[1]
        self.dest_port, self.limit = dest_port, limit
        self.held = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        src, _ = self.ls.accept()
        dst = socket.create_connection(("127.0.0.1", self.dest_port))
        self.held += [src, dst]
        done = 0
        while done < self.limit:
            data = src.recv(min(65536, self.limit - done))
            if not data:
                return
            dst.sendall(data)
            done += len(data)
        # silence: nothing read, nothing sent, nothing closed

    def close(self):
        for s in self.held + [self.ls]:
            s.close()


def silent_link(wd):
    port = free_port()
    dst = Kmig(wd, "dst2", params="ws=8", incoming=f"tcp:127.0.0.1:{port}")
    src = Kmig(wd, "src2", params="ws=8")
    proxy = HoldingProxy(port, 1 << 20)
    try:
        src.wait_lines(r" ok$", 1)
        for side in (src, dst):
            side.qmp.cmd("migrate-set-parameters", **{"x-kmig-io-timeout": 2000})
        t0 = time.time()
        src.qmp.cmd("migrate", uri=f"tcp:127.0.0.1:{proxy.port}")
        info = wait_migration(src.qmp, timeout=30)
        took = time.time() - t0
        assert info["status"] == "failed", info
        assert "x-kmig-io-timeout" in info.get("error-desc", ""), info
        assert took < 15, f"the source noticed after {took:.1f} s"
        assert src.qmp.cmd("query-status")["status"] == "running"
        before = len(src.wait_lines(r" ok$", 1))
        src.wait_lines(r" ok$", before + 1, timeout=10)
        assert dst.wait_exit(15) == 1, dst.stderr()
        assert "x-kmig-io-timeout" in dst.stderr(), dst.stderr()
        print(f"silent link: source failed after {took:.1f} s ({info['error-desc']}), guest runs on; "
              f"destination: {dst.stderr().strip().splitlines()[-1]}")
    finally:
        proxy.close()
        src.stop()
        dst.stop()


def main():
    require_kvm()
    wd = workdir("resources")
    full_files(wd)
    silent_link(wd)


if __name__ == "__main__":
    main()
