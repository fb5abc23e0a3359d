//! sanlock's socket protocol (`sanlock_sock.h`, `sanlock.h`,
//! `sanlock_admin.h`): the 32-byte message header, the command numbers, the
//! flags, and (in [`structs`]) every payload struct, each encoded and decoded
//! field by field, little-endian, at the offsets of the x86_64 C structs.
//!
//! Receiving follows the "check, then parse" pattern: [`Header::check`] says
//! whether a buffer holds an acceptable header ([`ProtoError::Incomplete`]
//! means "read more", anything else means the message is malformed), and
//! [`Header::parse`] returns it with its typed [`Cmd`]. Decoders never panic
//! and never trust a length or a count from the peer.
//!
//! [`client`] is a blocking client for the daemon's Unix socket.

pub mod client;
pub mod request;
pub mod structs;

pub use structs::{
    EventCb, SanlkDisk, SanlkHost, SanlkHostEvent, SanlkLockspace, SanlkOptions, SanlkPath,
    SanlkRentry, SanlkResource, SanlkRindex, SanlkState, WireStruct,
};

/// `SM_MAGIC`: the first field of every message.
pub const SM_MAGIC: u32 = 0x0428_2010;
/// `SM_PROTO`: socket protocol 0.1 (major in the high 16 bits).
pub const SM_PROTO: u32 = 0x0000_0001;
/// `SM_CB_PROTO`: the version field of event callbacks ([`EventCb`]).
pub const SM_CB_PROTO: u32 = 0x0000_0001;
/// `SM_CB_GET_EVENT`: the cmd field of event callbacks.
pub const SM_CB_GET_EVENT: u32 = 1;
/// hactl's own command, not sanlock's: the history of a lockspace (the
/// delta-lease timestamps seen, our renewals, host state changes and their
/// rules) as JSON, for `client host_status --history`. Request: header +
/// `sanlk_lockspace` naming it; reply: header (`data` = result, `data2` =
/// body length) + JSON. Far above sanlock's 1..=40 so that no sanlock
/// command will take it; sanlock's daemon ignores it without a reply.
pub const HACTL_CMD_HISTORY: u32 = 0x4841_0001;
/// `MAX_CLIENT_MSG` (defined by sanlock, unused by it).
pub const MAX_CLIENT_MSG: usize = 1024 * 1024;

/// The header size, `sizeof(struct sm_header)`.
pub const HEADER_SIZE: usize = 32;

pub const SANLK_NAME_LEN: usize = 48;
pub const SANLK_PATH_LEN: usize = 1024;
pub const SANLK_MAX_DISKS: usize = 4;
pub const SANLK_MAX_RESOURCES: usize = 8;
pub const SANLK_HELPER_PATH_LEN: usize = 128;
pub const SANLK_HELPER_ARGS_LEN: usize = 128;
/// The longest `sanlk_state` string, including its NUL.
pub const SANLK_STATE_MAXSTR: usize = 4096;
/// `LOG_DUMP_SIZE`: the daemon's log ring buffer, and what the CLI asks for.
pub const LOG_DUMP_SIZE: usize = 1024 * 1024;
/// `DEFAULT_MAX_HOSTS`
pub const DEFAULT_MAX_HOSTS: u32 = 2000;
/// `DEFAULT_IO_TIMEOUT`
pub const DEFAULT_IO_TIMEOUT: u32 = 10;

/// `SANLK_SOCKET_NAME`, inside the run dir.
pub const SANLK_SOCKET_NAME: &str = "sanlock.sock";
/// `DEFAULT_RUN_DIR`, overridden by `$SANLOCK_RUN_DIR`.
pub const DEFAULT_RUN_DIR: &str = "/run/sanlock";

/// The version hactl speaks as: sanlock 3.8.5 (`sanlock_version_combined`).
pub const VERSION_MAJOR: u32 = 3;
pub const VERSION_MINOR: u32 = 8;
pub const VERSION_PATCH: u32 = 5;
pub const VERSION_BUILD: u32 = 0;
pub const VERSION_COMBINED: u32 =
    (VERSION_MAJOR << 24) | (VERSION_MINOR << 16) | (VERSION_PATCH << 8) | VERSION_BUILD;

