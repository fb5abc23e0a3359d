//! The payload structs of sanlock's socket protocol, at the offsets and
//! sizes of the x86_64 C structs (checked against gcc by the notes), encoded
//! little-endian field by field. Padding is kept as a field so that every
//! decoded struct re-encodes to the bytes it came from.

use std::fmt;

use super::{
    HEADER_SIZE, Header, ProtoError, SANLK_MAX_DISKS, SANLK_PATH_LEN, SANLK_STATE_MAXSTR, exact,
    get_u32, get_u64, put_u32, put_u64,
};
use crate::ondisk::{NAME_ID_SIZE, Name};

/// A struct with a fixed wire size.
pub trait WireStruct: Sized {
    /// `sizeof` the C struct: exactly the bytes on the wire.
    const SIZE: usize;
    /// Its C name, for messages.
    const WHAT: &'static str;

    /// Writes the struct into `out`, which is exactly [`Self::SIZE`] bytes.
    fn write_to(&self, out: &mut [u8]);

    /// Reads the struct from `b`, which is exactly [`Self::SIZE`] bytes.
    fn read_from(b: &[u8]) -> Result<Self, ProtoError>;

    fn encode(&self) -> Vec<u8> {
        let mut v = vec![0u8; Self::SIZE];
        self.write_to(&mut v);
        v
    }

    /// Decodes exactly [`Self::SIZE`] bytes: fewer is
    /// [`ProtoError::Incomplete`], more is [`ProtoError::WrongLength`].
    fn decode(buf: &[u8]) -> Result<Self, ProtoError> {
        exact(Self::WHAT, Self::SIZE, buf)?;
        Self::read_from(buf)
    }
}

fn get_name(b: &[u8], off: usize) -> Name {
    let mut n = [0u8; NAME_ID_SIZE];
    n.copy_from_slice(&b[off..off + NAME_ID_SIZE]);
    Name(n)
}

fn put_name(b: &mut [u8], off: usize, n: &Name) {
    b[off..off + NAME_ID_SIZE].copy_from_slice(&n.0);
}

/// A `char path[SANLK_PATH_LEN]` field, kept as its raw 1024 bytes: a peer
/// may send a path with no NUL at all, so reading it as a string is a
/// checked operation ([`SanlkPath::as_bytes`]).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SanlkPath(pub [u8; SANLK_PATH_LEN]);

impl Default for SanlkPath {
    fn default() -> Self {
        SanlkPath([0; SANLK_PATH_LEN])
    }
}

impl SanlkPath {
    /// A path as it goes on the wire (unescaped, NUL-terminated): at most
    /// 1023 bytes, with no NUL inside.
    pub fn new(path: &str) -> Result<SanlkPath, ProtoError> {
        Self::from_bytes(path.as_bytes())
    }

    pub fn from_bytes(b: &[u8]) -> Result<SanlkPath, ProtoError> {
        if b.len() >= SANLK_PATH_LEN {
            return Err(ProtoError::PathTooLong(b.len()));
        }
        if b.contains(&0) {
            return Err(ProtoError::PathHasNul);
        }
        let mut p = [0u8; SANLK_PATH_LEN];
        p[..b.len()].copy_from_slice(b);
        Ok(SanlkPath(p))
    }

    /// The path up to its terminating NUL; an error if there is none.
    pub fn as_bytes(&self) -> Result<&[u8], ProtoError> {
        match self.0.iter().position(|&c| c == 0) {
            Some(end) => Ok(&self.0[..end]),
            None => Err(ProtoError::PathNotTerminated),
        }
    }

    /// For printing: the bytes up to the first NUL, or all 1024 if there is
    /// none, with non-UTF-8 bytes replaced.
    pub fn to_string_lossy(&self) -> String {
        let end = self
            .0
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(SANLK_PATH_LEN);
        String::from_utf8_lossy(&self.0[..end]).into_owned()
    }

    /// `path[0] == 0`, sanlock's test for "no path".
    pub fn is_empty(&self) -> bool {
        self.0[0] == 0
    }
}

