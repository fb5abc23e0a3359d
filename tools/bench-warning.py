#!/usr/bin/python3
"""How many seconds of warning an admin (or a program) gets before a
host's lease holders are killed when its storage stalls, hactl beside the
real sanlock.

Each run: one daemon (hactl or sanlock, -w 0) joins a lockspace that lies
behind a FUSE pass-through (tools/fuse-passthrough.py); a python3-sanlock
process holds a lease in it and notes when SIGTERM comes; another is
registered for the lockspace's events (reg_event) and notes each event;
the daemon's log (-D, stderr) is read line by line. After a random wait
(so the stall falls anywhere in the renewal interval) the FUSE server is
SIGSTOPped: every lease I/O hangs. Measured from the moment the holder
gets SIGTERM, back to
  - the first warning event on the reg_event fd,
  - the first log line that says holders will be killed (hactl), or the
    first log line about a late, failed or timed-out renewal (sanlock's
    "check_our_lease warning", which gives no time left).

usage: tools/bench-warning.py [--runs-fast N] [--runs-slow N] [--out FILE]
       (root; Debian's sanlock, python3-sanlock, fuse3, python3-fusepy;
        builds nothing: uses the newer of target/release/hactl and target/debug/hactl)
Prints a Markdown table (also to --out).
"""
import argparse
import json
import os
import random
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SANLOCK = "/usr/sbin/sanlock"
PY = "/usr/bin/python3"

HOLDER = r"""
import os, sanlock, signal, sys, time
def term(*_):
    print("sigterm %.3f" % time.monotonic(), flush=True)
    os._exit(0)
signal.signal(signal.SIGTERM, term)
fd = sanlock.register()
sanlock.acquire(b"LS", b"R1", [(sys.argv[1], 1048576)], slkfd=fd)
print("held", flush=True)
while True:
    time.sleep(1)
"""

LISTENER = r"""
import json, select, sanlock, sys, time
fd = sanlock.reg_event(b"LS")
print("registered", flush=True)
while True:
    r, _, _ = select.select([fd], [], [])
    for e in sanlock.get_event(fd):
        e["t"] = time.monotonic()
        print(json.dumps(e), flush=True)
"""


def hactl_bin():
    """The newer of the release and debug builds."""
    found = [os.path.join(ROOT, p) for p in ("target/release/hactl", "target/debug/hactl")
             if os.path.exists(os.path.join(ROOT, p))]
    if not found:
        sys.exit("build hactl first (cargo build --release)")
    return max(found, key=os.path.getmtime)


def lines_of(proc, sink):
    """Stamps each line of proc's stdout with time.monotonic()."""
    def run():
        for line in proc.stdout:
            sink.append((time.monotonic(), line.rstrip("\n")))
    t = threading.Thread(target=run, daemon=True)
    t.start()


