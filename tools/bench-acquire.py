#!/usr/bin/python3
"""acquire+release of a free resource lease through python3-sanlock, against
the real sanlock daemon and hactl's, side by side in one run.

Usage (root; Debian's python3 with python3-sanlock; hactl built):
    tools/bench-acquire.py [--hactl target/release/hactl] [--n 200] [--clients 64] [--secs 10]

Reports the latency of one acquire+release (median, p90) through
python3-sanlock and through hactl's Rust client API (examples/api_latency,
which talks to either daemon), the throughput of --clients processes, each
looping acquire+release on its own lease, and the O_DIRECT lease I/Os per
acquire+release (counted with strace on the daemon, lease area only) beside
the Disk Paxos minimum, as hactl/sanlock ratios. Daemons run in their own run dirs and are stopped by
pid; files go under target/bench-acquire/.
"""
import argparse, multiprocessing as mp, os, re, shutil, signal, statistics, subprocess, sys, time

import sanlock

MIB = 1 << 20


def sh(*args, env=None):
    subprocess.run(args, check=True, env=env, stdout=subprocess.DEVNULL)


def start(kind, hactl, run_dir):
    os.makedirs(run_dir, exist_ok=True)
    env = dict(os.environ, SANLOCK_RUN_DIR=run_dir, SANLOCK_PRIVILEGED="0", HACTL_SANLOCK_CONF="/nonexistent")
    cmd = [hactl, "daemon"] if kind == "hactl" else ["sanlock", "daemon"]
    cmd += ["-D", "-w", "0", "-l", "0", "-h", "0", "-U", "root", "-G", "root"]
    log = open(os.path.join(run_dir, "daemon.log"), "w")
    p = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, start_new_session=True)
    for _ in range(200):
        if os.path.exists(os.path.join(run_dir, "sanlock.sock")):
            return p
        time.sleep(0.05)
    raise SystemExit(f"{kind} daemon did not start")


def one_client(run_dir, path, idx, secs, out):
    os.environ["SANLOCK_RUN_DIR"] = run_dir
    fd = sanlock.register()
    res = f"R{idx}".encode()
    disks = [(path, (1 + idx) * MIB)]
    n, end = 0, time.monotonic() + secs
    while time.monotonic() < end:
        sanlock.acquire(b"LS", res, disks, slkfd=fd)
        sanlock.release(b"LS", res, disks, slkfd=fd)
        n += 1
    out.put(n)


def measure(kind, hactl, base, n, clients, secs):
    d = os.path.join(base, kind)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    path = os.path.join(d, "leases")
    with open(path, "wb") as f:
        f.truncate((2 + clients) * MIB)
    sh(hactl, "direct", "init", "-s", f"LS:0:{path}:0", "-o", "10")
    for i in range(clients):
        sh(hactl, "direct", "init", "-r", f"LS:R{i}:{path}:{(1 + i) * MIB}")
    run_dir = os.path.join(d, "run")
    p = start(kind, hactl, run_dir)
    try:
        os.environ["SANLOCK_RUN_DIR"] = run_dir
        sanlock.add_lockspace(b"LS", 1, path)
        fd = sanlock.register()
        lat = []
        for _ in range(n):
            t = time.perf_counter()
            sanlock.acquire(b"LS", b"R0", [(path, MIB)], slkfd=fd)
            sanlock.release(b"LS", b"R0", [(path, MIB)], slkfd=fd)
            lat.append((time.perf_counter() - t) * 1000)
        # The Rust API, same lease, same daemon.
        api = subprocess.run([API, run_dir, path, str(MIB), str(n)], check=True,
                             capture_output=True, text=True).stdout.split()
        # Lease I/Os of 10 acquire+release cycles, from the daemon's syscalls.
        ios = count_ios(p.pid, lambda: [
            (sanlock.acquire(b"LS", b"R0", [(path, MIB)], slkfd=fd),
             sanlock.release(b"LS", b"R0", [(path, MIB)], slkfd=fd)) for _ in range(10)])
        os.close(fd)
        q = mp.Queue()
        procs = [mp.Process(target=one_client, args=(run_dir, path, i, secs, q)) for i in range(clients)]
        t = time.perf_counter()
        for pr in procs:
            pr.start()
        total = sum(q.get() for _ in procs)
        for pr in procs:
            pr.join()
        elapsed = time.perf_counter() - t
        lat.sort()
        return {
            "median ms": statistics.median(lat),
            "p90 ms": lat[int(0.9 * (len(lat) - 1))],
            "Rust API median ms": float(api[0]),
            "Rust API p90 ms": float(api[1]),
            "lease I/Os per acquire+release (reads+writes)": ios / 10,
            f"ops/s, {clients} clients": total / elapsed,
        }
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()


API = os.path.abspath("target/release/examples/api_latency")


def count_ios(pid, work):
    """Lease-area I/Os (offset >= 1 MiB) the daemon `pid` issues during
    `work()`: pread/pwrite (hactl) or io_submit'ed iocbs (sanlock)."""
    out = "/tmp/bench-acquire-strace.txt"
    tr = subprocess.Popen(["strace", "-f", "-qq", "-p", str(pid), "-o", out, "-e",
                           "trace=pread64,pwrite64,preadv,pwritev,io_submit"],
                          stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # let strace attach to every thread
    work()
    time.sleep(0.5)
    tr.send_signal(signal.SIGINT)
    tr.wait()
    n = 0
    for line in open(out):
        m = re.search(r"(?:pread64|pwrite64)\(\d+, .*, (\d+)\) = ", line)
        if m and int(m.group(1)) >= MIB:
            n += 1
        for off in re.findall(r"aio_offset=(\d+)", line):
            if int(off) >= MIB:
                n += 1
    return n


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--hactl", default="target/release/hactl")
    a.add_argument("--n", type=int, default=200)
    a.add_argument("--clients", type=int, default=64)
    a.add_argument("--secs", type=float, default=10)
    args = a.parse_args()
    hactl = os.path.abspath(args.hactl)
    base = os.path.abspath("target/bench-acquire")
    # libsanlock resolves the run dir once per process: one process per daemon.
    r = {}
    for k in ("sanlock", "hactl"):
        q = mp.Queue()
        pr = mp.Process(target=lambda q=q, k=k: q.put(measure(k, hactl, base, args.n, args.clients, args.secs)))
        pr.start()
        r[k] = q.get()
        pr.join()
    print(f"acquire+release of a free lease, n={args.n}, nproc {os.cpu_count()}")
    print("Disk Paxos minimum per acquire+release of a free lease, one disk: 6 I/Os to acquire"
          " (read the lease, write+read phase 1, write+read phase 2, write the leader)"
          " and 2 to release (write our dblock released, write the leader): 8")
    print(f"| metric | sanlock | hactl | hactl/sanlock |\n|---|--:|--:|--:|")
    for m in r["sanlock"]:
        s, h = r["sanlock"][m], r["hactl"][m]
        print(f"| {m} | {s:.2f} | {h:.2f} | {h / s:.2f} |")


if __name__ == "__main__":
    main()
