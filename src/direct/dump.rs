//! `direct dump path[:offset[:size]]`: walks aligned areas from `offset`,
//! describing every lockspace, resource lease and resource index it finds,
//! in sanlock's columns.

use std::io::Write;

use serde::Serialize;

use super::{DirectError, DirectOpts, Result, read_leader_sizes};
use crate::geometry::Geometry;
use crate::io::{Disk, IoError};
use crate::lease_str::unescape_path;
use crate::ondisk::{
    self, HOSTID_BITMAP_OFFSET, LeaderRecord, ModeBlock, Name, PaxosDblock, RequestRecord,
    RindexEntry, RindexHeader, dblock::MBLOCK_OFFSET, rindex::RINDEX_ENTRY_SIZE,
};

/// One thing `dump` found, in the order sanlock prints it.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DumpItem {
    /// A host's delta lease (only hosts that ever joined are listed).
    Delta {
        offset: u64,
        lockspace: String,
        host_name: String,
        timestamp: u64,
        owner_id: u64,
        owner_generation: u64,
        /// host_ids whose bit is set in this host's request bitmap (`-f 1`).
        #[serde(skip_serializing_if = "Option::is_none")]
        bitmap: Option<Vec<u32>>,
        #[serde(skip)]
        raw_names: (Name, Name),
    },
    /// A resource lease leader.
    Paxos {
        offset: u64,
        lockspace: String,
        resource: String,
        timestamp: u64,
        owner_id: u64,
        owner_generation: u64,
        lver: u64,
        /// The request record's lver and force_mode (`-f 1`).
        #[serde(skip_serializing_if = "Option::is_none")]
        request: Option<(u64, u32)>,
        #[serde(skip)]
        raw_names: (Name, Name),
    },
    /// A non-empty paxos dblock (`-f 2`); `index` is host_id - 1.
    Dblock {
        index: u64,
        mbal: u64,
        bal: u64,
        inp: u64,
        inp2: u64,
        inp3: u64,
        lver: u64,
        checksum: u32,
    },
    /// A shared holder from a mode block.
    Shared { host_id: u64, generation: u64 },
    RindexHeader {
        offset: u64,
        lockspace: String,
        flags: u32,
        sector_size: u32,
        max_resources: u32,
        rx_offset: u64,
        #[serde(skip)]
        raw_name: Name,
    },
    /// An rindex entry (`-f 1`).
    Rentry {
        offset: u64,
        lockspace: String,
        name: String,
        res_offset: u64,
        #[serde(skip)]
        raw_names: (Name, Name),
    },
}

#[derive(Debug, Serialize)]
pub struct DumpReport {
    pub path: String,
    pub start_offset: u64,
    pub sector_size: u32,
    pub align_size: u32,
    pub force_mode: u32,
    pub items: Vec<DumpItem>,
    /// The file or device ends inside an area at this offset, so that area
    /// was not shown (sanlock stops there silently).
    pub truncated_at: Option<u64>,
}

/// `path[:offset[:size]]` with `\:` escapes and `M` suffixes.
pub fn parse_dump_spec(spec: &str) -> Result<(String, u64, u64)> {
    let b = spec.as_bytes();
    let mut colons = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            i += 2;
            continue;
        }
        if b[i] == b':' && colons.len() < 2 {
            colons.push(i);
        }
        i += 1;
    }
    let num = |s: &str| -> Result<u64> {
        crate::lease_str::parse_offset(s).map_err(|e| DirectError::Invalid(e.to_string()))
    };
    let (path, off, size) = match colons[..] {
        [] => (spec, 0, 0),
        [c1] => (&spec[..c1], num(&spec[c1 + 1..])?, 0),
        [c1, c2, ..] => (&spec[..c1], num(&spec[c1 + 1..c2])?, num(&spec[c2 + 1..])?),
    };
    Ok((unescape_path(path), off, size))
}

/// Whether sanlock would print its "offset should be a multiple of 1M" warning.
pub fn offset_warning(start_offset: u64) -> bool {
    !start_offset.is_multiple_of(1 << 20)
}

/// Finds the geometry as sanlock does: `-Z`/`-A`, else a leader at the
/// start offset or at any 1 MiB step after it, up to 1 GiB or `size`.
fn find_geometry(disk: &Disk, start: u64, size: u64, opts: &DirectOpts) -> Result<Geometry> {
    if let (Some(s), Some(a)) = (opts.sector_size, opts.align_size) {
        return Ok(Geometry::new(s, a)?);
    }
    let mut off = start;
    for _ in 0..1024 {
        if let Ok(g) = read_leader_sizes(disk, off, opts.timeout()) {
            return Ok(g);
        }
        off += 1 << 20;
        if size != 0 && off >= start + size {
            break;
        }
    }
    Err(DirectError::NoSizes {
        path: disk.path().display().to_string(),
        offset: start,
    })
}

