//! `hactl direct check`: an fsck for lease storage. It reads (never writes)
//! a lockspace area, a sequence of resource leases (with any resource
//! index among them) or a vdsm xleases volume, and reports every record
//! whose checksum, magic or geometry is wrong, every lease whose owner the
//! lockspace no longer knows, and every index record that points at the
//! wrong lease. The decoding and verification are the on-disk layer's
//! (`crate::ondisk`, `crate::xleases`); this module only walks and judges.
//!
//! All reads go through [`Source`], so the same walk runs on a device
//! (O_RDONLY | O_DIRECT, every read with a timeout) and on bytes in memory
//! (unit tests, the fuzzer).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::geometry::{
    ALIGN_1M, ALIGN_2M, ALIGN_4M, ALIGN_8M, Geometry, LFL_ALIGN_1M, LFL_ALIGN_2M, LFL_ALIGN_4M,
    LFL_ALIGN_8M, align_from_leader_flags, align_str,
};
use crate::io::{Disk, IoError};
use crate::ondisk::{
    self, DecodeError, LeaderRecord, ModeBlock, Name, PaxosDblock, RequestRecord, RindexEntry,
    RindexHeader, dblock::MBLOCK_OFFSET, rindex::RINDEX_ENTRY_SIZE,
};
use crate::xleases;

/// Where `check` reads from.
pub trait Source {
    /// A name for report lines (the path).
    fn name(&self) -> String;
    /// Bytes in the device or file.
    fn size(&self) -> u64;
    /// The device's logical sector size (512 for files).
    fn device_sector(&self) -> u32;
    /// Exactly `len` bytes at `off`; `Ok(None)` if the source ends before.
    fn read(&self, off: u64, len: usize) -> Result<Option<Vec<u8>>, IoError>;
}

/// A file or block device opened read-only with O_DIRECT.
pub struct DiskSource {
    disk: Disk,
    timeout: Duration,
}

impl DiskSource {
    pub fn open(path: &std::path::Path, timeout: Duration) -> Result<Self, IoError> {
        Ok(DiskSource {
            disk: Disk::open_readonly(path)?,
            timeout,
        })
    }
}

impl Source for DiskSource {
    fn name(&self) -> String {
        self.disk.path().display().to_string()
    }
    fn size(&self) -> u64 {
        self.disk.size
    }
    fn device_sector(&self) -> u32 {
        self.disk.device_sector
    }
    fn read(&self, off: u64, len: usize) -> Result<Option<Vec<u8>>, IoError> {
        // O_DIRECT needs whole device sectors: a 512-byte layout on a 4K
        // device is read through the 4K sectors that hold it.
        let ds = self.disk.device_sector.max(1) as u64;
        let Some(end) = off.checked_add(len as u64) else {
            return Ok(None);
        };
        let start = off / ds * ds;
        let aend = end.div_ceil(ds) * ds;
        if len == 0 || aend > self.disk.size {
            return Ok(None);
        }
        match self.disk.read(start, (aend - start) as usize, self.timeout) {
            Ok(b) => {
                let s = (off - start) as usize;
                Ok(Some(b[s..s + len].to_vec()))
            }
            Err(IoError::Short { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Bytes in memory posing as a device (tests and fuzzing).
pub struct MemSource<'a> {
    pub name: String,
    pub data: &'a [u8],
    pub device_sector: u32,
}

impl Source for MemSource<'_> {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn size(&self) -> u64 {
        self.data.len() as u64
    }
    fn device_sector(&self) -> u32 {
        self.device_sector
    }
    fn read(&self, off: u64, len: usize) -> Result<Option<Vec<u8>>, IoError> {
        let Some(end) = off.checked_add(len as u64) else {
            return Ok(None);
        };
        if end > self.data.len() as u64 {
            return Ok(None);
        }
        Ok(Some(self.data[off as usize..end as usize].to_vec()))
    }
}

/// What to check the bytes as; `Auto` goes by the magic numbers found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Kind {
    #[default]
    Auto,
    Lockspace,
    Resource,
    Xleases,
}

#[derive(Clone, Debug, Default)]
pub struct CheckOpts {
    pub kind: Kind,
    /// `-Z`/`-A`: used where the records do not tell a geometry (damaged
    /// flags) and for an xleases volume.
    pub sector_size: Option<u32>,
    pub align_size: Option<u32>,
}

/// One line of the report.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Finding {
    pub path: String,
    pub offset: u64,
    /// The area it is about: "lockspace LS", "resource LS:R", "xleases index", ...
    pub area: String,
    /// A problem (counts for the exit code) or a note (informational).
    pub problem: bool,
    /// Short stable name of the kind of finding, for scripts.
    pub code: &'static str,
    pub message: String,
}

/// An area the check recognised and walked.
#[derive(Clone, Debug, Serialize)]
pub struct AreaSummary {
    pub path: String,
    pub offset: u64,
    /// "lockspace", "resource", "rindex", "xleases".
    pub kind: &'static str,
    pub name: String,
    pub geometry: Option<String>,
}

#[derive(Clone, Debug, Serialize, Default)]
pub struct Report {
    pub path: String,
    pub offset: u64,
    pub device_sector: u32,
    pub areas: Vec<AreaSummary>,
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn problems(&self) -> usize {
        self.findings.iter().filter(|f| f.problem).count()
    }

