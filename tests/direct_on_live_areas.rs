//! Areas that hactl initialised, joined and leased by a real sanlock daemon:
//! sanlock accepts them, and `hactl direct dump/read_leader` then print
//! exactly what `sanlock direct` prints (owners, generations, lver, dblocks,
//! shared holders).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use common::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const HOLDER: &str = r#"
import sanlock, sys
path = sys.argv[1]
fd = sanlock.register()
sanlock.acquire(b"LS", b"R1", [(path, 1048576)], slkfd=fd)
sanlock.acquire(b"LS", b"R2", [(path, 2097152)], slkfd=fd, shared=True)
print("held", flush=True)
sys.stdin.read()
"#;

fn compare_all(t: &mut Tally, fs: &str, when: &str) {
    let cases: Vec<Vec<String>> = vec![
        vec!["direct".into(), "dump".into(), fs.into()],
        vec![
            "direct".into(),
            "dump".into(),
            fs.into(),
            "-f".into(),
            "1".into(),
        ],
        vec![
            "direct".into(),
            "dump".into(),
            fs.into(),
            "-f".into(),
            "2".into(),
        ],
        vec![
            "direct".into(),
            "read_leader".into(),
            "-s".into(),
            format!("LS:1:{fs}:0"),
        ],
        vec![
            "direct".into(),
            "read_leader".into(),
            "-r".into(),
            format!("LS:R1:{fs}:1M"),
        ],
        vec![
            "direct".into(),
            "read_leader".into(),
            "-r".into(),
            format!("LS:R2:{fs}:2M"),
        ],
    ];
    for args in cases {
        let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let ours = run(hactl(), &a);
        let theirs = run(sanlock(), &a);
        t.same(&format!("{when}: {args:?}"), &ours.stdout, &theirs.stdout);
        assert_eq!(ours.code, theirs.code);
    }
}

#[test]
fn dump_and_read_leader_match_sanlock_on_a_joined_and_leased_area() {
    let mut t = Tally("live areas", 0);
    let dir = workdir();
    let f = dir.path().join("leases.img");
    make_file(&f, 4 << 20, 0);
    let fs = p(&f).to_string();
    // hactl writes the lockspace and the leases; the real daemon uses them.
    for args in [
        vec!["direct", "init", "-s", &format!("LS:0:{fs}:0"), "-o", "1"],
        vec!["direct", "init", "-r", &format!("LS:R1:{fs}:1M")],
        vec!["direct", "init", "-r", &format!("LS:R2:{fs}:2M")],
    ] {
        let o = run(hactl(), &args);
        assert_eq!(o.code, 0, "{args:?}: {}", o.stderr);
    }
    let daemon = SanlockDaemon::start(&dir.path().join("run"));
    let add = daemon.client(&["add_lockspace", "-s", &format!("LS:1:{fs}:0")]);
    assert_eq!(
        add.code,
        0,
        "sanlock refused hactl's lockspace: {} {}",
        add.text(),
        add.stderr
    );

    let mut holder = Command::new(python3())
        .args(["-c", HOLDER, &fs])
        .env("SANLOCK_RUN_DIR", &daemon.run_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 holder");
    let mut line = String::new();
    BufReader::new(holder.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(
        line.trim(),
        "held",
        "the real sanlock could not acquire leases hactl initialised"
    );

    // Freeze the daemon so that renewals do not move timestamps between runs.
    let pid = Pid::from_raw(daemon.pid());
    kill(pid, Signal::SIGSTOP).unwrap();
    compare_all(&mut t, &fs, "held");
    let dump = run(hactl(), &["direct", "dump", &fs, "-f", "2"]).text();
    assert!(
        dump.contains(" 0001 0001 1/0/0"),
        "R1 not shown as owned by host 1 gen 1 lver 1:\n{dump}"
    );
    assert!(
        dump.contains("0001 0001 SH"),
        "R2's shared holder not shown:\n{dump}"
    );
    assert!(
        dump.contains("dblock[0000] mbal 1 bal 1 inp 1 inp2 1"),
        "{dump}"
    );
    kill(pid, Signal::SIGCONT).unwrap();

    // Release by exiting; then compare again.
    holder.stdin.take().unwrap().write_all(b"").unwrap();
    holder.wait().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let st = daemon.client(&["status"]).text();
        if !st.contains("\nr ") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "leases not released:\n{st}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    kill(pid, Signal::SIGSTOP).unwrap();
    compare_all(&mut t, &fs, "released");
    kill(pid, Signal::SIGCONT).unwrap();
}
