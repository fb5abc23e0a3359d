//! The whiteboard: one checksummed sector per host (sector 0 for the
//! cluster) where agents publish what they run and how fit they are
//! (docs/ha-design.md has the layout). The codec is pure; [`Whiteboard`]
//! is the O_DIRECT edge through [`crate::io`]; [`Freshness`] judges a
//! host's sector alive by seeing its seq change on our own clock.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use crate::io::{Area, Disk, IoError};
use crate::ondisk::sanlock_crc32c;

pub use super::config::{MAX_HOST_ID, MAX_VMS};

pub const CLUSTER_MAGIC: [u8; 8] = *b"HACTLWBC";
pub const HOST_MAGIC: [u8; 8] = *b"HACTLWBH";
pub const VERSION: u32 = 1;
/// Cluster flags.
pub const GLOBAL_MAINTENANCE: u32 = 1;
/// Host flags.
pub const LOCAL_MAINTENANCE: u32 = 1;
pub const MAX_SCORE: u32 = 3400;
/// The checksum covers `0..CRC_OFF` and is stored at `CRC_OFF..512`.
const CRC_OFF: usize = 508;
const RECORD: usize = 512;
const BITMAP_BYTES: usize = MAX_VMS / 8;
const RUNNING_OFF: usize = 64;
const FAILED_OFF: usize = RUNNING_OFF + BITMAP_BYTES;
/// The fence report: victim u64, victim generation u64, phase u32.
const FENCE_OFF: usize = FAILED_OFF + BITMAP_BYTES;
/// The health record (after the fence report): flags u32, then one u16
/// of penalty points per [`super::health::PENALTY_KINDS`]. Sectors written
/// before it have zeros there: "no health reported", read as healthy.
const HEALTH_OFF: usize = FENCE_OFF + 20;
/// Health flags: the record is filled in; every network check failed;
/// the isolation policy is being applied.
pub const HEALTH_REPORTED: u32 = 1;
pub const HEALTH_NETWORK_LOST: u32 = 2;
pub const HEALTH_ISOLATED: u32 = 4;
const _: () = assert!(HEALTH_OFF + 4 + 2 * HEALTH_KINDS <= CRC_OFF);
/// Fence report phases.
pub const FENCE_NONE: u32 = 0;
pub const FENCE_RUNNING: u32 = 1;
pub const FENCE_DECLARED: u32 = 2;
pub const FENCE_FAILED: u32 = 3;
/// Each I/O's bound, sanlock's default io_timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// One bit per config VM (bit i = config VM i).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct VmBitmap(pub [u8; BITMAP_BYTES]);

impl Default for VmBitmap {
    fn default() -> Self {
        VmBitmap([0; BITMAP_BYTES])
    }
}

impl std::fmt::Debug for VmBitmap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl VmBitmap {
    pub fn get(&self, i: usize) -> bool {
        i < MAX_VMS && self.0[i / 8] & (1 << (i % 8)) != 0
    }
    /// Panics past [`MAX_VMS`]: config validation keeps indexes below it.
    pub fn set(&mut self, i: usize, on: bool) {
        if on {
            self.0[i / 8] |= 1 << (i % 8);
        } else {
            self.0[i / 8] &= !(1 << (i % 8));
        }
    }
    pub fn count(&self) -> u32 {
        self.0.iter().map(|b| b.count_ones()).sum()
    }
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        (0..MAX_VMS).filter(|&i| self.get(i))
    }
    pub fn from_indexes(idx: impl IntoIterator<Item = usize>) -> Self {
        let mut b = VmBitmap::default();
        for i in idx {
            b.set(i, true);
        }
        b
    }
}

