#!/usr/bin/python3
"""acquire+release of a free resource lease through python3-sanlock, against
the real sanlock daemon and hactl's, side by side in one run.

Usage (root; Debian's python3 with python3-sanlock; hactl built):
    tools/bench-acquire.py [--hactl target/release/hactl] [--n 200] [--rounds 10]
                           [--clients 64] [--secs 10] [--dir DIR]
                           [--devices SANLOCK_DEV,HACTL_DEV] [--throughput-only]

--dir puts the lease files on another file system; --devices uses two block
devices instead of files (their first MiBs are overwritten); --throughput-only
measures only the --clients throughput, python3-sanlock clients and Rust API
clients (examples/api_throughput) alike, in --rounds alternating turns.

Both daemons run at once, each on its own file, and every measurement
alternates between them in rounds (latency: --n cycles in --rounds rounds,
each round timing sanlock, hactl and the floor; throughput: two turns of
--secs/2 each), so storage whose speed drifts during the run weighs on
both alike; the ratios over the floor are the median of the rounds'.

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


def setup(kind, hactl, base, clients, dev=None):
    """Starts `kind`'s daemon in its own run dir, with lockspace LS on its
    own file (or block device `dev`) and one free lease per client:
    (run_dir, path, process)."""
    d = os.path.join(base, kind)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    if dev:
        path = dev
    else:
        path = os.path.join(d, "leases")
        with open(path, "wb") as f:
            f.truncate((2 + clients) * MIB)
    sh(hactl, "direct", "init", "-s", f"LS:0:{path}:0", "-o", "10")
    for i in range(clients):
        sh(hactl, "direct", "init", "-r", f"LS:R{i}:{path}:{(1 + i) * MIB}")
    run_dir = os.path.join(d, "run")
    p = start(kind, hactl, run_dir)
    # The real client adds the lockspace to either daemon.
    sh("sanlock", "client", "add_lockspace", "-s", f"LS:1:{path}:0",
       env=dict(os.environ, SANLOCK_RUN_DIR=run_dir))
    return run_dir, path, p


def in_child(run_dir, f, *args):
    """f(*args) in a child process whose libsanlock talks to `run_dir`
    (libsanlock resolves the run dir once per process); its result."""
    q = mp.Queue()
    def body():
        os.environ["SANLOCK_RUN_DIR"] = run_dir
        q.put(f(*args))
    pr = mp.Process(target=body)
    pr.start()
    r = q.get()
    pr.join()
    return r


def py_latency(path, n):
    """n acquire+release cycles of lease R0 through python3-sanlock: ms each."""
    fd = sanlock.register()
    lat = []
    for _ in range(n):
        t = time.perf_counter()
        sanlock.acquire(b"LS", b"R0", [(path, MIB)], slkfd=fd)
        sanlock.release(b"LS", b"R0", [(path, MIB)], slkfd=fd)
        lat.append((time.perf_counter() - t) * 1000)
    os.close(fd)
    return lat


def cycles(path, k):
    fd = sanlock.register()
    for _ in range(k):
        sanlock.acquire(b"LS", b"R0", [(path, MIB)], slkfd=fd)
        sanlock.release(b"LS", b"R0", [(path, MIB)], slkfd=fd)
    os.close(fd)


def throughput(run_dir, path, clients, secs):
    """ops/s of `clients` processes, each looping acquire+release on its lease."""
    q = mp.Queue()
    procs = [mp.Process(target=one_client, args=(run_dir, path, i, secs, q)) for i in range(clients)]
    t = time.perf_counter()
    for pr in procs:
        pr.start()
    total = sum(q.get() for _ in procs)
    for pr in procs:
        pr.join()
    return total / (time.perf_counter() - t)


API = os.path.abspath("target/release/examples/api_latency")
API_TP = os.path.abspath("target/release/examples/api_throughput")


def rust_throughput(run_dir, path, clients, secs):
    """ops/s of `clients` processes of examples/api_throughput (hactl's Rust
    client API), each looping acquire+release on its lease: the same load
    as `throughput` at a fraction of the clients' CPU."""
    out = subprocess.run([API_TP, run_dir, path, str(clients), str(secs)], check=True,
                         capture_output=True, text=True).stdout
    return float(out)


