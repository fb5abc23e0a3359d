//! A request's payload, decoded from the bytes that follow its header
//! without doing any I/O (sans-io, in the shape of mini-redis's
//! `Frame::check`/`parse`): the daemon's connection task keeps the bytes a
//! client has sent so far and asks [`decode`] whether a whole request is
//! there. No byte offset of a payload is known outside `proto/`.
//!
//! What each command reads is what sanlock's daemon reads for it, in the
//! same order, whatever the header's `length` says (sanlock's own lookup
//! client counts 128 bytes where it sends 64). A payload that decodes
//! badly is answered with the error sanlock gives, and only the bytes read
//! up to that point are consumed, as sanlock's `recv` calls would.

use super::{
    Cmd, HEADER_SIZE, Header, MAX_CLIENT_MSG, SANLK_MAX_RESOURCES, SANLK_REL_ALL, SANLK_REL_ORPHAN,
    SANLK_REL_RENAME, SanlkDisk, SanlkHostEvent, SanlkLockspace, SanlkOptions, SanlkRentry,
    SanlkResource, SanlkRindex, WireStruct,
};

/// Each killpath field (path, args) on the wire.
pub const KILLPATH_FIELD: usize = 128;
/// The largest LVB a client may set (sanlock's limit).
pub const MAX_LVB: usize = 4096;

/// A decoded request: the command's arguments, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// A command with no payload: version, register, restrict, shutdown,
    /// shutdown_wait, status, log_dump, get_lockspaces, inquire.
    Bare,
    /// One `sanlk_lockspace`: host_status, renewal, get_hosts, set_config,
    /// end_event, add/inq/rem/write/read_lockspace, examine_lockspace.
    Lockspace(SanlkLockspace),
    /// reg_event, set_event: a lockspace and a host event, each decoded
    /// on its own (the first error wins, both are consumed).
    LockspaceEvent(Result<(SanlkLockspace, SanlkHostEvent), i32>),
    /// align: one disk.
    Align(SanlkDisk),
    /// acquire: the resources, each with its disks, and the options.
    Acquire {
        resources: Vec<SanlkResource>,
        opts: SanlkOptions,
    },
    /// release with SANLK_REL_ORPHAN: one resource head.
    ReleaseOrphans(SanlkResource),
    /// release with SANLK_REL_RENAME: the old and the new head.
    ReleaseRename(SanlkResource, SanlkResource),
    /// release: the named resources (lockspace and name only), or all.
    Release(Option<Vec<SanlkResource>>),
    /// A resource head with no disks: convert, examine_resource, get_lvb.
    ResourceHead(SanlkResource),
    /// A resource with its disks (1 to 4): request, read_resource,
    /// write_resource, read_resource_owners.
    ResourceDisks(SanlkResource),
    /// killpath: the program and its arguments.
    Killpath { path: String, args: String },
    /// set_lvb: a resource head and the value.
    SetLvb { res: SanlkResource, data: Vec<u8> },
    /// format_rindex, rebuild_rindex.
    Rindex(SanlkRindex),
    /// update_rindex, lookup_rindex, create_resource, delete_resource.
    RindexEntry(SanlkRindex, SanlkRentry),
}

/// What [`decode`] found in the bytes after a header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded<T = Request> {
    /// Not all there yet: read more and ask again.
    More,
    /// A whole request (or the error it is answered with), which took
    /// `consumed` bytes; then `skip` more bytes are to be read and dropped
    /// (at most what the header's length says, bounded) before replying.
    Done {
        req: Result<T, i32>,
        consumed: usize,
        skip: usize,
    },
}

struct More;

/// A reading position in the bytes received so far.
struct Cur<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], More> {
        let end = self.at.checked_add(n).ok_or(More)?;
        let s = self.b.get(self.at..end).ok_or(More)?;
        self.at = end;
        Ok(s)
    }

    /// A fixed-size struct; a bad one is -EINVAL, its bytes consumed.
    fn field<T: WireStruct>(&mut self) -> Result<Result<T, i32>, More> {
        Ok(T::decode(self.take(T::SIZE)?).map_err(|_| -libc::EINVAL))
    }

    /// A resource head alone: its num_disks says nothing here.
    fn head(&mut self) -> Result<Result<SanlkResource, i32>, More> {
        let mut b = self.take(SanlkResource::HEAD_SIZE)?.to_vec();
        b[124..128].copy_from_slice(&0u32.to_ne_bytes());
        Ok(SanlkResource::decode(&b).map_err(|_| -libc::EINVAL))
    }

    /// A resource and its disks: none or more than 4 is -ERANGE, read no
    /// further.
    fn with_disks(&mut self) -> Result<Result<SanlkResource, i32>, More> {
        let head = self.take(SanlkResource::HEAD_SIZE)?;
        let n = match SanlkResource::num_disks_in(head) {
            Ok(n) if n > 0 => n,
            _ => return Ok(Err(-libc::ERANGE)),
        };
        let disks = self.take(n * SanlkDisk::SIZE)?;
        let mut b = head.to_vec();
        b.extend_from_slice(disks);
        Ok(SanlkResource::decode(&b).map_err(|_| -libc::EINVAL))
    }
}

