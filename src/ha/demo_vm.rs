//! The demo VM and the split-brain check.
//!
//! `hactl ha demo-vm DISK` stands in for a VM: every 100 ms it appends one
//! 64-byte record to its disk file (O_APPEND | O_DSYNC), naming the host it
//! runs on, its run (one random id per process), a counter and the wall
//! clock. `hactl ha check-disks FILE...` reads the records back and proves
//! that no two runs of a VM ever wrote at the same time: once another run
//! has written, an earlier run never writes again, and the runs' time spans
//! do not overlap. Every process on one machine shares the wall clock, so
//! the spans of runs on different "hosts" of a one-machine cluster compare.
//!
//! On a block device (a real guest's virtio disk, `hactl ha demo-vm
//! /dev/vda` in the tiny guests of [`super::guest`]) the same records are
//! packed from offset 0: the VM finds the first all-zero record slot and
//! goes on from there, rewriting the sector that holds its next record
//! (O_DIRECT | O_SYNC). The disk image read on the host is then the same
//! byte stream as a demo VM's file, followed by zeros, and `check-disks`
//! reads both.

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use crate::ondisk::sanlock_crc32c;

pub const RECORD_SIZE: usize = 64;
const MAGIC: &[u8; 8] = b"HACTLDVM";
/// How often a demo VM writes.
pub const WRITE_INTERVAL: Duration = Duration::from_millis(100);
/// Overrides [`WRITE_INTERVAL`] (milliseconds): the failover benchmark's
/// hundreds of VMs write less often.
pub const INTERVAL_ENV: &str = "HACTL_HA_DEMO_VM_INTERVAL_MS";

/// One write of a demo VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    pub host_id: u64,
    pub run_id: u64,
    pub counter: u64,
    /// Wall clock (CLOCK_REALTIME) in ns when the record was written.
    pub t_ns: u64,
    pub pid: u32,
}

impl Record {
    /// Layout: magic [0..8), host_id [8..16), run_id [16..24), counter
    /// [24..32), t_ns [32..40), pid [40..44), zeros, crc32c of [0..60) at
    /// [60..64); integers little-endian.
    pub fn encode(&self) -> [u8; RECORD_SIZE] {
        let mut b = [0u8; RECORD_SIZE];
        b[0..8].copy_from_slice(MAGIC);
        b[8..16].copy_from_slice(&self.host_id.to_le_bytes());
        b[16..24].copy_from_slice(&self.run_id.to_le_bytes());
        b[24..32].copy_from_slice(&self.counter.to_le_bytes());
        b[32..40].copy_from_slice(&self.t_ns.to_le_bytes());
        b[40..44].copy_from_slice(&self.pid.to_le_bytes());
        let crc = sanlock_crc32c(&b[..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<Record, String> {
        if b.len() != RECORD_SIZE {
            return Err(format!("a torn record of {} bytes", b.len()));
        }
        if &b[0..8] != MAGIC {
            return Err("not a demo VM record (bad magic)".into());
        }
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        let stored = u32::from_le_bytes(b[60..64].try_into().unwrap());
        let computed = sanlock_crc32c(&b[..60]);
        if stored != computed {
            return Err(format!(
                "bad checksum (stored {stored:#010x}, computed {computed:#010x})"
            ));
        }
        Ok(Record {
            host_id: u64_at(8),
            run_id: u64_at(16),
            counter: u64_at(24),
            t_ns: u64_at(32),
            pid: u32::from_le_bytes(b[40..44].try_into().unwrap()),
        })
    }
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: getrandom writes at most 8 bytes into our buffer.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), 8, 0) };
    if n == 8 {
        u64::from_le_bytes(b)
    } else {
        // Unique enough for telling runs apart: pid and time.
        now_ns() ^ ((std::process::id() as u64) << 40)
    }
}

