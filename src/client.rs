//! A typed Rust API to a sanlock daemon (sanlock 3.8.5's or `hactl
//! daemon`), for programs that would otherwise link libsanlock. It is a
//! thin layer over [`crate::proto::client`]: every call sends exactly what
//! libsanlock sends, and every failure carries sanlock's result number
//! ([`Error::rv`]).
//!
//! ```no_run
//! use hactl::client::{AcquireFlags, Resource, Sanlock};
//!
//! let sl = Sanlock::connect("/run/sanlock")?;
//! // The registration is this process's identity for the daemon: leases
//! // acquired through it are released when it is dropped (the daemon sees
//! // the connection close), as when a libsanlock user exits.
//! let mut reg = sl.register()?;
//! let vm = Resource::new("LS", "vm1", "/dev/vg/leases", 1 << 20);
//! reg.acquire(&[vm.clone()], AcquireFlags::default())?;
//! for held in reg.inquire()? {
//!     println!("{}:{} lver {:?}", held.lockspace, held.name, held.lver);
//! }
//! reg.release(&[vm])?;
//! # Ok::<(), hactl::client::Error>(())
//! ```

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::ondisk::Name;
use crate::proto::client::{Client, ClientError, Conn, Target};
use crate::proto::{
    self, SANLK_ADD_ASYNC, SANLK_REM_ASYNC, SanlkDisk, SanlkHost, SanlkLockspace, SanlkPath,
    SanlkResource,
};

/// A failed call: sanlock's result number (`-errno`, or a `SANLK_*`
/// value from [`crate::rv`]) and, when it came from the socket layer, why.
#[derive(Debug, thiserror::Error)]
#[error("{op}: {} ({rv}){}", crate::rv::describe(*.rv), .source.as_ref().map(|s| format!(": {s}")).unwrap_or_default())]
pub struct Error {
    pub op: &'static str,
    pub rv: i32,
    #[source]
    pub source: Option<ClientError>,
}

impl Error {
    /// What libsanlock would have returned.
    pub fn rv(&self) -> i32 {
        self.rv
    }

    fn invalid(op: &'static str) -> Error {
        Error {
            op,
            rv: -libc::EINVAL,
            source: None,
        }
    }

    fn from_client(op: &'static str, e: ClientError) -> Error {
        let rv = e.rv();
        // A daemon answer is fully described by its number.
        let source = match e {
            ClientError::Daemon(_) => None,
            e => Some(e),
        };
        Error { op, rv, source }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

fn wrap<T>(op: &'static str, r: std::result::Result<T, ClientError>) -> Result<T> {
    r.map_err(|e| Error::from_client(op, e))
}

fn name(op: &'static str, s: &str) -> Result<Name> {
    Name::new(s).map_err(|_| Error::invalid(op))
}

fn path(op: &'static str, p: &Path) -> Result<SanlkPath> {
    SanlkPath::from_bytes(p.as_os_str().as_bytes()).map_err(|_| Error::invalid(op))
}

/// A lockspace: `name:host_id:path:offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lockspace {
    pub name: String,
    pub host_id: u64,
    pub path: PathBuf,
    pub offset: u64,
}

impl Lockspace {
    fn wire(&self, op: &'static str) -> Result<SanlkLockspace> {
        Ok(SanlkLockspace::new(
            name(op, &self.name)?,
            self.host_id,
            path(op, &self.path)?,
            self.offset,
        ))
    }

    fn from_wire(ls: &SanlkLockspace) -> Lockspace {
        Lockspace {
            name: ls.name.to_string_lossy(),
            host_id: ls.host_id,
            path: PathBuf::from(OsStr::from_bytes(
                ls.host_id_disk.path.as_bytes().unwrap_or_default(),
            )),
            offset: ls.host_id_disk.offset,
        }
    }
}

/// A resource lease: names, its disks (1 to 4 `(path, offset)`), the
/// version to require (`lver`, `SANLK_RES_LVER`) and the mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub lockspace: String,
    pub name: String,
    pub disks: Vec<(PathBuf, u64)>,
    pub lver: Option<u64>,
    pub shared: bool,
}

