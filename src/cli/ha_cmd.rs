//! `hactl ha <action>`: the HA layer's commands (docs/ha-design.md).

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::ha::demo_vm;

#[derive(Args, Debug)]
pub struct HaArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand, Debug)]
enum Action {
    /// A stand-in VM: appends a 64-byte record (host id from
    /// HACTL_HA_HOST_ID, run id, counter, clock, checksum) to DISK every
    /// 100 ms until killed.
    DemoVm { disk: PathBuf },
    /// Proves from demo VM disk files that no VM ever ran twice at once:
    /// prints the hosts that ran each file in order; exit 1 on a violation.
    CheckDisks {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Print only violations and the summary line.
        #[arg(short, long)]
        quiet: bool,
    },
}

pub fn main(a: HaArgs) -> i32 {
    match a.action {
        Action::DemoVm { disk } => {
            let e = demo_vm::run_demo_vm(&disk);
            eprintln!("hactl ha demo-vm: {e}");
            1
        }
        Action::CheckDisks { files, quiet } => check_disks(&files, quiet),
    }
}

fn check_disks(files: &[PathBuf], quiet: bool) -> i32 {
    let mut bad = 0;
    let mut runs = 0;
    for f in files {
        match demo_vm::check_file(f) {
            Ok(rep) => {
                runs += rep.runs.len();
                if !rep.violations.is_empty() {
                    bad += 1;
                }
                if !quiet || !rep.violations.is_empty() {
                    print!("{}", demo_vm::render(f, &rep));
                }
            }
            Err(e) => {
                bad += 1;
                println!("{}: VIOLATION: {e}", f.display());
            }
        }
    }
    if bad == 0 {
        println!(
            "check-disks: {} disk(s), {runs} run(s): no disk was ever written by two runs at once",
            files.len()
        );
        0
    } else {
        println!(
            "check-disks: {bad} of {} disk(s) FAILED the check",
            files.len()
        );
        1
    }
}
