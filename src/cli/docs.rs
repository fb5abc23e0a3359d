//! Man pages and shell completions, generated from the clap definition so
//! they cannot drift from the CLI. `client`, `direct` and `daemon` parse
//! sanlock's syntax by hand; their pages carry that syntax in their help
//! text, and the main page adds the argument formats, environment and
//! files that sanlock(8) documents.

use std::io::Write;
use std::path::{Path, PathBuf};

use roff::{Roff, bold, roman};

/// Sections appended to hactl(8), in roff.
const MAIN_PAGE_EXTRA: &str = r#".SH "LEASE ARGUMENTS"
As sanlock(8):
.TP
LOCKSPACE
\fIlockspace_name\fR:\fIhost_id\fR:\fIpath\fR:\fIoffset\fR
.TP
RESOURCE
\fIlockspace_name\fR:\fIresource_name\fR:\fIpath\fR:\fIoffset\fR[:\fIlver\fR|:SH]
.TP
RINDEX
\fIlockspace_name\fR:\fIpath\fR:\fIoffset\fR
.PP
A colon in a path is written \e:, offsets take an M suffix.
Every \fBclient\fR and \fBdirect\fR action takes \-\-json to print JSON
instead of sanlock's text.
.SH ACCESS
The daemon's socket is created mode 0660, owned by the \-U user and the \-G
group (default sanlock:sanlock when both exist). Each connection's peer
credentials are also checked: root, the \-U user and members of the \-G group
are served; anyone else gets \-EACCES (\-13) and a log line naming its uid and
pid. Unless SANLOCK_PRIVILEGED=0, the daemon raises its memlock, rtprio and
core limits, then switches to \-U/\-G (with \-U's supplementary groups).
.SH ENVIRONMENT
.TP
SANLOCK_RUN_DIR
Run directory holding sanlock.sock and sanlock.pid (default /run/sanlock).
.TP
SANLOCK_PRIVILEGED
0 runs the daemon unprivileged: no limits raised, no user switch.
.TP
HACTL_SANLOCK_CONF
Configuration file to read instead of /etc/sanlock/sanlock.conf.
.TP
WDMD_RUN_DIR
Where the wdmd socket is (default /run/wdmd), for \-w 1.
.SH FILES
.TP
/etc/sanlock/sanlock.conf
Daemon settings as \fIkey\fR = \fIvalue\fR lines, sanlock's keys; the command line wins.
.TP
/run/sanlock/sanlock.sock
The daemon's socket, spoken to by sanlock's clients and by hactl's.
.TP
/var/log/hactl.log
The daemon's log (with the default run directory).
.SH "SEE ALSO"
sanlock(8), wdmd(8)
"#;

/// Writes hactl.8 and one page per visible subcommand (hactl-client.8,
/// hactl-xleases-add.8, ...) into `dir`. Returns the files written.
pub fn write_man_pages(cmd: clap::Command, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut written = Vec::new();
    page(&cmd, dir, true, &mut written)?;
    Ok(written)
}

fn visible(cmd: &clap::Command) -> impl Iterator<Item = &clap::Command> {
    cmd.get_subcommands().filter(|s| !s.is_hide_set())
}

/// `after_long_help` lines, each on its own output line (the action lists
/// of the hand-parsed subcommands).
fn verbatim(roff: &mut Roff, text: &str) {
    roff.control("nf", []);
    for line in text.lines() {
        roff.text([roman(line)]);
    }
    roff.control("fi", []);
}

fn page(
    cmd: &clap::Command,
    dir: &Path,
    top: bool,
    written: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    let man = clap_mangen::Man::new(cmd.clone())
        .section("8")
        .manual("System Manager's Manual")
        .source(format!("hactl {}", env!("CARGO_PKG_VERSION")));
    let path = dir.join(man.get_filename());
    let mut f = std::fs::File::create(&path)?;
    man.render_title(&mut f)?;
    man.render_name_section(&mut f)?;
    man.render_synopsis_section(&mut f)?;
    man.render_description_section(&mut f)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut f)?;
    }
    let mut roff = Roff::new();
    if top {
        // Every command with its actions, so hactl(8) alone documents the
        // sanlock-syntax commands.
        roff.control("SH", ["COMMANDS"]);
        for sub in visible(cmd) {
            roff.control("TP", []);
            roff.text([bold(format!("hactl {}", sub.get_name()))]);
            let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
            roff.text([roman(format!("{about}."))]);
            if let Some(h) = sub.get_after_long_help() {
                verbatim(&mut roff, &h.to_string());
            }
            roff.control("br", []);
            roff.text([roman(format!("See hactl-{}(8).", sub.get_name()))]);
        }
    } else {
        if visible(cmd).next().is_some() {
            man.render_subcommands_section(&mut f)?;
        }
        if let Some(h) = cmd.get_after_long_help() {
            roff.control("SH", ["SANLOCK SYNTAX"]);
            verbatim(&mut roff, &h.to_string());
        }
        roff.control("SH", ["SEE ALSO"]);
        roff.text([roman("hactl(8), sanlock(8)")]);
    }
    roff.to_writer(&mut f)?;
    if cmd.get_version().is_some() {
        man.render_version_section(&mut f)?;
    }
    if top {
        f.write_all(MAIN_PAGE_EXTRA.as_bytes())?;
    }
    f.flush()?;
    written.push(path);
    for sub in visible(cmd) {
        page(sub, dir, false, written)?;
    }
    Ok(())
}

/// The completion script for `shell` on stdout.
pub fn completions(mut cmd: clap::Command, shell: clap_complete::Shell) {
    clap_complete::generate(shell, &mut cmd, "hactl", &mut std::io::stdout());
}
