use clap::{Parser, Subcommand};

use hactl::cli::{args, direct_cmd};

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
    };
    std::process::exit(code);
}
