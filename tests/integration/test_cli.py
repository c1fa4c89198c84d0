#!/usr/bin/env python3
"""Bad command lines and bad guest files: a clear message, a non-zero
exit, never a crash (no death by signal), nothing left running."""
import os
import re
import shutil
import subprocess
import tempfile

from kmiglib import kmig_path, require_kvm

K = kmig_path()


def guest_params_documented():
    """{guest: [parameter names]} as docs/guests.md's Parameters section
    gives them (the common ones, then each guest's paragraph)."""
    doc = open(os.path.join(os.path.dirname(__file__), "..", "..", "docs", "guests.md")).read()
    sec = re.search(r"\n## Parameters\n(.*?)\n## ", doc, re.S).group(1)
    names = lambda text: re.findall(r"`([a-z]+)=", text)
    common = re.findall(r"\n\| `([a-z]+)` \|", sec)
    parts = re.split(r"\n`(idle|dirty|verify)`:", sec)
    out = {g: sorted(set(common + names(text))) for g, text in zip(parts[1::2], parts[2::2])}
    assert set(out) == {"idle", "dirty", "verify"} and all(len(v) > 2 for v in out.values()), out
    return out


def run(args, expect_rc, expect_text, timeout=20):
    p = subprocess.run([K] + args, capture_output=True, text=True, timeout=timeout)
    out = p.stdout + p.stderr
    assert p.returncode >= 0, f"{args}: killed by signal {-p.returncode}"
    assert p.returncode == expect_rc, f"{args}: exit {p.returncode}, expected {expect_rc}: {out}"
    assert expect_text.lower() in out.lower(), f"{args}: expected {expect_text!r} in: {out}"
    print(f"ok: kmig {' '.join(args)[:60]!s:<62} -> {out.strip().splitlines()[0][:90] if out.strip() else ''}")


def devices_refused():
    run(["run", "--guest", "idle", "--device", "gpu,id=x"], 1, "unknown device")
    run(["run", "--guest", "idle", "--device", "blob,id=x"], 1, "needs id= ")
    run(["run", "--guest", "idle", "--device", "blob,id=X,size=1M"], 1, "bad value 'X'")
    run(["run", "--guest", "idle", "--device", "blob,id=x,size=100"], 1, "multiple of 64K")
    run(["run", "--guest", "idle", "--device", "blob,id=x,size=1M,color=red"], 1, "unknown blob option")
    run(["run", "--guest", "idle", "--device", "blob,id=x,size=-1M"], 1, "bad value '-1M'")
    run(["run", "--guest", "idle", "--device", "blob,id=x,id=y,size=1M"], 1, "option 'id' given twice")
    run(["run", "--guest", "idle", "--device", "blob,id=x,size=1M,"], 1, "stray comma")
    run(["run", "--guest", "idle", "--device", "blob,,id=x,size=1M"], 1, "stray comma")
    run(["run", "--guest", "idle", "--device", "blob,id=x,size=1M", "--device", "blob,id=x,size=1M"], 1,
        "two devices with id 'x'")


def objects_refused(tmp):
    """--object: QEMU's names, checked (credentials read) before anything starts."""
    run(["run", "--guest", "idle", "--object", "secret,id=s"], 1, "invalid object type: secret")
    run(["run", "--guest", "idle", "--object", "tls-creds-x509,id=t,endpoint=middle,dir=/x"], 1,
        "Parameter 'endpoint' does not accept value 'middle'")
    run(["run", "--guest", "idle", "--object", "tls-creds-x509,id=t,verify-peer=maybe,dir=/x"], 1,
        "Parameter 'verify-peer' expects 'on' or 'off'")
    run(["run", "--guest", "idle", "--object", "tls-creds-x509,id=t,color=red"], 1,
        "Property 'tls-creds-x509.color' not found")
    run(["run", "--guest", "idle", "--object", "tls-creds-x509,id=t,dir=/nonexistent"], 1,
        "cannot read TLS CA certificate '/nonexistent/ca-cert.pem'")
    run(["run", "--guest", "idle", "--object", f"tls-creds-x509,id=t,endpoint=server,dir={tmp}"], 1,
        f"cannot read TLS CA certificate '{tmp}/ca-cert.pem'")
    run(["run", "--guest", "idle", "--object", "authz-simple,id=a,dir=/x"], 1,
        "Property 'authz-simple.dir' not found")