/// `hactl ha demo-vm DISK`: writes until killed. Returns only on an error
/// (the caller exits non-zero: a VM that cannot write its disk failed).
pub fn run_demo_vm(disk: &Path) -> String {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let host_id = match std::env::var("HACTL_HA_HOST_ID") {
        Ok(v) => match v.parse::<u64>() {
            Ok(h) => h,
            Err(_) => return format!("HACTL_HA_HOST_ID={v:?} is not a host id"),
        },
        Err(_) => 0,
    };
    let every = std::env::var(INTERVAL_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&ms| (10..=10_000).contains(&ms))
        .map_or(WRITE_INTERVAL, Duration::from_millis);
    if std::fs::metadata(disk).is_ok_and(|m| m.file_type().is_block_device()) {
        return run_on_block_device(disk, host_id, every);
    }
    let mut f = match std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .custom_flags(libc::O_DSYNC)
        .open(disk)
    {
        Ok(f) => f,
        Err(e) => return format!("cannot open {}: {e}", disk.display()),
    };
    let run_id = random_u64();
    let pid = std::process::id();
    for counter in 0u64.. {
        let r = Record {
            host_id,
            run_id,
            counter,
            t_ns: now_ns(),
            pid,
        };
        // One write(2) of 64 bytes with O_APPEND: never torn, never mixed
        // with another process's record.
        if let Err(e) = f.write_all(&r.encode()) {
            return format!("write to {}: {e}", disk.display());
        }
        std::thread::sleep(every);
    }
    unreachable!()
}

/// How long one read or write of a guest's disk may take before the VM
/// gives up (its storage hangs: it must not go on as if it had written).
const BLOCK_IO_TIMEOUT: Duration = Duration::from_secs(30);

/// The demo VM on a block device: records packed from offset 0, each write
/// the whole sector that holds the new record.
fn run_on_block_device(disk: &Path, host_id: u64, every: Duration) -> String {
    let d = match crate::io::Disk::open(disk) {
        Ok(d) => d,
        Err(e) => return format!("cannot open {}: {e}", disk.display()),
    };
    let ss = d.device_sector.max(512) as u64;
    if !ss.is_multiple_of(RECORD_SIZE as u64) || d.size < ss {
        return format!(
            "{}: sector size {ss}, {} bytes: not a disk for records",
            disk.display(),
            d.size
        );
    }
    // Where the previous runs stopped: the first all-zero record slot.
    let chunk = (64 * 1024u64).min(d.size / ss * ss);
    let mut next: Option<u64> = None;
    let mut at = 0u64;
    while next.is_none() && at < d.size {
        let len = chunk.min((d.size - at) / ss * ss);
        if len == 0 {
            break;
        }
        let buf = match d.read(at, len as usize, BLOCK_IO_TIMEOUT) {
            Ok(b) => b,
            Err(e) => return format!("read {}: {e}", disk.display()),
        };
        if let Some(i) = buf
            .chunks(RECORD_SIZE)
            .position(|r| r.iter().all(|&b| b == 0))
        {
            next = Some(at + (i * RECORD_SIZE) as u64);
        }
        at += len;
    }
    let Some(mut pos) = next else {
        return format!("{} is full of records", disk.display());
    };
    let mut sector_at = pos / ss * ss;
    let mut sector = match d.read(sector_at, ss as usize, BLOCK_IO_TIMEOUT) {
        Ok(b) => b.to_vec(),
        Err(e) => return format!("read {}: {e}", disk.display()),
    };
    let run_id = random_u64();
    let pid = std::process::id();
    for counter in 0u64.. {
        if pos + RECORD_SIZE as u64 > d.size / ss * ss {
            return format!("{} is full of records", disk.display());
        }
        if pos / ss * ss != sector_at {
            sector_at = pos / ss * ss;
            sector = vec![0u8; ss as usize];
        }
        let r = Record {
            host_id,
            run_id,
            counter,
            t_ns: now_ns(),
            pid,
        };
        let o = (pos - sector_at) as usize;
        sector[o..o + RECORD_SIZE].copy_from_slice(&r.encode());
        if let Err(e) = d.write(sector_at, &sector, BLOCK_IO_TIMEOUT) {
            return format!("write {}: {e}", disk.display());
        }
        pos += RECORD_SIZE as u64;
        std::thread::sleep(every);
    }
    unreachable!()
}