impl fmt::Debug for SanlkPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.as_bytes() {
            Ok(b) => write!(f, "{:?}", String::from_utf8_lossy(b)),
            Err(_) => write!(f, "<unterminated {:?}>", self.to_string_lossy()),
        }
    }
}

/// `struct sanlk_disk`: 1040 bytes.
///
/// | off | size | field |
/// |---|---|---|
/// | 0 | 1024 | path |
/// | 1024 | 8 | offset |
/// | 1032 | 4 | pad1 (the daemon reports the sector size here in `status`) |
/// | 1036 | 4 | pad2 (the daemon reports its fd here in `status`) |
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SanlkDisk {
    pub path: SanlkPath,
    pub offset: u64,
    pub pad1: u32,
    pub pad2: u32,
}

impl SanlkDisk {
    pub fn new(path: SanlkPath, offset: u64) -> SanlkDisk {
        SanlkDisk {
            path,
            offset,
            ..Default::default()
        }
    }
}

impl WireStruct for SanlkDisk {
    const SIZE: usize = 1040;
    const WHAT: &'static str = "sanlk_disk";

    fn write_to(&self, b: &mut [u8]) {
        b[..SANLK_PATH_LEN].copy_from_slice(&self.path.0);
        put_u64(b, 1024, self.offset);
        put_u32(b, 1032, self.pad1);
        put_u32(b, 1036, self.pad2);
    }

    fn read_from(b: &[u8]) -> Result<Self, ProtoError> {
        let mut p = [0u8; SANLK_PATH_LEN];
        p.copy_from_slice(&b[..SANLK_PATH_LEN]);
        Ok(SanlkDisk {
            path: SanlkPath(p),
            offset: get_u64(b, 1024),
            pad1: get_u32(b, 1032),
            pad2: get_u32(b, 1036),
        })
    }
}

/// `struct sanlk_lockspace`: 1104 bytes.
///
/// | off | size | field |
/// |---|---|---|
/// | 0 | 48 | name |
/// | 48 | 8 | host_id |
/// | 56 | 4 | flags (`SANLK_LSF_*`) |
/// | 60 | 4 | (padding) |
/// | 64 | 1040 | host_id_disk |
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SanlkLockspace {
    pub name: Name,
    pub host_id: u64,
    pub flags: u32,
    pub pad: u32,
    pub host_id_disk: SanlkDisk,
}

impl SanlkLockspace {
    pub fn new(name: Name, host_id: u64, path: SanlkPath, offset: u64) -> SanlkLockspace {
        SanlkLockspace {
            name,
            host_id,
            host_id_disk: SanlkDisk::new(path, offset),
            ..Default::default()
        }
    }

    /// Only a name, as `host_status`, `renewal`, `get_hosts` and
    /// `set_config` send it.
    pub fn named(name: Name) -> SanlkLockspace {
        SanlkLockspace {
            name,
            ..Default::default()
        }
    }
}

impl WireStruct for SanlkLockspace {
    const SIZE: usize = 1104;
    const WHAT: &'static str = "sanlk_lockspace";

    fn write_to(&self, b: &mut [u8]) {
        put_name(b, 0, &self.name);
        put_u64(b, 48, self.host_id);
        put_u32(b, 56, self.flags);
        put_u32(b, 60, self.pad);
        self.host_id_disk.write_to(&mut b[64..64 + SanlkDisk::SIZE]);
    }

    fn read_from(b: &[u8]) -> Result<Self, ProtoError> {
        Ok(SanlkLockspace {
            name: get_name(b, 0),
            host_id: get_u64(b, 48),
            flags: get_u32(b, 56),
            pad: get_u32(b, 60),
            host_id_disk: SanlkDisk::read_from(&b[64..64 + SanlkDisk::SIZE])?,
        })
    }
}

