//! The strings users type for leases, as sanlock(8) defines them:
//!
//! ```text
//! LOCKSPACE = <lockspace_name>:<host_id>:<path>:<offset>
//! RESOURCE  = <lockspace_name>:<resource_name>:<path>:<offset>[:<path>:<offset>...][:<lver>|:SH]
//! RINDEX    = <lockspace_name>:<path>:<offset>
//! ```
//! A `:` or space inside a path is escaped with a backslash (`\:`), as in
//! oVirt's NFS mount paths. Offsets may carry an `M` suffix (MiB).

use crate::ondisk::{Name, NameTooLong};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgError {
    #[error(transparent)]
    NameTooLong(#[from] NameTooLong),
    #[error("{what} {value:?} is not a number")]
    BadNumber { what: &'static str, value: String },
    #[error(
        "{0:?} is not a valid RESOURCE (<lockspace_name>:<resource_name>:<path>:<offset>[:<lver>])"
    )]
    BadResource(String),
    #[error("path {0:?} is too long (sanlock paths hold at most 1023 bytes)")]
    PathTooLong(String),
}

/// `SANLK_PATH_LEN`: paths are 1024 bytes with the terminating NUL.
pub const SANLK_PATH_LEN: usize = 1024;
/// `SANLK_MAX_DISKS`
pub const SANLK_MAX_DISKS: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskArg {
    /// Unescaped: ready to open(2).
    pub path: String,
    pub offset: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockspaceArg {
    pub name: Name,
    pub host_id: u64,
    pub disk: DiskArg,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceArg {
    pub lockspace: Name,
    pub name: Name,
    pub disks: Vec<DiskArg>,
    pub lver: Option<u64>,
    pub shared: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RindexArg {
    pub lockspace: Name,
    pub disk: DiskArg,
}

/// Splits at unescaped colons, keeping escapes in the pieces.
fn split_unescaped(s: &str) -> Vec<&str> {
    let b = s.as_bytes();
    let mut parts = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            i += 2;
            continue;
        }
        if b[i] == b':' {
            parts.push(&s[start..i]);
            start = i + 1;
        }
        i += 1;
    }
    parts.push(&s[start.min(s.len())..]);
    parts
}

/// Removes backslash escapes (`sanlock_path_import`).
pub fn unescape_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c == '\\' {
            if let Some(n) = it.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Escapes colons and spaces (`sanlock_path_export`), for printing.
pub fn escape_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        if c == ':' || c == ' ' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// An offset in bytes, or in MiB with an `M` suffix.
pub fn parse_offset(s: &str) -> Result<u64, ArgError> {
    let bad = || ArgError::BadNumber {
        what: "offset",
        value: s.to_string(),
    };
    let (num, mult) = match s.strip_suffix('M') {
        Some(n) => (n, 1u64 << 20),
        None => (s, 1),
    };
    if num.is_empty() {
        return Ok(0);
    }
    num.parse::<u64>()
        .ok()
        .and_then(|v| v.checked_mul(mult))
        .ok_or_else(bad)
}

fn parse_path(s: &str) -> Result<String, ArgError> {
    let p = unescape_path(s);
    if p.len() >= SANLK_PATH_LEN {
        return Err(ArgError::PathTooLong(p));
    }
    Ok(p)
}

/// `<lockspace_name>:<host_id>:<path>:<offset>`; missing trailing parts are
/// zero/empty as with sanlock.
pub fn parse_lockspace(s: &str) -> Result<LockspaceArg, ArgError> {
    let parts = split_unescaped(s);
    let name = Name::new(parts[0])?;
    let host_id = match parts.get(1) {
        Some(h) if !h.is_empty() => h.parse::<u64>().map_err(|_| ArgError::BadNumber {
            what: "host_id",
            value: h.to_string(),
        })?,
        _ => 0,
    };
    let path = parts
        .get(2)
        .map(|p| parse_path(p))
        .transpose()?
        .unwrap_or_default();
    // Anything after the offset belongs to it (sanlock takes the rest).
    let offset = if parts.len() > 3 {
        parse_offset(&parts[3..].join(":"))?
    } else {
        0
    };
    Ok(LockspaceArg {
        name,
        host_id,
        disk: DiskArg { path, offset },
    })
}

/// `<lockspace_name>:<resource_name>:<path>:<offset>[...][:<lver>|:SH]`, with
/// sanlock's rule: one colon is "names only", two colons is an error, and an
/// even number of fields after the names ends with a lver.
pub fn parse_resource(s: &str) -> Result<ResourceArg, ArgError> {
    let bad = || ArgError::BadResource(s.to_string());
    if s.len() < 3 {
        return Err(bad());
    }
    let parts = split_unescaped(s);
    let colons = parts.len() - 1;
    if colons == 0 || colons == 2 {
        return Err(bad());
    }
    let num_disks = (colons - 1) / 2;
    let have_lver = (colons - 1) % 2 == 1;
    if num_disks > SANLK_MAX_DISKS {
        return Err(bad());
    }
    let lockspace = Name::new(&unescape_path(parts[0]))?;
    let name = Name::new(&unescape_path(parts[1]))?;
    let mut disks = Vec::with_capacity(num_disks);
    for d in 0..num_disks {
        let path = parse_path(parts[2 + 2 * d])?;
        if path.is_empty() {
            return Err(bad());
        }
        let off = parts[3 + 2 * d];
        if off.is_empty() {
            return Err(bad());
        }
        disks.push(DiskArg {
            path,
            offset: parse_offset(off)?,
        });
    }
    let (mut lver, mut shared) = (None, false);
    if have_lver {
        let l = parts[parts.len() - 1];
        if l.starts_with("SH") {
            shared = true;
        } else {
            lver = Some(parse_c_u64(l).ok_or(ArgError::BadNumber {
                what: "lver",
                value: l.to_string(),
            })?);
        }
    }
    Ok(ResourceArg {
        lockspace,
        name,
        disks,
        lver,
        shared,
    })
}

/// `<lockspace_name>:<path>:<offset>`
pub fn parse_rindex(s: &str) -> Result<RindexArg, ArgError> {
    let parts = split_unescaped(s);
    let lockspace = Name::new(parts[0])?;
    let path = parts
        .get(1)
        .map(|p| parse_path(p))
        .transpose()?
        .unwrap_or_default();
    let offset = if parts.len() > 2 {
        parse_offset(&parts[2..].join(":"))?
    } else {
        0
    };
    Ok(RindexArg {
        lockspace,
        disk: DiskArg { path, offset },
    })
}

/// `-e <resource_name>[:<offset>]` for rindex commands; `:1M` alone gives
/// only an offset.
pub fn parse_rentry(s: &str) -> Result<(Name, u64), ArgError> {
    let (name, off) = match s.find(':') {
        Some(i) => (&s[..i], parse_offset(&s[i + 1..])?),
        None => (s, 0),
    };
    Ok((Name::new(name)?, off))
}

/// A number as C's `strtoull(s, NULL, 0)` reads it: decimal, 0x hex, 0 octal.
pub fn parse_c_u64(s: &str) -> Option<u64> {
    let s = s.trim();
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u64::from_str_radix(h, 16).ok()
    } else if s.len() > 1 && s.starts_with('0') {
        u64::from_str_radix(&s[1..], 8).ok()
    } else {
        s.parse().ok()
    }
}

/// C's `strtoull(s, NULL, 0)`: the longest valid prefix (decimal, 0x hex,
/// 0 octal), 0 if none, saturating on overflow.
pub fn c_strtoull(s: &str) -> u64 {
    let t = s.trim_start();
    let (neg, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (radix, digits) = if (t.starts_with("0x") || t.starts_with("0X"))
        && t[2..].starts_with(|c: char| c.is_ascii_hexdigit())
    {
        (16, &t[2..])
    } else if t.starts_with('0') {
        (8, t)
    } else {
        (10, t)
    };
    let mut n: u64 = 0;
    for c in digits.chars() {
        let Some(d) = c.to_digit(radix) else { break };
        n = match n
            .checked_mul(radix as u64)
            .and_then(|n| n.checked_add(d as u64))
        {
            Some(n) => n,
            None => return u64::MAX,
        };
    }
    if neg { n.wrapping_neg() } else { n }
}

/// C's `sscanf(s, "%llu")`: optional blanks and sign, then decimal digits
/// (a minus wraps); `None` when no digit follows.
fn scan_llu(s: &str) -> Option<u64> {
    let t = s.trim_start();
    let (neg, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let digits: &str = &t[..t.bytes().take_while(u8::is_ascii_digit).count()];
    if digits.is_empty() {
        return None;
    }
    let n = digits.parse::<u64>().unwrap_or(u64::MAX);
    Some(if neg { n.wrapping_neg() } else { n })
}

/// sanlock's CLI (`parse_arg_resource`) rewrites an `M` offset before
/// parsing: if an `M` occurs anywhere after the third colon (escapes not
/// considered), the digits between that colon and the `M` (`atoll`) are the
/// first disk's offset in MiB, and whatever follows a fourth colon is kept.
pub fn rewrite_mib_offset(arg: &str) -> String {
    let colons: Vec<usize> = arg.match_indices(':').map(|(i, _)| i).take(4).collect();
    if colons.len() < 3 {
        return arg.to_string();
    }
    let c3 = colons[2];
    let Some(m) = arg[c3 + 1..].find('M').map(|i| c3 + 1 + i) else {
        return arg.to_string();
    };
    // offstr is a 16-byte buffer in sanlock; atoll stops at the first non-digit.
    let num = &arg[c3 + 1..m];
    let t = num.trim_start();
    let (neg, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let d: i64 = t[..t.bytes().take_while(u8::is_ascii_digit).count()]
        .parse()
        .unwrap_or(0);
    let mib = (if neg { -d } else { d }).wrapping_mul(1024 * 1024) as u64;
    match colons.get(3) {
        Some(&c4) => format!("{}:{}{}", &arg[..c3], mib, &arg[c4..]),
        None => format!("{}:{}", &arg[..c3], mib),
    }
}

/// `sanlock_str_to_res`, result for result: `-ENXIO` when shorter than 3
/// bytes, -1 for 0 or 2 colons or any bad field (name over 48 bytes, empty
/// or over-long path, offset not a number, empty lver), -2 for more than 4
/// disks. Backslashes escape the next character and are removed. A last
/// field starting with `SH` means shared; otherwise it is a lver
/// (`strtoull(.., 0)`).
pub fn parse_resource_sanlock(s: &str) -> Result<ResourceArg, i32> {
    if s.len() < 3 {
        return Err(-libc::ENXIO);
    }
    let b = s.as_bytes();
    let mut colons = 0;
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            i += 2;
            continue;
        }
        if b[i] == b':' {
            colons += 1;
        }
        i += 1;
    }
    if colons == 0 || colons == 2 {
        return Err(-1);
    }
    let num_disks = (colons - 1) / 2;
    let have_lver = (colons - 1) % 2 == 1;
    if num_disks > SANLK_MAX_DISKS {
        return Err(-2);
    }
    // Fields with escapes removed; a trailing lone backslash fails.
    let mut subs: Vec<Vec<u8>> = vec![Vec::new()];
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' if i + 1 == b.len() => return Err(-1),
            b'\\' => {
                subs.last_mut().expect("one").push(b[i + 1]);
                i += 2;
                continue;
            }
            b':' => subs.push(Vec::new()),
            c => subs.last_mut().expect("one").push(c),
        }
        i += 1;
    }
    let text = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
    let mut out = ResourceArg {
        lockspace: Name::default(),
        name: Name::default(),
        disks: Vec::new(),
        lver: None,
        shared: false,
    };
    let mut path = String::new();
    for (n, sub) in subs.iter().enumerate() {
        if n < 2 && sub.len() > crate::ondisk::NAME_ID_SIZE {
            return Err(-1);
        }
        if n >= 2 && (sub.len() > SANLK_PATH_LEN - 1 || sub.is_empty()) {
            return Err(-1);
        }
        match n {
            0 => out.lockspace = Name::new(&text(sub)).map_err(|_| -1)?,
            1 => out.name = Name::new(&text(sub)).map_err(|_| -1)?,
            _ if n % 2 == 0 && have_lver && out.disks.len() == num_disks => {
                let t = text(sub);
                if t.starts_with("SH") {
                    out.shared = true;
                } else {
                    out.lver = Some(c_strtoull(&t));
                }
            }
            _ if n % 2 == 0 => path = text(sub),
            _ => {
                let offset = scan_llu(&text(sub)).ok_or(-1)?;
                out.disks.push(DiskArg {
                    path: std::mem::take(&mut path),
                    offset,
                });
            }
        }
    }
    Ok(out)
}

