//! The daemon's I/O engine as an operator sees it: which one runs the
//! lease I/O (io_uring, or a fixed pool of threads where io_uring is
//! unavailable: `kernel.io_uring_disabled`, an old kernel, a seccomp
//! filter; forced here with `HACTL_IO_ENGINE=threads`), said in the log
//! and in `status -D`, and a lease acquired and released through either.

mod common;

use std::time::{Duration, Instant};

use common::*;

struct Run {
    status_d: String,
    log: String,
    threads: Vec<String>,
}

fn lease_through(env: &[(&str, &str)]) -> Run {
    let dir = workdir();
    let f = dir.path().join("leases");
    make_file(&f, 2 << 20, 0);
    let fs = p(&f);
    for args in [
        vec!["direct", "init", "-s", &format!("LS:0:{fs}:0")],
        vec!["direct", "init", "-r", &format!("LS:R1:{fs}:1M")],
    ] {
        assert_eq!(run(hactl(), &args).code, 0);
    }
    let hd = HactlDaemon::start_with_env(&dir.path().join("h"), &[], env);
    let rd = hd.run_dir.clone();
    let client = |args: &[&str]| {
        let mut a = vec!["client"];
        a.extend_from_slice(args);
        run_env(sanlock(), &a, &[("SANLOCK_RUN_DIR", p(&rd))])
    };
    // io_timeout 3, not 1: the test is about the engine, not timing.
    let o = client(&["add_lockspace", "-s", &format!("LS:1:{fs}:0"), "-o", "3"]);
    assert!(o.text().contains("done 0"), "{}", o.text());
    let (mut holder, got) = python_holder(&rd, &f, "R1", 1 << 20, false);
    assert_eq!(got, "held");
    assert!(client(&["status"]).text().contains("r LS:R1:"));
    let threads: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", hd.pid()))
        .unwrap()
        .flatten()
        .map(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .unwrap_or_default()
                .trim()
                .to_string()
        })
        .collect();
    // The holder exits (its stdin closes): the lease is released.
    drop(holder.stdin.take());
    holder.wait().unwrap();
    wait_released(&rd, "R1");
    let status_d = client(&["status", "-D"]).text();
    let o = client(&["rem_lockspace", "-s", &format!("LS:1:{fs}:0")]);
    assert!(o.text().contains("done 0"), "{}", o.text());
    let deadline = Instant::now() + Duration::from_secs(10);
    while client(&["status"]).text().contains("s LS:") {
        assert!(Instant::now() < deadline, "the lockspace was not removed");
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = std::fs::read_to_string(rd.join("daemon.stderr")).unwrap();
    Run {
        status_d,
        log,
        threads,
    }
}

#[test]
fn io_uring_runs_the_lease_io() {
    let r = lease_through(&[]);
    assert!(
        r.status_d.contains("io_engine=io_uring") && r.status_d.contains("io_abandoned=0"),
        "io_uring unavailable on this machine? {}",
        r.status_d
    );
    assert!(r.log.contains("lease I/O on io_uring"), "{}", r.log);
    assert!(
        !r.threads.iter().any(|t| t.starts_with("hactl-io")),
        "{:?}",
        r.threads
    );
}

#[test]
fn a_pool_of_threads_runs_it_where_io_uring_is_unavailable() {
    let r = lease_through(&[("HACTL_IO_ENGINE", "threads")]);
    assert!(
        r.status_d.contains("io_engine=threads") && r.status_d.contains("io_abandoned=0"),
        "{}",
        r.status_d
    );
    assert!(
        r.log
            .contains("io_uring unavailable (HACTL_IO_ENGINE=threads): lease I/O on 4 threads"),
        "{}",
        r.log
    );
    let pool = r
        .threads
        .iter()
        .filter(|t| t.starts_with("hactl-io"))
        .count();
    assert_eq!(pool, 4, "{:?}", r.threads);
}