// Lockspace flags (sanlk_lockspace.flags).
pub const SANLK_LSF_ADD: u32 = 0x1;
pub const SANLK_LSF_REM: u32 = 0x2;
pub const SANLK_LSF_ALIGN1M: u32 = 0x10;
pub const SANLK_LSF_ALIGN2M: u32 = 0x20;
pub const SANLK_LSF_ALIGN4M: u32 = 0x40;
pub const SANLK_LSF_ALIGN8M: u32 = 0x80;
pub const SANLK_LSF_SECTOR512: u32 = 0x100;
pub const SANLK_LSF_SECTOR4K: u32 = 0x200;

// Resource flags (sanlk_resource.flags).
pub const SANLK_RES_LVER: u32 = 0x1;
pub const SANLK_RES_NUM_HOSTS: u32 = 0x2;
pub const SANLK_RES_SHARED: u32 = 0x4;
pub const SANLK_RES_PERSISTENT: u32 = 0x8;
pub const SANLK_RES_ALIGN1M: u32 = 0x10;
pub const SANLK_RES_ALIGN2M: u32 = 0x20;
pub const SANLK_RES_ALIGN4M: u32 = 0x40;
pub const SANLK_RES_ALIGN8M: u32 = 0x80;
pub const SANLK_RES_SECTOR512: u32 = 0x100;
pub const SANLK_RES_SECTOR4K: u32 = 0x200;

// Resource index flags (sanlk_rindex.flags).
pub const SANLK_RIF_ALIGN1M: u32 = 0x10;
pub const SANLK_RIF_ALIGN2M: u32 = 0x20;
pub const SANLK_RIF_ALIGN4M: u32 = 0x40;
pub const SANLK_RIF_ALIGN8M: u32 = 0x80;
pub const SANLK_RIF_SECTOR512: u32 = 0x100;
pub const SANLK_RIF_SECTOR4K: u32 = 0x200;

// cmd_flags of lockspace commands.
pub const SANLK_ADD_ASYNC: u32 = 0x1;
pub const SANLK_REM_ASYNC: u32 = 0x1;
pub const SANLK_REM_UNUSED: u32 = 0x2;
pub const SANLK_INQ_WAIT: u32 = 0x1;
pub const SANLK_WRITE_CLEAR: u32 = 0x1;

// Host states (the low nibble of sanlk_host.flags).
pub const SANLK_HOST_UNKNOWN: u32 = 1;
pub const SANLK_HOST_FREE: u32 = 2;
pub const SANLK_HOST_LIVE: u32 = 3;
pub const SANLK_HOST_FAIL: u32 = 4;
pub const SANLK_HOST_DEAD: u32 = 5;
pub const SANLK_HOST_MASK: u32 = 0xF;

// SET_CONFIG commands (header data).
pub const SANLK_CONFIG_USED: u32 = 0x1;
pub const SANLK_CONFIG_UNUSED: u32 = 0x2;
pub const SANLK_CONFIG_USED_BY_ORPHANS: u32 = 0x4;
pub const SANLK_CONFIG_UNUSED_BY_ORPHANS: u32 = 0x8;

// SET_EVENT flags.
pub const SANLK_SETEV_CUR_GENERATION: u32 = 0x1;
pub const SANLK_SETEV_CLEAR_HOSTID: u32 = 0x2;
pub const SANLK_SETEV_CLEAR_EVENT: u32 = 0x4;
pub const SANLK_SETEV_REPLACE_EVENT: u32 = 0x8;
pub const SANLK_SETEV_ALL_HOSTS: u32 = 0x10;

// Test/rindex flags.
pub const SANLK_TRF_FAIL: u32 = 0x1;
pub const SANLK_RX_NO_LOCKSPACE: u32 = 0x1;
pub const SANLK_RXUP_ADD: u32 = 0x1_0000;
pub const SANLK_RXUP_REM: u32 = 0x2_0000;

// RESTRICT flags.
pub const SANLK_RESTRICT_ALL: u32 = 0x1;
pub const SANLK_RESTRICT_SIGKILL: u32 = 0x2;
pub const SANLK_RESTRICT_SIGTERM: u32 = 0x4;

