use clap::{Parser, Subcommand};

use hactl::cli::{args, client_cmd, direct_cmd, ha_cmd, xleases_cmd};

/// hactl: shared-storage leases, compatible with sanlock.
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
    /// Actions: init, dump, read_leader, write_leader, next_free, format,
    /// lookup, update, rebuild. Options use sanlock's syntax (`-s LOCKSPACE`,
    /// `-r RESOURCE`, `-x RINDEX`, `-Z 512|4096`, `-A 1M|2M|4M|8M`, ...);
    /// `--json` prints JSON instead of sanlock's text.
    Direct {
        action: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Talk to the running daemon, sanlock's or hactl's (sanlock client ...).
    ///
    /// Actions: status [-D] [-o p|s], host_status [-s LOCKSPACE] [-D],
    /// renewal -s LOCKSPACE, gets [-h 1], log_dump, version,
    /// shutdown [-f 0|1] [-w 0|1], add_lockspace / inq_lockspace /
    /// rem_lockspace -s LOCKSPACE [-o io_timeout], init -s LOCKSPACE
    /// [-Z -A -o], read -s LOCKSPACE [-D], align -s LOCKSPACE,
    /// set_config -s LOCKSPACE [-u 0|1] [-O 0|1], set_event -s LOCKSPACE
    /// -i host_id [-g gen] [-e event] [-d data]. `--json` prints JSON.
    #[command(disable_help_flag = true)]
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
    },
    /// Run the lease manager daemon (sanlock daemon ...).
    ///
    /// Options use sanlock's syntax: -D (foreground, log to stderr),
    /// -w 0|1 (watchdog), -o io_timeout, -U user, -G group, -e host_name,
    /// -H renewal history size, -g kill grace seconds, -h 0|1, -l 0|1|2, ...
    /// The run dir is $SANLOCK_RUN_DIR (default /run/sanlock).
    #[command(disable_help_flag = true)]
    Daemon {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() {
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
        } => {
            let o = hactl::ha::demo::DemoOpts {
                hosts,
                vms,
                parent: dir,
                keep,
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
    };
    std::process::exit(code);
}
