//! Identities, as newtypes so a task id is never mistaken for a component index or a root.

use std::fmt;

/// A task: one running copy of a component. Task ids are global to the topology, dense, and start at 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(pub u32);

/// The root of a tuple tree: one spout emit with a message id under at-least-once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RootId(pub u64);

/// The index of a (component, output stream) pair in the topology's stream table, carried on the wire instead of
/// the names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamIndex(pub u32);

/// A checkpoint of an effectively-once topology. Ids only grow: a later checkpoint has a greater id, so the
/// receivers of its markers can tell an older checkpoint from a newer one by comparing numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CheckpointId(pub u64);

/// The message id a spout gives an emit to be told later whether its tuple tree completed.
pub type MessageId = u64;

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for CheckpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for RootId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// One root a tuple descends from: the spout task that owns its ledger entry, and the root id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Root {
    pub task: TaskId,
    pub id: RootId,
}

impl Root {
    /// Encoded size on the wire: u32 task, u64 id, little-endian.
    pub const ENCODED_LEN: usize = 12;

    pub fn encode(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(&self.task.0.to_le_bytes());
        buf.extend_from_slice(&self.id.0.to_le_bytes());
    }
}

/// The roots of a tuple as carried in its record: `count * Root::ENCODED_LEN` bytes, length checked by the reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Roots<'a>(&'a [u8]);

impl<'a> Roots<'a> {
    /// `bytes.len()` must be a multiple of [`Root::ENCODED_LEN`]; extra bytes are ignored.
    pub fn new(bytes: &'a [u8]) -> Self {
        let whole = bytes.len() - bytes.len() % Root::ENCODED_LEN;
        Roots(&bytes[..whole])
    }

    pub fn bytes(&self) -> &'a [u8] {
        self.0
    }

    pub fn len(&self) -> usize {
        self.0.len() / Root::ENCODED_LEN
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = Root> + 'a {
        self.0.chunks_exact(Root::ENCODED_LEN).map(|c| {
            let mut task = [0u8; 4];
            task.copy_from_slice(&c[..4]);
            let mut id = [0u8; 8];
            id.copy_from_slice(&c[4..]);
            Root {
                task: TaskId(u32::from_le_bytes(task)),
                id: RootId(u64::from_le_bytes(id)),
            }
        })
    }
}
