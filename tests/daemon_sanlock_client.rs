//! The unmodified `sanlock client` prints the same against `hactl daemon`
//! as against the real daemon, for every lockspace-level action. Only what
//! differs between any two daemons (host names, clocks, pids) is masked.

mod common;

use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Masks daemon-specific values: the host name, clock readings and pids.
fn mask(text: &str, file: &str, host_name: &str) -> String {
    let mut out = Vec::new();
    for line in text
        .replace(file, "IDS")
        .replace(host_name, "HOSTNAME")
        .lines()
    {
        let words: Vec<String> = line
            .split(' ')
            .enumerate()
            .map(|(i, w)| {
                let prev = line.split(' ').nth(i.wrapping_sub(1)).unwrap_or("");
                if prev == "timestamp" {
                    "T".to_string()
                } else if let Some((k, _)) = w.split_once('=') {
                    if [
                        "timestamp",
                        "last_check",
                        "last_live",
                        "read_ms",
                        "write_ms",
                    ]
                    .contains(&k.trim())
                    {
                        format!("{k}=N")
                    } else {
                        w.to_string()
                    }
                } else {
                    w.to_string()
                }
            })
            .collect();
        out.push(words.join(" "));
    }
    out.join("\n")
}

fn host_name(run: &dyn Fn(&[&str]) -> Out) -> String {
    run(&["status"])
        .text()
        .lines()
        .next()
        .unwrap_or("")
        .trim_start_matches("daemon ")
        .to_string()
}