/// One process's stretch of writes in a disk file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    pub host_id: u64,
    pub run_id: u64,
    pub pid: u32,
    pub records: u64,
    pub first_ns: u64,
    pub last_ns: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// A record that does not decode (torn, foreign, bad checksum).
    Damaged { index: u64, reason: String },
    /// Run `run_id` wrote again after another run had written.
    Interleaved { index: u64, run_id: u64, other: u64 },
    /// Run `later` started before run `earlier` had stopped.
    Overlap {
        earlier: u64,
        later: u64,
        overlap_ns: u64,
    },
    /// Within one run the counter or clock went backwards (two processes
    /// with one run id, or a replayed record).
    NotMonotonic { index: u64, run_id: u64 },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Damaged { index, reason } => write!(f, "record {index}: {reason}"),
            Violation::Interleaved {
                index,
                run_id,
                other,
            } => write!(
                f,
                "record {index}: run {run_id:016x} wrote again after run {other:016x} had written (two writers)"
            ),
            Violation::Overlap {
                earlier,
                later,
                overlap_ns,
            } => write!(
                f,
                "run {later:016x} started {:.3} s before run {earlier:016x} stopped (two writers at once)",
                *overlap_ns as f64 / 1e9
            ),
            Violation::NotMonotonic { index, run_id } => write!(
                f,
                "record {index}: run {run_id:016x}'s counter or clock went backwards"
            ),
        }
    }
}

/// What one disk file shows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiskReport {
    /// In the order they first wrote.
    pub runs: Vec<Run>,
    pub violations: Vec<Violation>,
}

/// The records of a disk: all of a file, or of a guest's disk image up to
/// its all-zero tail (a block device is never shorter than its records).
fn records_part(bytes: &[u8]) -> &[u8] {
    let end = bytes
        .chunks(RECORD_SIZE)
        .rposition(|r| r.iter().any(|&b| b != 0))
        .map_or(0, |i| ((i + 1) * RECORD_SIZE).min(bytes.len()));
    &bytes[..end]
}

/// Checks the bytes of one disk file (pure). A zero tail (a guest's disk
/// image past its last record) is not data; zero records before the last
/// record are damage.
pub fn check_bytes(bytes: &[u8]) -> DiskReport {
    let bytes = records_part(bytes);
    let mut rep = DiskReport::default();
    // Index into rep.runs of the run that wrote the previous record.
    let mut current: Option<usize> = None;
    let mut last_counter: Vec<u64> = Vec::new();
    for (i, chunk) in bytes.chunks(RECORD_SIZE).enumerate() {
        let index = i as u64;
        let r = match Record::decode(chunk) {
            Ok(r) => r,
            Err(reason) => {
                rep.violations.push(Violation::Damaged { index, reason });
                continue;
            }
        };
        match rep.runs.iter().position(|x| x.run_id == r.run_id) {
            Some(k) if Some(k) == current => {
                let run = &mut rep.runs[k];
                if r.counter <= last_counter[k] || r.t_ns < run.last_ns {
                    rep.violations.push(Violation::NotMonotonic {
                        index,
                        run_id: r.run_id,
                    });
                }
                run.records += 1;
                run.last_ns = run.last_ns.max(r.t_ns);
                last_counter[k] = r.counter;
            }
            Some(k) => {
                // This run stopped once another wrote: it is back, so two
                // processes were writing the disk.
                let other = current.map_or(0, |c| rep.runs[c].run_id);
                rep.violations.push(Violation::Interleaved {
                    index,
                    run_id: r.run_id,
                    other,
                });
                let run = &mut rep.runs[k];
                run.records += 1;
                run.last_ns = run.last_ns.max(r.t_ns);
                last_counter[k] = r.counter;
                current = Some(k);
            }
            None => {
                rep.runs.push(Run {
                    host_id: r.host_id,
                    run_id: r.run_id,
                    pid: r.pid,
                    records: 1,
                    first_ns: r.t_ns,
                    last_ns: r.t_ns,
                });
                last_counter.push(r.counter);
                current = Some(rep.runs.len() - 1);
            }
        }
    }
    // Spans: each run must start after every earlier run's last write.
    for (k, later) in rep.runs.iter().enumerate() {
        for earlier in &rep.runs[..k] {
            if later.first_ns <= earlier.last_ns {
                rep.violations.push(Violation::Overlap {
                    earlier: earlier.run_id,
                    later: later.run_id,
                    overlap_ns: earlier.last_ns - later.first_ns,
                });
            }
        }
    }
    rep
}

