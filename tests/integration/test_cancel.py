#!/usr/bin/env python3
"""migrate_cancel in the middle of a migration: the source reports
'cancelled' and its guest keeps running, correct; the destination, whose
stream was cut, refuses it, never starts its guest and exits 1.  Then a
second migration of the same source completes."""
from kmiglib import Kmig, free_port, require_kvm, verify_passes, wait_migration, wait_whole_pass, workdir
import time


def main():
    require_kvm()
    wd = workdir("cancel")
    port = free_port()
    dst = Kmig(wd, "dst", params="ws=32", incoming=f"tcp:127.0.0.1:{port}")
    src = Kmig(wd, "src", params="ws=32")
    try:
        src.wait_lines(r" ok$", 1)
        # slow enough that it is still in its first pass when cancelled
        src.qmp.cmd("migrate-set-parameters", **{"max-bandwidth": 4 << 20})
        src.qmp.cmd("migrate", uri=f"tcp:127.0.0.1:{port}")
        deadline = time.time() + 10
        while True:
            info = src.qmp.cmd("query-migrate")
            if info.get("status") == "active" and info["ram"]["transferred"] > (1 << 20):
                break
            assert time.time() < deadline, info
            time.sleep(0.05)
        assert info["ram"]["remaining"] > 0
        src.qmp.cmd("migrate_cancel")
        info = wait_migration(src.qmp)
        assert info["status"] == "cancelled", info
        assert src.qmp.cmd("query-status")["status"] == "running"
        assert dst.wait_exit(30) == 1, "destination should exit after a cut stream"
        assert not dst.lines(), "destination guest must not have started"
        n = len(src.wait_lines(r" ok$"))
        src.wait_lines(r" ok$", n + 2, timeout=20)
        assert not src.failures()
        print(f"cancelled after {info['ram']['transferred'] if 'ram' in info else '?'} bytes; "
              f"source running, destination refused: {dst.stderr().strip()[:100]}")

        # the same source migrates fine afterwards
        port2 = free_port()
        dst2 = Kmig(wd, "dst2", params="ws=32", incoming=f"tcp:127.0.0.1:{port2}")
        try:
            src.qmp.cmd("migrate-set-parameters", **{"max-bandwidth": 0})
            src.qmp.cmd("migrate", uri=f"tcp:127.0.0.1:{port2}")
            info = wait_migration(src.qmp)
            assert info["status"] == "completed", info
            before = verify_passes(src.wait_lines(r" ok$")[-1])
            # a whole pass checked on the destination, however slow the
            # CPU (an emulated one takes seconds a pass: kvm-vm.sh)
            wait_whole_pass(dst2, before)
            print(f"second migration completed in {info['total-time']} ms; guest correct on the destination")
        finally:
            dst2.stop()
    finally:
        src.stop()
        dst.stop()


if __name__ == "__main__":
    main()
