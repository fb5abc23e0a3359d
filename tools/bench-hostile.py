#!/usr/bin/python3
"""What a load and a damaged disk cost each daemon: the real sanlock and
hactl's, side by side in one run.

Usage (root; Debian's python3 with python3-sanlock; hactl built):
    tools/bench-hostile.py [--hactl target/release/hactl] [--clients 200]
        [--burst 30] [--after 60] [--garbage-secs 300] [--mlock 0]
        [--only sanlock|hactl]

For each daemon (own run dir, -w 0, -h 0, -l MLOCK, one lockspace at
io_timeout 5 on a local file with --clients resource leases):
  - idle: RSS, threads and open fds 10 s after the lockspace is joined;
  - burst: --clients python3-sanlock processes, each registered and looping
    acquire+release of its own lease for --burst seconds; the peak RSS
    (VmHWM), threads and fds seen while it runs (sampled every 0.2 s);
  - after: the same figures --after seconds after the last client exited,
    and after/idle as a ratio;
then both daemons at once join a second lockspace of 2000 host slots
(512/1M) whose 1999 other slots hold random bytes, and the log bytes each
writes in --garbage-secs are counted, for the whole -D stream (every
level) and for its log file at the default priority (warnings and
errors: sanlock's /var/log/sanlock.log, hactl's RUN_DIR/hactl.log), then
given per hour.

Daemons are stopped by pid; files go under target/bench-hostile/.
"""
import argparse, multiprocessing as mp, os, shutil, signal, subprocess, sys, time

import sanlock

MIB = 1 << 20
SANLOCK_LOG = "/var/log/sanlock.log"


def sh(*args, env=None):
    subprocess.run(args, check=True, env=env, stdout=subprocess.DEVNULL)


def start(kind, hactl, run_dir, mlock):
    os.makedirs(run_dir, exist_ok=True)
    env = dict(os.environ, SANLOCK_RUN_DIR=run_dir, SANLOCK_PRIVILEGED="0",
               HACTL_SANLOCK_CONF="/nonexistent")
    cmd = [hactl, "daemon"] if kind == "hactl" else ["sanlock", "daemon"]
    cmd += ["-D", "-w", "0", "-l", str(mlock), "-h", "0", "-U", "root", "-G", "root"]
    err = open(os.path.join(run_dir, "daemon.stderr"), "wb")
    p = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                         start_new_session=True)
    for _ in range(200):
        if os.path.exists(os.path.join(run_dir, "sanlock.sock")):
            return p
        time.sleep(0.05)
    raise SystemExit(f"{kind} daemon did not start")


def stop(p):
    os.kill(p.pid, signal.SIGKILL)
    p.wait()


def sample(pid):
    """(VmRSS kB, VmHWM kB, threads, open fds) of process `pid`."""
    f = {}
    for line in open(f"/proc/{pid}/status"):
        k, _, v = line.partition(":")
        f[k] = v.split()
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return int(f["VmRSS"][0]), int(f["VmHWM"][0]), int(f["Threads"][0]), fds


def one_client(run_dir, path, idx, secs):
    os.environ["SANLOCK_RUN_DIR"] = run_dir
    fd = sanlock.register()
    res = f"R{idx}".encode()
    disks = [(path, (1 + idx) * MIB)]
    end = time.monotonic() + secs
    while time.monotonic() < end:
        # An error (an I/O timeout on a busy machine) is not the point:
        # the load is.
        try:
            sanlock.acquire(b"LS", res, disks, slkfd=fd)
            sanlock.release(b"LS", res, disks, slkfd=fd)
        except sanlock.SanlockException:
            time.sleep(0.1)
    os._exit(0)


def load(kind, hactl, base, clients, burst, after, mlock, q):
    d = os.path.join(base, f"{kind}-l{mlock}")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    path = os.path.join(d, "leases")
    with open(path, "wb") as f:
        f.truncate((1 + clients) * MIB)
    sh(hactl, "direct", "init", "-s", f"LS:0:{path}:0", "-o", "5")
    for i in range(clients):
        sh(hactl, "direct", "init", "-r", f"LS:R{i}:{path}:{(1 + i) * MIB}")
    run_dir = os.path.join(d, "run")
    p = start(kind, hactl, run_dir, mlock)
    try:
        os.environ["SANLOCK_RUN_DIR"] = run_dir
        # io_timeout 5: 200 clients on a small machine must not time out.
        sanlock.add_lockspace(b"LS", 1, path, iotimeout=5)
        time.sleep(10)
        idle = sample(p.pid)
        procs = [mp.Process(target=one_client, args=(run_dir, path, i, burst))
                 for i in range(clients)]
        for pr in procs:
            pr.start()
        peak_threads = peak_fds = 0
        while any(pr.is_alive() for pr in procs):
            _, _, t, n = sample(p.pid)
            peak_threads, peak_fds = max(peak_threads, t), max(peak_fds, n)
            time.sleep(0.2)
        for pr in procs:
            pr.join()
        hwm = sample(p.pid)[1]
        curve = {}
        t0 = time.monotonic()
        for at in (5, 30, after):
            time.sleep(max(0.0, t0 + at - time.monotonic()))
            curve[at] = sample(p.pid)
        q.put({"idle": idle, "peak": (hwm, peak_threads, peak_fds), "curve": curve})
    finally:
        stop(p)


def garbage_lockspace(hactl, path):
    with open(path, "wb") as f:
        f.truncate(MIB)
    sh(hactl, "direct", "init", "-s", f"G:0:{path}:0", "-o", "1", "-Z", "512", "-A", "1M")
    with open(path, "r+b") as f:
        f.seek(512)
        f.write(os.urandom(MIB - 512))


