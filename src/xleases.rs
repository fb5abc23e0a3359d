//! vdsm's xleases volume (oVirt's VM leases, `lib/vdsm/storage/xlease.py`):
//! an index mapping lease ids to slots, and at each used slot an ordinary
//! sanlock resource lease that libvirt, vdsm or the real sanlock acquire by
//! (lockspace, lease id, path, offset).
//!
//! Layout, with A = the align size (slot size) and S = the sector size:
//!
//! | offset | content |
//! |---|---|
//! | 0 | lockspace slot (unused by vdsm) |
//! | A | index: 512-byte metadata block, then 3960 records of 64 bytes (`INDEX_SIZE` bytes) |
//! | 2A | reserved for sanlock (unused) |
//! | (3 + n) A | the lease of record n |
//!
//! The index is text and big-endian, not sanlock's little-endian: metadata is
//! `>i x 4s x 48s x 10s x c 440x c` (magic, version "%04d", lockspace, mtime
//! "%010d", updating flag, newline), a record is `48s x 11s x 3c` (lease id,
//! offset "%011d", updating flag, reserved '-', newline). A lease's offset
//! comes from its record number, never from the offset written in it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::direct::{WRITE_INIT_IO_TIMEOUT, resource_area_bytes};
use crate::geometry::{ALIGN_1M, ALIGN_2M, ALIGN_4M, ALIGN_8M, BadGeometry, Geometry};
use crate::io::{Area, Disk, IoError};
use crate::ondisk::{self, LeaderRecord, Name};

pub const RESERVED_SLOTS: u64 = 3;
pub const METADATA_SIZE: usize = 512;
pub const RECORD_BASE: usize = METADATA_SIZE;
pub const RECORD_SIZE: usize = 64;
/// vdsm reads and writes 62 × 4096 bytes of index: the 4000 records older
/// versions formatted, rounded down to a multiple of 4096 so that 4K
/// storage can hold it.
pub const INDEX_SIZE: usize = 62 * 4096;
pub const MAX_RECORDS: usize = (INDEX_SIZE - METADATA_SIZE) / RECORD_SIZE;
pub const INDEX_VERSION: u32 = 1;
pub const INDEX_MAGIC: u32 = ondisk::XLEASES_INDEX_MAGIC;
pub const FLAG_NONE: u8 = b'-';
pub const FLAG_UPDATING: u8 = b'u';
pub const ID_SIZE: usize = 48;

// Metadata block field offsets (`>i x 4s x 48s x 10s x c 440x c`).
pub const MD_VERSION: usize = 5;
pub const MD_LOCKSPACE: usize = 10;
pub const MD_MTIME: usize = 59;
pub const MD_UPDATING: usize = 70;
// Record field offsets (`48s x 11s x 3c`).
pub const REC_OFFSET: usize = 49;
pub const REC_UPDATING: usize = 61;
pub const REC_RESERVED: usize = 62;

#[derive(Debug, thiserror::Error)]
pub enum XleasesError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error(transparent)]
    Geometry(#[from] BadGeometry),
    #[error("{0}")]
    BadName(String),
    #[error(
        "{path} holds {size} bytes; an xleases volume with {align}-byte slots needs at least {need} (lockspace, index and reserved slots)"
    )]
    TooSmall {
        path: PathBuf,
        size: u64,
        align: u32,
        need: u64,
    },
    #[error(
        "could not read the xleases index of {path}: it needs {expected} bytes at offset {offset}, the volume ends {available} bytes after it"
    )]
    Truncated {
        path: PathBuf,
        offset: u64,
        expected: usize,
        available: u64,
    },
    #[error(
        "no valid xleases index metadata at offset {offset} of {path} ({reason}); check -Z/-A, or format the index (rebuild needs valid metadata)"
    )]
    InvalidMetadata {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error(
        "the xleases index of {path} (lockspace {lockspace:?}) is marked updating: an update was interrupted; rebuild it (hactl xleases rebuild) or format it"
    )]
    IndexUpdating { path: PathBuf, lockspace: String },
    #[error("invalid xleases index record {recnum} of {path} ({reason}); rebuild the index")]
    InvalidRecord {
        path: PathBuf,
        recnum: usize,
        reason: String,
    },
    #[error("lease {0:?} exists")]
    LeaseExists(String),
    #[error("no such lease {0:?}")]
    NoSuchLease(String),
    #[error("no space to add lease {id:?}: {why}")]
    NoSpace { id: String, why: String },
    #[error(
        "the resource lease at offset {offset} of {path} is held (owner_id {owner_id}, lver {lver}, resource {resource:?}); refusing to overwrite it (--force overrides)"
    )]
    Held {
        path: PathBuf,
        offset: u64,
        owner_id: u64,
        lver: u64,
        resource: String,
    },
    #[error("at offset {offset} of {path}: {source}; rebuild cannot tell whether a lease is there")]
    UnreadableLease {
        path: PathBuf,
        offset: u64,
        source: ondisk::DecodeError,
    },
    #[error("refusing to format {path}: {why} (--force overrides)")]
    NotOurs { path: PathBuf, why: String },
    #[error("several xleases indexes found in {path} (align sizes {found}); give -A to say which")]
    Ambiguous { path: PathBuf, found: String },
}

