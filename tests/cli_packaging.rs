//! What a packager ships besides the binary: man pages generated from the
//! CLI definition, shell completions, the version, the systemd units.

mod common;

use std::path::Path;

use common::*;

/// `man -l PAGE` rendered to plain text (man-db; tools/test.sh installs it).
fn render(page: &Path) -> String {
    let o = run_env(
        "man",
        &["-l", p(page)],
        &[("MANWIDTH", "120"), ("MANPAGER", "cat"), ("PAGER", "cat")],
    );
    assert_eq!(o.code, 0, "man -l {}: {}", page.display(), o.stderr);
    assert!(
        !o.stderr.contains("warning"),
        "roff warnings for {}: {}",
        page.display(),
        o.stderr
    );
    o.text()
}

#[test]
fn man_pages_render_and_document_every_command() {
    let w = workdir();
    let dir = w.path().join("man8");
    let o = run(hactl(), &["man", p(&dir)]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let listed: Vec<&str> = std::str::from_utf8(&o.stdout).unwrap().lines().collect();
    for name in [
        "hactl",
        "hactl-direct",
        "hactl-client",
        "hactl-daemon",
        "hactl-xleases",
    ] {
        let f = dir.join(format!("{name}.8"));
        assert!(listed.contains(&p(&f)), "{name}.8 not written: {listed:?}");
    }
    assert!(
        !listed.iter().any(|l| l.ends_with("hactl-man.8")),
        "the hidden man command has no page"
    );

    let main = render(&dir.join("hactl.8"));
    assert!(main.starts_with("hactl(8)"), "{main}");
    for sub in [
        "direct",
        "client",
        "daemon",
        "xleases",
        "version",
        "completions",
    ] {
        assert!(
            main.contains(&format!("hactl {sub}")),
            "hactl {sub} missing:\n{main}"
        );
    }
    // The hand-parsed commands' sanlock syntax is on the main page.
    for line in [
        "client add_lockspace | inq_lockspace | rem_lockspace -s LOCKSPACE",
        "client acquire | release | convert -r RESOURCE -p pid",
        "direct init -s LOCKSPACE [-Z 512|4096 -A 1M|2M|4M|8M]",
        "direct read_leader -s LOCKSPACE | -r RESOURCE",
        "-U USER",
    ] {
        assert!(
            main.lines()
                .any(|l| l.trim() == line || l.trim().starts_with(line)),
            "{line:?} not on its own line:\n{main}"
        );
    }
    for section in [
        "LEASE ARGUMENTS",
        "ACCESS",
        "ENVIRONMENT",
        "FILES",
        "SEE ALSO",
    ] {
        assert!(main.lines().any(|l| l == section), "{section}:\n{main}");
    }
    assert!(main.contains(env!("CARGO_PKG_VERSION")));

    let client = render(&dir.join("hactl-client.8"));
    assert!(
        client.contains("client host_status [-s LOCKSPACE] [-D]"),
        "{client}"
    );
    let add = render(&dir.join("hactl-xleases-add.8"));
    assert!(add.contains("LEASE_ID"), "{add}");
}

#[test]
fn bash_completion_is_valid_and_completes_commands() {
    let o = run(hactl(), &["completions", "bash"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let w = workdir();
    let f = w.path().join("hactl.bash");
    std::fs::write(&f, &o.stdout).unwrap();
    let syntax = run("bash", &["-n", p(&f)]);
    assert_eq!(syntax.code, 0, "bash -n: {}", syntax.stderr);
    // Load it and ask what `hactl c<TAB>` and `hactl xleases <TAB>` offer.
    let script = format!(
        r#"source {f}
COMP_WORDS=(hactl c); COMP_CWORD=1; _hactl hactl c hactl; echo "${{COMPREPLY[*]}}"
COMP_WORDS=(hactl xleases ""); COMP_CWORD=2; _hactl hactl "" xleases; echo "${{COMPREPLY[*]}}""#,
        f = p(&f)
    );
    let o = run("bash", &["-c", &script]);
    let lines: Vec<String> = o.text().lines().map(String::from).collect();
    assert_eq!(lines[0], "client completions", "{o:?}");
    for sub in ["format", "add", "remove", "lookup", "list", "rebuild"] {
        assert!(lines[1].split(' ').any(|w| w == sub), "{sub}: {lines:?}");
    }
    for shell in ["zsh", "fish"] {
        let o = run(hactl(), &["completions", shell]);
        assert_eq!(o.code, 0, "{shell}");
        assert!(o.text().contains("xleases"), "{shell}");
    }
    let o = run(hactl(), &["completions", "tcsh"]);
    assert_eq!(o.code, 2, "an unknown shell is a usage error");
}

#[test]
fn version_is_the_crate_version() {
    let v = env!("CARGO_PKG_VERSION");
    for flag in ["--version", "-V"] {
        let o = run(hactl(), &[flag]);
        assert_eq!((o.code, o.text()), (0, format!("hactl {v}\n")), "{flag}");
    }
    // `hactl version` prints the bare number, as `sanlock version` does.
    let o = run(hactl(), &["version"]);
    assert_eq!((o.code, o.text()), (0, format!("{v}\n")));
    let s = run(sanlock(), &["version"]);
    assert_eq!(
        s.text().trim().split('.').count(),
        3,
        "sanlock: {}",
        s.text()
    );
}

fn dist(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("dist")
        .join(path)
}

/// The units with `/usr/bin/hactl` pointed at the binary under test (the
/// verifier checks that ExecStart's program exists), in one directory so
/// the agent's `Requires=hactl.service` resolves.
fn units_for_test(dir: &Path) -> Vec<std::path::PathBuf> {
    ["hactl.service", "hactl-ha-agent.service"]
        .iter()
        .map(|u| {
            let text = std::fs::read_to_string(dist(&format!("systemd/{u}"))).unwrap();
            assert!(text.contains("/usr/bin/hactl "), "{u} runs /usr/bin/hactl");
            let to = dir.join(u);
            std::fs::write(
                &to,
                text.replace("/usr/bin/hactl ", &format!("{} ", hactl())),
            )
            .unwrap();
            to
        })
        .collect()
}

#[test]
fn systemd_units_verify() {
    let Some(analyze) = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .find(|p| Path::new(p).exists())
    else {
        println!("skipped: systemd-analyze is not installed (package systemd)");
        return;
    };
    let w = workdir();
    let units = units_for_test(w.path());
    let mut args = vec!["verify", "--man=no"];
    args.extend(units.iter().map(|u| p(u)));
    let o = run(analyze, &args);
    // verify exits 0 on keys it ignores: any line about our units fails.
    let about_ours: Vec<&str> = o.stderr.lines().filter(|l| l.contains("hactl")).collect();
    assert!(o.code == 0 && about_ours.is_empty(), "{}", o.stderr);

    // The check has teeth: a typo, or the agent without the daemon's unit.
    let typo = w.path().join("typo");
    std::fs::create_dir(&typo).unwrap();
    let bad = typo.join("hactl.service");
    let text = std::fs::read_to_string(&units[0]).unwrap();
    std::fs::write(&bad, text.replace("SendSIGKILL=no", "SendSigKill=no")).unwrap();
    let o = run(analyze, &["verify", "--man=no", p(&bad)]);
    assert!(o.stderr.contains("Unknown key"), "{o:?}");
    let alone = w.path().join("alone");
    std::fs::create_dir(&alone).unwrap();
    std::fs::copy(&units[1], alone.join("hactl-ha-agent.service")).unwrap();
    let o = run(
        analyze,
        &[
            "verify",
            "--man=no",
            p(&alone.join("hactl-ha-agent.service")),
        ],
    );
    assert_ne!(o.code, 0, "{o:?}");

    // The agent runs the planned CLI with this host's id from its env file.
    let agent = std::fs::read_to_string(dist("systemd/hactl-ha-agent.service")).unwrap();
    assert!(agent.contains(
        "ExecStart=/usr/bin/hactl ha agent -c /etc/hactl/ha.toml --host-id ${HACTL_HA_HOST_ID}"
    ));
    let env = std::fs::read_to_string(dist("default/hactl-ha-agent")).unwrap();
    assert!(env.lines().any(|l| l.starts_with("HACTL_HA_HOST_ID=")));
}

/// What systemd does with hactl.service (Type=simple, stop = SIGTERM,
/// SendSIGKILL=no): runs ExecStart with `$hactl_opts` split into words
/// and expects that very process to be the daemon until SIGTERM ends it;
/// while a lockspace is joined, SIGTERM must not end it.
#[test]
fn unit_exec_start_is_the_daemon_and_sigterm_stops_it() {
    let unit = std::fs::read_to_string(dist("systemd/hactl.service")).unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap();
    assert!(unit.contains("Type=simple") && unit.contains("SendSIGKILL=no"));
    let hactl_opts = "-w 0 -l 0 -h 0 -U root -G root"; // as /etc/default/hactl would
    let mut argv: Vec<String> = Vec::new();
    for word in exec.split_whitespace() {
        match word {
            "$hactl_opts" => argv.extend(hactl_opts.split(' ').map(String::from)),
            "/usr/bin/hactl" => argv.push(hactl().into()),
            w => argv.push(w.into()),
        }
    }
    let w = workdir();
    let rd = w.path().join("run");
    let f = w.path().join("ids");
    make_file(&f, 1 << 20, 0);
    assert_eq!(
        run(
            sanlock(),
            &["direct", "init", "-s", &format!("LS:0:{}:0", p(&f))]
        )
        .code,
        0
    );
    let mut cmd = std::process::Command::new(&argv[0]);
    // Killed with the test if it fails half-way.
    let mut child = die_with_parent(&mut cmd)
        .args(&argv[1..])
        .env("SANLOCK_RUN_DIR", &rd)
        .env("SANLOCK_PRIVILEGED", "0")
        .env("HACTL_SANLOCK_CONF", "/nonexistent")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let t0 = std::time::Instant::now();
    while !rd.join("sanlock.sock").exists() {
        assert!(t0.elapsed().as_secs() < 10, "no socket");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let pidfile = std::fs::read_to_string(rd.join("sanlock.pid")).unwrap();
    assert_eq!(
        pidfile.trim(),
        pid.to_string(),
        "the started process is the daemon"
    );
    add_lockspace(&rd, 1, &f);

    let term = || {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGTERM).unwrap()
    };
    term();
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGTERM with a lockspace joined"
    );
    let o = run_env(
        sanlock(),
        &[
            "client",
            "rem_lockspace",
            "-s",
            &format!("LS:1:{}:0", p(&f)),
        ],
        &[("SANLOCK_RUN_DIR", p(&rd))],
    );
    assert!(o.text().contains("done 0"), "{}", o.text());
    term();
    let t1 = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t1.elapsed().as_secs() > 10 {
            let _ = child.kill();
            panic!("the daemon did not stop on SIGTERM");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    assert!(!rd.join("sanlock.sock").exists(), "socket removed");
}
