//! Fixed 48-byte names (lockspace, resource, host) as sanlock stores them.

use std::fmt;

/// `NAME_ID_SIZE`: names are 48 bytes on disk, NUL padded, and a name of
/// exactly 48 bytes has no terminating NUL.
pub const NAME_ID_SIZE: usize = 48;

/// A name field kept as its raw 48 bytes so that decode/encode round-trips
/// byte for byte, whatever follows the first NUL.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Name(pub [u8; NAME_ID_SIZE]);

/// A name longer than the 48 bytes sanlock's on-disk and wire formats hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("name {name:?} is {len} bytes long; sanlock names hold at most 48")]
pub struct NameTooLong {
    pub name: String,
    pub len: usize,
}

impl Default for Name {
    fn default() -> Self {
        Name([0; NAME_ID_SIZE])
    }
}

impl Name {
    /// Builds a name the way sanlock's `strncpy(dst, src, 48)` would, but
    /// refuses (instead of silently truncating) a name that cannot fit.
    pub fn new(s: &str) -> Result<Self, NameTooLong> {
        Self::from_bytes(s.as_bytes()).ok_or_else(|| NameTooLong {
            name: s.to_string(),
            len: s.len(),
        })
    }

    /// Like [`Name::new`] for raw bytes; a NUL inside ends the name.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
        if end > NAME_ID_SIZE {
            return None;
        }
        let mut n = [0u8; NAME_ID_SIZE];
        n[..end].copy_from_slice(&b[..end]);
        Some(Name(n))
    }

    /// The bytes before the first NUL (all 48 if there is none).
    pub fn bytes(&self) -> &[u8] {
        let end = self.0.iter().position(|&c| c == 0).unwrap_or(NAME_ID_SIZE);
        &self.0[..end]
    }

    pub fn is_empty(&self) -> bool {
        self.0[0] == 0
    }

    /// The name as text; bytes that are not UTF-8 are replaced.
    pub fn to_string_lossy(&self) -> String {
        String::from_utf8_lossy(self.bytes()).into_owned()
    }

    /// sanlock compares names with `strncmp(a, b, 48)`.
    pub fn same_as(&self, other: &Name) -> bool {
        self.bytes() == other.bytes()
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_string_lossy())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string_lossy())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_length_name_has_no_nul() {
        let s = "a".repeat(48);
        let n = Name::new(&s).unwrap();
        assert_eq!(n.bytes().len(), 48);
        assert_eq!(n.to_string_lossy(), s);
    }

    #[test]
    fn too_long_is_refused() {
        let e = Name::new(&"b".repeat(49)).unwrap_err();
        assert_eq!(e.len, 49);
    }
}