def wait_line(sink, pred, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for t, l in list(sink):
            if pred(l):
                return t, l
        time.sleep(0.05)
    return None


def run_once(impl, io, hactl):
    work = tempfile.mkdtemp(prefix="bench-warning-", dir=os.path.join(ROOT, "target", "tmp"))
    back, mnt, run_dir = (os.path.join(work, d) for d in ("back", "mnt", "run"))
    for d in (back, mnt, run_dir):
        os.makedirs(d)
    leases = os.path.join(back, "leases")
    with open(leases, "wb") as f:
        f.truncate(2 << 20)
    subprocess.run([hactl, "direct", "init", "-s", "LS:0:%s:0" % leases, "-o", str(io)],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run([hactl, "direct", "init", "-r", "LS:R1:%s:1M" % leases],
                   check=True, stdout=subprocess.DEVNULL)
    procs = []
    fuse = subprocess.Popen([PY, os.path.join(ROOT, "tools/fuse-passthrough.py"), back, mnt],
                            stderr=subprocess.DEVNULL)
    procs.append(fuse)
    try:
        end = time.monotonic() + 10
        while mnt not in open("/proc/mounts").read():
            if time.monotonic() > end:
                raise RuntimeError("no FUSE mount")
            time.sleep(0.05)
        env = dict(os.environ, SANLOCK_RUN_DIR=run_dir, SANLOCK_PRIVILEGED="0",
                   HACTL_SANLOCK_CONF="/nonexistent")
        binary = hactl if impl == "hactl" else SANLOCK
        daemon = subprocess.Popen([binary, "daemon", "-D", "-w", "0", "-l", "0", "-h", "0",
                                   "-U", "root", "-G", "root"], env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        procs.append(daemon)
        log = []
        lines_of(daemon, log)
        end = time.monotonic() + 10
        while not os.path.exists(os.path.join(run_dir, "sanlock.sock")):
            if time.monotonic() > end:
                raise RuntimeError("no daemon socket")
            time.sleep(0.05)
        via = os.path.join(mnt, "leases")
        subprocess.run([SANLOCK, "client", "add_lockspace", "-s", "LS:1:%s:0" % via, "-o", str(io)],
                       env=env, check=True, stdout=subprocess.DEVNULL)
        holder = subprocess.Popen([PY, "-c", HOLDER, via], env=env, text=True,
                                  stdout=subprocess.PIPE)
        procs.append(holder)
        if holder.stdout.readline().strip() != "held":
            raise RuntimeError("the holder did not get its lease")
        hl = []
        lines_of(holder, hl)
        listener = subprocess.Popen([PY, "-c", LISTENER], env=env, text=True,
                                    stdout=subprocess.PIPE)
        procs.append(listener)
        if listener.stdout.readline().strip() != "registered":
            raise RuntimeError("reg_event failed")
        events = []
        lines_of(listener, events)
        # Settle (startup warnings clear), then stall at a random phase.
        time.sleep(3 * io + random.uniform(0, 2 * io))
        n_log, n_ev = len(log), len(events)
        fuse.send_signal(signal.SIGSTOP)
        t_stall = time.monotonic()
        got = wait_line(hl, lambda l: l.startswith("sigterm"), 8 * io + 60)
        if got is None:
            raise RuntimeError("the holder was never killed")
        t_kill = float(got[1].split()[1])
        warn_ev = next((t for t, l in events[n_ev:]
                        if json.loads(l).get("event") == 0x4841000000000100), None)
        if impl == "hactl":
            pred = lambda l: "holders will be killed in" in l
        else:
            # sanlock logs "check_our_lease warning N" from 6 x io_timeout
            # on, and renewal errors when its I/O returns at all.
            pred = lambda l: ("check_our_lease warning" in l or "renewal error" in l
                              or ("delta_renew" in l and "timeout" in l))
        warn_log = next((t for t, l in log[n_log:] if pred(l)), None)
        if os.environ.get("BENCH_WARNING_DEBUG"):
            for t, l in log[n_log:]:
                print("%.2f %s" % (t - t_kill, l), file=sys.stderr)
        return {
            "stall_to_kill": t_kill - t_stall,
            "event_lead": (t_kill - warn_ev) if warn_ev else 0.0,
            "log_lead": (t_kill - warn_log) if warn_log else 0.0,
        }
    finally:
        try:
            os.kill(fuse.pid, signal.SIGCONT)
        except OSError:
            pass
        for p in reversed(procs):
            try:
                p.kill()
                p.wait(timeout=10)
            except Exception:
                pass
        subprocess.run(["fusermount", "-u", "-z", mnt], stderr=subprocess.DEVNULL)
        subprocess.run(["rm", "-rf", work])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs-fast", type=int, default=5, help="runs at io_timeout 1")
    ap.add_argument("--runs-slow", type=int, default=2, help="runs at io_timeout 10")
    ap.add_argument("--out")
    a = ap.parse_args()
    hactl = hactl_bin()
    os.makedirs(os.path.join(ROOT, "target", "tmp"), exist_ok=True)
    rows = []
    for io, n in ((1, a.runs_fast), (10, a.runs_slow)):
        for impl in os.environ.get("BENCH_WARNING_IMPLS", "hactl sanlock").split():
            rs = []
            for i in range(n):
                r = run_once(impl, io, hactl)
                print("io_timeout %d %s run %d: %s" % (io, impl, i + 1,
                      ", ".join("%s %.1f s" % kv for kv in r.items())), file=sys.stderr, flush=True)
                rs.append(r)
            rows.append((io, impl, rs))
    out = ["| io_timeout | id_renewal_fail_seconds | daemon | runs | stall → holder SIGTERM (s) "
           "| warning event before SIGTERM (s): min / median | warning log line before SIGTERM (s): min / median |",
           "|---|---|---|---|---|---|---|"]
    for io, impl, rs in rows:
        if not rs:
            continue
        med = lambda k: statistics.median(r[k] for r in rs)
        mn = lambda k: min(r[k] for r in rs)
        out.append("| %d | %d | %s | %d | %.1f | %.1f / %.1f | %.1f / %.1f |" % (
            io, 8 * io, impl, len(rs), med("stall_to_kill"), mn("event_lead"), med("event_lead"),
            mn("log_lead"), med("log_lead")))
    text = "\n".join(out) + "\n"
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