def garbage(hactl, base, secs):
    """Log bytes both daemons write in `secs` with a garbage-filled lockspace."""
    out = {}
    procs = {}
    for kind in ("sanlock", "hactl"):
        d = os.path.join(base, f"{kind}-garbage")
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        garbage_lockspace(hactl, os.path.join(d, "ids"))
        procs[kind] = (d, start(kind, hactl, os.path.join(d, "run"), 0))
    sanlock_log0 = os.path.getsize(SANLOCK_LOG) if os.path.exists(SANLOCK_LOG) else 0
    try:
        for kind, (d, _) in procs.items():
            env = dict(os.environ, SANLOCK_RUN_DIR=os.path.join(d, "run"))
            sh("sanlock", "client", "add_lockspace", "-s", f"G:1:{d}/ids:0", "-o", "1", env=env)
        t0 = time.monotonic()
        start_sizes = {k: os.path.getsize(os.path.join(d, "run", "daemon.stderr"))
                       for k, (d, _) in procs.items()}
        hactl_file = os.path.join(procs["hactl"][0], "run", "hactl.log")
        hactl_file0 = os.path.getsize(hactl_file) if os.path.exists(hactl_file) else 0
        time.sleep(secs)
        el = time.monotonic() - t0
        for kind, (d, _) in procs.items():
            stream = os.path.getsize(os.path.join(d, "run", "daemon.stderr")) - start_sizes[kind]
            if kind == "hactl":
                f = (os.path.getsize(hactl_file) if os.path.exists(hactl_file) else 0) - hactl_file0
            else:
                f = (os.path.getsize(SANLOCK_LOG) if os.path.exists(SANLOCK_LOG) else 0) - sanlock_log0
            out[kind] = (stream * 3600 / el, f * 3600 / el)
    finally:
        for _, p in procs.values():
            stop(p)
    return out


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--hactl", default="target/release/hactl")
    a.add_argument("--clients", type=int, default=200)
    a.add_argument("--burst", type=float, default=30)
    a.add_argument("--after", type=int, default=60)
    a.add_argument("--garbage-secs", type=float, default=300)
    a.add_argument("--mlock", type=int, default=0)
    a.add_argument("--only", choices=["sanlock", "hactl"])
    a.add_argument("--garbage-only", action="store_true")
    args = a.parse_args()
    hactl = os.path.abspath(args.hactl)
    base = os.path.abspath("target/bench-hostile")
    kinds = [args.only] if args.only else ["sanlock", "hactl"]
    r = {}
    if args.garbage_only:
        kinds = []
    # libsanlock resolves the run dir once per process: one process per daemon.
    for k in kinds:
        q = mp.Queue()
        pr = mp.Process(target=load, args=(k, hactl, base, args.clients, args.burst,
                                           args.after, args.mlock, q))
        pr.start()
        r[k] = q.get()
        pr.join()
    if kinds:
        report_load(args, kinds, r)
    if args.garbage_secs > 0 and (len(kinds) == 2 or args.garbage_only):
        g = garbage(hactl, base, args.garbage_secs)
        print(f"\ngarbage in 1999 of 2000 host slots, io_timeout 1, measured {args.garbage_secs:.0f} s")
        print("| log bytes per hour | sanlock | hactl | hactl/sanlock |\n|---|--:|--:|--:|")
        for i, name in enumerate(["-D stream (all levels)", "log file (default priority)"]):
            s, h = g["sanlock"][i], g["hactl"][i]
            print(f"| {name} | {s:.0f} | {h:.0f} | {h / s if s else float('nan'):.2f} |")


def report_load(args, kinds, r):
    print(f"{args.clients} clients x {args.burst:.0f} s of acquire+release, -l {args.mlock}, "
          f"nproc {os.cpu_count()}, kernel {os.uname().release}")
    print("| figure | " + " | ".join(kinds) + (" | hactl/sanlock |" if len(kinds) == 2 else " |"))
    print("|---|" + "--:|" * (len(kinds) + (1 if len(kinds) == 2 else 0)))

    def row(name, vals, fmt="{:.1f}"):
        cells = [fmt.format(v) for v in vals]
        ratio = f" | {vals[1] / vals[0]:.2f}" if len(vals) == 2 and vals[0] else (" | -" if len(vals) == 2 else "")
        print(f"| {name} | " + " | ".join(cells) + ratio + " |")

    mb = lambda kb: kb / 1024
    row("RSS idle MB", [mb(r[k]["idle"][0]) for k in kinds])
    row("RSS peak (VmHWM) MB", [mb(r[k]["peak"][0]) for k in kinds])
    for at in sorted(r[kinds[0]]["curve"]):
        row(f"RSS {at} s after MB", [mb(r[k]["curve"][at][0]) for k in kinds])
    after = max(r[kinds[0]]["curve"])
    row(f"RSS {after} s after / idle", [r[k]["curve"][after][0] / r[k]["idle"][0] for k in kinds], "{:.2f}")
    row("threads idle", [r[k]["idle"][2] for k in kinds], "{:d}")
    row("threads peak", [r[k]["peak"][1] for k in kinds], "{:d}")
    row(f"threads {after} s after", [r[k]["curve"][after][2] for k in kinds], "{:d}")
    row("fds idle", [r[k]["idle"][3] for k in kinds], "{:d}")
    row("fds peak", [r[k]["peak"][2] for k in kinds], "{:d}")
    row(f"fds {after} s after", [r[k]["curve"][after][3] for k in kinds], "{:d}")


if __name__ == "__main__":
    main()