/// `struct sanlk_resource` (128 bytes) followed by `num_disks` ×
/// [`SanlkDisk`]; `num_disks` is `disks.len()`, at most 4.
///
/// | off | size | field |
/// |---|---|---|
/// | 0 | 48 | lockspace_name |
/// | 48 | 48 | name |
/// | 96 | 8 | lver |
/// | 104 | 8 | data64 |
/// | 112 | 4 | data32 |
/// | 116 | 4 | unused |
/// | 120 | 4 | flags (`SANLK_RES_*`) |
/// | 124 | 4 | num_disks |
/// | 128 | 1040 × n | disks |
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SanlkResource {
    pub lockspace_name: Name,
    pub name: Name,
    pub lver: u64,
    pub data64: u64,
    pub data32: u32,
    pub unused: u32,
    pub flags: u32,
    pub disks: Vec<SanlkDisk>,
}

impl SanlkResource {
    /// `sizeof(struct sanlk_resource)`, without the disks.
    pub const HEAD_SIZE: usize = 128;
    const WHAT: &'static str = "sanlk_resource";

    /// The bytes this resource takes on the wire.
    pub fn encoded_len(&self) -> usize {
        Self::HEAD_SIZE + self.disks.len() * SanlkDisk::SIZE
    }

    /// From the first 128 bytes: how many disks follow (checked ≤ 4).
    pub fn num_disks_in(head: &[u8]) -> Result<usize, ProtoError> {
        super::need(Self::WHAT, Self::HEAD_SIZE, head)?;
        let n = get_u32(head, 124);
        if n as usize > SANLK_MAX_DISKS {
            return Err(ProtoError::TooManyDisks(n));
        }
        Ok(n as usize)
    }

    /// Encodes the head and the disks. More than 4 disks is a caller bug:
    /// they are encoded anyway (and refused by [`SanlkResource::decode`]).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; self.encoded_len()];
        put_name(&mut b, 0, &self.lockspace_name);
        put_name(&mut b, 48, &self.name);
        put_u64(&mut b, 96, self.lver);
        put_u64(&mut b, 104, self.data64);
        put_u32(&mut b, 112, self.data32);
        put_u32(&mut b, 116, self.unused);
        put_u32(&mut b, 120, self.flags);
        put_u32(&mut b, 124, self.disks.len() as u32);
        for (i, d) in self.disks.iter().enumerate() {
            let at = Self::HEAD_SIZE + i * SanlkDisk::SIZE;
            d.write_to(&mut b[at..at + SanlkDisk::SIZE]);
        }
        b
    }

    /// Decodes exactly `128 + num_disks × 1040` bytes.
    pub fn decode(buf: &[u8]) -> Result<SanlkResource, ProtoError> {
        let n = Self::num_disks_in(buf)?;
        exact(Self::WHAT, Self::HEAD_SIZE + n * SanlkDisk::SIZE, buf)?;
        let mut disks = Vec::with_capacity(n);
        for i in 0..n {
            let at = Self::HEAD_SIZE + i * SanlkDisk::SIZE;
            disks.push(SanlkDisk::read_from(&buf[at..at + SanlkDisk::SIZE])?);
        }
        Ok(SanlkResource {
            lockspace_name: get_name(buf, 0),
            name: get_name(buf, 48),
            lver: get_u64(buf, 96),
            data64: get_u64(buf, 104),
            data32: get_u32(buf, 112),
            unused: get_u32(buf, 116),
            flags: get_u32(buf, 120),
            disks,
        })
    }
}

/// `struct sanlk_options` without its trailing `str[]`: 56 bytes
/// (owner_name @0, flags @48, len @52).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SanlkOptions {
    pub owner_name: Name,
    pub flags: u32,
    pub len: u32,
}

impl WireStruct for SanlkOptions {
    const SIZE: usize = 56;
    const WHAT: &'static str = "sanlk_options";

    fn write_to(&self, b: &mut [u8]) {
        put_name(b, 0, &self.owner_name);
        put_u32(b, 48, self.flags);
        put_u32(b, 52, self.len);
    }

