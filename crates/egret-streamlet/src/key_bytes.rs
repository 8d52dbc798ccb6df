//! Encoded keys as keyed operators store them: inline when short (a word, an id), so that a lookup touches one place
//! in memory and a new key of that size allocates nothing.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};

/// Longest key kept inline.
const INLINE: usize = 30;

#[derive(Clone)]
pub(crate) enum KeyBytes {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<[u8]>),
}

impl KeyBytes {
    pub fn new(b: &[u8]) -> Self {
        if b.len() <= INLINE {
            let mut bytes = [0u8; INLINE];
            bytes[..b.len()].copy_from_slice(b);
            KeyBytes::Inline {
                len: b.len() as u8,
                bytes,
            }
        } else {
            KeyBytes::Heap(b.into())
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        match self {
            KeyBytes::Inline { len, bytes } => &bytes[..*len as usize],
            KeyBytes::Heap(b) => b,
        }
    }
}

impl Borrow<[u8]> for KeyBytes {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

// Hash and equality are the slice's, as `Borrow` requires, so a map of `KeyBytes` is looked up with a `&[u8]`.
impl Hash for KeyBytes {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state)
    }
}

impl PartialEq for KeyBytes {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for KeyBytes {}

impl PartialOrd for KeyBytes {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for KeyBytes {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_slice().cmp(other.as_slice())
    }
}

impl std::fmt::Debug for KeyBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:02x?}", self.as_slice())
    }
}

// Checkpointed (windows are keyed by it) as plain bytes.
impl serde::Serialize for KeyBytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.as_slice())
    }
}

impl<'de> serde::Deserialize<'de> for KeyBytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes: Vec<u8> = serde::Deserialize::deserialize(d)?;
        Ok(KeyBytes::new(&bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_keys_are_found_by_their_bytes() {
        let mut m: foldhash::HashMap<KeyBytes, u32> = foldhash::HashMap::default();
        let long = vec![7u8; 100];
        m.insert(KeyBytes::new(b"egret"), 1);
        m.insert(KeyBytes::new(&long), 2);
        m.insert(KeyBytes::new(b""), 3);
        assert_eq!(m.get(&b"egret"[..]), Some(&1));
        assert_eq!(m.get(&long[..]), Some(&2));
        assert_eq!(m.get(&b""[..]), Some(&3));
        assert_eq!(m.get(&b"heron"[..]), None);
        assert!(matches!(KeyBytes::new(&[1; 30]), KeyBytes::Inline { .. }));
        assert!(matches!(KeyBytes::new(&[1; 31]), KeyBytes::Heap(_)));
    }
}