    /// Process exit code: 0 clean, 1 problems found.
    pub fn exit_code(&self) -> i32 {
        if self.problems() == 0 { 0 } else { 1 }
    }

    /// fsck-like text: one line per finding, then a summary line.
    pub fn render_text(&self) -> String {
        let mut o = String::new();
        for f in &self.findings {
            let tag = if f.problem { "" } else { "note: " };
            o.push_str(&format!(
                "{}: offset {}: {}: {tag}{}\n",
                one_line(&f.path),
                f.offset,
                one_line(&f.area),
                one_line(&f.message)
            ));
        }
        let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
        for a in &self.areas {
            *kinds.entry(a.kind).or_default() += 1;
        }
        let what = if kinds.is_empty() {
            "no areas".to_string()
        } else {
            kinds
                .iter()
                .map(|(k, n)| {
                    let k = match *k {
                        "lockspace" => "lockspace area",
                        "resource" => "resource lease",
                        "rindex" => "resource index",
                        _ => "xleases index",
                    };
                    format!("{n} {k}{}", if *n == 1 { "" } else { "s" })
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let n = self.problems();
        if n == 0 {
            o.push_str(&format!(
                "{}: clean ({what} checked)\n",
                one_line(&self.path)
            ));
        } else {
            o.push_str(&format!(
                "{}: {n} problem{} found ({what} checked)\n",
                one_line(&self.path),
                if n == 1 { "" } else { "s" }
            ));
        }
        o
    }
}

/// Names on storage are any bytes: control characters are escaped so that
/// each finding stays one line.
fn one_line(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            o.extend(c.escape_default());
        } else {
            o.push(c);
        }
    }
    o
}

/// The delta leases of one lockspace, as read, for judging owners.
struct LockspaceView {
    name: Name,
    path: String,
    offset: u64,
    /// Valid delta leaders, by host_id - 1 (None: missing or damaged).
    hosts: Vec<Option<LeaderRecord>>,
}

/// Someone a resource lease names as holding it.
struct Claim {
    path: String,
    offset: u64,
    area: String,
    lockspace: Name,
    host_id: u64,
    generation: u64,
    shared: bool,
}

struct Checker<'a> {
    findings: Vec<Finding>,
    areas: Vec<AreaSummary>,
    lockspaces: Vec<LockspaceView>,
    claims: Vec<Claim>,
    /// Areas that name the lockspace they belong to.
    members: Vec<Claim>,
    opts: &'a CheckOpts,
}

fn code_of(e: &DecodeError) -> &'static str {
    match e {
        DecodeError::Short { .. } => "truncated",
        DecodeError::NoMagic { .. } => "no_magic",
        DecodeError::ForeignMagic { .. } => "foreign_magic",
        DecodeError::WrongVersion { .. } => "version",
        DecodeError::BadChecksum { .. } => "bad_checksum",
        DecodeError::WrongSectorSize { .. } => "sector_size",
        DecodeError::WrongLockspace { .. } => "wrong_lockspace",
        DecodeError::WrongResource { .. } => "wrong_resource",
        DecodeError::NumHosts { .. } => "num_hosts",
        DecodeError::NameTooLong { .. } => "name",
        DecodeError::WrongOffset { .. } => "wrong_offset",
    }
}

fn magic_at(b: &[u8]) -> u32 {
    b.get(0..4)
        .map_or(0, |m| u32::from_le_bytes(m.try_into().unwrap()))
}

fn aligns_for(ss: u32) -> &'static [u32] {
    if ss == 512 {
        &[ALIGN_1M]
    } else {
        &[ALIGN_1M, ALIGN_2M, ALIGN_4M, ALIGN_8M]
    }
}