impl Resource {
    /// An exclusive lease on one disk, any version.
    pub fn new(lockspace: &str, name: &str, path: impl Into<PathBuf>, offset: u64) -> Resource {
        Resource {
            lockspace: lockspace.to_string(),
            name: name.to_string(),
            disks: vec![(path.into(), offset)],
            lver: None,
            shared: false,
        }
    }

    /// The same lease in shared mode.
    pub fn shared(mut self) -> Resource {
        self.shared = true;
        self
    }

    /// The wire struct; `extra_flags` are OR-ed into its flags.
    pub fn to_wire(&self, op: &'static str, extra_flags: u32) -> Result<SanlkResource> {
        if self.disks.len() > proto::SANLK_MAX_DISKS {
            return Err(Error::invalid(op));
        }
        let mut disks = Vec::with_capacity(self.disks.len());
        for (p, off) in &self.disks {
            disks.push(SanlkDisk::new(path(op, p)?, *off));
        }
        let mut flags = extra_flags;
        if self.shared {
            flags |= proto::SANLK_RES_SHARED;
        }
        if self.lver.is_some() {
            flags |= proto::SANLK_RES_LVER;
        }
        Ok(SanlkResource {
            lockspace_name: name(op, &self.lockspace)?,
            name: name(op, &self.name)?,
            lver: self.lver.unwrap_or(0),
            flags,
            disks,
            ..Default::default()
        })
    }

    /// From a wire struct: `lver` is `Some` unless it is 0 or shared.
    pub fn from_wire(r: &SanlkResource) -> Resource {
        let shared = r.flags & proto::SANLK_RES_SHARED != 0;
        Resource {
            lockspace: r.lockspace_name.to_string_lossy(),
            name: r.name.to_string_lossy(),
            disks: r
                .disks
                .iter()
                .map(|d| {
                    let p = d.path.as_bytes().unwrap_or_default();
                    (PathBuf::from(OsStr::from_bytes(p)), d.offset)
                })
                .collect(),
            lver: Some(r.lver).filter(|&l| l != 0 && !shared),
            shared,
        }
    }
}

/// `SANLK_ACQUIRE_*` and the per-resource acquire options.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AcquireFlags {
    /// Read the lease's LVB so that [`Sanlock::set_lvb`]/`get_lvb` work.
    pub lvb: bool,
    /// Adopt an orphan (a persistent lease whose holder exited).
    pub orphan: bool,
    /// Fail with `SANLK_ACQUIRE_OWNED_RETRY` instead of waiting for an
    /// owner that may be dead.
    pub owner_nowait: bool,
    /// Keep the lease as an orphan when this process exits.
    pub persistent: bool,
    /// Raise the lease's num_hosts to this (`SANLK_RES_NUM_HOSTS`).
    pub num_hosts: Option<u32>,
}

impl AcquireFlags {
    fn cmd_flags(&self) -> u32 {
        let mut f = 0;
        if self.lvb {
            f |= proto::SANLK_ACQUIRE_LVB;
        }
        if self.orphan {
            f |= proto::SANLK_ACQUIRE_ORPHAN;
        }
        if self.owner_nowait {
            f |= proto::SANLK_ACQUIRE_OWNER_NOWAIT;
        }
        f
    }
}

/// A holder of a lease as recorded on disk (`read_resource_owners`):
/// the EX owner has a timestamp, SH holders have 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub host_id: u64,
    pub generation: u64,
    pub timestamp: u64,
}

impl From<&SanlkHost> for Owner {
    fn from(h: &SanlkHost) -> Owner {
        Owner {
            host_id: h.host_id,
            generation: h.generation,
            timestamp: h.timestamp,
        }
    }
}

/// How `write_resource` lays a lease out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// The on-disk num_hosts (0: the geometry's maximum).
    pub num_hosts: u32,
    /// Write a cleared lease (`SANLK_WRITE_CLEAR`): reads then fail -223.
    pub clear: bool,
    /// 512 or 4096, with `align_size`; both `None`: from the disk.
    pub sector_size: Option<u32>,
    /// 1, 2, 4 or 8 MiB.
    pub align_size: Option<u32>,
}