    fn read_from(b: &[u8]) -> Result<Self, ProtoError> {
        Ok(SanlkOptions {
            owner_name: get_name(b, 0),
            flags: get_u32(b, 48),
            len: get_u32(b, 52),
        })
    }
}

/// `struct sanlk_host`: 32 bytes (host_id @0, generation @8, timestamp @16,
/// io_timeout @24, flags @28 whose low nibble is `SANLK_HOST_*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SanlkHost {
    pub host_id: u64,
    pub generation: u64,
    pub timestamp: u64,
    pub io_timeout: u32,
    pub flags: u32,
}

impl SanlkHost {
    /// `FREE`, `LIVE`, ... as the CLI prints it.
    pub fn state_name(&self) -> &'static str {
        super::host_state_name(self.flags)
    }
}

impl WireStruct for SanlkHost {
    const SIZE: usize = 32;
    const WHAT: &'static str = "sanlk_host";

    fn write_to(&self, b: &mut [u8]) {
        put_u64(b, 0, self.host_id);
        put_u64(b, 8, self.generation);
        put_u64(b, 16, self.timestamp);
        put_u32(b, 24, self.io_timeout);
        put_u32(b, 28, self.flags);
    }

    fn read_from(b: &[u8]) -> Result<Self, ProtoError> {
        Ok(SanlkHost {
            host_id: get_u64(b, 0),
            generation: get_u64(b, 8),
            timestamp: get_u64(b, 16),
            io_timeout: get_u32(b, 24),
            flags: get_u32(b, 28),
        })
    }
}

/// `struct sanlk_host_event`: 32 bytes (host_id, generation, event, data).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SanlkHostEvent {
    pub host_id: u64,
    pub generation: u64,
    pub event: u64,
    pub data: u64,
}

impl WireStruct for SanlkHostEvent {
    const SIZE: usize = 32;
    const WHAT: &'static str = "sanlk_host_event";

    fn write_to(&self, b: &mut [u8]) {
        put_u64(b, 0, self.host_id);
        put_u64(b, 8, self.generation);
        put_u64(b, 16, self.event);
        put_u64(b, 24, self.data);
    }

    fn read_from(b: &[u8]) -> Result<Self, ProtoError> {
        Ok(SanlkHostEvent {
            host_id: get_u64(b, 0),
            generation: get_u64(b, 8),
            event: get_u64(b, 16),
            data: get_u64(b, 24),
        })
    }
}

/// `struct sanlk_state` as sent by `status`, `host_status` and `renewal`:
/// **80 bytes** (its `sizeof`, although `str[]` starts at 76), then
/// `str_len` bytes of text (`text` here, NUL included as sent).
///
/// | off | size | field |
/// |---|---|---|
/// | 0 | 4 | type (`SANLK_STATE_*`) |
/// | 4 | 4 | flags |
/// | 8 | 4 | data32 (a pid for clients, -1 printed `%d`; host_id for hosts) |
/// | 12 | 4 | (padding) |
/// | 16 | 8 | data64 |
/// | 24 | 48 | name |
/// | 72 | 4 | str_len |
/// | 76 | 4 | (tail padding) |
/// | 80 | str_len | text |
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SanlkState {
    pub kind: u32,
    pub flags: u32,
    pub data32: u32,
    pub pad0: u32,
    pub data64: u64,
    pub name: Name,
    pub pad1: u32,
    /// The `str_len` bytes after the struct; `str_len` is `text.len()`.
    pub text: Vec<u8>,
}

impl SanlkState {
    /// `sizeof(struct sanlk_state)`, without the text.
    pub const HEAD_SIZE: usize = 80;
    const WHAT: &'static str = "sanlk_state";

    /// A state with `text` followed by a NUL, as the daemon sends it
    /// (`str_len = strlen + 1`).
    pub fn with_text(kind: u32, name: Name, text: &str) -> SanlkState {
        let mut t = text.as_bytes().to_vec();
        t.push(0);
        SanlkState {
            kind,
            name,
            text: t,
            ..Default::default()
        }
    }