// ACQUIRE / RELEASE flags.
pub const SANLK_ACQUIRE_LVB: u32 = 0x1;
pub const SANLK_ACQUIRE_ORPHAN: u32 = 0x2;
pub const SANLK_ACQUIRE_ORPHAN_ONLY: u32 = 0x4;
pub const SANLK_ACQUIRE_OWNER_NOWAIT: u32 = 0x8;
pub const SANLK_REL_ALL: u32 = 0x1;
pub const SANLK_REL_RENAME: u32 = 0x2;
pub const SANLK_REL_ORPHAN: u32 = 0x4;
pub const SANLK_CONVERT_OWNER_NOWAIT: u32 = 0x8;
/// `sanlock_request` force modes (header data) and flags.
pub const SANLK_REQ_FORCE: u32 = 1;
pub const SANLK_REQ_GRACEFUL: u32 = 2;
pub const SANLK_REQUEST_NEXT_LVER: u32 = 0x1;
/// `sanlock_killpath` flag: the helper passes the pid to the kill program.
pub const SANLK_KILLPATH_PID: u32 = 0x1;

// sanlk_state types.
pub const SANLK_STATE_DAEMON: u32 = 1;
pub const SANLK_STATE_CLIENT: u32 = 2;
pub const SANLK_STATE_LOCKSPACE: u32 = 3;
pub const SANLK_STATE_RESOURCE: u32 = 4;
pub const SANLK_STATE_HOST: u32 = 5;
pub const SANLK_STATE_RENEWAL: u32 = 6;

/// sanlock's `host_state_str`: the name the CLI prints for a host's flags.
pub fn host_state_name(flags: u32) -> &'static str {
    match flags & SANLK_HOST_MASK {
        SANLK_HOST_FREE => "FREE",
        SANLK_HOST_LIVE => "LIVE",
        SANLK_HOST_FAIL => "FAIL",
        SANLK_HOST_DEAD => "DEAD",
        SANLK_HOST_UNKNOWN => "UNKNOWN",
        _ => "ERROR",
    }
}

/// The LSF sector flag for a sector size (`sanlk_lsf_sector_size_to_flag`); 0 if none.
pub fn lsf_sector_flag(sector_size: u32) -> u32 {
    match sector_size {
        512 => SANLK_LSF_SECTOR512,
        4096 => SANLK_LSF_SECTOR4K,
        _ => 0,
    }
}

/// The LSF align flag for an align size (`sanlk_lsf_align_size_to_flag`); 0 if none.
pub fn lsf_align_flag(align_size: u32) -> u32 {
    match align_size {
        0x10_0000 => SANLK_LSF_ALIGN1M,
        0x20_0000 => SANLK_LSF_ALIGN2M,
        0x40_0000 => SANLK_LSF_ALIGN4M,
        0x80_0000 => SANLK_LSF_ALIGN8M,
        _ => 0,
    }
}

/// The sector size an LSF flag word names (`sanlk_lsf_sector_flag_to_size`); 0 if none.
pub fn lsf_sector_size(flags: u32) -> u32 {
    if flags & SANLK_LSF_SECTOR512 != 0 {
        512
    } else if flags & SANLK_LSF_SECTOR4K != 0 {
        4096
    } else {
        0
    }
}

/// The align size an LSF flag word names (`sanlk_lsf_align_flag_to_size`); 0 if none.
pub fn lsf_align_size(flags: u32) -> u32 {
    if flags & SANLK_LSF_ALIGN1M != 0 {
        0x10_0000
    } else if flags & SANLK_LSF_ALIGN2M != 0 {
        0x20_0000
    } else if flags & SANLK_LSF_ALIGN4M != 0 {
        0x40_0000
    } else if flags & SANLK_LSF_ALIGN8M != 0 {
        0x80_0000
    } else {
        0
    }
}

macro_rules! commands {
    ($($var:ident = $num:literal, $name:literal;)*) => {
        /// A command number (`SM_CMD_*`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u32)]
        pub enum Cmd {
            $($var = $num,)*
        }

        impl Cmd {
            /// Every command, in number order.
            pub const ALL: &'static [Cmd] = &[$(Cmd::$var,)*];

            pub fn from_u32(n: u32) -> Option<Cmd> {
                match n {
                    $($num => Some(Cmd::$var),)*
                    _ => None,
                }
            }

            /// The name sanlock uses for it (the `debug_cmd` conf key).
            pub fn name(self) -> &'static str {
                match self {
                    $(Cmd::$var => $name,)*
                }
            }

            pub fn from_name(s: &str) -> Option<Cmd> {
                match s {
                    $($name => Some(Cmd::$var),)*
                    _ => None,
                }
            }
        }
    };
}