/// Reads and checks one file.
pub fn check_file(path: &Path) -> Result<DiskReport, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(check_bytes(&bytes))
}

/// The last record of a disk file or image without reading all of it:
/// records are contiguous from offset 0 (an image's tail is zeros), so the
/// end is found by bisection. None: no record, or the last one is damaged.
pub fn last_record(path: &Path) -> Option<Record> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path).ok()?;
    let slots = f.metadata().ok()?.len() / RECORD_SIZE as u64;
    let mut buf = [0u8; RECORD_SIZE];
    let mut used = |i: u64| {
        f.read_exact_at(&mut buf, i * RECORD_SIZE as u64).is_ok() && buf.iter().any(|&b| b != 0)
    };
    // The first unused slot in [lo, hi].
    let (mut lo, mut hi) = (0u64, slots);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if used(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    let last = lo.checked_sub(1)?;
    f.read_exact_at(&mut buf, last * RECORD_SIZE as u64).ok()?;
    Record::decode(&buf).ok()
}

/// The text `check-disks` prints for one file.
pub fn render(path: &Path, rep: &DiskReport) -> String {
    let mut s = String::new();
    let verdict = if rep.violations.is_empty() {
        "ok"
    } else {
        "VIOLATION"
    };
    let hosts: Vec<String> = rep.runs.iter().map(|r| r.host_id.to_string()).collect();
    s.push_str(&format!(
        "{}: {verdict}, {} run(s), hosts in order: {}\n",
        path.display(),
        rep.runs.len(),
        if hosts.is_empty() {
            "-".into()
        } else {
            hosts.join(" -> ")
        }
    ));
    let t0 = rep.runs.first().map_or(0, |r| r.first_ns);
    let rel = |ns: u64| ns.saturating_sub(t0) as f64 / 1e9;
    for (k, r) in rep.runs.iter().enumerate() {
        let gap = if k > 0 {
            format!(
                ", {:.1} s after the previous run",
                r.first_ns.saturating_sub(rep.runs[k - 1].last_ns) as f64 / 1e9
            )
        } else {
            String::new()
        };
        s.push_str(&format!(
            "  host {} run {:016x} pid {}: {} records, +{:.1} s .. +{:.1} s{gap}\n",
            r.host_id,
            r.run_id,
            r.pid,
            r.records,
            rel(r.first_ns),
            rel(r.last_ns)
        ));
    }
    // The first few say what happened; thousands of lines would hide it.
    for v in rep.violations.iter().take(5) {
        s.push_str(&format!("  VIOLATION: {v}\n"));
    }
    if rep.violations.len() > 5 {
        s.push_str(&format!(
            "  ... and {} more violation(s)\n",
            rep.violations.len() - 5
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(host_id: u64, run_id: u64, counter: u64, t_ms: u64) -> [u8; RECORD_SIZE] {
        Record {
            host_id,
            run_id,
            counter,
            t_ns: t_ms * 1_000_000,
            pid: 100 + host_id as u32,
        }
        .encode()
    }

    fn file(records: &[[u8; RECORD_SIZE]]) -> Vec<u8> {
        records.concat()
    }

    #[test]
    fn record_round_trip_and_checksum() {
        let r = Record {
            host_id: 3,
            run_id: 0xdead_beef,
            counter: 7,
            t_ns: 123,
            pid: 42,
        };
        let mut b = r.encode();
        assert_eq!(Record::decode(&b), Ok(r));
        b[20] ^= 1;
        assert!(Record::decode(&b).unwrap_err().contains("bad checksum"));
        assert!(Record::decode(&b[..10]).unwrap_err().contains("torn"));
    }

    #[test]
    fn clean_failover_passes() {
        let f = file(&[
            rec(1, 10, 0, 0),
            rec(1, 10, 1, 100),
            rec(1, 10, 2, 200),
            rec(2, 20, 0, 70_000),
            rec(2, 20, 1, 70_100),
            rec(1, 30, 0, 90_000),
        ]);
        let rep = check_bytes(&f);
        assert_eq!(rep.violations, vec![]);
        let hosts: Vec<u64> = rep.runs.iter().map(|r| r.host_id).collect();
        assert_eq!(hosts, vec![1, 2, 1]);
        assert_eq!(rep.runs[0].records, 3);
        assert!(render(Path::new("d"), &rep).contains("ok, 3 run(s), hosts in order: 1 -> 2 -> 1"));
        assert_eq!(check_bytes(&[]), DiskReport::default());
    }

    #[test]
    fn interleaved_writers_are_caught() {
        let f = file(&[
            rec(1, 10, 0, 0),
            rec(2, 20, 0, 50),
            rec(1, 10, 1, 100),
            rec(2, 20, 1, 150),
        ]);
        let rep = check_bytes(&f);
        assert!(
            rep.violations.iter().any(|v| matches!(
                v,
                Violation::Interleaved {
                    index: 2,
                    run_id: 10,
                    other: 20
                }
            )),
            "{:?}",
            rep.violations
        );
        let text = render(Path::new("d"), &rep);
        assert!(text.contains("VIOLATION"), "{text}");
    }

    #[test]
    fn overlapping_spans_are_caught_without_interleaving() {
        // Run 20 stamped its first record before run 10's last one, but
        // appended after it: both ran at once.
        let f = file(&[rec(1, 10, 0, 0), rec(1, 10, 1, 100), rec(2, 20, 0, 90)]);
        let rep = check_bytes(&f);
        assert_eq!(
            rep.violations,
            vec![Violation::Overlap {
                earlier: 10,
                later: 20,
                overlap_ns: 10_000_000
            }]
        );
    }

    #[test]
    fn damage_and_backwards_counters_are_caught() {
        let mut bad = rec(1, 10, 1, 100);
        bad[30] ^= 0xff;
        let mut f = file(&[
            rec(1, 10, 0, 0),
            bad,
            rec(1, 10, 2, 200),
            rec(1, 10, 1, 300),
        ]);
        f.extend_from_slice(&[1, 2, 3]);
        let rep = check_bytes(&f);
        assert!(matches!(
            rep.violations[0],
            Violation::Damaged { index: 1, .. }
        ));
        assert!(matches!(
            rep.violations[1],
            Violation::NotMonotonic {
                index: 3,
                run_id: 10
            }
        ));
        assert!(
            matches!(&rep.violations[2], Violation::Damaged { index: 4, reason } if reason.contains("torn"))
        );
    }

    #[test]
    fn a_guest_image_ends_at_its_zero_tail() {
        let mut img = file(&[rec(1, 10, 0, 0), rec(1, 10, 1, 100), rec(2, 20, 0, 70_000)]);
        img.resize(4096, 0);
        let rep = check_bytes(&img);
        assert_eq!(rep.violations, vec![]);
        assert_eq!(rep.runs.len(), 2);
        // A zero record before the last one is a hole in the records.
        let mut holed = file(&[rec(1, 10, 0, 0)]);
        holed.extend_from_slice(&[0u8; RECORD_SIZE]);
        holed.extend_from_slice(&rec(1, 10, 1, 100));
        holed.resize(4096, 0);
        let rep = check_bytes(&holed);
        assert!(
            matches!(rep.violations[..], [Violation::Damaged { index: 1, .. }]),
            "{:?}",
            rep.violations
        );
        assert_eq!(check_bytes(&[0u8; 4096]), DiskReport::default());
    }

    #[test]
    fn last_record_bisects_to_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("img");
        for n in [0usize, 1, 2, 7, 64, 100] {
            let recs: Vec<_> = (0..n as u64).map(|i| rec(3, 30, i, i * 100)).collect();
            let mut img = file(&recs);
            img.resize(64 * 1024, 0);
            std::fs::write(&p, &img).unwrap();
            let last = last_record(&p);
            if n == 0 {
                assert_eq!(last, None);
            } else {
                assert_eq!(last.map(|r| r.counter), Some(n as u64 - 1), "{n} records");
            }
        }
        // A file of records only (a demo VM's), no tail.
        std::fs::write(&p, file(&[rec(1, 1, 0, 0), rec(1, 1, 1, 1)])).unwrap();
        assert_eq!(last_record(&p).map(|r| r.counter), Some(1));
    }
}