impl XleasesError {
    /// Exit code of `hactl xleases`: callers can tell the expected outcomes
    /// of add/remove/lookup apart from broken storage.
    pub fn exit_code(&self) -> i32 {
        match self {
            XleasesError::NoSuchLease(_) => 3,
            XleasesError::LeaseExists(_) => 4,
            XleasesError::NoSpace { .. } => 5,
            XleasesError::InvalidMetadata { .. }
            | XleasesError::IndexUpdating { .. }
            | XleasesError::InvalidRecord { .. }
            | XleasesError::Truncated { .. }
            | XleasesError::Ambiguous { .. } => 6,
            XleasesError::Held { .. } | XleasesError::NotOurs { .. } => 7,
            XleasesError::BadName(_) | XleasesError::Geometry(_) => 2,
            _ => 1,
        }
    }
}

pub type Result<T> = std::result::Result<T, XleasesError>;

/// Lease ids and lockspace names: ASCII (the index is ASCII text), at most
/// 48 bytes (sanlock's name size), no NUL (it ends a name on disk).
pub fn check_name(what: &str, s: &str) -> Result<Name> {
    if s.is_empty() || s.len() > ID_SIZE || !s.is_ascii() || s.contains('\0') {
        return Err(XleasesError::BadName(format!(
            "{what} {s:?} must be 1 to 48 ASCII characters without NUL"
        )));
    }
    Ok(Name::new(s).expect("length checked"))
}

fn parse_digits(b: &[u8]) -> Option<u64> {
    // vdsm parses with Python's int(), which also skips surrounding blanks.
    let s = std::str::from_utf8(b)
        .ok()?
        .trim_matches(|c: char| c.is_ascii_whitespace());
    if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Name bytes as vdsm decodes them: trailing NULs stripped, ASCII.
fn decode_name(b: &[u8]) -> std::result::Result<String, String> {
    let end = b.iter().rposition(|&c| c != 0).map_or(0, |i| i + 1);
    let s = &b[..end];
    if !s.is_ascii() || s.contains(&0) {
        return Err(format!(
            "cannot decode name {:?}",
            String::from_utf8_lossy(s)
        ));
    }
    Ok(String::from_utf8(s.to_vec()).expect("ascii"))
}

fn put_padded(b: &mut [u8], s: &[u8]) {
    b.fill(0);
    b[..s.len()].copy_from_slice(s);
}

/// The index metadata block (the first 512 bytes of the index).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Metadata {
    pub version: u32,
    pub lockspace: String,
    /// Seconds since the epoch of the last format or rebuild.
    pub mtime: u64,
    pub updating: bool,
}

impl Metadata {
    pub fn new(lockspace: &str, mtime: u64, updating: bool) -> Self {
        Metadata {
            version: INDEX_VERSION,
            lockspace: lockspace.to_string(),
            mtime,
            updating,
        }
    }

    pub fn encode(&self) -> [u8; METADATA_SIZE] {
        let mut b = [0u8; METADATA_SIZE];
        b[0..4].copy_from_slice(&INDEX_MAGIC.to_be_bytes());
        b[MD_VERSION..MD_VERSION + 4].copy_from_slice(format!("{:04}", self.version).as_bytes());
        put_padded(
            &mut b[MD_LOCKSPACE..MD_LOCKSPACE + ID_SIZE],
            self.lockspace.as_bytes(),
        );
        b[MD_MTIME..MD_MTIME + 10].copy_from_slice(format!("{:010}", self.mtime).as_bytes());
        b[MD_UPDATING] = if self.updating {
            FLAG_UPDATING
        } else {
            FLAG_NONE
        };
        b[METADATA_SIZE - 1] = b'\n';
        b
    }