#[test]
fn sanlock_client_prints_the_same_against_both_daemons() {
    let mut t = Tally("sanlock client vs both daemons", 0);
    let dir = workdir();
    let fa = dir.path().join("sanlock.ids");
    let fb = dir.path().join("hactl.ids");
    for f in [&fa, &fb] {
        make_file(f, 1 << 20, 0);
    }
    let sd = SanlockDaemon::start(&dir.path().join("s"));
    let hd = HactlDaemon::start(&dir.path().join("h"));
    let (sa, ha) = (sd.run_dir.clone(), hd.run_dir.clone());
    let client = |run_dir: &std::path::Path| {
        let rd = run_dir.to_path_buf();
        move |args: &[&str]| {
            let mut a = vec!["client"];
            a.extend_from_slice(args);
            run_env(sanlock(), &a, &[("SANLOCK_RUN_DIR", p(&rd))])
        }
    };
    let (cs, ch) = (client(&sa), client(&ha));
    let (ns, nh) = (host_name(&cs), host_name(&ch));
    assert!(!ns.is_empty() && !nh.is_empty());

    let compare = |t: &mut Tally, what: &str, args_of: &dyn Fn(&str) -> Vec<String>| {
        let a_s = args_of(p(&fa));
        let a_h = args_of(p(&fb));
        let os = cs(&a_s.iter().map(|s| s.as_str()).collect::<Vec<_>>());
        let oh = ch(&a_h.iter().map(|s| s.as_str()).collect::<Vec<_>>());
        t.same(
            what,
            mask(&oh.text(), p(&fb), &nh).as_bytes(),
            mask(&os.text(), p(&fa), &ns).as_bytes(),
        );
        assert_eq!(oh.code, os.code, "{what}: exit codes differ");
    };
    let ls = |f: &str| format!("LS:1:{f}:0");
    compare(&mut t, "init", &|f| {
        vec!["init".into(), "-s".into(), ls(f), "-o".into(), "1".into()]
    });
    compare(&mut t, "read", &|f| vec!["read".into(), "-s".into(), ls(f)]);
    compare(&mut t, "align", &|f| {
        vec!["align".into(), "-s".into(), ls(f)]
    });
    compare(&mut t, "version", &|_| vec!["version".into()]);
    compare(&mut t, "inq before add", &|f| {
        vec!["inq_lockspace".into(), "-s".into(), ls(f)]
    });
    compare(&mut t, "gets empty", &|_| vec!["gets".into()]);
    compare(&mut t, "add_lockspace", &|f| {
        vec![
            "add_lockspace".into(),
            "-s".into(),
            ls(f),
            "-o".into(),
            "1".into(),
        ]
    });
    compare(&mut t, "add_lockspace again", &|f| {
        vec![
            "add_lockspace".into(),
            "-s".into(),
            ls(f),
            "-o".into(),
            "1".into(),
        ]
    });
    compare(&mut t, "inq", &|f| {
        vec!["inq_lockspace".into(), "-s".into(), ls(f)]
    });
    compare(&mut t, "gets", &|_| vec!["gets".into()]);
    compare(&mut t, "status", &|_| vec!["status".into()]);
    compare(&mut t, "set_config", &|_| {
        vec![
            "set_config".into(),
            "-s".into(),
            "LS".into(),
            "-u".into(),
            "1".into(),
        ]
    });
    compare(&mut t, "set_config unknown", &|_| {
        vec![
            "set_config".into(),
            "-s".into(),
            "NOPE".into(),
            "-u".into(),
            "1".into(),
        ]
    });
    compare(&mut t, "host_status unknown", &|_| {
        vec!["host_status".into(), "-s".into(), "NOPE".into()]
    });
    compare(&mut t, "renewal unknown", &|_| {
        vec!["renewal".into(), "-s".into(), "NOPE".into()]
    });

    // Once both have observed the lockspace, freeze them so nothing moves.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(cs(&["gets", "-h", "1"]).text().contains("LIVE")
        && ch(&["gets", "-h", "1"]).text().contains("LIVE"))
    {
        assert!(Instant::now() < deadline, "hosts never LIVE");
        std::thread::sleep(Duration::from_millis(200));
    }
    compare(&mut t, "gets -h 1", &|_| {
        vec!["gets".into(), "-h".into(), "1".into()]
    });
    compare(&mut t, "host_status", &|_| {
        vec!["host_status".into(), "-s".into(), "LS".into()]
    });
    compare(&mut t, "host_status -D", &|_| {
        vec!["host_status".into(), "-s".into(), "LS".into(), "-D".into()]
    });
    compare(&mut t, "host_status all", &|_| vec!["host_status".into()]);
    // renewal: the same shape (one line per renewal, same keys).
    let shape = |o: Out| {
        o.text()
            .lines()
            .map(|l| {
                l.split(' ')
                    .map(|kv| kv.split('=').next().unwrap().to_string())
                    .collect::<Vec<_>>()
            })
            .next()
    };
    t.same(
        "renewal line shape",
        format!("{:?}", shape(ch(&["renewal", "-s", "LS"]))).as_bytes(),
        format!("{:?}", shape(cs(&["renewal", "-s", "LS"]))).as_bytes(),
    );

    // set_config -u 1 (earlier) blocks removal, as lvmlockd relies on: the
    // lockspace stays listed, marking it used again is refused, and the
    // removal completes once it is marked unused.
    let (rs, rh) = std::thread::scope(|sc| {
        let js = sc.spawn(|| cs(&["rem_lockspace", "-s", &ls(p(&fa))]));
        let jh = sc.spawn(|| ch(&["rem_lockspace", "-s", &ls(p(&fb))]));
        std::thread::sleep(Duration::from_secs(3));
        assert!(!js.is_finished(), "sanlock removed a lockspace marked used");
        assert!(!jh.is_finished(), "hactl removed a lockspace marked used");
        compare(&mut t, "gets while removal is blocked", &|_| {
            vec!["gets".into()]
        });
        compare(&mut t, "set_config used while removing", &|_| {
            vec![
                "set_config".into(),
                "-s".into(),
                "LS".into(),
                "-u".into(),
                "1".into(),
            ]
        });
        compare(&mut t, "set_config unused", &|_| {
            vec![
                "set_config".into(),
                "-s".into(),
                "LS".into(),
                "-u".into(),
                "0".into(),
            ]
        });
        (js.join().unwrap(), jh.join().unwrap())
    });
    t.same(
        "rem_lockspace once unused",
        rh.text().as_bytes(),
        rs.text().as_bytes(),
    );
    compare(&mut t, "rem_lockspace again", &|f| {
        vec!["rem_lockspace".into(), "-s".into(), ls(f)]
    });
    compare(&mut t, "inq after rem", &|f| {
        vec!["inq_lockspace".into(), "-s".into(), ls(f)]
    });
    compare(&mut t, "gets after rem", &|_| vec!["gets".into()]);
    // The released host_id looks the same on disk.
    let dump = |f: &std::path::Path| run(sanlock(), &["direct", "dump", p(f)]).text();
    let (ds, dh) = (dump(&fa), dump(&fb));
    t.same(
        "dump after release",
        dh.replace(&nh, "HOSTNAME").as_bytes(),
        ds.replace(&ns, "HOSTNAME").as_bytes(),
    );
    compare(&mut t, "shutdown", &|_| vec!["shutdown".into()]);
    let _ = (
        kill(Pid::from_raw(sd.pid()), Signal::SIGCONT),
        kill(Pid::from_raw(hd.pid()), Signal::SIGCONT),
    );
}