/// `SANLK_REQ_*`: how the owner of a requested lease is asked to go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForceMode {
    /// Clear the request.
    None = 0,
    /// SIGKILL the holder.
    Force = 1,
    /// Run the holder's killpath, else SIGTERM.
    Graceful = 2,
}

/// A daemon, found by its run directory. Each call opens its own
/// connection, as libsanlock does.
#[derive(Debug, Clone)]
pub struct Sanlock {
    client: Client,
}

impl Sanlock {
    /// The daemon whose socket is `run_dir/sanlock.sock`; fails now if
    /// nothing answers there.
    pub fn connect(run_dir: impl AsRef<Path>) -> Result<Sanlock> {
        let s = Sanlock {
            client: Client::with_run_dir(run_dir),
        };
        let v = wrap("connect", s.client.version(0))?;
        if v.result < 0 {
            return Err(Error {
                op: "connect",
                rv: v.result,
                source: None,
            });
        }
        Ok(s)
    }

    /// `$SANLOCK_RUN_DIR`, else `/run/sanlock`, as sanlock's tools.
    pub fn from_env() -> Result<Sanlock> {
        let dir = std::env::var_os("SANLOCK_RUN_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(proto::DEFAULT_RUN_DIR));
        Sanlock::connect(dir)
    }

    /// Timeout of each read and write on the socket (`None`: block). Calls
    /// that wait by design (joining a lockspace, acquiring) ignore it.
    pub fn timeout(mut self, t: Option<Duration>) -> Sanlock {
        self.client = self.client.timeout(t);
        self
    }

    /// Registers this process: the returned [`Registration`] owns the
    /// connection that identifies it to the daemon.
    pub fn register(&self) -> Result<Registration> {
        let conn = wrap("register", self.client.register())?;
        Ok(Registration {
            client: self.client.clone(),
            conn,
        })
    }

    /// Joins a lockspace (waits until the host_id lease is acquired unless
    /// `wait` is false). `io_timeout` 0: the daemon's own.
    pub fn add_lockspace(&self, ls: &Lockspace, io_timeout: u32, wait: bool) -> Result<()> {
        let w = ls.wire("add_lockspace")?;
        let flags = if wait { 0 } else { SANLK_ADD_ASYNC };
        wrap(
            "add_lockspace",
            self.client.add_lockspace(&w, flags, io_timeout, None),
        )
        .map(drop)
    }

    /// Leaves a lockspace (the daemon's holders of its leases are killed
    /// by sanlock first).
    pub fn rem_lockspace(&self, ls: &Lockspace, wait: bool) -> Result<()> {
        let w = ls.wire("rem_lockspace")?;
        let flags = if wait { 0 } else { SANLK_REM_ASYNC };
        wrap("rem_lockspace", self.client.rem_lockspace(&w, flags, None)).map(drop)
    }

    /// Ok if joined; `-ENOENT` / `-EINPROGRESS` otherwise.
    pub fn inq_lockspace(&self, ls: &Lockspace) -> Result<()> {
        let w = ls.wire("inq_lockspace")?;
        wrap(
            "inq_lockspace",
            self.client
                .inq_lockspace(&w, 0, Some(proto::client::DEFAULT_TIMEOUT)),
        )
        .map(drop)
    }

    /// Initialises a lockspace area (`sanlock client init -s`).
    pub fn write_lockspace(&self, ls: &Lockspace, io_timeout: u32) -> Result<()> {
        let w = ls.wire("write_lockspace")?;
        wrap(
            "write_lockspace",
            self.client.write_lockspace(&w, 0, 0, io_timeout),
        )
        .map(drop)
    }

    /// The lockspaces the daemon has joined.
    pub fn get_lockspaces(&self) -> Result<Vec<Lockspace>> {
        let l = wrap("get_lockspaces", self.client.get_lockspaces(0))?;
        Ok(l.items.iter().map(Lockspace::from_wire).collect())
    }

    /// The hosts of a lockspace as the daemon sees them (`host_id` 0: all).
    pub fn get_hosts(&self, lockspace: &str, host_id: u64) -> Result<Vec<SanlkHost>> {
        let n = name("get_hosts", lockspace)?;
        Ok(wrap("get_hosts", self.client.get_hosts(&n, host_id, 0))?.items)
    }

    /// Initialises a resource lease (`sanlock client init -r`).
    pub fn write_resource(&self, res: &Resource, opt: WriteOptions) -> Result<()> {
        let mut flags = 0;
        if let Some(s) = opt.sector_size {
            flags |= proto::lsf_sector_flag(s);
        }
        if let Some(a) = opt.align_size {
            flags |= proto::lsf_align_flag(a);
        }
        let w = res.to_wire("write_resource", flags)?;
        let clear = if opt.clear {
            proto::SANLK_WRITE_CLEAR
        } else {
            0
        };
        // The daemon takes num_hosts from where libsanlock puts max_hosts.
        wrap(
            "write_resource",
            self.client.write_resource(&w, opt.num_hosts, 0, clear),
        )
        .map(drop)
    }

    /// The lease at `path:offset` as its leader records it: names and
    /// version (`lver` `None` when 0).
    pub fn read_resource(&self, path: impl AsRef<Path>, offset: u64) -> Result<Resource> {
        let r = Resource {
            lockspace: String::new(),
            name: String::new(),
            disks: vec![(path.as_ref().to_path_buf(), offset)],
            lver: None,
            shared: false,
        };
        let w = r.to_wire("read_resource", 0)?;
        let got = wrap("read_resource", self.client.read_resource(&w, 0))?;
        Ok(Resource::from_wire(&got))
    }

    /// Who holds a lease, read from its disk blocks (no liveness check).
    pub fn read_resource_owners(&self, res: &Resource) -> Result<Vec<Owner>> {
        let w = res.to_wire("read_resource_owners", 0)?;
        let o = wrap(
            "read_resource_owners",
            self.client.read_resource_owners(&w, 0),
        )?;
        Ok(o.hosts.iter().map(Owner::from).collect())
    }

    /// Asks the owner of a lease to release it (see [`ForceMode`]).
    /// `res.lver` `None` asks for the next version.
    pub fn request(&self, res: &Resource, mode: ForceMode) -> Result<()> {
        let w = res.to_wire("request", 0)?;
        let flags = if res.lver.is_none() {
            proto::SANLK_REQUEST_NEXT_LVER
        } else {
            0
        };
        wrap(
            "request",
            self.client.request_resource(flags, mode as u32, &w),
        )
        .map(drop)
    }

    /// Sets the LVB of a lease held (acquired with [`AcquireFlags::lvb`])
    /// on this host; written to disk when it is released.
    pub fn set_lvb(&self, res: &Resource, data: &[u8]) -> Result<()> {
        let w = res.to_wire("set_lvb", 0)?;
        wrap("set_lvb", self.client.set_lvb(0, &w, data)).map(drop)
    }

    /// `len` bytes of the LVB of a lease held on this host.
    pub fn get_lvb(&self, res: &Resource, len: usize) -> Result<Vec<u8>> {
        let w = res.to_wire("get_lvb", 0)?;
        wrap("get_lvb", self.client.get_lvb(0, &w, len))
    }

    /// The leases another registered process holds.
    pub fn inquire_pid(&self, pid: i32) -> Result<Vec<Resource>> {
        let i = wrap("inquire", self.client.inquire(Target::Pid(pid), 0))?;
        parse_inquiry("inquire", i)
    }
}

fn parse_inquiry(op: &'static str, i: proto::client::Inquiry) -> Result<Vec<Resource>> {
    if i.result < 0 {
        return Err(Error {
            op,
            rv: i.result,
            source: None,
        });
    }
    let Some(state) = i.state.filter(|s| !s.is_empty()) else {
        return Ok(Vec::new());
    };
    let list = crate::lease_str::state_to_args(&state).map_err(|(rv, _)| Error {
        op,
        rv,
        source: None,
    })?;
    Ok(list
        .into_iter()
        .map(|r| Resource {
            lockspace: r.lockspace.to_string_lossy(),
            name: r.name.to_string_lossy(),
            disks: r
                .disks
                .into_iter()
                .map(|d| (PathBuf::from(d.path), d.offset))
                .collect(),
            lver: r.lver,
            shared: r.shared,
        })
        .collect())
}

/// This process's registration: its leases live as long as it does
/// (dropping it closes the connection and the daemon releases them).
pub struct Registration {
    client: Client,
    conn: Conn,
}

impl Registration {
    /// Acquires all of `res` or none (the daemon undoes a partial
    /// acquire). May wait for the liveness of a previous owner.
    pub fn acquire(&mut self, res: &[Resource], flags: AcquireFlags) -> Result<()> {
        let mut extra = 0;
        if flags.persistent {
            extra |= proto::SANLK_RES_PERSISTENT;
        }
        let mut wire = Vec::with_capacity(res.len());
        for r in res {
            let mut w = r.to_wire("acquire", extra)?;
            if let Some(n) = flags.num_hosts {
                w.flags |= proto::SANLK_RES_NUM_HOSTS;
                w.data32 = n;
            }
            wire.push(w);
        }
        // Waiting for a possibly dead owner takes minutes: no timeout.
        wrap("acquire", self.conn.set_timeout(None))?;
        let r = self
            .client
            .acquire(Target::Conn(&mut self.conn), flags.cmd_flags(), &wire, None);
        wrap("acquire", r).map(drop)
    }