impl Checker<'_> {
    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        src: &dyn Source,
        offset: u64,
        area: &str,
        problem: bool,
        code: &'static str,
        message: String,
    ) {
        self.findings.push(Finding {
            path: src.name(),
            offset,
            area: area.to_string(),
            problem,
            code,
            message,
        });
    }

    /// Notes that the area at `offset` belongs to lockspace `ls`.
    fn member(&mut self, src: &dyn Source, offset: u64, area: &str, ls: Name) {
        self.members.push(Claim {
            path: src.name(),
            offset,
            area: area.to_string(),
            lockspace: ls,
            host_id: 0,
            generation: 0,
            shared: false,
        });
    }

    /// Reads, turning "the device ends here" into a finding.
    fn read(
        &mut self,
        src: &dyn Source,
        off: u64,
        len: usize,
        area: &str,
        what: &str,
    ) -> Result<Option<Vec<u8>>, IoError> {
        let r = src.read(off, len)?;
        if r.is_none() {
            self.add(
                src,
                off,
                area,
                true,
                "truncated",
                format!(
                    "{what} needs {len} bytes at offset {off}, but the device ends at {}",
                    src.size()
                ),
            );
        }
        Ok(r)
    }

    /// The geometry a leader's sector size and flags describe, with what
    /// is wrong about them (against each other and the device) reported.
    fn leader_geometry(
        &mut self,
        src: &dyn Source,
        off: u64,
        area: &str,
        lr: &LeaderRecord,
    ) -> Option<Geometry> {
        let flags = lr.flags & (LFL_ALIGN_1M | LFL_ALIGN_2M | LFL_ALIGN_4M | LFL_ALIGN_8M);
        if flags.count_ones() > 1 {
            self.add(
                src,
                off,
                area,
                true,
                "align_flags",
                format!(
                    "flags {:#x} name several align sizes; sanlock takes the first ({})",
                    lr.flags,
                    align_str(align_from_leader_flags(flags).unwrap_or(0))
                ),
            );
        }
        let g = Geometry::from_leader(lr.sector_size, lr.flags);
        match g {
            None if lr.sector_size == 512 || lr.sector_size == 4096 => self.add(
                src,
                off,
                area,
                true,
                "geometry",
                format!(
                    "sector_size {} with align flag {} is no geometry sanlock accepts (512/1M, 4096/1M, 4096/2M, 4096/4M, 4096/8M)",
                    lr.sector_size,
                    align_str(align_from_leader_flags(lr.flags).unwrap_or(0))
                ),
            ),
            Some(g) if flags == 0 => self.add(
                src,
                off,
                area,
                false,
                "no_align_flag",
                format!("no align flag (an old layout): align size {} assumed", align_str(g.align_size)),
            ),
            _ => {}
        }
        if (lr.sector_size == 512 || lr.sector_size == 4096) && lr.sector_size < src.device_sector()
        {
            self.add(
                src,
                off,
                area,
                true,
                "device_sector",
                format!(
                    "sector_size {} but the device has {}-byte sectors: sanlock cannot use this layout on it",
                    lr.sector_size,
                    src.device_sector()
                ),
            );
        }
        g.or_else(|| {
            let (s, a) = (self.opts.sector_size?, self.opts.align_size?);
            Geometry::new(s, a).ok()
        })
    }

    fn check_lockspace(&mut self, src: &dyn Source, off: u64) -> Result<Option<Geometry>, IoError> {
        let Some(first) = self.read(src, off, 512, "lockspace", "a delta lease")? else {
            return Ok(None);
        };
        let lr0 = LeaderRecord::decode(&first).expect("512 bytes hold a leader");
        let area = format!("lockspace {}", lr0.space_name);
        if let Err(e) = lr0.verify_delta(None) {
            let fatal = matches!(
                e,
                DecodeError::NoMagic { .. }
                    | DecodeError::ForeignMagic { .. }
                    | DecodeError::WrongVersion { .. }
            );
            self.add(
                src,
                off,
                &area,
                true,
                code_of(&e),
                format!("host_id 1: {e}"),
            );
            if fatal {
                return Ok(None);
            }
        }
        let Some(g) = self.leader_geometry(src, off, &area, &lr0) else {
            self.add(
                src,
                off,
                &area,
                true,
                "geometry",
                "cannot tell the area's geometry; give -Z and -A to check the rest".into(),
            );
            return Ok(None);
        };
        self.areas.push(AreaSummary {
            path: src.name(),
            offset: off,
            kind: "lockspace",
            name: lr0.space_name.to_string_lossy(),
            geometry: Some(g.to_string()),
        });
        let ss = g.sector_size as usize;
        let avail = src.size().saturating_sub(off).min(g.align_size as u64) as usize / ss * ss;
        if avail < g.align_size as usize {
            self.add(
                src,
                off,
                &area,
                true,
                "truncated",
                format!(
                    "the device ends at {}, inside the {}-byte lockspace area",
                    src.size(),
                    g.align_size
                ),
            );
        }
        let data = if avail > 0 {
            src.read(off, avail)?.unwrap_or_default()
        } else {
            Vec::new()
        };
        let hosts = (g.max_hosts() as usize).min(data.len() / ss);
        let mut view = LockspaceView {
            name: lr0.space_name,
            path: src.name(),
            offset: off,
            hosts: vec![None; hosts],
        };
        let mut zero_run: Option<(usize, usize)> = None;
        let flush_zeroes = |c: &mut Self, run: &mut Option<(usize, usize)>| {
            if let Some((a, b)) = run.take() {
                let ids = if a == b {
                    format!("host_id {a}")
                } else {
                    format!("host_ids {a}-{b}")
                };
                c.add(
                    src,
                    off + (a as u64 - 1) * ss as u64,
                    &area,
                    true,
                    "no_delta_lease",
                    format!("{ids}: no delta lease (zeroes): such a host cannot join"),
                );
            }
        };
        for (i, slot) in view.hosts.iter_mut().enumerate() {
            let host_id = i + 1;
            let at = off + (i * ss) as u64;
            let sec = &data[i * ss..(i + 1) * ss];
            if magic_at(sec) == 0 && i > 0 {
                zero_run = match zero_run {
                    Some((a, _)) => Some((a, host_id)),
                    None => Some((host_id, host_id)),
                };
                continue;
            }
            flush_zeroes(self, &mut zero_run);
            let lr = LeaderRecord::decode(sec).expect("a sector holds a leader");
            if i > 0 {
                if let Err(e) = lr.verify_delta(Some(&lr0.space_name)) {
                    self.add(
                        src,
                        at,
                        &area,
                        true,
                        code_of(&e),
                        format!("host_id {host_id}: {e}"),
                    );
                    continue;
                }
                if lr.sector_size != lr0.sector_size || lr.flags != lr0.flags {
                    self.add(
                        src,
                        at,
                        &area,
                        true,
                        "geometry_differs",
                        format!(
                            "host_id {host_id}: sector_size {} flags {:#x}, but host_id 1 says sector_size {} flags {:#x}",
                            lr.sector_size, lr.flags, lr0.sector_size, lr0.flags
                        ),
                    );
                }
            } else if lr.verify_delta(None).is_err() {
                continue;
            }
            if lr.owner_id != 0 && lr.owner_id != host_id as u64 {
                self.add(
                    src,
                    at,
                    &area,
                    true,
                    "owner_id",
                    format!(
                        "host_id {host_id}: the delta lease names owner_id {}; the lease at this place belongs to host_id {host_id}",
                        lr.owner_id
                    ),
                );
                continue;
            }
            *slot = Some(lr);
        }
        flush_zeroes(self, &mut zero_run);
        self.lockspaces.push(view);
        Ok(Some(g))
    }

    /// One resource lease. `expect` is (lockspace, resource) when an index
    /// says what must be there (then a cleared or missing lease is a problem).
    fn check_resource(
        &mut self,
        src: &dyn Source,
        off: u64,
        expect: Option<(&Name, &Name)>,
        index_geometry: Option<Geometry>,
    ) -> Result<Option<Geometry>, IoError> {
        let ss0 = index_geometry.map_or(512, |g| g.sector_size as usize);
        let Some(first) = self.read(src, off, ss0, "resource", "a resource leader")? else {
            return Ok(None);
        };
        let lr = LeaderRecord::decode(&first).expect("a sector holds a leader");
        let area = match expect {
            Some((ls, r)) => format!("resource {ls}:{r}"),
            None => format!("resource {}:{}", lr.space_name, lr.resource_name),
        };
        if lr.magic == ondisk::PAXOS_DISK_CLEAR
            && lr.version & 0xFFFF_0000 == ondisk::PAXOS_DISK_VERSION_MAJOR
        {
            self.add(
                src,
                off,
                &area,
                expect.is_some(),
                "cleared",
                "the lease was cleared (init -z): nobody can acquire it until it is initialised again".into(),
            );
            if expect.is_none() {
                self.member(src, off, &area, lr.space_name);
                self.areas.push(AreaSummary {
                    path: src.name(),
                    offset: off,
                    kind: "resource",
                    name: format!("{}:{}", lr.space_name, lr.resource_name),
                    geometry: Geometry::from_leader(lr.sector_size, lr.flags)
                        .map(|g| g.to_string()),
                });
            }
            return Ok(Geometry::from_leader(lr.sector_size, lr.flags).or(index_geometry));
        }
        if let Err(e) = lr.verify_paxos(expect.map(|e| e.0), expect.map(|e| e.1), 0) {
            let fatal = matches!(
                e,
                DecodeError::NoMagic { .. }
                    | DecodeError::ForeignMagic { .. }
                    | DecodeError::WrongVersion { .. }
            );
            let (code, msg) = match (&e, expect) {
                (DecodeError::NoMagic { .. }, Some(_)) => (
                    "lease_missing",
                    "no resource lease here (zeroes): the index points at an unformatted slot"
                        .to_string(),
                ),
                _ => (code_of(&e), e.to_string()),
            };
            self.add(src, off, &area, true, code, msg);
            if fatal {
                return Ok(None);
            }
        }
        let Some(g) = self.leader_geometry(src, off, &area, &lr) else {
            self.add(
                src,
                off,
                &area,
                true,
                "geometry",
                "cannot tell the lease's geometry; its dblocks were not checked".into(),
            );
            return Ok(None);
        };
        if let Some(ig) = index_geometry
            && ig != g
        {
            self.add(
                src,
                off,
                &area,
                true,
                "geometry_differs",
                format!("the lease says {g}, the index it belongs to {ig}"),
            );
        }
        if expect.is_none() {
            self.member(src, off, &area, lr.space_name);
        }
        self.areas.push(AreaSummary {
            path: src.name(),
            offset: off,
            kind: "resource",
            name: format!("{}:{}", lr.space_name, lr.resource_name),
            geometry: Some(g.to_string()),
        });
        let ss = g.sector_size as usize;
        let dblock_sectors = g.sectors_per_area() as u64 - 2;
        if lr.max_hosts > dblock_sectors {
            self.add(
                src,
                off,
                &area,
                true,
                "max_hosts",
                format!(
                    "max_hosts {} does not fit: a {g} area holds {dblock_sectors} dblocks",
                    lr.max_hosts
                ),
            );
        }
        if lr.num_hosts == 0 || lr.num_hosts > lr.max_hosts.max(1) {
            self.add(
                src,
                off,
                &area,
                true,
                "num_hosts",
                format!("num_hosts {} (max_hosts {})", lr.num_hosts, lr.max_hosts),
            );
        }
        let held = lr.timestamp != 0 && lr.owner_id != 0;
        if held && lr.owner_id > lr.num_hosts {
            self.add(
                src,
                off,
                &area,
                true,
                "owner_id",
                format!(
                    "owner_id {} is beyond num_hosts {}",
                    lr.owner_id, lr.num_hosts
                ),
            );
        }
        let n = lr.num_hosts.min(dblock_sectors) as usize;
        let Some(data) = self.read(
            src,
            off,
            (2 + n) * ss,
            &area,
            "the request record and dblocks",
        )?
        else {
            return Ok(Some(g));
        };
        let rr = RequestRecord::decode(&data[ss..]).expect("a sector holds a request");
        if let Err(e) = rr.verify() {
            self.add(
                src,
                off + ss as u64,
                &area,
                true,
                code_of(&e),
                format!("request record: {e}"),
            );
        }
        let mut bad = Vec::new();
        for i in 0..n {
            let sec = &data[(2 + i) * ss..(3 + i) * ss];
            let d = PaxosDblock::decode(sec).expect("a sector holds a dblock");
            if let Err(e) = d.verify() {
                bad.push((i, e));
            }
            let mb = ModeBlock::decode(&sec[MBLOCK_OFFSET..]).expect("a sector holds a mode block");
            if mb.is_shared() {
                self.claims.push(Claim {
                    path: src.name(),
                    offset: off,
                    area: area.clone(),
                    lockspace: lr.space_name,
                    host_id: i as u64 + 1,
                    generation: mb.generation,
                    shared: true,
                });
            }
        }
        for (i, e) in bad {
            self.add(
                src,
                off + ((2 + i) * ss) as u64,
                &area,
                true,
                code_of(&e),
                format!("dblock of host_id {}: {e}", i + 1),
            );
        }
        if held {
            self.claims.push(Claim {
                path: src.name(),
                offset: off,
                area,
                lockspace: lr.space_name,
                host_id: lr.owner_id,
                generation: lr.owner_generation,
                shared: false,
            });
        }
        Ok(Some(g))
    }

    /// A sanlock resource index header and the leases its entries name.
    fn check_rindex(&mut self, src: &dyn Source, off: u64) -> Result<Option<Geometry>, IoError> {
        let Some(first) = self.read(src, off, 512, "resource index", "a resource index header")?
        else {
            return Ok(None);
        };
        let rh = RindexHeader::decode(&first).expect("a sector holds a header");
        let area = format!("resource index {}", rh.lockspace_name);
        if let Err(e) = rh.verify(None, off) {
            self.add(src, off, &area, true, code_of(&e), e.to_string());
        }
        let Some(g) = rh.geometry() else {
            return Ok(None);
        };
        if g.sector_size < src.device_sector() {
            self.add(
                src,
                off,
                &area,
                true,
                "device_sector",
                format!(
                    "sector_size {} but the device has {}-byte sectors",
                    g.sector_size,
                    src.device_sector()
                ),
            );
        }
        self.member(src, off, &area, rh.lockspace_name);
        self.areas.push(AreaSummary {
            path: src.name(),
            offset: off,
            kind: "rindex",
            name: rh.lockspace_name.to_string_lossy(),
            geometry: Some(g.to_string()),
        });
        let ss = g.sector_size as usize;
        let per_sector = ss / RINDEX_ENTRY_SIZE;
        let entries = (rh.max_resources as usize).min(g.max_resources() as usize);
        let sectors = entries
            .div_ceil(per_sector)
            .min(g.sectors_per_area() as usize - 1);
        let Some(data) = self.read(src, off, (1 + sectors) * ss, &area, "the index entries")?
        else {
            return Ok(Some(g));
        };
        let mut seen: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
        for k in 0..sectors * per_sector {
            let at = ss + k * RINDEX_ENTRY_SIZE;
            let re = RindexEntry::decode(&data[at..]).expect("an entry fits");
            if re.is_free() {
                continue;
            }
            let eoff = off + at as u64;
            if let Some(prev) = seen.insert(re.name.bytes().to_vec(), eoff) {
                self.add(
                    src,
                    eoff,
                    &area,
                    true,
                    "duplicate",
                    format!(
                        "entry for {} duplicates the entry at offset {prev}",
                        re.name
                    ),
                );
            }
            if !re.res_offset.is_multiple_of(g.align_size as u64) || re.res_offset == 0 {
                self.add(
                    src,
                    eoff,
                    &area,
                    true,
                    "entry_offset",
                    format!(
                        "entry for {} says offset {}, not a lease area ({}-aligned, after the index)",
                        re.name, re.res_offset, g.align_size
                    ),
                );
                continue;
            }
            let Some(sec) = src.read(re.res_offset, ss)? else {
                self.add(
                    src,
                    eoff,
                    &area,
                    true,
                    "lease_missing",
                    format!(
                        "entry for {} points beyond the end of the device ({})",
                        re.name, re.res_offset
                    ),
                );
                continue;
            };
            let lr = LeaderRecord::decode(&sec).expect("a sector holds a leader");
            if let Err(e) = lr.verify_paxos(Some(&rh.lockspace_name), Some(&re.name), 0) {
                self.add(
                    src,
                    eoff,
                    &area,
                    true,
                    "entry_mismatch",
                    format!("entry for {} at offset {}: {e}", re.name, re.res_offset),
                );
            }
        }
        Ok(Some(g))
    }

    /// vdsm's xleases volume at `base` with its index at `base + align`.
    fn check_xleases(&mut self, src: &dyn Source, base: u64, g: Geometry) -> Result<(), IoError> {
        let area = "xleases index".to_string();
        let ix_off = base + g.align_size as u64;
        if g.sector_size < src.device_sector() {
            self.add(
                src,
                ix_off,
                &area,
                true,
                "device_sector",
                format!(
                    "sector size {} but the device has {}-byte sectors",
                    g.sector_size,
                    src.device_sector()
                ),
            );
        }
        let Some(bytes) = self.read(src, ix_off, xleases::INDEX_SIZE, &area, "the index")? else {
            return Ok(());
        };
        let ix = xleases::Index::from_bytes(&bytes);
        let md = match ix.metadata() {
            Ok(md) => md,
            Err(reason) => {
                self.add(
                    src,
                    ix_off,
                    &area,
                    true,
                    "index_metadata",
                    format!("invalid metadata: {reason}"),
                );
                return Ok(());
            }
        };
        let area = format!("xleases index {}", md.lockspace);
        if let Ok(n) = Name::new(&md.lockspace) {
            self.member(src, ix_off, &area, n);
        }
        self.areas.push(AreaSummary {
            path: src.name(),
            offset: ix_off,
            kind: "xleases",
            name: md.lockspace.clone(),
            geometry: Some(g.to_string()),
        });
        if md.updating {
            self.add(
                src,
                ix_off,
                &area,
                true,
                "index_updating",
                "the index is marked updating: a format or rebuild was interrupted; rebuild it"
                    .into(),
            );
        }
        let Ok(ls) = Name::new(&md.lockspace) else {
            return Ok(());
        };
        let mut ids: BTreeMap<String, usize> = BTreeMap::new();
        for n in 0..xleases::MAX_RECORDS {
            let at = ix_off + (xleases::RECORD_BASE + n * xleases::RECORD_SIZE) as u64;
            let r = match ix.record(n) {
                Ok(r) => r,
                Err(reason) => {
                    self.add(
                        src,
                        at,
                        &area,
                        true,
                        "bad_record",
                        format!("record {n}: {reason}"),
                    );
                    continue;
                }
            };
            if r.is_empty() {
                continue;
            }
            if ix.raw_record(n)[xleases::ID_SIZE] != 0 {
                self.add(
                    src,
                    at,
                    &area,
                    true,
                    "bad_record",
                    format!(
                        "record {n} ({:?}): the byte after the lease id is not NUL, so vdsm's lookup never finds it",
                        r.resource
                    ),
                );
            }
            if let Some(m) = ids.get(&r.resource) {
                self.add(
                    src,
                    at,
                    &area,
                    true,
                    "duplicate",
                    format!(
                        "record {n} duplicates lease id {:?} of record {m}",
                        r.resource
                    ),
                );
            } else {
                ids.insert(r.resource.clone(), n);
            }
            if r.updating {
                self.add(
                    src,
                    at,
                    &area,
                    true,
                    "record_updating",
                    format!(
                        "record {n} ({:?}) is marked updating: an add or remove was interrupted",
                        r.resource
                    ),
                );
            }
            let slot = base + xleases::lease_offset(n, g.align_size);
            if r.offset != slot {
                self.add(
                    src,
                    at,
                    &area,
                    true,
                    "record_offset",
                    format!(
                        "record {n} ({:?}) says offset {}, but its slot is at {slot}",
                        r.resource, r.offset
                    ),
                );
            }
            let Ok(id) = Name::new(&r.resource) else {
                continue;
            };
            if slot.saturating_add(g.align_size as u64) > src.size() {
                self.add(
                    src,
                    at,
                    &area,
                    true,
                    "lease_missing",
                    format!(
                        "record {n} ({:?}): its slot at {slot} lies beyond the end of the volume ({})",
                        r.resource,
                        src.size()
                    ),
                );
                continue;
            }
            self.check_resource(src, slot, Some((&ls, &id)), Some(g))?;
        }
        Ok(())
    }

    /// Judges every owner and shared holder against its lockspace.
    fn check_claims(&mut self) {
        let claims = std::mem::take(&mut self.claims);
        if self.lockspaces.is_empty() {
            if let Some(c) = claims.first() {
                self.findings.push(Finding {
                    path: c.path.clone(),
                    offset: c.offset,
                    area: c.area.clone(),
                    problem: false,
                    code: "no_lockspace",
                    message: format!(
                        "{} held lease(s) not judged: no lockspace area found or given (-s)",
                        claims.len()
                    ),
                });
            }
            return;
        }
        let names: Vec<String> = self
            .lockspaces
            .iter()
            .map(|l| l.name.to_string_lossy())
            .collect();
        for m in std::mem::take(&mut self.members) {
            if !self.lockspaces.iter().any(|l| l.name.same_as(&m.lockspace)) {
                self.findings.push(Finding {
                    path: m.path,
                    offset: m.offset,
                    area: m.area,
                    problem: true,
                    code: "wrong_lockspace",
                    message: format!(
                        "belongs to lockspace {:?}, which is not the lockspace checked ({})",
                        m.lockspace.to_string_lossy(),
                        names.join(", ")
                    ),
                });
            }
        }
        for c in claims {
            let who = format!(
                "{} host_id {} generation {}",
                if c.shared { "shared holder" } else { "owner" },
                c.host_id,
                c.generation
            );
            let push = |code: &'static str, message: String| Finding {
                path: c.path.clone(),
                offset: c.offset,
                area: c.area.clone(),
                problem: true,
                code,
                message,
            };
            // A lease of another lockspace was reported with its area.
            let Some(ls) = self
                .lockspaces
                .iter()
                .find(|l| l.name.same_as(&c.lockspace))
            else {
                continue;
            };
            let where_ = format!(
                "lockspace {} at offset {} of {}",
                ls.name, ls.offset, ls.path
            );
            let f = match ls.hosts.get((c.host_id as usize).wrapping_sub(1)) {
                None => push(
                    "owner_host_id",
                    format!(
                        "{who}: {where_} has no host_id {} (it holds {})",
                        c.host_id,
                        ls.hosts.len()
                    ),
                ),
                Some(None) => push(
                    "owner_no_delta",
                    format!(
                        "{who}: host_id {} has no valid delta lease in {where_}",
                        c.host_id
                    ),
                ),
                Some(Some(d)) if d.timestamp == 0 => push(
                    "owner_free",
                    format!(
                        "{who}: host_id {} is FREE in {where_} (released or never joined): nobody holds this lease any more",
                        c.host_id
                    ),
                ),
                Some(Some(d)) if d.owner_generation > c.generation => push(
                    "owner_dead",
                    format!(
                        "{who}: host_id {} is at generation {} in {where_}: the instance that held the lease is gone",
                        c.host_id, d.owner_generation
                    ),
                ),
                Some(Some(d)) if d.owner_generation < c.generation => push(
                    "owner_generation",
                    format!(
                        "{who}: host_id {} is only at generation {} in {where_}: the lease was not taken through this lockspace",
                        c.host_id, d.owner_generation
                    ),
                ),
                Some(Some(_)) => continue,
            };
            self.findings.push(f);
        }
    }
}

