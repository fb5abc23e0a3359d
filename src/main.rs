use clap::{CommandFactory, Parser, Subcommand};

use hactl::cli::{args, client_cmd, direct_cmd, docs, ha_cmd, xleases_cmd};

/// Shared-storage leases, compatible with sanlock.
///
/// hactl reimplements sanlock 3.8.5: the same on-disk lockspaces, resource
/// leases and resource indexes, byte for byte; a daemon speaking sanlock's
/// socket protocol, so sanlock's client, libsanlock and python3-sanlock
/// talk to it; and sanlock's command syntax and output.
#[derive(Parser)]
#[command(name = "hactl", version, disable_help_subcommand = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Access storage directly, with no daemon (sanlock direct ...).
    ///
    /// Options use sanlock's syntax (`-s LOCKSPACE`, `-r RESOURCE`,
    /// `-x RINDEX`, `-Z 512|4096`, `-A 1M|2M|4M|8M`, ...); `--json` prints
    /// JSON instead of sanlock's text.
    #[command(after_long_help = DIRECT_ACTIONS)]
    Direct {
        action: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Talk to the running daemon, sanlock's or hactl's (sanlock client ...).
    ///
    /// Options use sanlock's syntax; `--json` prints JSON instead of
    /// sanlock's text. The daemon is found at $SANLOCK_RUN_DIR/sanlock.sock.
    #[command(disable_help_flag = true, after_long_help = CLIENT_ACTIONS)]
    Client {
        action: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// vdsm's xleases volume (oVirt VM leases): format, add, remove,
    /// lookup, list, rebuild. Each lease is a sanlock resource at its slot.
    Xleases(xleases_cmd::XleasesArgs),
    /// The HA layer: agent, status, events, maintenance, demo-vm, check-disks.
    Ha(ha_cmd::HaArgs),
    /// A three-host HA cluster on this machine: crash one host, watch its
    /// VMs restart on the others, then check no VM ever ran twice (~2 min).
    Demo {
        /// Parent of the demo's temporary directory (default /var/tmp).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
        /// Keep the files (logs, events, VM disks) afterwards.
        #[arg(long)]
        keep: bool,
        #[arg(long, default_value_t = 3)]
        hosts: u64,
        #[arg(long, default_value_t = 4)]
        vms: usize,
        /// The fencing scene: the host hangs, a fence agent powers it off,
        /// its VMs run again within seconds instead of after DEAD.
        #[arg(long, conflicts_with = "libvirt")]
        fence: bool,
        /// Real guests: each VM a libvirt domain (runner libvirt), each host
        /// its own libvirtd (needs root, libvirt, libvirt-sanlock, qemu).
        #[arg(long)]
        libvirt: bool,
    },
    /// Run the lease manager daemon (sanlock daemon ...).
    ///
    /// Options use sanlock's syntax and override /etc/sanlock/sanlock.conf.
    /// The daemon stays in the foreground. The run dir is $SANLOCK_RUN_DIR
    /// (default /run/sanlock).
    #[command(disable_help_flag = true, after_long_help = DAEMON_OPTIONS)]
    Daemon {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The daemon's killpath helper (started by `hactl daemon` itself).
    #[command(name = "daemon-killpath-helper", hide = true)]
    DaemonKillpathHelper,
    /// Print hactl's version (`--version` says "hactl VERSION").
    Version,
    /// Print a shell completion script: bash, zsh, fish, elvish or powershell.
    ///
    /// e.g. `hactl completions bash > /etc/bash_completion.d/hactl`.
    Completions { shell: clap_complete::Shell },
    /// Write the man pages (hactl.8, hactl-client.8, ...) into DIR.
    #[command(hide = true)]
    Man {
        #[arg(default_value = ".")]
        dir: std::path::PathBuf,
    },
}

// One line per action: the man pages print these lines as they are.
const DIRECT_ACTIONS: &str = "\
Actions:
direct init -s LOCKSPACE [-Z 512|4096 -A 1M|2M|4M|8M] [-o io_timeout]
direct init -r RESOURCE [-Z .. -A ..] [-n num_hosts] [-z 1]
direct dump PATH[:OFFSET[:SIZE]] [-f 1|2] [-Z .. -A ..]
direct read_leader -s LOCKSPACE | -r RESOURCE
direct write_leader -s LOCKSPACE | -r RESOURCE -F FILE [-f 1]
direct next_free PATH[:OFFSET] [-Z .. -A ..]
direct acquire_id | renew_id | release_id -s LOCKSPACE [-e host_name]
direct acquire -r RESOURCE -i host_id -g generation
direct release -r RESOURCE [-i host_id -g generation]
direct format -x RINDEX [-Z .. -A ..]
direct lookup -x RINDEX [-e NAME[:OFFSET]]
direct update -x RINDEX -e NAME:OFFSET [-z 1]
direct rebuild -x RINDEX
direct check PATH[:OFFSET] [-s LOCKSPACE_PATH[:OFFSET]]... [--kind K] [--json]
                 (hactl's own: a read-only fsck; exit 0 clean, 1 problems, 2 error)";

const CLIENT_ACTIONS: &str = "\
Actions:
client status [-D] [-o p|s]
client host_status [-s LOCKSPACE] [-D]
client host_status -s LOCKSPACE --history   (hactl's daemon only: timestamps seen,
                                             renewals, state changes and their rules)
client renewal -s LOCKSPACE
client gets [-h 1]
client log_dump
client version
client shutdown [-f 0|1] [-w 0|1]
client add_lockspace | inq_lockspace | rem_lockspace -s LOCKSPACE [-o io_timeout]
client init -s LOCKSPACE [-Z .. -A ..] [-o io_timeout]
client init -r RESOURCE [-Z .. -A ..] [-n num_hosts]
client read -s LOCKSPACE | -r RESOURCE [-h 1] [-D]
client align -s LOCKSPACE
client set_config -s LOCKSPACE [-u 0|1] [-O 0|1]
client set_event -s LOCKSPACE -i host_id [-g gen] [-e event] [-d data]
client acquire | release | convert -r RESOURCE -p pid
client inquire -p pid [-D]
client request -r RESOURCE -f force_mode
client examine -r RESOURCE | -s LOCKSPACE
client command -r RESOURCE -c PATH ARGS
client format | create | delete | lookup | update | rebuild -x RINDEX [-e NAME[:OFFSET]]";

const DAEMON_OPTIONS: &str = "\
Options (as sanlock daemon):
-D             log to stderr too
-w 0|1         use wdmd (default 1)
-o SECONDS     io_timeout (default 10)
-U USER        socket owner, and the user a privileged daemon becomes
-G GROUP       socket group (default sanlock)
-e NAME        host name in delta leases
-H NUM         renewal history size
-g SECONDS     kill grace (0-60, default 40)
-h 0|1         SCHED_RR priority
-l 0|1|2       mlockall: none, current, current and future
-t NUM         max worker threads
-b SECONDS     set_bitmap_seconds
-a 0|1         use_aio
-Q, -R, -L, -S quiet_fail, debug_renew, logfile and syslog priority
hactl's own:
--metrics-listen ADDR:PORT  Prometheus text at /metrics (also `metrics_listen =`
                            in sanlock.conf; off by default)
--metrics-web               also a read-only web view at / on that listener
                            (`metrics_web = 1`)
sanlock.conf only: warn_renewal_slow_percent (of io_timeout, default 50) and
warn_renewal_late_percent (of 8 x io_timeout, default 50): early warnings of
lease loss";

fn main() {
    // `direct check` has its own options (and --help), parsed by its own
    // clap command: the outer parser would take its -h for `direct`'s.
    let argv: Vec<String> = std::env::args().collect();
    if argv.len() >= 3 && argv[1] == "direct" && argv[2] == "check" {
        std::process::exit(direct_cmd::check_main(&argv[3..]));
    }
    let cli = Cli::parse();
    let code = match cli.cmd {
        Cmd::Direct { action, args: rest } => match args::parse(&action, &rest) {
            Ok(com) => direct_cmd::run(&com),
            Err(e) => {
                println!("{e}");
                1
            }
        },
        Cmd::Client { action, args: rest } => client_cmd::main(&action, &rest),
        Cmd::Xleases(a) => xleases_cmd::main(a),
        Cmd::Ha(a) => ha_cmd::main(a),
        Cmd::Demo {
            dir,
            keep,
            hosts,
            vms,
            fence,
            libvirt,
        } => {
            let o = hactl::ha::demo::DemoOpts {
                hosts,
                vms,
                parent: dir,
                keep,
                fence,
                libvirt,
            };
            match hactl::ha::demo::run(&o) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("hactl demo: {e}");
                    1
                }
            }
        }
        Cmd::Daemon { args: rest } => hactl::daemon::main(&rest),
        Cmd::DaemonKillpathHelper => hactl::daemon::helper::run(),
        // As `sanlock version`: the bare version.
        Cmd::Version => {
            println!("{}", env!("CARGO_PKG_VERSION"));
            0
        }
        Cmd::Completions { shell } => {
            docs::completions(Cli::command(), shell);
            0
        }
        Cmd::Man { dir } => match docs::write_man_pages(Cli::command(), &dir) {
            Ok(files) => {
                for f in files {
                    println!("{}", f.display());
                }
                0
            }
            Err(e) => {
                eprintln!("hactl man: {}: {e}", dir.display());
                1
            }
        },
    };
    std::process::exit(code);
}