    /// Decodes the fixed 80 bytes; returns the state (empty text) and
    /// `str_len`, checked ≤ 4096.
    pub fn decode_head(buf: &[u8]) -> Result<(SanlkState, usize), ProtoError> {
        exact(Self::WHAT, Self::HEAD_SIZE, buf)?;
        let str_len = get_u32(buf, 72);
        if str_len as usize > SANLK_STATE_MAXSTR {
            return Err(ProtoError::StateStrTooLong(str_len));
        }
        Ok((
            SanlkState {
                kind: get_u32(buf, 0),
                flags: get_u32(buf, 4),
                data32: get_u32(buf, 8),
                pad0: get_u32(buf, 12),
                data64: get_u64(buf, 16),
                name: get_name(buf, 24),
                pad1: get_u32(buf, 76),
                text: Vec::new(),
            },
            str_len as usize,
        ))
    }

    /// Decodes exactly 80 + str_len bytes.
    pub fn decode(buf: &[u8]) -> Result<SanlkState, ProtoError> {
        let head = buf.get(..Self::HEAD_SIZE).unwrap_or(buf);
        let (mut st, len) = Self::decode_head(head)?;
        exact(Self::WHAT, Self::HEAD_SIZE + len, buf)?;
        st.text = buf[Self::HEAD_SIZE..].to_vec();
        Ok(st)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; Self::HEAD_SIZE + self.text.len()];
        put_u32(&mut b, 0, self.kind);
        put_u32(&mut b, 4, self.flags);
        put_u32(&mut b, 8, self.data32);
        put_u32(&mut b, 12, self.pad0);
        put_u64(&mut b, 16, self.data64);
        put_name(&mut b, 24, &self.name);
        put_u32(&mut b, 72, self.text.len() as u32);
        put_u32(&mut b, 76, self.pad1);
        b[Self::HEAD_SIZE..].copy_from_slice(&self.text);
        b
    }

    pub fn str_len(&self) -> usize {
        self.text.len()
    }

    /// The text up to its first NUL, as C's `%s` reads it.
    pub fn text_str(&self) -> String {
        let end = self
            .text
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(self.text.len());
        String::from_utf8_lossy(&self.text[..end]).into_owned()
    }

    /// The `key=value` words of the text, in order.
    pub fn fields(&self) -> Vec<(String, String)> {
        self.text_str()
            .split(' ')
            .filter(|w| !w.is_empty())
            .map(|w| match w.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (w.to_string(), String::new()),
            })
            .collect()
    }
}

/// `struct sanlk_rindex`: 1104 bytes (flags @0, max_resources @4,
/// unused @8, lockspace_name @16, disk @64).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SanlkRindex {
    pub flags: u32,
    pub max_resources: u32,
    pub unused: u64,
    pub lockspace_name: Name,
    pub disk: SanlkDisk,
}

impl WireStruct for SanlkRindex {
    const SIZE: usize = 1104;
    const WHAT: &'static str = "sanlk_rindex";

    fn write_to(&self, b: &mut [u8]) {
        put_u32(b, 0, self.flags);
        put_u32(b, 4, self.max_resources);
        put_u64(b, 8, self.unused);
        put_name(b, 16, &self.lockspace_name);
        self.disk.write_to(&mut b[64..64 + SanlkDisk::SIZE]);
    }

    fn read_from(b: &[u8]) -> Result<Self, ProtoError> {
        Ok(SanlkRindex {
            flags: get_u32(b, 0),
            max_resources: get_u32(b, 4),
            unused: get_u64(b, 8),
            lockspace_name: get_name(b, 16),
            disk: SanlkDisk::read_from(&b[64..64 + SanlkDisk::SIZE])?,
        })
    }
}

/// `struct sanlk_rentry`: 64 bytes (name @0, offset @48, flags @56, unused @60).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SanlkRentry {
    pub name: Name,
    pub offset: u64,
    pub flags: u32,
    pub unused: u32,
}