commands! {
    Register = 1, "register";
    AddLockspace = 2, "add_lockspace";
    RemLockspace = 3, "rem_lockspace";
    Shutdown = 4, "shutdown";
    Status = 5, "status";
    LogDump = 6, "log_dump";
    Acquire = 7, "acquire";
    Release = 8, "release";
    Inquire = 9, "inquire";
    Restrict = 10, "restrict";
    Request = 11, "request";
    Align = 12, "align";
    ExamineLockspace = 13, "examine_lockspace";
    ExamineResource = 14, "examine_resource";
    HostStatus = 15, "host_status";
    InqLockspace = 16, "inq_lockspace";
    Killpath = 17, "killpath";
    WriteLockspace = 18, "write_lockspace";
    WriteResource = 19, "write_resource";
    ReadLockspace = 20, "read_lockspace";
    ReadResource = 21, "read_resource";
    GetLockspaces = 22, "get_lockspaces";
    GetHosts = 23, "get_hosts";
    ReadResourceOwners = 24, "read_resource_owners";
    SetLvb = 25, "set_lvb";
    GetLvb = 26, "get_lvb";
    Convert = 27, "convert";
    Version = 28, "version";
    ShutdownWait = 29, "shutdown_wait";
    RegEvent = 30, "reg_event";
    EndEvent = 31, "end_event";
    SetEvent = 32, "set_event";
    SetConfig = 33, "set_config";
    Renewal = 34, "renewal";
    FormatRindex = 35, "format_rindex";
    UpdateRindex = 36, "update_rindex";
    LookupRindex = 37, "lookup_rindex";
    CreateResource = 38, "create_resource";
    DeleteResource = 39, "delete_resource";
    RebuildRindex = 40, "rebuild_rindex";
}

impl std::fmt::Display for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why bytes from a peer are not an acceptable message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// Not an error in the bytes: the message is not all there yet.
    #[error("incomplete {what}: {have} of {need} bytes received, read more")]
    Incomplete {
        what: &'static str,
        need: usize,
        have: usize,
    },
    #[error("{what} is {have} bytes, {need} expected")]
    WrongLength {
        what: &'static str,
        need: usize,
        have: usize,
    },
    #[error("bad magic 0x{0:08x} (sanlock messages start with 0x04282010)")]
    BadMagic(u32),
    #[error(
        "unsupported protocol version 0x{version:08x}: major {} is newer than this daemon's 0",
        version >> 16
    )]
    UnsupportedVersion { version: u32 },
    #[error("unknown command number {0}")]
    UnknownCmd(u32),
    #[error("num_disks {0} is over sanlock's maximum of 4")]
    TooManyDisks(u32),
    #[error("state string of {0} bytes is over sanlock's maximum of 4096")]
    StateStrTooLong(u32),
    #[error("path has no terminating NUL")]
    PathNotTerminated,
    #[error("path of {0} bytes does not fit in sanlock's 1024 (with its NUL)")]
    PathTooLong(usize),
    #[error("path contains a NUL byte")]
    PathHasNul,
}

impl ProtoError {
    /// True when the bytes so far are fine but more are needed.
    pub fn is_incomplete(&self) -> bool {
        matches!(self, ProtoError::Incomplete { .. })
    }
}

pub(crate) fn need(what: &'static str, need: usize, buf: &[u8]) -> Result<(), ProtoError> {
    if buf.len() < need {
        Err(ProtoError::Incomplete {
            what,
            need,
            have: buf.len(),
        })
    } else {
        Ok(())
    }
}

pub(crate) fn exact(what: &'static str, size: usize, buf: &[u8]) -> Result<(), ProtoError> {
    need(what, size, buf)?;
    if buf.len() != size {
        return Err(ProtoError::WrongLength {
            what,
            need: size,
            have: buf.len(),
        });
    }
    Ok(())
}

