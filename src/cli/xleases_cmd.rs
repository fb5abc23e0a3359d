//! `hactl xleases <action>`: vdsm's xleases volume (VM leases). Results on
//! stdout (`--json` for machines), reasons for refusals on stderr, and an
//! exit code per kind of outcome (see [`XleasesError::exit_code`]).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::geometry::{align_str, parse_align_arg};
use crate::xleases::{self, Opts, Volume, XleasesError};

#[derive(Args, Debug)]
pub struct XleasesArgs {
    #[command(subcommand)]
    action: Action,
}

/// Where the volume is and how it is laid out.
#[derive(Args, Debug)]
struct Common {
    /// The xleases volume: a file or a block device.
    #[arg(short = 'p', long)]
    path: PathBuf,
    /// Sector size (default: the device's; 512 for files).
    #[arg(short = 'Z', long = "sector-size", value_parser = parse_sector)]
    sector_size: Option<u32>,
    /// Slot size: 1M (the only one with 512-byte sectors), 2M, 4M or 8M
    /// (default: where the index is found; format: 1M, or 8M with 4K sectors).
    #[arg(short = 'A', long = "align", value_parser = parse_align)]
    align_size: Option<u32>,
    /// Seconds before an I/O is abandoned.
    #[arg(short = 'o', long = "io-timeout", default_value_t = 10)]
    io_timeout: u16,
}

impl Common {
    fn opts(&self, force: bool) -> Opts {
        Opts {
            sector_size: self.sector_size,
            align_size: self.align_size,
            timeout: Duration::from_secs(self.io_timeout.max(1) as u64),
            force,
        }
    }
}

fn parse_sector(s: &str) -> Result<u32, String> {
    match s {
        "512" => Ok(512),
        "4096" => Ok(4096),
        _ => Err("the sector size is 512 or 4096".into()),
    }
}

fn parse_align(s: &str) -> Result<u32, String> {
    parse_align_arg(s).ok_or_else(|| "the align size is 1M, 2M, 4M or 8M".into())
}

#[derive(Subcommand, Debug)]
enum Action {
    /// Write a new, empty index (refuses to forget mapped leases without --force).
    Format {
        #[command(flatten)]
        c: Common,
        /// The sanlock lockspace the leases belong to (vdsm: the storage domain id).
        #[arg(short = 's', long)]
        lockspace: String,
        #[arg(long)]
        force: bool,
    },
    /// Create a lease in the first free slot; prints its sanlock RESOURCE string.
    Add {
        #[command(flatten)]
        c: Common,
        lease_id: String,
        /// Also overwrite a slot whose leftover lease is held.
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
    /// Free a lease's record and clear its sanlock resource.
    Remove {
        #[command(flatten)]
        c: Common,
        lease_id: String,
        /// Also remove a lease that is held.
        #[arg(long)]
        force: bool,
    },
    /// Print a lease's sanlock RESOURCE string (LOCKSPACE:LEASE_ID:PATH:OFFSET).
    Lookup {
        #[command(flatten)]
        c: Common,
        lease_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Print the index metadata and every lease.
    List {
        #[command(flatten)]
        c: Common,
        #[arg(long)]
        json: bool,
    },
    /// Make the index and the leases on storage agree again.
    Rebuild {
        #[command(flatten)]
        c: Common,
        /// Lockspace to write into the index and recreated leases
        /// (default: the one in the index).
        #[arg(short = 's', long)]
        lockspace: Option<String>,
        /// Also overwrite held leases.
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
}

fn json_out<T: serde::Serialize>(v: &T) {
    println!("{}", serde_json::to_string_pretty(v).expect("serializable"));
}

pub fn main(args: XleasesArgs) -> i32 {
    match run(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("hactl: {e}");
            e.exit_code()
        }
    }
}

fn run(args: XleasesArgs) -> Result<(), XleasesError> {
    match args.action {
        Action::Format {
            c,
            lockspace,
            force,
        } => {
            let g = xleases::format(&c.path, &lockspace, &c.opts(force))?;
            println!(
                "formatted the xleases index of {} for lockspace {lockspace} (sector size {}, {} slots)",
                c.path.display(),
                g.sector_size,
                align_str(g.align_size)
            );
        }
        Action::Add {
            c,
            lease_id,
            force,
            json,
        } => {
            let mut v = Volume::open(&c.path, &c.opts(force))?;
            let info = v.add(&lease_id, force)?;
            if json {
                json_out(&info);
            } else {
                println!("{}", info.sanlock_string());
            }
        }
        Action::Remove { c, lease_id, force } => {
            let mut v = Volume::open(&c.path, &c.opts(force))?;
            let (offset, not_cleared) = v.remove(&lease_id, force)?;
            println!("removed lease {lease_id} (offset {offset})");
            if let Some(e) = not_cleared {
                eprintln!(
                    "hactl: warning: the index no longer has the lease, but its resource at offset {offset} was not cleared: {e}"
                );
            }
        }
        Action::Lookup { c, lease_id, json } => {
            let v = Volume::open(&c.path, &c.opts(false))?;
            let info = v.lookup(&lease_id)?;
            if json {
                json_out(&info);
            } else {
                println!("{}", info.sanlock_string());
            }
        }
        Action::List { c, json } => {
            let v = Volume::open(&c.path, &c.opts(false))?;
            let l = v.list();
            for (n, why) in &l.bad_records {
                eprintln!("hactl: warning: record {n}: {why}");
            }
            if json {
                json_out(&l);
            } else {
                let md = &l.metadata;
                println!(
                    "lockspace {} version {} mtime {} sector_size {} align_size {}",
                    md.lockspace,
                    md.version,
                    md.mtime,
                    l.sector_size,
                    align_str(l.align_size)
                );
                for lease in &l.leases {
                    let flag = if lease.updating { " updating" } else { "" };
                    println!("{} {}{flag}", lease.resource, lease.offset);
                }
            }
        }
        Action::Rebuild {
            c,
            lockspace,
            force,
            json,
        } => {
            let actions = xleases::rebuild(&c.path, lockspace.as_deref(), &c.opts(force))?;
            if json {
                json_out(&actions);
            } else {
                for a in &actions {
                    println!(
                        "record {} offset {}: {} {}",
                        a.recnum, a.offset, a.action, a.resource
                    );
                }
                println!("rebuilt the xleases index of {}", c.path.display());
            }
        }
    }
    Ok(())
}