/// The bytes the header's length counts after itself, bounded by the
/// largest message a client may send.
pub fn declared_payload(h: &Header) -> usize {
    (h.length as usize)
        .saturating_sub(HEADER_SIZE)
        .min(MAX_CLIENT_MSG)
}

/// Decodes the payload of `cmd` from `payload` (the bytes received after
/// its header so far; more may follow).
pub fn decode(h: &Header, cmd: Cmd, payload: &[u8]) -> Decoded {
    let mut c = Cur { b: payload, at: 0 };
    match parse(h, cmd, &mut c) {
        Err(More) => Decoded::More,
        Ok((req, skip)) => Decoded::Done {
            req,
            consumed: c.at,
            skip,
        },
    }
}

/// hactl's HISTORY request: one `sanlk_lockspace`.
pub fn decode_history(payload: &[u8]) -> Decoded<SanlkLockspace> {
    let mut c = Cur { b: payload, at: 0 };
    match c.field::<SanlkLockspace>() {
        Err(More) => Decoded::More,
        Ok(req) => Decoded::Done {
            req,
            consumed: c.at,
            skip: 0,
        },
    }
}

type Parsed = (Result<Request, i32>, usize);

fn parse(h: &Header, cmd: Cmd, c: &mut Cur) -> Result<Parsed, More> {
    let done = |r: Result<Request, i32>| Ok((r, 0));
    match cmd {
        Cmd::Version
        | Cmd::Register
        | Cmd::Restrict
        | Cmd::Shutdown
        | Cmd::ShutdownWait
        | Cmd::Status
        | Cmd::LogDump
        | Cmd::GetLockspaces
        | Cmd::Inquire => done(Ok(Request::Bare)),
        Cmd::HostStatus
        | Cmd::Renewal
        | Cmd::GetHosts
        | Cmd::SetConfig
        | Cmd::EndEvent
        | Cmd::AddLockspace
        | Cmd::InqLockspace
        | Cmd::RemLockspace
        | Cmd::WriteLockspace
        | Cmd::ReadLockspace
        | Cmd::ExamineLockspace => done(c.field().map(|r| r.map(Request::Lockspace))?),
        Cmd::RegEvent | Cmd::SetEvent => {
            let ls = c.field::<SanlkLockspace>()?;
            let he = c.field::<SanlkHostEvent>()?;
            done(Ok(Request::LockspaceEvent(ls.and_then(|l| Ok((l, he?))))))
        }
        Cmd::Align => done(c.field().map(|r| r.map(Request::Align))?),
        Cmd::Acquire => {
            let count = h.data as usize;
            if count > SANLK_MAX_RESOURCES {
                // Refused before reading: what the length counts is
                // dropped so the client reads the reply.
                return Ok((Err(-libc::E2BIG), declared_payload(h)));
            }
            let mut resources = Vec::with_capacity(count);
            for _ in 0..count {
                match c.with_disks()? {
                    Ok(r) => resources.push(r),
                    Err(e) => return done(Err(e)),
                }
            }
            done(
                c.field::<SanlkOptions>()?
                    .map(|opts| Request::Acquire { resources, opts }),
            )
        }
        Cmd::Release => {
            if h.cmd_flags & SANLK_REL_ORPHAN != 0 {
                return done(c.head()?.map(Request::ReleaseOrphans));
            }
            if h.cmd_flags & SANLK_REL_RENAME != 0 {
                let old = c.head()?;
                if let Err(e) = old {
                    return done(Err(e));
                }
                let new = c.head()?;
                return done(old.and_then(|o| Ok(Request::ReleaseRename(o, new?))));
            }
            if h.cmd_flags & SANLK_REL_ALL != 0 {
                return done(Ok(Request::Release(None)));
            }
            let count = (h.data as usize).min(SANLK_MAX_RESOURCES);
            let mut v = Vec::with_capacity(count);
            for _ in 0..count {
                let b = c.take(SanlkResource::HEAD_SIZE)?;
                let mut res = SanlkResource::default();
                res.lockspace_name.0.copy_from_slice(&b[0..48]);
                res.name.0.copy_from_slice(&b[48..96]);
                v.push(res);
            }
            done(Ok(Request::Release(Some(v))))
        }
        Cmd::Convert | Cmd::ExamineResource | Cmd::GetLvb => {
            done(c.head()?.map(Request::ResourceHead))
        }
        Cmd::Request | Cmd::ReadResource | Cmd::WriteResource | Cmd::ReadResourceOwners => {
            done(c.with_disks()?.map(Request::ResourceDisks))
        }
        Cmd::Killpath => {
            let b = c.take(2 * KILLPATH_FIELD)?;
            let field = |x: &[u8]| {
                // sanlock forces a NUL at the last byte of each field.
                let x = &x[..KILLPATH_FIELD - 1];
                let n = x.iter().position(|&b| b == 0).unwrap_or(x.len());
                String::from_utf8_lossy(&x[..n]).into_owned()
            };
            done(Ok(Request::Killpath {
                path: field(&b[..KILLPATH_FIELD]),
                args: field(&b[KILLPATH_FIELD..]),
            }))
        }
        Cmd::SetLvb => {
            let lvb_len =
                (h.length as usize).saturating_sub(HEADER_SIZE + SanlkResource::HEAD_SIZE);
            let res = match c.head()? {
                Ok(r) => r,
                Err(e) => return done(Err(e)),
            };
            if lvb_len > MAX_LVB {
                return done(Err(-libc::E2BIG));
            }
            let data = c.take(lvb_len)?.to_vec();
            done(Ok(Request::SetLvb { res, data }))
        }
        Cmd::FormatRindex | Cmd::RebuildRindex => done(c.field().map(|r| r.map(Request::Rindex))?),
        Cmd::UpdateRindex | Cmd::LookupRindex | Cmd::CreateResource | Cmd::DeleteResource => {
            // Fixed sizes, whatever `length` says: sanlock's lookup client
            // counts a sanlk_resource (128) where it sends a sanlk_rentry (64).
            let ri = c.field::<SanlkRindex>()?;
            if let Err(e) = ri {
                return done(Err(e));
            }
            let re = c.field::<SanlkRentry>()?;
            done(ri.and_then(|ri| Ok(Request::RindexEntry(ri, re?))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ondisk::Name;
    use crate::proto::{SanlkPath, SanlkResource};

    fn header(cmd: Cmd, data: u32, flags: u32, payload: usize) -> Header {
        Header::request(cmd, flags, payload, data, 0)
    }

    fn resource(disks: usize) -> SanlkResource {
        SanlkResource {
            lockspace_name: Name::new("ls").unwrap(),
            name: Name::new("r").unwrap(),
            disks: (0..disks)
                .map(|i| SanlkDisk::new(SanlkPath::new("/dev/x").unwrap(), i as u64 * 1024))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn an_acquire_is_whole_only_with_its_options() {
        let res = resource(2);
        let mut b = res.encode();
        b.extend(SanlkOptions::default().encode());
        let h = header(Cmd::Acquire, 1, 0, b.len());
        for cut in 0..b.len() {
            assert_eq!(decode(&h, Cmd::Acquire, &b[..cut]), Decoded::More, "{cut}");
        }
        let mut more = b.clone();
        more.extend_from_slice(&[7; 40]);
        match decode(&h, Cmd::Acquire, &more) {
            Decoded::Done {
                req: Ok(Request::Acquire { resources, .. }),
                consumed,
                skip: 0,
            } => {
                assert_eq!(resources, vec![res]);
                assert_eq!(consumed, b.len(), "the next request's bytes stay");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_payloads_get_sanlocks_errors_and_consume_what_it_reads() {
        // A resource with no disks: -ERANGE after its head.
        let b = resource(0).encode();
        let h = header(Cmd::ReadResource, 0, 0, b.len());
        assert_eq!(
            decode(&h, Cmd::ReadResource, &b),
            Decoded::Done {
                req: Err(-libc::ERANGE),
                consumed: 128,
                skip: 0
            }
        );
        // Too many resources: refused before reading, the payload dropped.
        let h = header(Cmd::Acquire, 9, 0, 5000);
        assert_eq!(
            decode(&h, Cmd::Acquire, &[]),
            Decoded::Done {
                req: Err(-libc::E2BIG),
                consumed: 0,
                skip: 5000
            }
        );
        // A huge declared length is bounded.
        let mut h = header(Cmd::Acquire, 9, 0, 0);
        h.length = u32::MAX;
        match decode(&h, Cmd::Acquire, &[]) {
            Decoded::Done { skip, .. } => assert_eq!(skip, MAX_CLIENT_MSG),
            other => panic!("{other:?}"),
        }
        // An LVB over 4096 bytes.
        let h = header(Cmd::SetLvb, 0, 0, 128 + 5000);
        let b = resource(0).encode();
        assert!(matches!(
            decode(&h, Cmd::SetLvb, &b),
            Decoded::Done {
                req: Err(e),
                consumed: 128,
                ..
            } if e == -libc::E2BIG
        ));
    }

    #[test]
    fn lookup_reads_an_entry_whatever_the_length_says() {
        let mut b = SanlkRindex::default().encode();
        b.extend(SanlkRentry::default().encode());
        // sanlock's client counts 128 bytes for the entry.
        let h = header(Cmd::LookupRindex, 0, 0, SanlkRindex::SIZE + 128);
        match decode(&h, Cmd::LookupRindex, &b) {
            Decoded::Done {
                req: Ok(Request::RindexEntry(..)),
                consumed,
                ..
            } => assert_eq!(consumed, b.len()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn release_by_name_reads_heads_bounded_by_the_maximum() {
        let one = resource(0).encode();
        let b: Vec<u8> = (0..8).flat_map(|_| one.clone()).collect();
        let h = header(Cmd::Release, 1000, 0, b.len());
        match decode(&h, Cmd::Release, &b) {
            Decoded::Done {
                req: Ok(Request::Release(Some(v))),
                consumed,
                ..
            } => {
                assert_eq!(v.len(), 8);
                assert_eq!(consumed, 8 * 128);
            }
            other => panic!("{other:?}"),
        }
    }
}