def files_never_emptied(tmp):
    """A refused run truncates nothing: not --serial, not --stats-file, and
    never the kernel it would read."""
    kernel = os.path.join(tmp, "k.elf")
    with open(kernel, "wb") as f:
        f.write(open(os.environ["VERIFY_ELF"], "rb").read())
    size = os.path.getsize(kernel)
    out = os.path.join(tmp, "out.txt")

    def intact(args, expect_text):
        with open(out, "w") as f:
            f.write("keep me\n")
        run(args, 1, expect_text)
        assert open(out).read() == "keep me\n", f"{args}: {out} was changed"
        assert os.path.getsize(kernel) == size, f"{args}: the kernel was changed"

    intact(["run", "--kernel", kernel, "--serial", kernel], "is the kernel file")
    intact(["run", "--kernel", kernel, "--stats-file", kernel], "is the kernel file")
    intact(["run", "--guest", "idle", "--serial", out, "--stats-file", out], "the serial file too")
    intact(["run", "--guest", "idle", "--serial", out, "--incoming", "tcp:127.0.0.1:80x"], "bad port")
    intact(["run", "--guest", "idle", "--stats-file", out, "--incoming", "tcp:127.0.0.1:80x"], "bad port")
    intact(["run", "--guest", "idle", "--serial", out, "--device", "blob,id=x"], "needs id=")
    if not os.path.exists("/dev/kvm"):
        intact(["run", "--guest", "idle", "--serial", out, "--stats-file", out + "2"], "/dev/kvm")
        assert not os.path.exists(out + "2"), "--stats-file created without a machine"