fn test_id_bit(bitmap: &[u8], host_id: u32) -> bool {
    let i = (host_id - 1) as usize;
    bitmap[i / 8] & (1 << (i % 8)) != 0
}

pub fn dump(spec: &str, opts: &DirectOpts) -> Result<DumpReport> {
    let (path, start, size) = parse_dump_spec(spec)?;
    let disk = Disk::open_readonly(path.as_ref()).map_err(DirectError::NoDevice)?;
    let g = find_geometry(&disk, start, size, opts)?;
    let ss = g.sector_size as usize;
    let sector_count = g.sectors_per_area() as usize;
    let max_hosts = g.max_hosts();
    let force = opts.force_mode;
    let mut items = Vec::new();
    let mut truncated_at = None;
    let end_sector = if size > 0 { size / ss as u64 } else { 0 };
    let mut sector_nr = 0u64;

    while end_sector == 0 || sector_nr < end_sector {
        let area_off = start + sector_nr * ss as u64;
        let data = match disk.read(area_off, g.align_size as usize, opts.timeout()) {
            Ok(d) => d,
            Err(IoError::Short { size: dev_size, .. }) => {
                if dev_size > area_off {
                    truncated_at = Some(area_off);
                }
                break;
            }
            Err(e) => return Err(e.into()),
        };
        let magic = u32::from_le_bytes(data[0..4].try_into().unwrap());
        match magic {
            ondisk::DELTA_DISK_MAGIC => {
                for i in 0..sector_count {
                    let sec = &data[i * ss..(i + 1) * ss];
                    if sec[0..4] == [0; 4] {
                        continue;
                    }
                    let lr = LeaderRecord::decode(sec).expect("sector holds a leader");
                    // never acquired: not shown
                    if lr.owner_id == 0 && lr.owner_generation == 0 {
                        continue;
                    }
                    let bitmap = (force > 0).then(|| {
                        let bm = &sec[HOSTID_BITMAP_OFFSET..];
                        (1..=max_hosts).filter(|&h| test_id_bit(bm, h)).collect()
                    });
                    items.push(DumpItem::Delta {
                        offset: area_off + (i * ss) as u64,
                        lockspace: lr.space_name.to_string_lossy(),
                        host_name: lr.resource_name.to_string_lossy(),
                        timestamp: lr.timestamp,
                        owner_id: lr.owner_id,
                        owner_generation: lr.owner_generation,
                        bitmap,
                        raw_names: (lr.space_name, lr.resource_name),
                    });
                }
            }
            ondisk::PAXOS_DISK_MAGIC => {
                let lr = LeaderRecord::decode(&data).expect("area holds a leader");
                let request = (force > 0).then(|| {
                    let rr = RequestRecord::decode(&data[ss..]).expect("sector holds a request");
                    (rr.lver, rr.force_mode)
                });
                items.push(DumpItem::Paxos {
                    offset: area_off,
                    lockspace: lr.space_name.to_string_lossy(),
                    resource: lr.resource_name.to_string_lossy(),
                    timestamp: lr.timestamp,
                    owner_id: lr.owner_id,
                    owner_generation: lr.owner_generation,
                    lver: lr.lver,
                    request,
                    raw_names: (lr.space_name, lr.resource_name),
                });
                // A damaged num_hosts must not walk past the area (sanlock would).
                let n = lr.num_hosts.min(sector_count.saturating_sub(2) as u64);
                for i in 0..n {
                    let sec = &data[(2 + i as usize) * ss..];
                    if force > 1 {
                        let d = PaxosDblock::decode(sec).expect("sector holds a dblock");
                        if d.mbal != 0 || d.inp != 0 || d.lver != 0 {
                            items.push(DumpItem::Dblock {
                                index: i,
                                mbal: d.mbal,
                                bal: d.bal,
                                inp: d.inp,
                                inp2: d.inp2,
                                inp3: d.inp3,
                                lver: d.lver,
                                checksum: d.checksum,
                            });
                        }
                    }
                    let mb = ModeBlock::decode(&sec[MBLOCK_OFFSET..])
                        .expect("sector holds a mode block");
                    if mb.is_shared() {
                        items.push(DumpItem::Shared {
                            host_id: i + 1,
                            generation: mb.generation,
                        });
                    }
                }
            }
            ondisk::RINDEX_DISK_MAGIC => {
                let rh = RindexHeader::decode(&data).expect("area holds a header");
                items.push(DumpItem::RindexHeader {
                    offset: area_off,
                    lockspace: rh.lockspace_name.to_string_lossy(),
                    flags: rh.flags,
                    sector_size: rh.sector_size,
                    max_resources: rh.max_resources,
                    rx_offset: rh.rx_offset,
                    raw_name: rh.lockspace_name,
                });
                if force > 0 {
                    let per_sector = ss / RINDEX_ENTRY_SIZE;
                    for i in 1..sector_count {
                        for j in 0..per_sector {
                            let at = i * ss + j * RINDEX_ENTRY_SIZE;
                            let re = RindexEntry::decode(&data[at..]).expect("entry fits");
                            if re.res_offset == 0 && re.name.is_empty() {
                                continue;
                            }
                            items.push(DumpItem::Rentry {
                                offset: area_off + at as u64,
                                lockspace: rh.lockspace_name.to_string_lossy(),
                                name: re.name.to_string_lossy(),
                                res_offset: re.res_offset,
                                raw_names: (rh.lockspace_name, re.name),
                            });
                        }
                    }
                }
            }
            _ => {
                if end_sector == 0 {
                    break;
                }
            }
        }
        sector_nr += sector_count as u64;
    }

    Ok(DumpReport {
        path,
        start_offset: start,
        sector_size: g.sector_size,
        align_size: g.align_size,
        force_mode: force,
        items,
        truncated_at,
    })
}

