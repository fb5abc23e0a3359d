//! Throughput of acquire+release through hactl's Rust client API
//! (`hactl::client`) from CLIENTS processes at once, each looping on its
//! own free lease (R<i> at (1 + i) MiB), against whatever daemon runs in the
//! run dir (the real sanlock's or hactl's). Used by tools/bench-acquire.py:
//! the same load as its python3-sanlock clients at a fraction of their
//! CPU, so that on a 2-core machine the daemon, not the clients, is what
//! is measured.
//!
//! usage: api_throughput RUN_DIR LEASE_PATH CLIENTS SECS   → prints "ops_per_s"

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hactl::client::{AcquireFlags, Resource, Sanlock};

const MIB: u64 = 1 << 20;

/// One client: registers, then loops for `secs`; prints its count.
fn client(run_dir: &str, path: &str, idx: u64, secs: f64) {
    let s = Sanlock::connect(run_dir).expect("daemon socket");
    let mut reg = s.register().expect("register");
    let res = Resource::new("LS", &format!("R{idx}"), path, (1 + idx) * MIB);
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let mut n = 0u64;
    while Instant::now() < end {
        reg.acquire(std::slice::from_ref(&res), AcquireFlags::default())
            .expect("acquire");
        reg.release(std::slice::from_ref(&res)).expect("release");
        n += 1;
    }
    println!("{n}");
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() == 6 && a[1] == "--client" {
        let secs = a[5].parse().expect("SECS");
        client(&a[2], &a[3], a[4].parse().expect("index"), secs);
        return;
    }
    if a.len() != 5 {
        eprintln!("usage: api_throughput RUN_DIR LEASE_PATH CLIENTS SECS");
        std::process::exit(2);
    }
    let clients: u64 = a[3].parse().expect("CLIENTS");
    let secs: f64 = a[4].parse().expect("SECS");
    let me = std::env::current_exe().expect("own path");
    let t = Instant::now();
    let kids: Vec<_> = (0..clients)
        .map(|i| {
            Command::new(&me)
                .args(["--client", &a[1], &a[2], &i.to_string(), &secs.to_string()])
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn a client")
        })
        .collect();
    let mut total = 0u64;
    for mut k in kids {
        let mut out = String::new();
        k.stdout
            .take()
            .expect("piped")
            .read_to_string(&mut out)
            .expect("client output");
        assert!(k.wait().expect("wait").success(), "a client failed");
        total += out.trim().parse::<u64>().expect("a count");
    }
    println!("{:.1}", total as f64 / t.elapsed().as_secs_f64());
}
