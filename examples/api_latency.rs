//! Latency of acquire+release of one free lease through hactl's Rust client
//! API (`hactl::client`), against whatever daemon runs in the run dir (the
//! real sanlock's or hactl's). Used by tools/bench-acquire.py.
//!
//! usage: api_latency RUN_DIR LEASE_PATH OFFSET N   → prints "median_ms p90_ms"

use hactl::client::{AcquireFlags, Resource, Sanlock};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 5 {
        eprintln!("usage: api_latency RUN_DIR LEASE_PATH OFFSET N");
        std::process::exit(2);
    }
    let s = Sanlock::connect(&a[1]).expect("daemon socket");
    let mut reg = s.register().expect("register");
    let res = Resource::new("LS", "R0", &a[2], a[3].parse().expect("offset"));
    let n: usize = a[4].parse().expect("N");
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = std::time::Instant::now();
        reg.acquire(std::slice::from_ref(&res), AcquireFlags::default())
            .expect("acquire");
        reg.release(std::slice::from_ref(&res)).expect("release");
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    lat.sort_by(|x, y| x.total_cmp(y));
    println!("{:.3} {:.3}", lat[n / 2], lat[(n - 1) * 9 / 10]);
}
