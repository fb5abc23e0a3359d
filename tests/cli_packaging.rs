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