CLIENT_KINDS = {"python3-sanlock": lambda *a: throughput(*a), "Rust API": rust_throughput}


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


def pct(v, q):
    v = sorted(v)
    return v[int(q * (len(v) - 1))]


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--hactl", default="target/release/hactl")
    a.add_argument("--n", type=int, default=200)
    a.add_argument("--rounds", type=int, default=10)
    a.add_argument("--clients", type=int, default=64)
    a.add_argument("--secs", type=float, default=10)
    a.add_argument("--dir", default="target/bench-acquire",
                   help="where the lease files go (another filesystem, another storage)")
    a.add_argument("--devices", metavar="SANLOCK_DEV,HACTL_DEV",
                   help="block devices for the leases instead of files (their start is overwritten)")
    a.add_argument("--throughput-only", action="store_true",
                   help="only the --clients throughput, in --rounds turns each")
    args = a.parse_args()
    hactl = os.path.abspath(args.hactl)
    base = os.path.abspath(args.dir)
    kinds = ("sanlock", "hactl")
    # Both daemons run at once, each on its own file; every measurement
    # alternates between them (and the floor) in rounds, so that storage
    # whose speed drifts during the run (a shared VM disk) weighs on both
    # alike. Ratios are taken per round, then their median reported.
    devs = dict(zip(kinds, args.devices.split(","))) if args.devices else {}
    up = {k: setup(k, hactl, base, args.clients, devs.get(k)) for k in kinds}
    if args.throughput_only:
        # Both client kinds, alternating with the daemons in every round.
        ops = {(c, k): [] for c in CLIENT_KINDS for k in kinds}
        try:
            for _ in range(args.rounds):
                for c in CLIENT_KINDS:
                    for k in kinds:
                        run_dir, path, _ = up[k]
                        ops[(c, k)].append(CLIENT_KINDS[c](run_dir, path, args.clients, args.secs / 2))
        finally:
            for k in kinds:
                os.killpg(up[k][2].pid, signal.SIGKILL)
                up[k][2].wait()
        where = args.devices or base
        print(f"ops/s of {args.clients} clients (processes) on {where}, {args.rounds} turns of"
              f" {args.secs / 2:g} s each per client kind and daemon, nproc {os.cpu_count()}")
        print("| clients | daemon | per turn | median |\n|---|---|---|--:|")
        for c in CLIENT_KINDS:
            for k in kinds:
                v = ops[(c, k)]
                print(f"| {c} | {k} | " + " ".join(f"{x:.0f}" for x in v)
                      + f" | {statistics.median(v):.0f} |")
            r = statistics.median(h / s for s, h in zip(ops[(c, "sanlock")], ops[(c, "hactl")]))
            print(f"| {c} | hactl/sanlock, median of the turns' ratios | | {r:.2f} |")
        return
    try:
        run_dir, path, p = up["sanlock"]
        seq = in_child(run_dir, lambda: sanlock_sequence(p.pid, lambda: cycles(path, 10)))
        seq = seq[:len(seq) // 10]
        run_dir, path, _ = up["hactl"]
        h_ios = in_child(run_dir, lambda: hactl_ios(run_dir, lambda: cycles(path, 10)))
        ios = {"sanlock": len(seq), "hactl": h_ios / 10}
        # hactl's own sequence when it freed the lease itself (a warm
        # acquire, `io_warm_acquires` in status -D): sanlock's with the
        # first area read cut to the leader sector.
        first = next(i for i, (op, _, size) in enumerate(seq) if op == "read" and size > 4096)
        warm_seq = list(seq)
        warm_seq[first] = ("read", 0, 512)
        per = max(1, args.n // args.rounds)
        lat = {k: [] for k in kinds}
        api = {k: [] for k in kinds}
        rounds = []
        for _ in range(args.rounds):
            rd = {}
            for k in kinds:
                run_dir, path, _ = up[k]
                v = in_child(run_dir, py_latency, path, per)
                lat[k] += v
                rd[k] = statistics.median(v)
                out = subprocess.run([API, run_dir, path, str(MIB), str(per)], check=True,
                                     capture_output=True, text=True).stdout.split()
                api[k].append((float(out[0]), float(out[1])))
            run_dir, path, _ = up["sanlock"]
            rd["floor"] = floor(path, [(op, off + MIB, size) for op, off, size in seq], per)[0]
            rd["warm floor"] = floor(path, [(op, off + MIB, size) for op, off, size in warm_seq], per)[0]
            rounds.append(rd)
        ops = {k: [] for k in kinds}
        for _ in range(2):
            for k in kinds:
                run_dir, path, _ = up[k]
                ops[k].append(throughput(run_dir, path, args.clients, args.secs / 2))
    finally:
        for k in kinds:
            os.killpg(up[k][2].pid, signal.SIGKILL)
            up[k][2].wait()
    r = {k: {
        "median ms": statistics.median(lat[k]),
        "p90 ms": pct(lat[k], 0.9),
        "Rust API median ms": statistics.median(x[0] for x in api[k]),
        "Rust API p90 ms": statistics.median(x[1] for x in api[k]),
        "lease I/Os per acquire+release (reads+writes)": ios[k],
        f"ops/s, {args.clients} clients": statistics.mean(ops[k]),
    } for k in kinds}
    print(f"acquire+release of a free lease, n={per * args.rounds} in {args.rounds} rounds,"
          f" nproc {os.cpu_count()}")
    print("Disk Paxos minimum per acquire+release of a free lease, one disk: 6 I/Os to acquire"
          " (read the lease, write+read phase 1, write+read phase 2, write the leader)"
          " and 2 to release (write our dblock released, write the leader): 8")
    print(f"| metric | sanlock | hactl | hactl/sanlock |\n|---|--:|--:|--:|")
    for m in r["sanlock"]:
        s, h = r["sanlock"][m], r["hactl"][m]
        print(f"| {m} | {s:.2f} | {h:.2f} | {h / s:.2f} |")
    fl = statistics.median(rd["floor"] for rd in rounds)
    print(f"\nstorage floor: sanlock's {len(seq)} lease I/Os of one acquire+release, bare and"
          f" serial: median {fl:.2f} ms (per round: "
          + " ".join(f"{rd['floor']:.2f}" for rd in rounds) + ")")
    print("| over the floor (median of the rounds' ratios) | sanlock | hactl |\n|---|--:|--:|")
    print("| python3-sanlock median / floor | "
          + " | ".join(f"{statistics.median(rd[k] / rd['floor'] for rd in rounds):.2f}" for k in kinds)
          + " |")
    print("| Rust API median / floor | "
          + " | ".join(f"{statistics.median(api[k][i][0] / rd['floor'] for i, rd in enumerate(rounds)):.2f}"
                       for k in kinds) + " |")
    wf = statistics.median(rd["warm floor"] for rd in rounds)
    print(f"\nhactl's own floor (a warm acquire: sanlock's sequence with its first 1 MiB read"
          f" cut to the 512-byte leader sector), bare and serial: median {wf:.2f} ms")
    print("| hactl over its own floor (median of the rounds' ratios) | python3-sanlock | Rust API |"
          "\n|---|--:|--:|")
    print(f"| hactl median / warm floor | "
          f"{statistics.median(rd['hactl'] / rd['warm floor'] for rd in rounds):.2f} | "
          f"{statistics.median(api['hactl'][i][0] / rd['warm floor'] for i, rd in enumerate(rounds)):.2f} |")


if __name__ == "__main__":
    main()