/// What the magic numbers at `off` say is there.
fn detect(src: &dyn Source, off: u64) -> Result<(Kind, Option<Geometry>, u32), IoError> {
    let Some(first) = src.read(off, 512)? else {
        return Ok((Kind::Auto, None, 0));
    };
    let magic = magic_at(&first);
    // vdsm's index one slot in is the strongest sign: the slot before it
    // is unused by vdsm and may hold anything, a lockspace included.
    if let Some(g) = find_xleases(src, off, None, None)? {
        return Ok((Kind::Xleases, Some(g), magic));
    }
    match magic {
        ondisk::DELTA_DISK_MAGIC => return Ok((Kind::Lockspace, None, magic)),
        ondisk::PAXOS_DISK_MAGIC | ondisk::PAXOS_DISK_CLEAR | ondisk::RINDEX_DISK_MAGIC => {
            return Ok((Kind::Resource, None, magic));
        }
        _ => {}
    }
    Ok((Kind::Auto, None, magic))
}

/// The geometry of an xleases volume at `base`: the align size at which
/// its index magic is found (the first, if several are).
fn find_xleases(
    src: &dyn Source,
    base: u64,
    ss: Option<u32>,
    align: Option<u32>,
) -> Result<Option<Geometry>, IoError> {
    let ss = ss.unwrap_or(src.device_sector());
    let aligns: Vec<u32> = match align {
        Some(a) => vec![a],
        None => aligns_for(ss).to_vec(),
    };
    for a in aligns {
        let Some(b) = src.read(base + a as u64, 512)? else {
            continue;
        };
        if b[0..4] == xleases::INDEX_MAGIC.to_be_bytes() {
            return Ok(Geometry::new(ss, a).ok());
        }
    }
    Ok(None)
}