/// Why a sector could not be decoded. Never guessed at, never overwritten
/// (except by its owner writing its own sector anew).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SectorError {
    #[error("whiteboard sector {sector}: foreign magic {found:02x?} (expected {expected:?})")]
    BadMagic {
        sector: u64,
        found: [u8; 8],
        expected: &'static str,
    },
    #[error("whiteboard sector {sector}: version {found}, this hactl knows version {VERSION}")]
    BadVersion { sector: u64, found: u32 },
    #[error(
        "whiteboard sector {sector}: checksum mismatch (stored {stored:#010x}, computed {computed:#010x}): damaged"
    )]
    BadChecksum {
        sector: u64,
        stored: u32,
        computed: u32,
    },
    #[error("whiteboard sector {sector}: {message}")]
    BadContent { sector: u64, message: String },
    #[error("whiteboard sector {sector}: {len} bytes, a sector is 512 or 4096")]
    BadLength { sector: u64, len: usize },
}

fn check_sector_size(ss: u32) -> Result<(), String> {
    if ss == 512 || ss == 4096 {
        Ok(())
    } else {
        Err(format!("sector size {ss}: the whiteboard uses 512 or 4096"))
    }
}

/// Common part of both decoders: None when never written, else the first
/// 512 bytes after magic, version and checksum were checked.
fn open_record<'a>(
    sector: u64,
    b: &'a [u8],
    magic: [u8; 8],
    expected: &'static str,
) -> Result<Option<&'a [u8]>, SectorError> {
    if b.len() != 512 && b.len() != 4096 {
        return Err(SectorError::BadLength {
            sector,
            len: b.len(),
        });
    }
    let r = &b[..RECORD];
    if r.iter().all(|&x| x == 0) {
        return Ok(None);
    }
    if r[0..8] != magic {
        return Err(SectorError::BadMagic {
            sector,
            found: r[0..8].try_into().unwrap(),
            expected,
        });
    }
    let version = u32_at(r, 8);
    if version != VERSION {
        return Err(SectorError::BadVersion {
            sector,
            found: version,
        });
    }
    let stored = u32_at(r, CRC_OFF);
    let computed = sanlock_crc32c(&r[..CRC_OFF]);
    if stored != computed {
        return Err(SectorError::BadChecksum {
            sector,
            stored,
            computed,
        });
    }
    Ok(Some(r))
}

fn seal(mut b: Vec<u8>) -> Vec<u8> {
    let crc = sanlock_crc32c(&b[..CRC_OFF]);
    put_u32(&mut b, CRC_OFF, crc);
    b
}

/// Sector 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClusterSector {
    pub sector_size: u32,
    pub flags: u32,
    pub set_by_host: u64,
    pub set_at_unix: u64,
}

impl ClusterSector {
    pub fn global_maintenance(&self) -> bool {
        self.flags & GLOBAL_MAINTENANCE != 0
    }

    /// One sector of `self.sector_size` bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; self.sector_size.max(RECORD as u32) as usize];
        b[0..8].copy_from_slice(&CLUSTER_MAGIC);
        put_u32(&mut b, 8, VERSION);
        put_u32(&mut b, 12, self.sector_size);
        put_u32(&mut b, 16, self.flags);
        put_u64(&mut b, 20, self.set_by_host);
        put_u64(&mut b, 28, self.set_at_unix);
        seal(b)
    }

    /// `Ok(None)`: never written (all zeros).
    pub fn decode(b: &[u8]) -> Result<Option<ClusterSector>, SectorError> {
        let Some(r) = open_record(0, b, CLUSTER_MAGIC, "HACTLWBC")? else {
            return Ok(None);
        };
        let sector_size = u32_at(r, 12);
        check_sector_size(sector_size)
            .map_err(|message| SectorError::BadContent { sector: 0, message })?;
        Ok(Some(ClusterSector {
            sector_size,
            flags: u32_at(r, 16),
            set_by_host: u64_at(r, 20),
            set_at_unix: u64_at(r, 28),
        }))
    }
}

