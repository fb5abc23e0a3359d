//! `direct check` on arbitrary bytes: the walk over lockspaces, resource
//! leases, resource indexes and xleases volumes never panics, whatever is
//! on storage, and its report agrees with itself.
//!
//! The input describes a sparse device so that small inputs reach every
//! kind of area: byte 0 picks the device's sector size, the kind asked
//! for and the device size; byte 1 the offset checked and whether the
//! device is also given as the lockspace (`-s`); the rest is cut in 4 KiB
//! chunks, chunk i placed at i MiB (a lockspace's first hosts, a lease's
//! leader, request and first dblocks, an xleases index's metadata and
//! first records, the first slots).
#![no_main]

use hactl::direct::check::{CheckOpts, Kind, Source, check};
use hactl::io::IoError;
use libfuzzer_sys::fuzz_target;

const MIB: u64 = 1 << 20;
const CHUNK: usize = 4096;

struct Sparse<'a> {
    chunks: Vec<(u64, &'a [u8])>,
    size: u64,
    sector: u32,
}

impl Source for Sparse<'_> {
    fn name(&self) -> String {
        "fuzz".into()
    }
    fn size(&self) -> u64 {
        self.size
    }
    fn device_sector(&self) -> u32 {
        self.sector
    }
    fn read(&self, off: u64, len: usize) -> Result<Option<Vec<u8>>, IoError> {
        let Some(end) = off.checked_add(len as u64) else {
            return Ok(None);
        };
        if end > self.size {
            return Ok(None);
        }
        let mut v = vec![0u8; len];
        for &(at, c) in &self.chunks {
            let cend = at + c.len() as u64;
            if cend <= off || at >= end {
                continue;
            }
            let s = at.max(off);
            let e = cend.min(end);
            v[(s - off) as usize..(e - off) as usize]
                .copy_from_slice(&c[(s - at) as usize..(e - at) as usize]);
        }
        Ok(Some(v))
    }
}

fuzz_target!(|data: &[u8]| {
    let (Some(&b0), Some(&b1)) = (data.first(), data.get(1)) else {
        return;
    };
    let body = &data[2..];
    let src = Sparse {
        chunks: body
            .chunks(CHUNK)
            .enumerate()
            .map(|(i, c)| (i as u64 * MIB, c))
            .collect(),
        size: ((b0 >> 3) as u64 % 24 + 1) * MIB + if b0 & 0x80 != 0 { 512 } else { 0 },
        sector: if b0 & 1 != 0 { 4096 } else { 512 },
    };
    let kind = match (b0 >> 1) & 3 {
        0 => Kind::Auto,
        1 => Kind::Lockspace,
        2 => Kind::Resource,
        _ => Kind::Xleases,
    };
    let opts = CheckOpts {
        kind,
        sector_size: (b1 & 0x10 != 0).then_some(if b1 & 0x20 != 0 { 4096 } else { 512 }),
        align_size: (b1 & 0x40 != 0).then_some(MIB as u32),
    };
    let offset = (b1 as u64 & 3) * MIB;
    let ls: Vec<(&dyn Source, u64)> = if b1 & 4 != 0 {
        vec![(&src as &dyn Source, 0)]
    } else {
        Vec::new()
    };
    let report = check(&src, offset, &ls, &opts).expect("memory reads do not fail");
    let problems = report.problems();
    assert_eq!(report.exit_code() == 0, problems == 0);
    let text = report.render_text();
    assert_eq!(text.lines().count(), report.findings.len() + 1);
    assert!(text.lines().last().unwrap().starts_with("fuzz: "));
    assert!(
        report
            .findings
            .iter()
            .all(|f| !f.message.is_empty() && !f.code.is_empty())
    );
});