/// Checks what is at `offset` of `src`, judging lease owners against the
/// lockspace areas in `lockspaces` (and any found in the walk). Fails
/// only on an I/O error; everything found on storage is in the report.
pub fn check(
    src: &dyn Source,
    offset: u64,
    lockspaces: &[(&dyn Source, u64)],
    opts: &CheckOpts,
) -> Result<Report, IoError> {
    let mut c = Checker {
        findings: Vec::new(),
        areas: Vec::new(),
        lockspaces: Vec::new(),
        claims: Vec::new(),
        members: Vec::new(),
        opts,
    };
    for (ls, off) in lockspaces {
        c.check_lockspace(*ls, *off)?;
    }

    let (found, xg, magic) = detect(src, offset)?;
    let kind = if opts.kind == Kind::Auto {
        found
    } else {
        opts.kind
    };
    match kind {
        Kind::Auto => c.add(
            src,
            offset,
            "-",
            true,
            "no_area",
            format!(
                "no lockspace, resource lease, resource index or xleases index here: found {} (magic {magic:#010x})",
                ondisk::describe_magic(magic)
            ),
        ),
        Kind::Xleases => {
            let g = match xg {
                Some(g) if opts.sector_size.is_none() && opts.align_size.is_none() => Some(g),
                _ => find_xleases(src, offset, opts.sector_size, opts.align_size)?,
            };
            match g {
                Some(g) => c.check_xleases(src, offset, g)?,
                None => {
                    let ss = opts.sector_size.unwrap_or(src.device_sector());
                    let g = opts
                        .align_size
                        .and_then(|a| Geometry::new(ss, a).ok())
                        .or_else(|| Geometry::old_default(ss));
                    match g {
                        // Told it is one: check where the index should be.
                        Some(g) => c.check_xleases(src, offset, g)?,
                        None => c.add(
                            src,
                            offset,
                            "xleases index",
                            true,
                            "no_area",
                            "no xleases index found".into(),
                        ),
                    }
                }
            }
        }
        Kind::Lockspace | Kind::Resource => {
            // A walk over consecutive areas, each recognised by its magic,
            // as `direct dump` walks them; it ends at the first area that
            // is none of them.
            let mut off = offset;
            let mut first = true;
            while let Some(b) = src.read(off, 512)? {
                let m = magic_at(&b);
                let told = first && opts.kind != Kind::Auto;
                let g = match m {
                    _ if told && kind == Kind::Lockspace => c.check_lockspace(src, off)?,
                    _ if told && kind == Kind::Resource => {
                        c.check_resource(src, off, None, None)?
                    }
                    ondisk::DELTA_DISK_MAGIC => c.check_lockspace(src, off)?,
                    ondisk::RINDEX_DISK_MAGIC => c.check_rindex(src, off)?,
                    ondisk::PAXOS_DISK_MAGIC | ondisk::PAXOS_DISK_CLEAR => {
                        c.check_resource(src, off, None, None)?
                    }
                    _ => break,
                };
                first = false;
                let Some(g) = g else { break };
                off += g.align_size as u64;
            }
        }
    }
    c.check_claims();
    // fsck-like order: by place on storage (stable, so a sector's lines keep theirs).
    c.findings
        .sort_by(|a, b| a.path.cmp(&b.path).then(a.offset.cmp(&b.offset)));
    Ok(Report {
        path: src.name(),
        offset,
        device_sector: src.device_sector(),
        areas: c.areas,
        findings: c.findings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::direct::resource_area_bytes;
    use crate::geometry::leader_flag_from_align;

    fn lockspace_bytes(g: Geometry, name: &str) -> Vec<u8> {
        let mut buf = vec![0u8; g.align_size as usize];
        let ss = g.sector_size as usize;
        for i in 0..g.max_hosts() as usize {
            let mut lr = LeaderRecord {
                magic: ondisk::DELTA_DISK_MAGIC,
                version: ondisk::DELTA_DISK_VERSION_MAJOR | ondisk::DELTA_DISK_VERSION_MINOR,
                flags: leader_flag_from_align(g.align_size),
                sector_size: g.sector_size,
                max_hosts: 1,
                io_timeout: 10,
                space_name: Name::new(name).unwrap(),
                ..Default::default()
            };
            let b = lr.seal();
            buf[i * ss..i * ss + b.len()].copy_from_slice(&b);
        }
        buf
    }

    fn run(data: &[u8]) -> Report {
        let src = MemSource {
            name: "mem".into(),
            data,
            device_sector: 512,
        };
        check(&src, 0, &[], &CheckOpts::default()).unwrap()
    }

    #[test]
    fn clean_lockspace_and_resources() {
        let g = Geometry::new(512, ALIGN_1M).unwrap();
        let mut d = lockspace_bytes(g, "LS");
        let ls = Name::new("LS").unwrap();
        for r in ["R1", "R2"] {
            d.extend(resource_area_bytes(
                g,
                2000,
                2000,
                &ls,
                &Name::new(r).unwrap(),
                false,
            ));
        }
        let rep = run(&d);
        assert_eq!(rep.problems(), 0, "{}", rep.render_text());
        assert_eq!(rep.areas.len(), 3);
    }

    #[test]
    fn flipped_bit_and_stale_owner() {
        let g = Geometry::new(512, ALIGN_1M).unwrap();
        let mut d = lockspace_bytes(g, "LS");
        let ls = Name::new("LS").unwrap();
        let mut r = resource_area_bytes(g, 2000, 2000, &ls, &Name::new("R").unwrap(), false);
        let mut lr = LeaderRecord::decode(&r).unwrap();
        lr.owner_id = 3;
        lr.owner_generation = 1;
        lr.timestamp = 77;
        r[..200].copy_from_slice(&lr.seal());
        d.extend(r);
        d[512 * 5 + 40] ^= 1; // host_id 6's generation
        let rep = run(&d);
        let codes: Vec<_> = rep.findings.iter().map(|f| f.code).collect();
        assert!(codes.contains(&"bad_checksum"), "{}", rep.render_text());
        assert!(codes.contains(&"owner_free"), "{}", rep.render_text());
        assert_eq!(rep.exit_code(), 1);
    }

    /// Found by the fuzzer: a lockspace name holding a newline split its
    /// finding over two lines of the report.
    #[test]
    fn names_with_newlines_stay_on_one_line() {
        let g = Geometry::new(512, ALIGN_1M).unwrap();
        let mut d = lockspace_bytes(g, "L\nS");
        d[512 * 3 + 40] ^= 1;
        let rep = run(&d);
        assert_eq!(rep.problems(), 1, "{}", rep.render_text());
        let text = rep.render_text();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.contains("lockspace L\\nS: host_id 4"), "{text}");
    }

    /// Regression-style: arbitrary small inputs never panic.
    #[test]
    fn junk_does_not_panic() {
        for n in [0usize, 1, 100, 512, 4096] {
            let d: Vec<u8> = (0..n).map(|i| (i * 37 % 251) as u8).collect();
            let _ = run(&d);
        }
    }
}