impl WireStruct for SanlkRentry {
    const SIZE: usize = 64;
    const WHAT: &'static str = "sanlk_rentry";

    fn write_to(&self, b: &mut [u8]) {
        put_name(b, 0, &self.name);
        put_u64(b, 48, self.offset);
        put_u32(b, 56, self.flags);
        put_u32(b, 60, self.unused);
    }

    fn read_from(b: &[u8]) -> Result<Self, ProtoError> {
        Ok(SanlkRentry {
            name: get_name(b, 0),
            offset: get_u64(b, 48),
            flags: get_u32(b, 56),
            unused: get_u32(b, 60),
        })
    }
}

/// `struct event_cb`: 80 bytes, what the daemon writes to a `reg_event`
/// fd (h @0 with version SM_CB_PROTO and cmd SM_CB_GET_EVENT, he @32,
/// from_host_id @64, from_generation @72).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventCb {
    pub h: Header,
    pub he: SanlkHostEvent,
    pub from_host_id: u64,
    pub from_generation: u64,
}

impl WireStruct for EventCb {
    const SIZE: usize = 80;
    const WHAT: &'static str = "event_cb";

    fn write_to(&self, b: &mut [u8]) {
        b[..HEADER_SIZE].copy_from_slice(&self.h.encode());
        self.he.write_to(&mut b[32..64]);
        put_u64(b, 64, self.from_host_id);
        put_u64(b, 72, self.from_generation);
    }