/// Sector `host_id`: written only by that host's agent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostSector {
    pub host_id: u64,
    /// The host's lockspace generation when written.
    pub generation: u64,
    /// +1 each write; readers judge freshness by seeing it change.
    pub seq: u64,
    /// Wall clock, for display only.
    pub written_unix: u64,
    pub score: u32,
    pub flags: u32,
    pub config_digest: u32,
    pub running: VmBitmap,
    pub failed: VmBitmap,
    /// What this host's fencer does or did last (progress others see).
    pub fence: FenceReport,
    /// Its monitors' verdict (the reasons of its score).
    pub health: HealthRecord,
}

/// A host's health in its sector: which penalties make up its score.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HealthRecord {
    /// [`HEALTH_REPORTED`], [`HEALTH_NETWORK_LOST`], [`HEALTH_ISOLATED`].
    pub flags: u32,
    /// Points per [`super::health::PENALTY_KINDS`].
    pub points: [u16; HEALTH_KINDS],
}

pub const HEALTH_KINDS: usize = super::health::PENALTY_KINDS.len();

impl HealthRecord {
    pub fn isolated(&self) -> bool {
        self.flags & HEALTH_ISOLATED != 0
    }
    pub fn network_lost(&self) -> bool {
        self.flags & HEALTH_NETWORK_LOST != 0
    }
    /// "gateway -1600, cpu_load -120" or "healthy" / "not reported".
    pub fn summary(&self) -> String {
        if self.flags & HEALTH_REPORTED == 0 {
            return "not reported".into();
        }
        let p: Vec<String> = super::health::PENALTY_KINDS
            .iter()
            .zip(self.points)
            .filter(|(_, p)| *p > 0)
            .map(|(k, p)| format!("{} -{p}", k.as_str()))
            .collect();
        let mut s = if p.is_empty() {
            "healthy".to_string()
        } else {
            p.join(", ")
        };
        if self.isolated() {
            s.push_str(", ISOLATED");
        } else if self.network_lost() {
            s.push_str(", all networks lost");
        }
        s
    }
}

/// A host's fence report in its sector: it fences (or fenced) `victim` in
/// `victim_generation`; the others leave that victim to it while its
/// sector stays fresh.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FenceReport {
    pub victim: u64,
    pub victim_generation: u64,
    /// [`FENCE_NONE`], [`FENCE_RUNNING`], [`FENCE_DECLARED`] or [`FENCE_FAILED`].
    pub phase: u32,
}

impl FenceReport {
    pub fn phase_name(&self) -> &'static str {
        match self.phase {
            FENCE_NONE => "none",
            FENCE_RUNNING => "fencing",
            FENCE_DECLARED => "declared dead",
            FENCE_FAILED => "fence failed",
            _ => "unknown",
        }
    }
}

impl HostSector {
    pub fn local_maintenance(&self) -> bool {
        self.flags & LOCAL_MAINTENANCE != 0
    }

    /// VMs running there (the `running` count field).
    pub fn running_count(&self) -> u32 {
        self.running.count()
    }

    /// One sector of `sector_size` bytes (512 or 4096; bytes past 512 zero).
    pub fn encode(&self, sector_size: u32) -> Vec<u8> {
        let mut b = vec![0u8; sector_size.max(RECORD as u32) as usize];
        b[0..8].copy_from_slice(&HOST_MAGIC);
        put_u32(&mut b, 8, VERSION);
        put_u64(&mut b, 12, self.host_id);
        put_u64(&mut b, 20, self.generation);
        put_u64(&mut b, 28, self.seq);
        put_u64(&mut b, 36, self.written_unix);
        put_u32(&mut b, 44, self.score);
        put_u32(&mut b, 48, self.flags);
        put_u32(&mut b, 52, self.config_digest);
        put_u32(&mut b, 56, self.running.count());
        b[RUNNING_OFF..FAILED_OFF].copy_from_slice(&self.running.0);
        b[FAILED_OFF..FAILED_OFF + BITMAP_BYTES].copy_from_slice(&self.failed.0);
        put_u64(&mut b, FENCE_OFF, self.fence.victim);
        put_u64(&mut b, FENCE_OFF + 8, self.fence.victim_generation);
        put_u32(&mut b, FENCE_OFF + 16, self.fence.phase);
        put_u32(&mut b, HEALTH_OFF, self.health.flags);
        for (k, p) in self.health.points.iter().enumerate() {
            b[HEALTH_OFF + 4 + 2 * k..HEALTH_OFF + 6 + 2 * k].copy_from_slice(&p.to_le_bytes());
        }
        seal(b)
    }