pub(crate) fn get_u32(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}

pub(crate) fn get_u64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

pub(crate) fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

/// `struct sm_header`: 8 × u32, 32 bytes.
///
/// | off | field | |
/// |---|---|---|
/// | 0 | magic | [`SM_MAGIC`] |
/// | 4 | version | [`SM_PROTO`] |
/// | 8 | cmd | [`Cmd`] |
/// | 12 | cmd_flags | per command |
/// | 16 | length | 32 + payload (informational; never used to frame) |
/// | 20 | seq | 0 from clients, echoed in replies |
/// | 24 | data | request argument; in replies the result ([`Header::result`]) |
/// | 28 | data2 | request argument; in replies an extra value |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    pub magic: u32,
    pub version: u32,
    pub cmd: u32,
    pub cmd_flags: u32,
    pub length: u32,
    pub seq: u32,
    pub data: u32,
    pub data2: u32,
}

impl Header {
    pub const SIZE: usize = HEADER_SIZE;

    /// A request header as libsanlock's `send_header` builds it: magic,
    /// version SM_PROTO, `length = 32 + datalen`, seq 0.
    pub fn request(cmd: Cmd, cmd_flags: u32, datalen: usize, data: u32, data2: u32) -> Header {
        Header {
            magic: SM_MAGIC,
            version: SM_PROTO,
            cmd: cmd as u32,
            cmd_flags,
            length: (HEADER_SIZE + datalen) as u32,
            seq: 0,
            data,
            data2,
        }
    }

    /// The daemon's `send_result` reply to this request: a copy with
    /// version SM_PROTO, length 32, `data = result`, `data2 = 0`.
    pub fn result_reply(&self, result: i32) -> Header {
        Header {
            version: SM_PROTO,
            length: HEADER_SIZE as u32,
            data: result as u32,
            data2: 0,
            ..*self
        }
    }

    /// `data` read as the signed result of a reply.
    pub fn result(&self) -> i32 {
        self.data as i32
    }