def main():
    tmp = tempfile.mkdtemp(prefix="kmig-cli-")
    # help everywhere
    run([], 2, "Usage: kmig COMMAND")
    run(["--help"], 0, "Commands:")
    for sub in ("run", "migrate", "demo", "info", "bench"):
        run([sub, "--help"], 0, f"Usage: kmig {sub}")
    run(["frobnicate"], 2, "unknown command")
    # values refused before anything starts
    run(["run", "--guest", "idle", "--mem", "abc"], 2, "invalid --mem")
    run(["run", "--guest", "idle", "--mem", "-5"], 2, "invalid --mem")
    run(["run", "--guest", "idle", "--vcpus", "0"], 2, "invalid --vcpus")
    run(["run", "--guest", "idle", "--vcpus", "65"], 2, "invalid --vcpus")
    run(["run", "--guest", "idle", "--dirty-ring", "1000"], 2, "power of two")
    run(["run", "--guest", "idle", "--dirty-tracking", "rings"], 2, "ring, bitmap or auto")
    run(["demo", "--dirty-tracking", "log"], 2, "invalid value")
    run(["run", "--guest", "idle,ws"], 2, "invalid --guest")
    run(["run"], 2, "exactly one of --kernel")
    run(["run", "--guest", "idle", "--kernel", "/x"], 2, "exactly one of --kernel")
    run(["migrate", "--qmp", "/nonexistent.sock", "tcp:127.0.0.1:1"], 1, "cannot connect")
    run(["migrate", "tcp:127.0.0.1:1"], 2, "Usage")
    run(["run", "--guest", "idle", "--qmp", ""], 2, "invalid --qmp path ''")
    # checked before /dev/kvm is opened: refused the same with or without it
    run(["run", "--guest", "idle", "--mem", "15"], 1, "at least 16 MiB")
    run(["run", "--guest", "idle", "--mem", "4096G"], 1, "more than this host's RAM")
    run(["run", "--guest", "nosuch"], 1, "unknown built-in guest")
    run(["run", "--guest", "verify,bogus=1"], 1, "has no parameter 'bogus'")
    run(["run", "--guest", "verify,ws=64k"], 1, "needs a number")
    run(["run", "--kernel", "/nonexistent/kernel.elf"], 1, "cannot open kernel")
    run(["run", "--guest", "idle", "--incoming", "foo:bar"], 1, "unsupported URI scheme")
    # every parameter docs/guests.md gives a guest is one it takes: the
    # check of the next option (the URI) is what refuses these
    for g, params in guest_params_documented().items():
        run(["run", "--guest", g + "," + ",".join(f"{p}=1" for p in params), "--incoming", "foo:bar"], 1,
            "unsupported URI scheme")
    run(["run", "--guest", "idle", "--incoming", "tcp:127.0.0.1:99999"], 1, "port")
    run(["run", "--guest", "idle", "--incoming", "exec:cat"], 1, "not supported")
    run(["run", "--guest", "idle", "--incoming", "tcp:no-such-host.invalid:4444"], 1, "cannot resolve host")
    run(["run", "--guest", "idle", "--serial", "/nonexistent/dir/s.txt"], 1, "cannot open serial output")
    run(["run", "--guest", "idle", "--serial", tmp], 1, "Is a directory")
    run(["run", "--guest", "idle", "--stats-file", "/nonexistent/dir/s.jsonl"], 1, "cannot open stats file")
    devices_refused()
    objects_refused(tmp)
    files_never_emptied(tmp)
    require_kvm()
    # preallocating more than the host has is refused up front (populating
    # it would end in the OOM killer, not in an error message)
    # (more than is available, but within the host's RAM, which is refused
    # with another message even without --mem-prealloc)
    meminfo = {l.split(":")[0]: int(l.split()[1]) for l in open("/proc/meminfo")}
    avail_mib, total_mib = meminfo["MemAvailable"] >> 10, meminfo["MemTotal"] >> 10
    too_much = (avail_mib + (total_mib - avail_mib) // 2) & ~1
    if too_much - avail_mib >= 64:
        run(["run", "--guest", "idle", "--mem", f"{too_much}M", "--mem-prealloc"], 1, "cannot preallocate")
    else:
        print(f"not checked: preallocating more than available ({avail_mib} of {total_mib} MiB)")
    run(["run", "--kernel", tmp], 1, "not a regular file")
    with open(os.path.join(tmp, "text"), "w") as f:
        f.write("not a kernel\n" * 100)
    run(["run", "--kernel", os.path.join(tmp, "text")], 1, "no multiboot header")
    # a multiboot header whose ELF is cut short
    elf = open(os.environ["VERIFY_ELF"], "rb").read()
    with open(os.path.join(tmp, "short.elf"), "wb") as f:
        f.write(elf[:4200])
    run(["run", "--kernel", os.path.join(tmp, "short.elf")], 1, "outside the file")
    # a 64-bit ELF (this very program's loader would refuse it, as QEMU does)
    with open(os.path.join(tmp, "elf64"), "wb") as f:
        f.write(b"\x7fELF\x02\x01\x01" + b"\0" * 9 + elf[16:])
    run(["run", "--kernel", os.path.join(tmp, "elf64")], 1, "32-bit")
    run(["run", "--guest", "idle", "--qmp", "/nonexistent/dir/q.sock"], 1, "q.sock")
    run(["run", "--guest", "idle", "--serial", "/nonexistent/dir/s.log"], 1, "cannot open serial")
    if os.geteuid() == 0 and shutil.which("unshare"):
        # a host without /dev/kvm: hide it in a private mount namespace
        hide = f"mount -t tmpfs none /dev && exec {K} run --guest idle"
        p = subprocess.run(["unshare", "-m", "sh", "-c", hide], capture_output=True, text=True, timeout=20)
        assert p.returncode == 1 and "cannot open /dev/kvm" in p.stderr, (p.returncode, p.stderr)
        print(f"ok: without /dev/kvm -> {p.stderr.strip()}")
    print("all bad command lines refused cleanly")


if __name__ == "__main__":
    main()