    /// Decodes the sector read at position `sector` (its host_id must be
    /// `sector`). `Ok(None)`: never written.
    pub fn decode(sector: u64, b: &[u8]) -> Result<Option<HostSector>, SectorError> {
        let Some(r) = open_record(sector, b, HOST_MAGIC, "HACTLWBH")? else {
            return Ok(None);
        };
        let bad = |message: String| SectorError::BadContent { sector, message };
        let host_id = u64_at(r, 12);
        if host_id != sector {
            return Err(bad(format!("holds host_id {host_id}, not {sector}")));
        }
        let score = u32_at(r, 44);
        if score > MAX_SCORE {
            return Err(bad(format!("score {score} above {MAX_SCORE}")));
        }
        let running = VmBitmap(r[RUNNING_OFF..FAILED_OFF].try_into().unwrap());
        let failed = VmBitmap(r[FAILED_OFF..FAILED_OFF + BITMAP_BYTES].try_into().unwrap());
        let count = u32_at(r, 56);
        if count != running.count() {
            return Err(bad(format!(
                "running count {count} but {} bits set",
                running.count()
            )));
        }
        Ok(Some(HostSector {
            host_id,
            generation: u64_at(r, 20),
            seq: u64_at(r, 28),
            written_unix: u64_at(r, 36),
            score,
            flags: u32_at(r, 48),
            config_digest: u32_at(r, 52),
            running,
            failed,
            fence: FenceReport {
                victim: u64_at(r, FENCE_OFF),
                victim_generation: u64_at(r, FENCE_OFF + 8),
                phase: u32_at(r, FENCE_OFF + 16),
            },
            health: HealthRecord {
                flags: u32_at(r, HEALTH_OFF),
                points: std::array::from_fn(|k| {
                    u16::from_le_bytes([r[HEALTH_OFF + 4 + 2 * k], r[HEALTH_OFF + 5 + 2 * k]])
                }),
            },
        }))
    }
}

/// What one read of the whole whiteboard found.
#[derive(Debug)]
pub struct BoardRead {
    pub cluster: Result<Option<ClusterSector>, SectorError>,
    /// host_id 1..=max_hosts, each decoded on its own: one damaged sector
    /// does not hide the others.
    pub hosts: Vec<(u64, Result<Option<HostSector>, SectorError>)>,
}

impl BoardRead {
    /// Global maintenance per sector 0; a damaged or unformatted sector 0
    /// is not maintenance (the error is reported by whoever shows it).
    pub fn global_maintenance(&self) -> bool {
        matches!(&self.cluster, Ok(Some(c)) if c.global_maintenance())
    }

