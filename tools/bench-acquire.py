#!/usr/bin/python3
"""acquire+release of a free resource lease through python3-sanlock, against
the real sanlock daemon and hactl's, side by side in one run.

Usage (root; Debian's python3 with python3-sanlock; hactl built):
    tools/bench-acquire.py [--hactl target/release/hactl] [--n 200] [--clients 64] [--secs 10]

Reports the latency of one acquire+release (median, p90) through
python3-sanlock and through hactl's Rust client API (examples/api_latency,
which talks to either daemon), the throughput of --clients processes, each
looping acquire+release on its own lease, and the O_DIRECT lease I/Os per
acquire+release (sanlock: its io_submit'ed iocbs, with strace; hactl: its
I/O engine's count in `status -D`, io_ops, lease and lockspace alike) beside
the Disk Paxos minimum, as hactl/sanlock ratios. And the storage floor: the
bare sequence of O_DIRECT|O_SYNC I/Os sanlock's acquire+release issued
(captured with strace, replayed serially as sanlock issues them, with no
daemon around, on the same file and an identical lease area, each write
putting back the bytes that were there), timed n times; the latencies are
also given over that floor. Daemons run in their own run dirs and are stopped by
pid; files go under target/bench-acquire/.
"""
import argparse, multiprocessing as mp, os, re, shutil, signal, statistics, subprocess, sys, time

import mmap

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
        # Lease I/Os of 10 acquire+release cycles, from the daemon's syscalls
        # (sanlock) or its engine's count (hactl); sanlock's sequence kept.
        cycles = lambda: [
            (sanlock.acquire(b"LS", b"R0", [(path, MIB)], slkfd=fd),
             sanlock.release(b"LS", b"R0", [(path, MIB)], slkfd=fd)) for _ in range(10)]
        if kind == "sanlock":
            seq = sanlock_sequence(p.pid, cycles)
            ios = len(seq)
            fl = floor(path, [(op, off + MIB, n) for op, off, n in seq[:len(seq) // 10]], n)
        else:
            ios = hactl_ios(run_dir, cycles)
            fl = None
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
        r = {
            "median ms": statistics.median(lat),
            "p90 ms": lat[int(0.9 * (len(lat) - 1))],
            "Rust API median ms": float(api[0]),
            "Rust API p90 ms": float(api[1]),
            "lease I/Os per acquire+release (reads+writes)": ios / 10,
            f"ops/s, {clients} clients": total / elapsed,
        }
        if fl is not None:
            r["floor"] = fl
        return r
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()


API = os.path.abspath("target/release/examples/api_latency")


def sanlock_sequence(pid, work):
    """The lease-area I/Os (offset >= 1 MiB) sanlock's daemon `pid` issues
    during `work()`, in order: (read|write, offset in the area, bytes)."""
    out = "/tmp/bench-acquire-strace.txt"
    tr = subprocess.Popen(["strace", "-f", "-qq", "-p", str(pid), "-o", out, "-e",
                           "trace=pread64,pwrite64,io_submit"],
                          stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # let strace attach to every thread
    work()
    time.sleep(0.5)
    tr.send_signal(signal.SIGINT)
    tr.wait()
    seq = []
    for line in open(out):
        for op, n, off in re.findall(
                r"aio_lio_opcode=IOCB_CMD_P(READ|WRITE),.*?aio_nbytes=(\d+), aio_offset=(\d+)", line):
            if int(off) >= MIB:
                seq.append(("read" if op == "READ" else "write", int(off) - MIB, int(n)))
        m = re.search(r"(pread64|pwrite64)\(\d+, .*, (\d+), (\d+)\) = ", line)
        if m and int(m.group(3)) >= MIB:
            seq.append(("read" if m.group(1) == "pread64" else "write", int(m.group(3)) - MIB,
                        int(m.group(2))))
    return seq


def hactl_ios(run_dir, work):
    """I/Os hactl's engine performed during `work()` (its io_ops in status -D)."""
    def io_ops():
        out = subprocess.run(["sanlock", "client", "status", "-D"], capture_output=True, text=True,
                             env=dict(os.environ, SANLOCK_RUN_DIR=run_dir)).stdout
        return int(re.search(r"io_ops=(\d+)", out).group(1))
    before = io_ops()
    work()
    return io_ops() - before


def floor(path, seq, n):
    """Times `seq` (one acquire+release's I/Os, absolute offsets) n times on
    `path` opened O_DIRECT|O_SYNC, serially, with no daemon: the median ms.
    Offsets are moved to the next lease area (R1, identical and free), and
    each write puts back what is there, so the replay changes nothing."""
    fd = os.open(path, os.O_RDWR | os.O_DIRECT | os.O_SYNC)
    try:
        plan = []
        for op, off, size in seq:
            buf = mmap.mmap(-1, size)
            off += MIB
            if op == "write":
                os.preadv(fd, [buf], off)
            plan.append((op, off, buf))
        times = []
        for _ in range(n):
            t = time.perf_counter()
            for op, off, buf in plan:
                if op == "read":
                    os.preadv(fd, [buf], off)
                else:
                    os.pwritev(fd, [buf], off)
            times.append((time.perf_counter() - t) * 1000)
        return statistics.median(times), len(seq)
    finally:
        os.close(fd)


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
    fl, fl_ios = r["sanlock"].pop("floor")
    print(f"| metric | sanlock | hactl | hactl/sanlock |\n|---|--:|--:|--:|")
    for m in r["sanlock"]:
        s, h = r["sanlock"][m], r["hactl"][m]
        print(f"| {m} | {s:.2f} | {h:.2f} | {h / s:.2f} |")
    print(f"\nstorage floor: sanlock's {fl_ios} lease I/Os of one acquire+release, bare and serial:"
          f" median {fl:.2f} ms")
    print(f"| over the floor | sanlock | hactl |\n|---|--:|--:|")
    for m in ("median ms", "p90 ms"):
        print(f"| {m} | {r['sanlock'][m] / fl:.2f} | {r['hactl'][m] / fl:.2f} |")


if __name__ == "__main__":
    main()