/// `sanlock_state_to_args`: the state string split at unescaped spaces,
/// each piece parsed as a RESOURCE.
pub fn state_to_args(state: &[u8]) -> Result<Vec<ResourceArg>, (i32, usize)> {
    let text = String::from_utf8_lossy(state);
    let mut pieces = Vec::new();
    let mut cur = String::new();
    let mut esc = false;
    for c in text.chars() {
        if esc {
            cur.push(c);
            esc = false;
        } else if c == '\\' {
            cur.push(c);
            esc = true;
        } else if c == ' ' {
            pieces.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    pieces.push(cur);
    let count = pieces.len();
    pieces
        .iter()
        .map(|p| parse_resource_sanlock(p).map_err(|rv| (rv, count)))
        .collect()
}

impl ResourceArg {
    /// `sanlock_res_to_str`: `LS:RES:path:off[:path:off...]:lver|SH`.
    pub fn to_sanlock_string(&self) -> String {
        let mut s = format!("{}:{}", self.lockspace, self.name);
        for d in &self.disks {
            s.push_str(&format!(":{}:{}", escape_path(&d.path), d.offset));
        }
        if self.shared {
            s.push_str(":SH");
        } else {
            s.push_str(&format!(":{}", self.lver.unwrap_or(0)));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockspace_with_escaped_colon_and_mib() {
        let ls = parse_lockspace(r"e946:1:/rhev/mnt/alpine\:_01/ids:1M").unwrap();
        assert_eq!(ls.name.to_string(), "e946");
        assert_eq!(ls.host_id, 1);
        assert_eq!(ls.disk.path, "/rhev/mnt/alpine:_01/ids");
        assert_eq!(ls.disk.offset, 1 << 20);
    }

    #[test]
    fn resource_forms() {
        let r = parse_resource("LS:R1:/dev/x:1048576").unwrap();
        assert_eq!(r.disks.len(), 1);
        assert_eq!(r.lver, None);
        let r = parse_resource("LS:R1:/dev/x:2M:77").unwrap();
        assert_eq!(r.disks[0].offset, 2 << 20);
        assert_eq!(r.lver, Some(77));
        let r = parse_resource("LS:R1:/dev/x:0:SH").unwrap();
        assert!(r.shared);
        assert!(parse_resource("LS:R1:/dev/x").is_err());
        assert!(parse_resource("LS").is_err());
        assert_eq!(r.to_sanlock_string(), "LS:R1:/dev/x:0:SH");
    }

    #[test]
    fn names_over_48_bytes_are_refused() {
        let long = "n".repeat(49);
        assert!(matches!(
            parse_lockspace(&format!("{long}:1:/f:0")),
            Err(ArgError::NameTooLong(_))
        ));
    }

    #[test]
    fn sanlock_client_resource_parse() {
        // sanlock's M rewrite finds colons with strchr, escaped or not: the
        // escaped one counts as the third, "b:2" becomes 0 MiB, and the
        // rest ("2M") is then read by %llu as 2.
        let r = parse_resource_sanlock(&rewrite_mib_offset(r"LS:R:/a\:b:2M:7")).unwrap();
        assert_eq!((r.disks[0].path.as_str(), r.disks[0].offset), ("/a:0", 2));
        let r = parse_resource_sanlock(r"LS:R:/a\:b:2:7").unwrap();
        assert_eq!((r.disks[0].path.as_str(), r.lver), ("/a:b", Some(7)));
        assert_eq!(rewrite_mib_offset("LS:R:/f:1M"), "LS:R:/f:1048576");
        assert_eq!(rewrite_mib_offset("LS:R:/f:1M:5"), "LS:R:/f:1048576:5");
        let r = parse_resource_sanlock("LS:R:/f:0:/g:512:SH").unwrap();
        assert_eq!((r.disks.len(), r.shared, r.lver), (2, true, None));
        let r = parse_resource_sanlock("LS:R:/f:12abc:0x10").unwrap();
        assert_eq!((r.disks[0].offset, r.lver), (12, Some(16)));
        assert_eq!(parse_resource_sanlock("L"), Err(-libc::ENXIO));
        assert_eq!(parse_resource_sanlock("LS:R:/f"), Err(-1));
        assert_eq!(parse_resource_sanlock("LS:R:/f:x"), Err(-1));
        assert_eq!(parse_resource_sanlock("LS:R::0"), Err(-1));
        assert_eq!(parse_resource_sanlock("LS:R:/f:0:"), Err(-1));
        assert_eq!(parse_resource_sanlock("LS:R:a:0:b:0:c:0:d:0:e:0"), Err(-2));
        let names = parse_resource_sanlock("LS:R").unwrap();
        assert!(names.disks.is_empty());
        let st = state_to_args(b"LS:a:/f:0:1 LS:b:/f:1048576:SH").unwrap();
        assert_eq!(st.len(), 2);
        assert!(st[1].shared);
    }

    #[test]
    fn rentry_offset_only() {
        let (n, o) = parse_rentry(":3M").unwrap();
        assert!(n.is_empty());
        assert_eq!(o, 3 << 20);
    }
}