    /// Releases the named leases (lockspace and resource names match).
    pub fn release(&mut self, res: &[Resource]) -> Result<()> {
        let mut wire = Vec::with_capacity(res.len());
        for r in res {
            wire.push(r.to_wire("release", 0)?);
        }
        wrap(
            "release",
            self.client.release(Target::Conn(&mut self.conn), 0, &wire),
        )
        .map(drop)
    }

    /// Releases every lease of this registration.
    pub fn release_all(&mut self) -> Result<()> {
        wrap(
            "release",
            self.client.release_all(Target::Conn(&mut self.conn)),
        )
        .map(drop)
    }

    /// The leases held, in the daemon's order (EX ones with their lver).
    pub fn inquire(&mut self) -> Result<Vec<Resource>> {
        let i = wrap(
            "inquire",
            self.client.inquire(Target::Conn(&mut self.conn), 0),
        )?;
        parse_inquiry("inquire", i)
    }

    /// Converts a held lease to shared (`shared`) or exclusive.
    pub fn convert(&mut self, res: &Resource, shared: bool) -> Result<()> {
        let mut r = res.clone();
        r.shared = shared;
        let w = r.to_wire("convert", 0)?;
        wrap(
            "convert",
            self.client.convert(Target::Conn(&mut self.conn), 0, &w),
        )
        .map(drop)
    }

    /// `SANLK_RESTRICT_*` for this registration.
    pub fn restrict(&mut self, flags: u32) -> Result<()> {
        wrap("restrict", self.client.restrict(&mut self.conn, flags)).map(drop)
    }

    /// The program the daemon runs (with `args`, escaped as sanlock's
    /// python binding does) when a graceful request asks us to go.
    pub fn killpath(&mut self, path: &str, args: &[&str]) -> Result<()> {
        let mut joined = Vec::new();
        for (i, a) in args.iter().enumerate() {
            if i > 0 {
                joined.push(b' ');
            }
            for &c in a.as_bytes() {
                if c == b' ' || c == b'\\' {
                    joined.push(b'\\');
                }
                joined.push(c);
            }
        }
        if path.len() + 1 > proto::SANLK_HELPER_PATH_LEN
            || joined.len() + 1 > proto::SANLK_HELPER_ARGS_LEN
        {
            return Err(Error::invalid("killpath"));
        }
        wrap(
            "killpath",
            self.client
                .killpath(&mut self.conn, 0, path.as_bytes(), &joined),
        )
        .map(drop)
    }
}

impl std::os::fd::AsRawFd for Registration {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.conn.as_raw_fd()
    }
}