    pub fn host(&self, host_id: u64) -> Option<&HostSector> {
        self.hosts
            .iter()
            .find(|(h, _)| *h == host_id)
            .and_then(|(_, r)| r.as_ref().ok().and_then(|s| s.as_ref()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WhiteboardError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error(transparent)]
    Sector(#[from] SectorError),
    #[error("whiteboard {path}: {message}")]
    Invalid { path: String, message: String },
}

/// An open whiteboard (file or block device, offset 0).
pub struct Whiteboard {
    disk: Disk,
    sector_size: u32,
    timeout: Duration,
}

impl Whiteboard {
    pub fn open(path: &Path, sector_size: u32) -> Result<Whiteboard, WhiteboardError> {
        Self::open_disk(Disk::open(path)?, sector_size)
    }

    /// For `status`: never writes.
    pub fn open_readonly(path: &Path, sector_size: u32) -> Result<Whiteboard, WhiteboardError> {
        Self::open_disk(Disk::open_readonly(path)?, sector_size)
    }

    fn open_disk(disk: Disk, sector_size: u32) -> Result<Whiteboard, WhiteboardError> {
        check_sector_size(sector_size).map_err(|message| WhiteboardError::Invalid {
            path: disk.path().display().to_string(),
            message,
        })?;
        disk.check_sector_size(sector_size)?;
        Ok(Whiteboard {
            disk,
            sector_size,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// Each I/O's bound (default [`DEFAULT_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn sector_size(&self) -> u32 {
        self.sector_size
    }

    pub fn path(&self) -> &Path {
        self.disk.path()
    }

    /// Host sectors the area has room for (its size, not what was
    /// formatted): hosts with higher ids (say, non-HA hosts of a vdsm
    /// lockspace) simply have no sector.
    pub fn capacity(&self) -> u64 {
        (self.disk.size / self.sector_size as u64)
            .saturating_sub(1)
            .min(MAX_HOST_ID)
    }

    fn invalid(&self, message: String) -> WhiteboardError {
        WhiteboardError::Invalid {
            path: self.disk.path().display().to_string(),
            message,
        }
    }

    fn sector_area(&self, sector: u64) -> Result<Area<'_>, IoError> {
        let ss = self.sector_size as u64;
        Area::new(&self.disk, sector * ss, ss, self.timeout)
    }

    /// Formats: sector 0 (no flags) and host sectors 1..=max_hosts zeroed
    /// ("never written"). Refuses a device that holds something else in
    /// sector 0 (a non-zero sector that is not a whiteboard's).
    pub fn format(path: &Path, sector_size: u32, max_hosts: u64) -> Result<(), WhiteboardError> {
        let invalid = |message: String| WhiteboardError::Invalid {
            path: path.display().to_string(),
            message,
        };
        if !(1..=MAX_HOST_ID).contains(&max_hosts) {
            return Err(invalid(format!(
                "max_hosts {max_hosts} not in 1..={MAX_HOST_ID}"
            )));
        }
        if !path.exists() {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .map_err(|source| IoError::Open {
                    path: path.to_path_buf(),
                    source,
                })?;
        }
        let wb = Whiteboard::open(path, sector_size)?;
        let ss = sector_size as u64;
        let total = (max_hosts + 1) * ss;
        let area = Area::new(&wb.disk, 0, total, wb.timeout)?;
        if wb.disk.size >= ss {
            let b = area.read(0, ss as usize)?;
            match ClusterSector::decode(&b) {
                Ok(_) => {}
                Err(SectorError::BadMagic { found, .. }) => {
                    return Err(invalid(format!(
                        "sector 0 holds something else (magic {found:02x?}); not overwriting it"
                    )));
                }
                // A damaged whiteboard of ours may be formatted again.
                Err(_) => {}
            }
        }
        // Host sectors first: a crash half way leaves no valid sector 0.
        let zeros = vec![0u8; (max_hosts * ss) as usize];
        area.write(ss, &zeros)?;
        let c = ClusterSector {
            sector_size,
            ..Default::default()
        };
        area.write(0, &c.encode())?;
        Ok(())
    }

    /// Sector 0. A sector 0 formatted for another sector size is an error.
    pub fn read_cluster(&self) -> Result<Option<ClusterSector>, WhiteboardError> {
        let b = self.sector_area(0)?.read(0, self.sector_size as usize)?;
        let c = ClusterSector::decode(&b)?;
        self.check_cluster(c)
    }

    fn check_cluster(
        &self,
        c: Option<ClusterSector>,
    ) -> Result<Option<ClusterSector>, WhiteboardError> {
        if let Some(c) = c
            && c.sector_size != self.sector_size
        {
            return Err(self.invalid(format!(
                "formatted with {}-byte sectors, opened with {}",
                c.sector_size, self.sector_size
            )));
        }
        Ok(c)
    }

    /// Sectors 0..=max_hosts in one read.
    pub fn read_all(&self, max_hosts: u64) -> Result<BoardRead, WhiteboardError> {
        if !(1..=MAX_HOST_ID).contains(&max_hosts) {
            return Err(self.invalid(format!("max_hosts {max_hosts} not in 1..={MAX_HOST_ID}")));
        }
        let ss = self.sector_size as usize;
        let n = max_hosts as usize + 1;
        let area = Area::new(&self.disk, 0, (n * ss) as u64, self.timeout)?;
        let b = area.read(0, n * ss)?;
        let cluster = ClusterSector::decode(&b[..ss]).and_then(|c| match c {
            Some(c) if c.sector_size != self.sector_size => Err(SectorError::BadContent {
                sector: 0,
                message: format!(
                    "formatted with {}-byte sectors, opened with {}",
                    c.sector_size, self.sector_size
                ),
            }),
            c => Ok(c),
        });
        let hosts = (1..n)
            .map(|h| {
                (
                    h as u64,
                    HostSector::decode(h as u64, &b[h * ss..(h + 1) * ss]),
                )
            })
            .collect();
        Ok(BoardRead { cluster, hosts })
    }

    /// Writes our own sector, and only it.
    pub fn write_host(&self, s: &HostSector) -> Result<(), WhiteboardError> {
        if !(1..=MAX_HOST_ID).contains(&s.host_id) {
            return Err(self.invalid(format!("host_id {} not in 1..={MAX_HOST_ID}", s.host_id)));
        }
        if s.score > MAX_SCORE {
            return Err(self.invalid(format!("score {} above {MAX_SCORE}", s.score)));
        }
        self.sector_area(s.host_id)?
            .write(0, &s.encode(self.sector_size))?;
        Ok(())
    }

    /// Read-modify-write of sector 0's flag. Refuses an unformatted or
    /// damaged sector 0 rather than writing over it.
    pub fn set_global_maintenance(
        &self,
        on: bool,
        by_host: u64,
    ) -> Result<ClusterSector, WhiteboardError> {
        let Some(mut c) = self.read_cluster()? else {
            return Err(self.invalid(
                "not formatted (sector 0 is zeros); run the whiteboard format first".into(),
            ));
        };
        if on {
            c.flags |= GLOBAL_MAINTENANCE;
        } else {
            c.flags &= !GLOBAL_MAINTENANCE;
        }
        c.set_by_host = by_host;
        c.set_at_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.sector_area(0)?.write(0, &c.encode())?;
        Ok(c)
    }
}

/// Per-host freshness: a sector is fresh while its seq was last seen to
/// change within `window` seconds of our monotonic clock. A seq seen only
/// once proves nothing (a dead host's last sector looks the same), as with
/// delta leases.
#[derive(Clone, Debug, Default)]
pub struct Freshness {
    seen: HashMap<u64, Seen>,
}

#[derive(Clone, Copy, Debug)]
struct Seen {
    seq: u64,
    generation: u64,
    changed_at: Option<u64>,
}

impl Freshness {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records this cycle's read of `host_id`'s sector (None: never written
    /// or unreadable) at our monotonic `now`.
    pub fn observe(&mut self, host_id: u64, sector: Option<&HostSector>, now: u64) {
        let Some(s) = sector else {
            self.seen.remove(&host_id);
            return;
        };
        match self.seen.get_mut(&host_id) {
            Some(prev) if prev.seq == s.seq && prev.generation == s.generation => {}
            Some(prev) => {
                *prev = Seen {
                    seq: s.seq,
                    generation: s.generation,
                    changed_at: Some(now),
                };
            }
            None => {
                self.seen.insert(
                    host_id,
                    Seen {
                        seq: s.seq,
                        generation: s.generation,
                        changed_at: None,
                    },
                );
            }
        }
    }

    pub fn is_fresh(&self, host_id: u64, now: u64, window: u64) -> bool {
        self.seen
            .get(&host_id)
            .and_then(|s| s.changed_at)
            .is_some_and(|t| now.saturating_sub(t) <= window)
    }

    /// Seconds since the seq last changed (None: not seen changing yet).
    pub fn age(&self, host_id: u64, now: u64) -> Option<u64> {
        self.seen
            .get(&host_id)
            .and_then(|s| s.changed_at)
            .map(|t| now.saturating_sub(t))
    }
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}
fn put_u32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut [u8], o: usize, v: u64) {
    b[o..o + 8].copy_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(host_id: u64) -> HostSector {
        HostSector {
            host_id,
            generation: 7,
            seq: 42,
            written_unix: 1_700_000_000,
            score: 3350,
            flags: LOCAL_MAINTENANCE,
            config_digest: 0xdead_beef,
            running: VmBitmap::from_indexes([0, 9, 1023]),
            failed: VmBitmap::from_indexes([5]),
            fence: FenceReport {
                victim: 2,
                victim_generation: 9,
                phase: FENCE_DECLARED,
            },
            health: HealthRecord {
                flags: HEALTH_REPORTED | HEALTH_NETWORK_LOST,
                points: [1600, 0, 600, 0, 123, 0, 0],
            },
        }
    }

    #[test]
    fn health_record_round_trips_and_old_sectors_read_as_unreported() {
        let s = sample(3);
        let back = HostSector::decode(3, &s.encode(512)).unwrap().unwrap();
        assert_eq!(back.health, s.health);
        assert_eq!(
            back.health.summary(),
            "gateway -1600, bridge -600, cpu_load -123, all networks lost"
        );
        // A sector as written before the health record: zeros there, and
        // still a valid checksum.
        let old = HostSector {
            health: HealthRecord::default(),
            ..s
        };
        let back = HostSector::decode(3, &old.encode(4096)).unwrap().unwrap();
        assert_eq!(back.health.flags, 0);
        assert_eq!(back.health.summary(), "not reported");
        assert_eq!(back.fence, s.fence);
    }

    #[test]
    fn host_sector_layout_is_the_documented_one() {
        let s = sample(3);
        let b = s.encode(512);
        assert_eq!(b.len(), 512);
        assert_eq!(&b[0..8], b"HACTLWBH");
        assert_eq!(u32_at(&b, 8), 1);
        assert_eq!(u64_at(&b, 12), 3);
        assert_eq!(u64_at(&b, 20), 7);
        assert_eq!(u64_at(&b, 28), 42);
        assert_eq!(u64_at(&b, 36), 1_700_000_000);
        assert_eq!(u32_at(&b, 44), 3350);
        assert_eq!(u32_at(&b, 48), 1);
        assert_eq!(u32_at(&b, 52), 0xdead_beef);
        assert_eq!(u32_at(&b, 56), 3);
        assert_eq!(b[64], 0b1); // VM 0
        assert_eq!(b[65], 0b10); // VM 9
        assert_eq!(b[64 + 127], 0x80); // VM 1023
        assert_eq!(b[192], 0b10_0000); // failed VM 5
        assert_eq!(u64_at(&b, 320), 2); // fence victim
        assert_eq!(u64_at(&b, 328), 9); // its generation
        assert_eq!(u32_at(&b, 336), FENCE_DECLARED);
        assert_eq!(u32_at(&b, 340), HEALTH_REPORTED | HEALTH_NETWORK_LOST);
        assert_eq!(&b[344..350], &[0x40, 0x06, 0, 0, 0x58, 0x02]); // 1600, 0, 600
        assert!(b[60..64].iter().chain(&b[358..508]).all(|&x| x == 0));
        assert_eq!(u32_at(&b, 508), sanlock_crc32c(&b[..508]));
        assert_eq!(HostSector::decode(3, &b).unwrap(), Some(s));
    }

    #[test]
    fn cluster_sector_layout_is_the_documented_one() {
        let c = ClusterSector {
            sector_size: 4096,
            flags: GLOBAL_MAINTENANCE,
            set_by_host: 2,
            set_at_unix: 99,
        };
        let b = c.encode();
        assert_eq!(b.len(), 4096);
        assert_eq!(&b[0..8], b"HACTLWBC");
        assert_eq!(u32_at(&b, 8), 1);
        assert_eq!(u32_at(&b, 12), 4096);
        assert_eq!(u32_at(&b, 16), 1);
        assert_eq!(u64_at(&b, 20), 2);
        assert_eq!(u64_at(&b, 28), 99);
        assert!(b[36..508].iter().chain(&b[512..]).all(|&x| x == 0));
        assert_eq!(ClusterSector::decode(&b).unwrap(), Some(c));
        assert!(c.global_maintenance());
    }

    #[test]
    fn sector_4096_ignores_bytes_past_512() {
        let s = sample(1);
        let mut b = s.encode(4096);
        assert_eq!(b.len(), 4096);
        assert!(b[512..].iter().all(|&x| x == 0));
        b[4000] = 0xff;
        assert_eq!(HostSector::decode(1, &b).unwrap(), Some(s));
    }

    #[test]
    fn zeros_are_never_written_and_damage_is_an_error() {
        assert_eq!(HostSector::decode(1, &[0u8; 512]).unwrap(), None);
        assert_eq!(ClusterSector::decode(&[0u8; 4096]).unwrap(), None);

        let good = sample(2).encode(512);
        let mut b = good.clone();
        b[100] ^= 1;
        assert!(matches!(
            HostSector::decode(2, &b),
            Err(SectorError::BadChecksum { sector: 2, .. })
        ));
        let mut b = good.clone();
        b[0] = b'X';
        let e = HostSector::decode(2, &b).unwrap_err();
        assert!(matches!(e, SectorError::BadMagic { .. }), "{e}");
        let mut b = good.clone();
        put_u32(&mut b, 8, 2);
        assert!(matches!(
            HostSector::decode(2, &b),
            Err(SectorError::BadVersion { found: 2, .. })
        ));
        // A host sector in the wrong slot, or the cluster sector read as a host's.
        let e = HostSector::decode(5, &good).unwrap_err().to_string();
        assert!(e.contains("holds host_id 2, not 5"), "{e}");
        let c = ClusterSector {
            sector_size: 512,
            ..Default::default()
        };
        assert!(matches!(
            HostSector::decode(1, &c.encode()),
            Err(SectorError::BadMagic { .. })
        ));
        // Checksummed but inconsistent.
        let mut b = good.clone();
        put_u32(&mut b, 56, 9);
        let b = seal(b);
        let e = HostSector::decode(2, &b).unwrap_err().to_string();
        assert!(e.contains("running count 9"), "{e}");
        assert!(matches!(
            HostSector::decode(2, &good[..100]),
            Err(SectorError::BadLength { .. })
        ));
    }

    #[test]
    fn freshness_needs_a_change_and_expires() {
        let mut f = Freshness::new();
        let mut s = sample(1);
        f.observe(1, Some(&s), 100);
        assert!(!f.is_fresh(1, 100, 6), "first sight proves nothing");
        f.observe(1, Some(&s), 102);
        assert!(!f.is_fresh(1, 102, 6));
        s.seq += 1;
        f.observe(1, Some(&s), 104);
        assert!(f.is_fresh(1, 104, 6));
        f.observe(1, Some(&s), 110);
        assert!(f.is_fresh(1, 110, 6));
        assert!(!f.is_fresh(1, 111, 6));
        assert_eq!(f.age(1, 111), Some(7));
        // A reboot (new generation) with the same seq is a change too.
        s.generation += 1;
        f.observe(1, Some(&s), 120);
        assert!(f.is_fresh(1, 120, 6));
        f.observe(1, None, 121);
        assert!(!f.is_fresh(1, 121, 6));
        assert!(!f.is_fresh(9, 121, 6));
    }
}
