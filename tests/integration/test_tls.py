#!/usr/bin/env python3
"""TLS between two kmig runs with real guests, in QEMU's objects and
parameters: a source without a client certificate is refused with its
reason while its guest keeps running, the destination goes on waiting, and
then the real source migrates the self-checking guest in TLS over the main
connection and two multifd channels, the guest checking every page on the
destination.  That source keeps its records in GnuTLS (KMIG_KTLS=0) while
the destination hands its keys to the kernel where it has kTLS: the mixed
pair, whose every channel ends with a close_notify alert the kTLS side
must read as the end of the stream (the pure kTLS pair runs in
test_netns.py --guest).  Certificates are made at test time (tests/tls,
tls-certs)."""
import os
import subprocess
import time

from kmiglib import (Kmig, free_port, require_kvm, tls_mode_expected, verify_passes, wait_migration,
                     wait_whole_pass, workdir)


def main():
    require_kvm()
    wd = workdir("tls")
    certs = os.path.join(wd, "certs")
    subprocess.run([os.environ["TLS_CERTS"], certs], check=True)
    port = free_port()
    uri = f"tcp:127.0.0.1:{port}"
    # a bounded dirty rate: the migration converges on an emulated CPU
    # (scripts/kvm-vm.sh) too, where TLS moves a few MB/s
    params = "ws=8,rate=2"
    dst = Kmig(wd, "dst", params=params, incoming="defer",
               extra=["--object", f"tls-creds-x509,id=tls0,endpoint=server,dir={certs}/server",
                      "--object", "authz-simple,id=auth0,identity=O=kmig,,CN=kmig-src"])
    bad = Kmig(wd, "bad", params="ws=32")
    src = Kmig(wd, "src", params=params, env={"KMIG_KTLS": "0"},
               extra=["--object", f"tls-creds-x509,id=tls0,endpoint=client,dir={certs}/client"])
    try:
        dst.qmp.cmd("migrate-set-capabilities", capabilities=[{"capability": "multifd", "state": True}])
        dst.qmp.cmd("migrate-set-parameters", **{"tls-creds": "tls0", "tls-authz": "auth0"})
        dst.qmp.cmd("migrate-incoming", uri=uri)

        # a source whose credentials hold no certificate: refused, told why
        bad.wait_lines(r" ok$", 1)
        bad.qmp.cmd("object-add", **{"qom-type": "tls-creds-x509", "id": "tls0", "endpoint": "client",
                                     "dir": f"{certs}/client-nocert"})
        bad.qmp.cmd("migrate-set-parameters", **{"tls-creds": "tls0", "tls-hostname": "127.0.0.1"})
        bad.qmp.cmd("migrate", uri=uri)
        info = wait_migration(bad.qmp)
        assert info["status"] == "failed", info
        assert "Certificate is required" in info.get("error-desc", ""), info
        assert bad.qmp.cmd("query-status")["status"] == "running"
        n = len(bad.wait_lines(r" ok$"))
        bad.wait_lines(r" ok$", n + 1, timeout=20)
        assert not bad.failures()
        print(f"refused source: {info['error-desc']}")
        deadline = time.time() + 10
        while "refused an incoming connection" not in dst.stderr():
            assert time.time() < deadline, dst.stderr()
            time.sleep(0.05)
        assert dst.qmp.cmd("query-status")["status"] == "inmigrate"
        print("destination: " + [l for l in dst.stderr().splitlines() if "refused" in l][0])

        # the real source, with multifd
        src.wait_lines(r" ok$", 1)
        src.qmp.cmd("migrate-set-capabilities", capabilities=[{"capability": "multifd", "state": True}])
        src.qmp.cmd("migrate-set-parameters", **{"tls-creds": "tls0", "tls-hostname": "127.0.0.1"})
        src.qmp.cmd("migrate", uri=uri)
        info = wait_migration(src.qmp)
        assert info["status"] == "completed", info
        assert info["x-kmig"]["tls"] == "gnutls", info["x-kmig"]
        assert info["x-kmig"]["channels"] == 2, info["x-kmig"]
        before = verify_passes(src.wait_lines(r" ok$")[-1])
        after = wait_whole_pass(dst, before)
        dinfo = dst.qmp.cmd("query-migrate")
        assert dinfo["x-kmig"]["tls"] == tls_mode_expected(), dinfo
        print(f"migrated in TLS in {info['total-time']} ms, downtime {info['downtime']} ms; "
              f"guest correct on the destination; TLS by {info['x-kmig']['tls']} on the source, "
              f"{dinfo['x-kmig']['tls']} on the destination")
    finally:
        src.stop()
        bad.stop()
        dst.stop()


if __name__ == "__main__":
    main()