    /// Checks what vdsm checks (magic, version 1, ASCII lockspace, numeric
    /// mtime); the error is the reason, for [`XleasesError::InvalidMetadata`].
    pub fn decode(b: &[u8]) -> std::result::Result<Self, String> {
        if b.len() < METADATA_SIZE {
            return Err(format!("{} bytes, a metadata block has 512", b.len()));
        }
        let magic = u32::from_be_bytes(b[0..4].try_into().unwrap());
        if magic != INDEX_MAGIC {
            let le = u32::from_le_bytes(b[0..4].try_into().unwrap());
            return Err(format!(
                "magic {magic:#010x}, expected {INDEX_MAGIC:#010x}; the bytes hold {}",
                ondisk::describe_magic(le)
            ));
        }
        let version = parse_digits(&b[MD_VERSION..MD_VERSION + 4])
            .ok_or_else(|| "invalid version".to_string())?;
        if version != INDEX_VERSION as u64 {
            return Err(format!("unsupported version {version}"));
        }
        let lockspace = decode_name(&b[MD_LOCKSPACE..MD_LOCKSPACE + ID_SIZE])
            .map_err(|e| format!("lockspace: {e}"))?;
        let mtime = parse_digits(&b[MD_MTIME..MD_MTIME + 10])
            .ok_or_else(|| "cannot parse mtime".to_string())?;
        Ok(Metadata {
            version: INDEX_VERSION,
            lockspace,
            mtime,
            updating: b[MD_UPDATING] == FLAG_UPDATING,
        })
    }
}

/// One 64-byte index record. An empty resource marks a free record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub resource: String,
    pub offset: u64,
    pub updating: bool,
}

impl Record {
    pub fn empty() -> Self {
        Record {
            resource: String::new(),
            offset: 0,
            updating: false,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.resource.is_empty()
    }

    pub fn encode(&self) -> [u8; RECORD_SIZE] {
        let mut b = [0u8; RECORD_SIZE];
        put_padded(&mut b[..ID_SIZE], self.resource.as_bytes());
        b[REC_OFFSET..REC_OFFSET + 11].copy_from_slice(format!("{:011}", self.offset).as_bytes());
        b[REC_UPDATING] = if self.updating {
            FLAG_UPDATING
        } else {
            FLAG_NONE
        };
        b[REC_RESERVED] = FLAG_NONE;
        b[RECORD_SIZE - 1] = b'\n';
        b
    }

    pub fn decode(b: &[u8]) -> std::result::Result<Self, String> {
        if b.len() < RECORD_SIZE {
            return Err(format!("{} bytes, a record has 64", b.len()));
        }
        let resource = decode_name(&b[..ID_SIZE])?;
        let offset = parse_digits(&b[REC_OFFSET..REC_OFFSET + 11]).ok_or_else(|| {
            format!(
                "cannot parse offset {:?}",
                String::from_utf8_lossy(&b[REC_OFFSET..REC_OFFSET + 11])
            )
        })?;
        Ok(Record {
            resource,
            offset,
            updating: b[REC_UPDATING] == FLAG_UPDATING,
        })
    }
}

/// Where record `recnum`'s lease lives.
pub fn lease_offset(recnum: usize, align: u32) -> u64 {
    (RESERVED_SLOTS + recnum as u64) * align as u64
}

/// The whole index as it is on storage (`INDEX_SIZE` bytes).
#[derive(Clone)]
pub struct Index {
    buf: Vec<u8>,
}

impl Index {
    /// A freshly formatted index: metadata and every record empty.
    pub fn formatted(md: &Metadata) -> Self {
        let mut ix = Index {
            buf: vec![0u8; INDEX_SIZE],
        };
        ix.set_metadata(md);
        let empty = Record::empty().encode();
        for n in 0..MAX_RECORDS {
            ix.buf[record_pos(n)..record_pos(n) + RECORD_SIZE].copy_from_slice(&empty);
        }
        ix
    }