    /// The typed command, if the number is known.
    pub fn command(&self) -> Option<Cmd> {
        Cmd::from_u32(self.cmd)
    }

    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        for (i, v) in [
            self.magic,
            self.version,
            self.cmd,
            self.cmd_flags,
            self.length,
            self.seq,
            self.data,
            self.data2,
        ]
        .into_iter()
        .enumerate()
        {
            put_u32(&mut b, i * 4, v);
        }
        b
    }

    /// The header at the start of `buf` (which may hold more), with no
    /// judgement of its contents; only a short buffer is an error.
    pub fn decode(buf: &[u8]) -> Result<Header, ProtoError> {
        need("header", HEADER_SIZE, buf)?;
        Ok(Header {
            magic: get_u32(buf, 0),
            version: get_u32(buf, 4),
            cmd: get_u32(buf, 8),
            cmd_flags: get_u32(buf, 12),
            length: get_u32(buf, 16),
            seq: get_u32(buf, 20),
            data: get_u32(buf, 24),
            data2: get_u32(buf, 28),
        })
    }

    /// Whether `buf` starts with a request header the daemon accepts, in
    /// the daemon's order: fewer than 32 bytes ([`ProtoError::Incomplete`],
    /// read more), wrong magic, a major protocol version above ours (any
    /// version is fine for VERSION, and 0 is fine for all), unknown cmd.
    pub fn check(buf: &[u8]) -> Result<(), ProtoError> {
        let h = Header::decode(buf)?;
        if h.magic != SM_MAGIC {
            return Err(ProtoError::BadMagic(h.magic));
        }
        if h.version != 0
            && h.cmd != Cmd::Version as u32
            && (h.version & 0xFFFF_0000) > (SM_PROTO & 0xFFFF_0000)
        {
            return Err(ProtoError::UnsupportedVersion { version: h.version });
        }
        if Cmd::from_u32(h.cmd).is_none() {
            return Err(ProtoError::UnknownCmd(h.cmd));
        }
        Ok(())
    }

    /// [`Header::check`], then the header with its command.
    pub fn parse(buf: &[u8]) -> Result<(Header, Cmd), ProtoError> {
        Header::check(buf)?;
        let h = Header::decode(buf)?;
        let cmd = Cmd::from_u32(h.cmd).ok_or(ProtoError::UnknownCmd(h.cmd))?;
        Ok((h, cmd))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout() {
        let h = Header::request(Cmd::AddLockspace, 1, 1104, 7, 9);
        let b = h.encode();
        assert_eq!(&b[0..4], &[0x10, 0x20, 0x28, 0x04]);
        assert_eq!(get_u32(&b, 4), 1);
        assert_eq!(get_u32(&b, 8), 2);
        assert_eq!(get_u32(&b, 12), 1);
        assert_eq!(get_u32(&b, 16), 32 + 1104);
        assert_eq!(get_u32(&b, 20), 0);
        assert_eq!(get_u32(&b, 24), 7);
        assert_eq!(get_u32(&b, 28), 9);
        assert_eq!(Header::decode(&b).unwrap(), h);
        assert_eq!(Header::parse(&b).unwrap(), (h, Cmd::AddLockspace));
    }

    #[test]
    fn result_reply_is_send_result() {
        let mut h = Header::request(Cmd::InqLockspace, 1, 1104, 3, 4);
        h.seq = 77;
        let r = h.result_reply(-2);
        assert_eq!(r.result(), -2);
        assert_eq!(
            (r.length, r.data2, r.seq, r.cmd, r.cmd_flags),
            (32, 0, 77, 16, 1)
        );
        assert_eq!(Header::decode(&r.encode()).unwrap().result(), -2);
    }

    #[test]
    fn check_says_why() {
        let good = Header::request(Cmd::Status, 0, 0, 0, 0).encode();
        assert!(Header::check(&good[..31]).unwrap_err().is_incomplete());
        assert!(Header::check(&good[..0]).unwrap_err().is_incomplete());
        let mut b = good;
        b[0] = 0;
        assert!(matches!(Header::check(&b), Err(ProtoError::BadMagic(_))));
        let mut b = good;
        put_u32(&mut b, 4, 0x0001_0001);
        assert_eq!(
            Header::check(&b),
            Err(ProtoError::UnsupportedVersion {
                version: 0x0001_0001
            })
        );
        // VERSION is answered whatever the version; version 0 is accepted.
        put_u32(&mut b, 8, Cmd::Version as u32);
        assert!(Header::check(&b).is_ok());
        let mut b = good;
        put_u32(&mut b, 4, 0);
        assert!(Header::check(&b).is_ok());
        put_u32(&mut b, 8, 41);
        assert_eq!(Header::check(&b), Err(ProtoError::UnknownCmd(41)));
        put_u32(&mut b, 8, 0);
        assert_eq!(Header::check(&b), Err(ProtoError::UnknownCmd(0)));
        // More bytes after the header are fine: they are the payload.
        let mut long = good.to_vec();
        long.extend_from_slice(&[1, 2, 3]);
        assert!(Header::check(&long).is_ok());
    }

    #[test]
    fn every_cmd_number_and_name() {
        assert_eq!(Cmd::ALL.len(), 40);
        for (i, c) in Cmd::ALL.iter().enumerate() {
            assert_eq!(*c as u32, i as u32 + 1);
            assert_eq!(Cmd::from_u32(*c as u32), Some(*c));
            assert_eq!(Cmd::from_name(c.name()), Some(*c));
        }
        assert_eq!(Cmd::Version.name(), "version");
        assert_eq!(Cmd::RebuildRindex as u32, 40);
        assert_eq!(Cmd::from_u32(0), None);
        assert_eq!(Cmd::from_u32(41), None);
    }

    #[test]
    fn flags_and_names() {
        assert_eq!(VERSION_COMBINED, 0x0308_0500);
        assert_eq!(host_state_name(SANLK_HOST_LIVE | 0x10), "LIVE");
        assert_eq!(host_state_name(0), "ERROR");
        assert_eq!(host_state_name(6), "ERROR");
        for s in [512, 4096] {
            assert_eq!(lsf_sector_size(lsf_sector_flag(s)), s);
        }
        for a in [1u32 << 20, 2 << 20, 4 << 20, 8 << 20] {
            assert_eq!(lsf_align_size(lsf_align_flag(a)), a);
        }
        assert_eq!(lsf_align_flag(3 << 20), 0);
    }
}