    fn read_from(b: &[u8]) -> Result<Self, ProtoError> {
        Ok(EventCb {
            h: Header::decode(&b[..HEADER_SIZE])?,
            he: SanlkHostEvent::read_from(&b[32..64])?,
            from_host_id: get_u64(b, 64),
            from_generation: get_u64(b, 72),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{SM_CB_GET_EVENT, SM_CB_PROTO, SM_MAGIC};

    fn name(s: &str) -> Name {
        Name::new(s).unwrap()
    }

    fn u64_at(b: &[u8], off: usize) -> u64 {
        get_u64(b, off)
    }

    fn roundtrip<T: WireStruct + PartialEq + fmt::Debug>(v: &T) -> Vec<u8> {
        let b = v.encode();
        assert_eq!(b.len(), T::SIZE);
        assert_eq!(&T::decode(&b).unwrap(), v);
        // Short is "read more", long is an error.
        assert!(T::decode(&b[..T::SIZE - 1]).unwrap_err().is_incomplete());
        let mut long = b.clone();
        long.push(0);
        assert!(matches!(
            T::decode(&long),
            Err(ProtoError::WrongLength { .. })
        ));
        b
    }

    fn disk(path: &str, off: u64) -> SanlkDisk {
        SanlkDisk::new(SanlkPath::new(path).unwrap(), off)
    }

    #[test]
    fn sizes_are_the_c_sizeofs() {
        assert_eq!(SanlkDisk::SIZE, 1040);
        assert_eq!(SanlkLockspace::SIZE, 1104);
        assert_eq!(SanlkResource::HEAD_SIZE, 128);
        assert_eq!(SanlkOptions::SIZE, 56);
        assert_eq!(SanlkHost::SIZE, 32);
        assert_eq!(SanlkHostEvent::SIZE, 32);
        assert_eq!(SanlkState::HEAD_SIZE, 80);
        assert_eq!(SanlkRindex::SIZE, 1104);
        assert_eq!(SanlkRentry::SIZE, 64);
        assert_eq!(EventCb::SIZE, 80);
    }

    #[test]
    fn disk_layout() {
        let mut d = disk("/dev/x", 0x1122_3344_5566_7788);
        d.pad1 = 512;
        d.pad2 = 9;
        let b = roundtrip(&d);
        assert_eq!(&b[..7], b"/dev/x\0");
        assert_eq!(u64_at(&b, 1024), 0x1122_3344_5566_7788);
        assert_eq!(get_u32(&b, 1032), 512);
        assert_eq!(get_u32(&b, 1036), 9);
    }

    #[test]
    fn lockspace_layout() {
        let mut ls = SanlkLockspace::new(name("LS"), 7, SanlkPath::new("/p").unwrap(), 1 << 20);
        ls.flags = 0x201;
        let b = roundtrip(&ls);
        assert_eq!(&b[..3], b"LS\0");
        assert_eq!(u64_at(&b, 48), 7);
        assert_eq!(get_u32(&b, 56), 0x201);
        assert_eq!(get_u32(&b, 60), 0);
        assert_eq!(&b[64..67], b"/p\0");
        assert_eq!(u64_at(&b, 64 + 1024), 1 << 20);
        // Padding survives a round trip.
        let mut raw = b.clone();
        raw[60] = 0xEE;
        assert_eq!(SanlkLockspace::decode(&raw).unwrap().encode(), raw);
    }

    #[test]
    fn resource_layout_and_disk_limit() {
        let r = SanlkResource {
            lockspace_name: name("LS"),
            name: name("R1"),
            lver: 3,
            data64: 4,
            data32: 5,
            unused: 0,
            flags: crate::proto::SANLK_RES_SHARED,
            disks: vec![disk("/a", 1 << 20), disk("/b", 2 << 20)],
        };
        let b = r.encode();
        assert_eq!(b.len(), 128 + 2 * 1040);
        assert_eq!(&b[48..51], b"R1\0");
        assert_eq!(u64_at(&b, 96), 3);
        assert_eq!(u64_at(&b, 104), 4);
        assert_eq!(get_u32(&b, 112), 5);
        assert_eq!(get_u32(&b, 120), 4);
        assert_eq!(get_u32(&b, 124), 2);
        assert_eq!(&b[128..131], b"/a\0");
        assert_eq!(u64_at(&b, 128 + 1040 + 1024), 2 << 20);
        assert_eq!(SanlkResource::decode(&b).unwrap(), r);
        assert_eq!(SanlkResource::num_disks_in(&b[..128]).unwrap(), 2);
        assert!(
            SanlkResource::decode(&b[..b.len() - 1])
                .unwrap_err()
                .is_incomplete()
        );

        let mut five = b[..128].to_vec();
        put_u32(&mut five, 124, 5);
        five.resize(128 + 5 * 1040, 0);
        assert_eq!(
            SanlkResource::decode(&five),
            Err(ProtoError::TooManyDisks(5))
        );
        let mut huge = b[..128].to_vec();
        put_u32(&mut huge, 124, u32::MAX);
        assert_eq!(
            SanlkResource::num_disks_in(&huge),
            Err(ProtoError::TooManyDisks(u32::MAX))
        );
    }

    #[test]
    fn options_host_event_rentry_layouts() {
        let o = SanlkOptions {
            owner_name: name("vm1"),
            flags: 1,
            len: 2,
        };
        let b = roundtrip(&o);
        assert_eq!((get_u32(&b, 48), get_u32(&b, 52)), (1, 2));

        let h = SanlkHost {
            host_id: 1,
            generation: 2,
            timestamp: 3,
            io_timeout: 4,
            flags: crate::proto::SANLK_HOST_LIVE,
        };
        let b = roundtrip(&h);
        assert_eq!((u64_at(&b, 0), u64_at(&b, 8), u64_at(&b, 16)), (1, 2, 3));
        assert_eq!((get_u32(&b, 24), get_u32(&b, 28)), (4, 3));
        assert_eq!(h.state_name(), "LIVE");

        let e = SanlkHostEvent {
            host_id: 5,
            generation: 6,
            event: 7,
            data: 8,
        };
        let b = roundtrip(&e);
        assert_eq!(
            (u64_at(&b, 0), u64_at(&b, 8), u64_at(&b, 16), u64_at(&b, 24)),
            (5, 6, 7, 8)
        );

        let r = SanlkRentry {
            name: name("res"),
            offset: 9 << 20,
            flags: 1,
            unused: 0,
        };
        let b = roundtrip(&r);
        assert_eq!(u64_at(&b, 48), 9 << 20);
        assert_eq!(get_u32(&b, 56), 1);
    }

    #[test]
    fn rindex_layout() {
        let x = SanlkRindex {
            flags: crate::proto::SANLK_RIF_ALIGN8M,
            max_resources: 1000,
            unused: 0,
            lockspace_name: name("LS"),
            disk: disk("/r", 4 << 20),
        };
        let b = roundtrip(&x);
        assert_eq!((get_u32(&b, 0), get_u32(&b, 4)), (0x80, 1000));
        assert_eq!(&b[16..19], b"LS\0");
        assert_eq!(&b[64..67], b"/r\0");
        assert_eq!(u64_at(&b, 64 + 1024), 4 << 20);
    }

    #[test]
    fn state_text_starts_at_80() {
        let mut st = SanlkState::with_text(
            crate::proto::SANLK_STATE_CLIENT,
            name("status"),
            "ci=2 fd=9",
        );
        st.data32 = -1i32 as u32;
        st.data64 = 42;
        let b = st.encode();
        assert_eq!(b.len(), 80 + 10);
        assert_eq!(get_u32(&b, 0), 2);
        assert_eq!(get_u32(&b, 8), 0xFFFF_FFFF);
        assert_eq!(u64_at(&b, 16), 42);
        assert_eq!(&b[24..30], b"status");
        assert_eq!(get_u32(&b, 72), 10);
        assert_eq!(get_u32(&b, 76), 0);
        assert_eq!(&b[80..], b"ci=2 fd=9\0");
        assert_eq!(SanlkState::decode(&b).unwrap(), st);
        let (head, len) = SanlkState::decode_head(&b[..80]).unwrap();
        assert_eq!((head.kind, len), (2, 10));
        assert!(SanlkState::decode(&b[..85]).unwrap_err().is_incomplete());
        assert!(SanlkState::decode(&b[..50]).unwrap_err().is_incomplete());
        assert_eq!(st.text_str(), "ci=2 fd=9");
        assert_eq!(
            st.fields(),
            vec![("ci".into(), "2".into()), ("fd".into(), "9".into())]
        );

        let mut big = b[..80].to_vec();
        put_u32(&mut big, 72, 4097);
        assert_eq!(
            SanlkState::decode_head(&big),
            Err(ProtoError::StateStrTooLong(4097))
        );
    }

    #[test]
    fn event_cb_layout() {
        let cb = EventCb {
            h: Header {
                magic: SM_MAGIC,
                version: SM_CB_PROTO,
                cmd: SM_CB_GET_EVENT,
                length: 80,
                ..Default::default()
            },
            he: SanlkHostEvent {
                host_id: 1,
                generation: 2,
                event: 3,
                data: 4,
            },
            from_host_id: 5,
            from_generation: 6,
        };
        let b = roundtrip(&cb);
        assert_eq!(get_u32(&b, 0), SM_MAGIC);
        assert_eq!(get_u32(&b, 16), 80);
        assert_eq!(u64_at(&b, 32), 1);
        assert_eq!(u64_at(&b, 56), 4);
        assert_eq!((u64_at(&b, 64), u64_at(&b, 72)), (5, 6));
    }

    #[test]
    fn paths_from_peers_need_not_be_terminated() {
        let raw = SanlkPath([b'x'; SANLK_PATH_LEN]);
        assert_eq!(raw.as_bytes(), Err(ProtoError::PathNotTerminated));
        assert_eq!(raw.to_string_lossy().len(), 1024);
        assert_eq!(
            SanlkPath::new(&"y".repeat(1024)),
            Err(ProtoError::PathTooLong(1024))
        );
        assert_eq!(SanlkPath::new("a\0b"), Err(ProtoError::PathHasNul));
        let p = SanlkPath::new(&"z".repeat(1023)).unwrap();
        assert_eq!(p.as_bytes().unwrap().len(), 1023);
        assert!(SanlkPath::default().is_empty());
    }
}