    pub fn from_bytes(b: &[u8]) -> Self {
        let mut buf = vec![0u8; INDEX_SIZE];
        let n = b.len().min(INDEX_SIZE);
        buf[..n].copy_from_slice(&b[..n]);
        Index { buf }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    pub fn metadata(&self) -> std::result::Result<Metadata, String> {
        Metadata::decode(&self.buf[..METADATA_SIZE])
    }

    pub fn set_metadata(&mut self, md: &Metadata) {
        self.buf[..METADATA_SIZE].copy_from_slice(&md.encode());
    }

    pub fn raw_record(&self, n: usize) -> &[u8] {
        &self.buf[record_pos(n)..record_pos(n) + RECORD_SIZE]
    }

    pub fn record(&self, n: usize) -> std::result::Result<Record, String> {
        Record::decode(self.raw_record(n))
    }

    pub fn set_record(&mut self, n: usize, r: &Record) {
        self.buf[record_pos(n)..record_pos(n) + RECORD_SIZE].copy_from_slice(&r.encode());
    }

    /// The record whose id field is `lease_id` (vdsm compares the 48 name
    /// bytes and the NUL after them, without parsing the record).
    pub fn find(&self, lease_id: &str) -> Option<usize> {
        let mut key = [0u8; ID_SIZE + 1];
        put_padded(&mut key[..ID_SIZE], lease_id.as_bytes());
        (0..MAX_RECORDS).find(|&n| self.raw_record(n)[..ID_SIZE + 1] == key)
    }

    /// The first record that is exactly vdsm's empty record.
    pub fn find_free(&self) -> Option<usize> {
        let empty = Record::empty().encode();
        (0..MAX_RECORDS).find(|&n| self.raw_record(n) == empty)
    }

    /// The `block_size` block holding record `n`: its position in the index
    /// and its bytes. vdsm writes one block per record change, so that the
    /// change is atomic on storage.
    pub fn block_of(&self, n: usize, block_size: usize) -> (usize, &[u8]) {
        let start = record_pos(n) / block_size * block_size;
        (start, &self.buf[start..start + block_size])
    }
}

fn record_pos(n: usize) -> usize {
    RECORD_BASE + n * RECORD_SIZE
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// How to reach a volume.
#[derive(Clone, Debug)]
pub struct Opts {
    /// `-Z`: the sector size; default the device's (512 for files).
    pub sector_size: Option<u32>,
    /// `-A`: the slot size; default found from where the index is (or the
    /// old sanlock default for the sector size, when formatting).
    pub align_size: Option<u32>,
    pub timeout: Duration,
    /// Overwrite a lease that is held, or format over a populated index.
    pub force: bool,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            sector_size: None,
            align_size: None,
            timeout: Duration::from_secs(crate::direct::DEFAULT_IO_TIMEOUT as u64),
            force: false,
        }
    }
}

/// What `lookup` and `add` return: the four things a sanlock resource
/// needs (libvirt's `<lease>`: lockspace, key, target path and offset).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LeaseInfo {
    pub lockspace: String,
    pub resource: String,
    pub path: String,
    pub offset: u64,
}