/// `%Ns` of raw name bytes: right-aligned to `width`, never cut.
fn pad(out: &mut Vec<u8>, bytes: &[u8], width: usize) {
    for _ in bytes.len()..width {
        out.push(b' ');
    }
    out.extend_from_slice(bytes);
}

/// sanlock's text, byte for byte (names are written as raw bytes).
pub fn render_text(r: &DumpReport) -> Vec<u8> {
    let mut o = Vec::new();
    write!(
        o,
        "{:>8} {:>36} {:>48} {:>10} {:>4} {:>4} lver",
        "offset", "lockspace", "resource", "timestamp", "own", "gen"
    )
    .unwrap();
    if r.force_mode > 0 {
        o.extend_from_slice(b"/req/mode");
    }
    o.push(b'\n');
    for item in &r.items {
        match item {
            DumpItem::Delta {
                offset,
                timestamp,
                owner_id,
                owner_generation,
                bitmap,
                raw_names,
                ..
            } => {
                write!(o, "{offset:08} ").unwrap();
                pad(&mut o, raw_names.0.bytes(), 36);
                o.push(b' ');
                pad(&mut o, raw_names.1.bytes(), 48);
                write!(o, " {timestamp:010} {owner_id:04} {owner_generation:04}").unwrap();
                for h in bitmap.iter().flatten() {
                    write!(o, " {h}").unwrap();
                }
                o.push(b'\n');
            }
            DumpItem::Paxos {
                offset,
                timestamp,
                owner_id,
                owner_generation,
                lver,
                request,
                raw_names,
                ..
            } => {
                write!(o, "{offset:08} ").unwrap();
                pad(&mut o, raw_names.0.bytes(), 36);
                o.push(b' ');
                pad(&mut o, raw_names.1.bytes(), 48);
                write!(
                    o,
                    " {timestamp:010} {owner_id:04} {owner_generation:04} {lver}"
                )
                .unwrap();
                if let Some((rl, fm)) = request {
                    write!(o, "/{rl}/{fm}").unwrap();
                }
                o.push(b'\n');
            }
            DumpItem::Dblock {
                index,
                mbal,
                bal,
                inp,
                inp2,
                inp3,
                lver,
                checksum,
            } => {
                writeln!(
                    o,
                    "dblock[{index:04}] mbal {mbal} bal {bal} inp {inp} inp2 {inp2} inp3 {inp3} lver {lver} sum {checksum:x}"
                )
                .unwrap();
            }
            DumpItem::Shared {
                host_id,
                generation,
            } => {
                o.extend_from_slice(&[b' '; 106]);
                writeln!(o, "{host_id:04} {generation:04} SH").unwrap();
            }
            DumpItem::RindexHeader {
                offset,
                flags,
                sector_size,
                max_resources,
                rx_offset,
                raw_name,
                ..
            } => {
                write!(o, "{offset:08} ").unwrap();
                pad(&mut o, raw_name.bytes(), 36);
                writeln!(
                    o,
                    " rindex_header 0x{flags:x} {sector_size} {max_resources} {rx_offset}"
                )
                .unwrap();
            }
            DumpItem::Rentry {
                offset,
                res_offset,
                raw_names,
                ..
            } => {
                write!(o, "{offset:08} ").unwrap();
                pad(&mut o, raw_names.0.bytes(), 36);
                o.extend_from_slice(b" rentry ");
                o.extend_from_slice(raw_names.1.bytes());
                writeln!(o, " {res_offset}").unwrap();
            }
        }
    }
    o
}
