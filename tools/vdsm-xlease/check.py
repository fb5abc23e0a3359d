# Cross-check with vdsm's own xlease.py (see run.sh): vdsm reads volumes hactl
# writes, and both write the same bytes for the same history. Needs a sanlock
# daemon (SANLOCK_RUN_DIR): vdsm writes leases through it.
import os, subprocess, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vdsm.storage import xlease

H, W = sys.argv[1], sys.argv[2]
MiB = 1 << 20

def hactl(*a, ok=True):
    p = subprocess.run([H, "xleases", *a], capture_output=True, text=True)
    if ok and p.returncode != 0:
        raise SystemExit("hactl %s: %s" % (a, p.stderr))
    return p

def mk(name, size=32 * MiB):
    path = os.path.join(W, name)
    with open(path, "wb") as f:
        f.truncate(size)
    return path

def index_bytes(path):
    with open(path, "rb") as f:
        f.seek(MiB)
        b = bytearray(f.read(xlease.INDEX_SIZE))
    b[59:69] = b"0" * 10   # mtime
    return bytes(b)

def slot(path, off):
    with open(path, "rb") as f:
        f.seek(off)
        b = bytearray(f.read(MiB))
    b[512 + 20:512 + 24] = b"\0" * 4  # request record padding
    return bytes(b)

# A: hactl writes, vdsm reads.
a = mk("a")
hactl("format", "-p", a, "-s", "LS")
hactl("add", "-p", a, "vm-1"); hactl("add", "-p", a, "vm-2"); hactl("remove", "-p", a, "vm-1")
hactl("add", "-p", a, "vm-3")
f = xlease.DirectFile(a)
vol = xlease.LeasesVolume(f)
assert vol.lockspace == "LS" and vol.version == 1, vol
assert vol.lookup("vm-2").offset == 4 * MiB, vol.lookup("vm-2")
assert vol.lookup("vm-3").offset == 3 * MiB
try:
    vol.lookup("vm-1"); raise SystemExit("vm-1 still there for vdsm")
except xlease.se.NoSuchLease:
    pass
assert vol.leases() == {"vm-3": {"offset": 3 * MiB, "updating": False},
                        "vm-2": {"offset": 4 * MiB, "updating": False}}, vol.leases()
info = xlease._read_resource(a, 4 * MiB)
assert (info.lockspace, info.resource) == ("LS", "vm-2"), info
vol.close(); f.close()
print("A: vdsm reads hactl's volume: ok")

# B: vdsm writes the same history; the bytes must be equal.
b = mk("b")
f = xlease.DirectFile(b)
xlease.format_index("LS", f)
c = mk("c"); hactl("format", "-p", c, "-s", "LS")
assert index_bytes(b) == index_bytes(c), "formatted index differs"
vol = xlease.LeasesVolume(f)
vol.add("vm-1"); vol.add("vm-2"); vol.remove("vm-1"); vol.add("vm-3"); vol.close()
assert index_bytes(a) == index_bytes(b), "index after add/remove differs"
for off in (3 * MiB, 4 * MiB, 5 * MiB):
    assert slot(a, off) == slot(b, off), "slot %d differs" % off
vol = xlease.LeasesVolume(f); vol.remove("vm-2"); vol.close()
hactl("remove", "-p", a, "vm-2")
assert slot(a, 4 * MiB) == slot(b, 4 * MiB), "cleared slot differs"
assert hactl("lookup", "-p", b, "vm-3").stdout.strip() == "LS:vm-3:%s:%d" % (b, 3 * MiB)
print("B: hactl and vdsm write the same bytes; hactl reads vdsm's volume: ok")

# C: rebuild after damage, both ways, same result.
for p in (a, b):
    with open(p, "r+b") as fh:   # damage record 0 (vm-3), add a leftover at slot 5
        fh.seek(MiB + 512); fh.write(b"\xff")
os.system("sanlock direct init -r LS:stray:%s:%d >/dev/null" % (a, 6 * MiB))
os.system("sanlock direct init -r LS:stray:%s:%d >/dev/null" % (b, 6 * MiB))
hactl("rebuild", "-p", a)
xlease.rebuild_index("LS", f)
assert index_bytes(a) == index_bytes(b), "rebuilt index differs"
for off in (3 * MiB, 4 * MiB, 5 * MiB, 6 * MiB):
    assert slot(a, off) == slot(b, off), "slot %d differs after rebuild" % off
vol = xlease.LeasesVolume(f)
assert vol.leases() == {"vm-3": {"offset": 3 * MiB, "updating": False}}, vol.leases()
vol.close(); f.close()
print("C: rebuild gives the same index and leases as vdsm's: ok")