impl LeaseInfo {
    /// sanlock's RESOURCE string, `LS:NAME:PATH:OFFSET`.
    pub fn sanlock_string(&self) -> String {
        format!(
            "{}:{}:{}:{}",
            self.lockspace,
            self.resource,
            crate::lease_str::escape_path(&self.path),
            self.offset
        )
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ListedLease {
    pub resource: String,
    pub recnum: usize,
    pub offset: u64,
    pub updating: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Listing {
    pub metadata: Metadata,
    pub sector_size: u32,
    pub align_size: u32,
    pub leases: Vec<ListedLease>,
    /// Records that could not be parsed: (record number, reason).
    pub bad_records: Vec<(usize, String)>,
}

fn sector_of(disk: &Disk, opts: &Opts) -> Result<u32> {
    let ss = opts.sector_size.unwrap_or(disk.device_sector);
    disk.check_sector_size(ss)?;
    Ok(ss)
}

fn aligns_for(ss: u32) -> &'static [u32] {
    if ss == 512 {
        &[ALIGN_1M]
    } else {
        &[ALIGN_1M, ALIGN_2M, ALIGN_4M, ALIGN_8M]
    }
}

/// The geometry of an existing volume: `-A`, or the one align size at
/// which an index magic is found (reading only).
fn existing_geometry(disk: &Disk, opts: &Opts) -> Result<Geometry> {
    let ss = sector_of(disk, opts)?;
    if let Some(a) = opts.align_size {
        return Ok(Geometry::new(ss, a)?);
    }
    let mut found = Vec::new();
    for &a in aligns_for(ss) {
        if disk.size < a as u64 + INDEX_SIZE as u64 {
            continue;
        }
        let b = disk.read(a as u64, ss as usize, opts.timeout)?;
        if b[0..4] == INDEX_MAGIC.to_be_bytes() {
            found.push(a);
        }
    }
    match found.as_slice() {
        [a] => Ok(Geometry::new(ss, *a)?),
        // Nothing found: the default place, whose read then says what is there.
        [] => Ok(Geometry::old_default(ss).expect("512 or 4096")),
        many => Err(XleasesError::Ambiguous {
            path: disk.path().to_path_buf(),
            found: many
                .iter()
                .map(|&a| crate::geometry::align_str(a))
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

fn read_index(disk: &Disk, g: Geometry, timeout: Duration) -> Result<Index> {
    let off = g.align_size as u64;
    if disk.size < off + INDEX_SIZE as u64 {
        return Err(XleasesError::Truncated {
            path: disk.path().to_path_buf(),
            offset: off,
            expected: INDEX_SIZE,
            available: disk.size.saturating_sub(off),
        });
    }
    let b = disk.read(off, INDEX_SIZE, timeout)?;
    Ok(Index::from_bytes(&b))
}

fn index_area(disk: &Disk, g: Geometry, timeout: Duration) -> Result<Area<'_>> {
    Ok(Area::new(
        disk,
        g.align_size as u64,
        INDEX_SIZE as u64,
        timeout,
    )?)
}

/// Writes the whole index marked updating, then its first block with the
/// flag cleared (vdsm's format and rebuild): a crash in between leaves an
/// index that says it is unfinished.
fn dump_index(disk: &Disk, g: Geometry, ix: &mut Index, lockspace: &str) -> Result<()> {
    let area = index_area(disk, g, WRITE_INIT_IO_TIMEOUT)?;
    ix.set_metadata(&Metadata::new(lockspace, now_secs(), true));
    area.write(0, ix.bytes())?;
    ix.set_metadata(&Metadata::new(lockspace, now_secs(), false));
    area.write(0, &ix.bytes()[..g.sector_size as usize])?;
    Ok(())
}

/// A slot's leader, and whether it shows a lease someone holds.
fn slot_leader(disk: &Disk, g: Geometry, offset: u64, timeout: Duration) -> Result<LeaderRecord> {
    let b = disk.read(offset, g.sector_size as usize, timeout)?;
    Ok(LeaderRecord::decode(&b).expect("a sector holds a leader"))
}

fn held(lr: &LeaderRecord) -> bool {
    lr.verify_paxos(None, None, 0).is_ok() && lr.timestamp != 0 && lr.owner_id != 0
}

fn refuse_if_held(disk: &Disk, lr: &LeaderRecord, offset: u64, force: bool) -> Result<()> {
    if held(lr) && !force {
        return Err(XleasesError::Held {
            path: disk.path().to_path_buf(),
            offset,
            owner_id: lr.owner_id,
            lver: lr.lver,
            resource: lr.resource_name.to_string_lossy(),
        });
    }
    Ok(())
}

/// Writes a fresh resource lease (as sanlock's write_resource with the
/// volume's sector and align flags) at `offset`, confined to its slot.
fn write_resource(
    disk: &Disk,
    g: Geometry,
    offset: u64,
    lockspace: &Name,
    resource: &Name,
) -> Result<()> {
    let max = g.max_hosts();
    let buf = resource_area_bytes(g, max, max as u64, lockspace, resource, false);
    Area::new(disk, offset, g.align_size as u64, WRITE_INIT_IO_TIMEOUT)?.write(0, &buf)?;
    Ok(())
}

fn slot_fits(disk: &Disk, g: Geometry, offset: u64) -> bool {
    offset + g.align_size as u64 <= disk.size
}

/// `format`: a new, empty index for `lockspace`. Refuses (unless forced)
/// to replace an index that maps leases, or to write over a sanlock
/// record, which says the path or the align size is not the intended one.
pub fn format(path: &Path, lockspace: &str, opts: &Opts) -> Result<Geometry> {
    check_name("lockspace", lockspace)?;
    let disk = Disk::open(path)?;
    let ss = sector_of(&disk, opts)?;
    let g = match opts.align_size {
        Some(a) => Geometry::new(ss, a)?,
        None => Geometry::old_default(ss).expect("512 or 4096"),
    };
    let need = RESERVED_SLOTS * g.align_size as u64;
    if disk.size < need {
        return Err(XleasesError::TooSmall {
            path: path.to_path_buf(),
            size: disk.size,
            align: g.align_size,
            need,
        });
    }
    if !opts.force {
        let old = read_index(&disk, g, opts.timeout)?;
        let le = u32::from_le_bytes(old.bytes()[0..4].try_into().unwrap());
        let refuse = |why: String| XleasesError::NotOurs {
            path: path.to_path_buf(),
            why,
        };
        if old.metadata().is_ok() {
            let used = (0..MAX_RECORDS)
                .filter(|&n| old.record(n).is_ok_and(|r| !r.is_empty()))
                .count();
            if used > 0 {
                return Err(refuse(format!(
                    "its index maps {used} leases, which a new index would forget"
                )));
            }
        } else if matches!(
            le,
            ondisk::DELTA_DISK_MAGIC
                | ondisk::PAXOS_DISK_MAGIC
                | ondisk::PAXOS_DISK_CLEAR
                | ondisk::RINDEX_DISK_MAGIC
        ) {
            return Err(refuse(format!(
                "offset {} holds {}, not an xleases index (wrong volume or -A?)",
                g.align_size,
                ondisk::describe_magic(le)
            )));
        }
    }
    let mut ix = Index::formatted(&Metadata::new(lockspace, now_secs(), true));
    dump_index(&disk, g, &mut ix, lockspace)?;
    Ok(g)
}

/// An open volume whose index was read and found usable.
pub struct Volume {
    disk: Disk,
    pub geometry: Geometry,
    index: Index,
    pub metadata: Metadata,
    timeout: Duration,
}

impl Volume {
    /// Reads the index; refuses invalid metadata and an index left updating.
    pub fn open(path: &Path, opts: &Opts) -> Result<Volume> {
        let disk = Disk::open(path)?;
        let g = existing_geometry(&disk, opts)?;
        let index = read_index(&disk, g, opts.timeout)?;
        let metadata = index
            .metadata()
            .map_err(|reason| XleasesError::InvalidMetadata {
                path: path.to_path_buf(),
                offset: g.align_size as u64,
                reason,
            })?;
        if metadata.updating {
            return Err(XleasesError::IndexUpdating {
                path: path.to_path_buf(),
                lockspace: metadata.lockspace,
            });
        }
        Ok(Volume {
            disk,
            geometry: g,
            index,
            metadata,
            timeout: opts.timeout,
        })
    }

    pub fn path(&self) -> &Path {
        self.disk.path()
    }

    fn info(&self, id: &str, recnum: usize) -> LeaseInfo {
        LeaseInfo {
            lockspace: self.metadata.lockspace.clone(),
            resource: id.to_string(),
            // Absolute: sanlock's daemon and libvirt do not share our cwd.
            path: std::path::absolute(self.path())
                .unwrap_or_else(|_| self.path().to_path_buf())
                .display()
                .to_string(),
            offset: lease_offset(recnum, self.geometry.align_size),
        }
    }

    /// Record `n` parsed, with its written offset checked against its slot:
    /// vdsm never uses that offset, but one that disagrees means the index
    /// was written with another align size, or is damaged.
    fn record(&self, n: usize) -> Result<Record> {
        let bad = |reason| XleasesError::InvalidRecord {
            path: self.path().to_path_buf(),
            recnum: n,
            reason,
        };
        let r = self.index.record(n).map_err(bad)?;
        let slot = lease_offset(n, self.geometry.align_size);
        if !r.is_empty() && r.offset != slot {
            return Err(bad(format!(
                "lease {:?} says offset {}, its slot is at {slot}",
                r.resource, r.offset
            )));
        }
        Ok(r)
    }

    pub fn lookup(&self, id: &str) -> Result<LeaseInfo> {
        check_name("lease id", id)?;
        let n = self
            .index
            .find(id)
            .ok_or_else(|| XleasesError::NoSuchLease(id.into()))?;
        // A record left updating by an older vdsm is a lease not yet created.
        if self.record(n)?.updating {
            return Err(XleasesError::NoSuchLease(id.into()));
        }
        Ok(self.info(id, n))
    }

    /// Writes the resource lease at the first free slot, then the record
    /// that makes it visible: a failure in between leaves the index as it was.
    pub fn add(&mut self, id: &str, force: bool) -> Result<LeaseInfo> {
        let name = check_name("lease id", id)?;
        let n = match self.index.find(id) {
            Some(n) if self.record(n)?.updating => n,
            Some(_) => return Err(XleasesError::LeaseExists(id.into())),
            None => self
                .index
                .find_free()
                .ok_or_else(|| XleasesError::NoSpace {
                    id: id.into(),
                    why: format!("all {MAX_RECORDS} index records are used"),
                })?,
        };
        let g = self.geometry;
        let offset = lease_offset(n, g.align_size);
        if !slot_fits(&self.disk, g, offset) {
            return Err(XleasesError::NoSpace {
                id: id.into(),
                why: format!(
                    "the first free slot (record {n}) is at offset {offset}, past the end of the {}-byte volume; extend the volume",
                    self.disk.size
                ),
            });
        }
        let lr = slot_leader(&self.disk, g, offset, self.timeout)?;
        refuse_if_held(&self.disk, &lr, offset, force)?;
        let ls = Name::new(&self.metadata.lockspace).expect("decoded from 48 bytes");
        write_resource(&self.disk, g, offset, &ls, &name)?;
        self.write_record(
            n,
            &Record {
                resource: id.into(),
                offset,
                updating: false,
            },
        )?;
        Ok(self.info(id, n))
    }

    /// Frees the record, then clears the resource as vdsm does (a leader
    /// with empty names). The index is what counts, so a failure to clear
    /// is returned as a warning, not an error.
    pub fn remove(&mut self, id: &str, force: bool) -> Result<(u64, Option<XleasesError>)> {
        check_name("lease id", id)?;
        let n = self
            .index
            .find(id)
            .ok_or_else(|| XleasesError::NoSuchLease(id.into()))?;
        let g = self.geometry;
        let offset = lease_offset(n, g.align_size);
        let fits = slot_fits(&self.disk, g, offset);
        if fits {
            let lr = slot_leader(&self.disk, g, offset, self.timeout)?;
            refuse_if_held(&self.disk, &lr, offset, force)?;
        }
        self.write_record(n, &Record::empty())?;
        let cleared = if fits {
            write_resource(&self.disk, g, offset, &Name::default(), &Name::default()).err()
        } else {
            None
        };
        Ok((offset, cleared))
    }

    fn write_record(&mut self, n: usize, r: &Record) -> Result<()> {
        let bs = self.geometry.sector_size as usize;
        let mut next = self.index.clone();
        next.set_record(n, r);
        let (start, block) = next.block_of(n, bs);
        index_area(&self.disk, self.geometry, self.timeout)?.write(start as u64, block)?;
        self.index = next;
        Ok(())
    }

    /// Every used record (also those left updating), and the unparsable ones.
    pub fn list(&self) -> Listing {
        let mut leases = Vec::new();
        let mut bad_records = Vec::new();
        for n in 0..MAX_RECORDS {
            match self.record(n) {
                Ok(r) if !r.is_empty() => leases.push(ListedLease {
                    resource: r.resource,
                    recnum: n,
                    offset: lease_offset(n, self.geometry.align_size),
                    updating: r.updating,
                }),
                Ok(_) => {}
                Err(e) => bad_records.push((n, e.to_string())),
            }
        }
        Listing {
            metadata: self.metadata.clone(),
            sector_size: self.geometry.sector_size,
            align_size: self.geometry.align_size,
            leases,
            bad_records,
        }
    }
}

/// One change `rebuild` made.
#[derive(Clone, Debug, Serialize)]
pub struct RebuildAction {
    pub recnum: usize,
    pub offset: u64,
    pub action: &'static str,
    pub resource: String,
}

enum SlotWrite {
    Resource(Name),
    Clear,
}

/// `rebuild`: makes the index and the leases on storage agree, as vdsm's
/// rebuild_index does (the index wins over a lease, a lease fills a
/// damaged record). Unlike vdsm, every slot is read and judged before
/// anything is written, so an unreadable or held lease stops it with
/// nothing changed.
pub fn rebuild(path: &Path, lockspace: Option<&str>, opts: &Opts) -> Result<Vec<RebuildAction>> {
    let disk = Disk::open(path)?;
    let g = existing_geometry(&disk, opts)?;
    let mut ix = read_index(&disk, g, opts.timeout)?;
    let md = ix
        .metadata()
        .map_err(|reason| XleasesError::InvalidMetadata {
            path: path.to_path_buf(),
            offset: g.align_size as u64,
            reason,
        })?;
    let lockspace = lockspace.unwrap_or(&md.lockspace).to_string();
    let ls_name = check_name("lockspace", &lockspace)?;

    let mut actions = Vec::new();
    let mut writes: Vec<(u64, SlotWrite)> = Vec::new();
    let mut act = |recnum, offset, action, resource: &str| {
        actions.push(RebuildAction {
            recnum,
            offset,
            action,
            resource: resource.to_string(),
        })
    };
    for n in 0..MAX_RECORDS {
        let offset = lease_offset(n, g.align_size);
        if !slot_fits(&disk, g, offset) {
            ix.set_record(n, &Record::empty());
            continue;
        }
        let lr = slot_leader(&disk, g, offset, opts.timeout)?;
        let res = match lr.verify_paxos(None, None, 0) {
            Ok(()) if lr.resource_name.is_empty() => None,
            Ok(()) => Some(lr.resource_name.to_string_lossy()),
            Err(e) if e.sanlk_rv() == crate::rv::SANLK_LEADER_MAGIC => None,
            Err(source) => {
                return Err(XleasesError::UnreadableLease {
                    path: path.to_path_buf(),
                    offset,
                    source,
                });
            }
        };
        let record = ix.record(n).and_then(|r| {
            if !r.is_empty() && r.offset != offset {
                Err(format!("offset {} is not its slot's", r.offset))
            } else {
                Ok(r)
            }
        });
        let mut overwrite = |w: SlotWrite| -> Result<()> {
            refuse_if_held(&disk, &lr, offset, opts.force)?;
            writes.push((offset, w));
            Ok(())
        };
        match (record, res) {
            (Err(_), Some(name)) => {
                // vdsm also finds the damaged record itself here (its name
                // bytes may be intact) and then clears the lease; a record
                // only duplicates the lease if it is another one.
                let elsewhere = ix.find(&name).is_some_and(|m| m != n);
                if check_name("lease id", &name).is_ok() && !elsewhere {
                    ix.set_record(
                        n,
                        &Record {
                            resource: name.clone(),
                            offset,
                            updating: false,
                        },
                    );
                    act(n, offset, "record restored from lease", &name);
                } else {
                    ix.set_record(n, &Record::empty());
                    overwrite(SlotWrite::Clear)?;
                    act(
                        n,
                        offset,
                        "damaged record and duplicate lease cleared",
                        &name,
                    );
                }
            }
            (Err(_), None) => {
                ix.set_record(n, &Record::empty());
                act(n, offset, "damaged record cleared", "");
            }
            (Ok(r), Some(name)) if r.is_empty() => {
                overwrite(SlotWrite::Clear)?;
                act(n, offset, "leftover lease cleared", &name);
            }
            (Ok(r), None) if !r.is_empty() => {
                overwrite(SlotWrite::Resource(check_name("lease id", &r.resource)?))?;
                act(n, offset, "missing lease written", &r.resource);
            }
            (Ok(r), Some(name)) if r.resource != name => {
                overwrite(SlotWrite::Resource(check_name("lease id", &r.resource)?))?;
                act(n, offset, "lease renamed to its record", &r.resource);
            }
            (Ok(_), _) => {}
        }
    }
    for (offset, w) in writes {
        match w {
            SlotWrite::Resource(name) => write_resource(&disk, g, offset, &ls_name, &name)?,
            SlotWrite::Clear => {
                write_resource(&disk, g, offset, &Name::default(), &Name::default())?
            }
        }
    }
    dump_index(&disk, g, &mut ix, &lockspace)?;
    Ok(actions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_vdsms() {
        assert_eq!(INDEX_SIZE, 253_952);
        assert_eq!(MAX_RECORDS, 3960);
        assert_eq!(lease_offset(0, ALIGN_1M), 3 << 20);
        assert_eq!(lease_offset(2, ALIGN_8M), 5 * (8 << 20));
    }

    #[test]
    fn metadata_bytes() {
        let b = Metadata::new("LS", 1_500_000_000, false).encode();
        assert_eq!(&b[0..4], &[0x12, 0x15, 0x20, 0x16]);
        assert_eq!(b[4], 0);
        assert_eq!(&b[5..9], b"0001");
        assert_eq!(b[9], 0);
        assert_eq!(&b[10..12], b"LS");
        assert!(b[12..59].iter().all(|&c| c == 0));
        assert_eq!(&b[59..69], b"1500000000");
        assert_eq!(b[69], 0);
        assert_eq!(b[70], b'-');
        assert!(b[71..511].iter().all(|&c| c == 0));
        assert_eq!(b[511], b'\n');
        let back = Metadata::decode(&b).unwrap();
        assert_eq!(back, Metadata::new("LS", 1_500_000_000, false));
        let mut u = b;
        u[70] = b'u';
        assert!(Metadata::decode(&u).unwrap().updating);
    }

    #[test]
    fn metadata_refusals() {
        let good = Metadata::new("LS", 1, false).encode();
        let mut b = good;
        b[0] = 0x13;
        assert!(Metadata::decode(&b).unwrap_err().contains("magic"));
        let mut b = good;
        b[5..9].copy_from_slice(b"0002");
        assert!(Metadata::decode(&b).unwrap_err().contains("version 2"));
        let mut b = good;
        b[10] = 0xff;
        assert!(Metadata::decode(&b).unwrap_err().contains("lockspace"));
        let mut b = good;
        b[60] = b'x';
        assert!(Metadata::decode(&b).unwrap_err().contains("mtime"));
    }

    #[test]
    fn record_bytes() {
        let r = Record {
            resource: "vm-1".into(),
            offset: 3 << 20,
            updating: false,
        };
        let b = r.encode();
        assert_eq!(&b[..4], b"vm-1");
        assert!(b[4..49].iter().all(|&c| c == 0));
        assert_eq!(&b[49..60], b"00003145728");
        assert_eq!(&b[60..64], b"\0--\n");
        assert_eq!(Record::decode(&b).unwrap(), r);
        let e = Record::empty().encode();
        assert!(e[..49].iter().all(|&c| c == 0));
        assert_eq!(&e[49..], b"00000000000\0--\n");
        assert!(Record::decode(&[0u8; 64]).is_err(), "zeroes are no record");
    }

    #[test]
    fn find_and_blocks() {
        let mut ix = Index::formatted(&Metadata::new("LS", 1, false));
        assert_eq!(ix.find_free(), Some(0));
        ix.set_record(
            0,
            &Record {
                resource: "a".into(),
                offset: 3 << 20,
                updating: false,
            },
        );
        assert_eq!(ix.find("a"), Some(0));
        assert_eq!(ix.find("ab"), None);
        assert_eq!(ix.find_free(), Some(1));
        // Record 7 (bytes 960..1024) is in the second 512 block, the first 4K one.
        assert_eq!(ix.block_of(7, 512).0, 512);
        assert_eq!(ix.block_of(7, 4096).0, 0);
        assert_eq!(ix.block_of(55, 4096).0, 0);
        assert_eq!(ix.block_of(56, 4096).0, 4096);
    }
}
