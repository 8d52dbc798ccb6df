//! The checkpoint blob: how one task's state of one checkpoint is kept, with what it belongs to and a checksum.
//!
//! ```text
//! offset  size  field
//!      0     4  magic       b"EGCK"
//!      4     1  version     1
//!      5     8  checkpoint  u64 LE  (egret_api::CheckpointId)
//!     13     4  task        u32 LE  (egret_api::TaskId)
//!     17     8  len         u64 LE  number of state bytes that follow the header, exactly
//!     25     8  checksum    u64 LE  xxh3_64 of bytes 0..25 followed by the state
//!     33   len  state
//! ```
//!
//! This module only turns state into bytes and back; it does no I/O. [`decode`] never panics, whatever it is
//! given: a blob comes from a disk or a network that may have torn or damaged it.

use egret_api::{CheckpointId, TaskId};
use xxhash_rust::xxh3::Xxh3;

/// The first four bytes of every blob.
pub const MAGIC: [u8; 4] = *b"EGCK";
/// The format version this crate writes and reads.
pub const VERSION: u8 = 1;
/// Bytes before the state.
pub const HEADER_LEN: usize = 33;

const VERSION_AT: usize = 4;
const CHECKPOINT_AT: usize = 5;
const TASK_AT: usize = 13;
const LEN_AT: usize = 17;
const CHECKSUM_AT: usize = 25;

/// What is wrong with a blob. Each variant carries what was expected and what was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlobError {
    #[error("blob is {found} bytes, shorter than its {expected}-byte header (truncated)")]
    ShortHeader { expected: usize, found: usize },
    #[error("blob starts with \"{}\", not \"{}\": not a checkpoint blob", .found.escape_ascii(), .expected.escape_ascii())]
    BadMagic { expected: [u8; 4], found: [u8; 4] },
    #[error("blob has format version {found}, this build reads version {expected}")]
    UnsupportedVersion { expected: u8, found: u8 },
    #[error("blob header says {expected} state bytes follow, but {found} do (truncated or trailing bytes)")]
    LengthMismatch { expected: u64, found: u64 },
    #[error("blob checksum is {expected:#018x} but its content hashes to {found:#018x} (torn or damaged write)")]
    ChecksumMismatch { expected: u64, found: u64 },
    #[error("blob belongs to checkpoint {found}, not {expected} (copied or moved to the wrong place)")]
    WrongCheckpoint {
        expected: CheckpointId,
        found: CheckpointId,
    },
    #[error("blob belongs to task {found}, not {expected} (copied or moved to the wrong place)")]
    WrongTask { expected: TaskId, found: TaskId },
}

/// The blob that keeps `state` as task `task`'s state of checkpoint `checkpoint`.
pub fn encode(checkpoint: CheckpointId, task: TaskId, state: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + state.len());
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&checkpoint.0.to_le_bytes());
    out.extend_from_slice(&task.0.to_le_bytes());
    out.extend_from_slice(&(state.len() as u64).to_le_bytes());
    let checksum = checksum(&out[..CHECKSUM_AT], state);
    out.extend_from_slice(&checksum.to_le_bytes());
    out.extend_from_slice(state);
    out
}

/// The state kept in `bytes`, if they are a whole, undamaged blob of task `task`'s state of checkpoint
/// `checkpoint`; otherwise what is wrong.
///
/// The checksum is verified before the ids are compared, so that a damaged id byte is reported as damage and
/// [`BlobError::WrongCheckpoint`] or [`BlobError::WrongTask`] always means an intact blob in the wrong place.
pub fn decode(checkpoint: CheckpointId, task: TaskId, bytes: &[u8]) -> Result<&[u8], BlobError> {
    let Some((header, state)) = bytes.split_first_chunk::<HEADER_LEN>() else {
        return Err(BlobError::ShortHeader {
            expected: HEADER_LEN,
            found: bytes.len(),
        });
    };
    let magic = [header[0], header[1], header[2], header[3]];
    if magic != MAGIC {
        return Err(BlobError::BadMagic {
            expected: MAGIC,
            found: magic,
        });
    }
    if header[VERSION_AT] != VERSION {
        return Err(BlobError::UnsupportedVersion {
            expected: VERSION,
            found: header[VERSION_AT],
        });
    }
    let len = u64_at(header, LEN_AT);
    if len != state.len() as u64 {
        return Err(BlobError::LengthMismatch {
            expected: len,
            found: state.len() as u64,
        });
    }
    let stored = u64_at(header, CHECKSUM_AT);
    let computed = checksum(&header[..CHECKSUM_AT], state);
    if stored != computed {
        return Err(BlobError::ChecksumMismatch {
            expected: stored,
            found: computed,
        });
    }
    let found_checkpoint = CheckpointId(u64_at(header, CHECKPOINT_AT));
    if found_checkpoint != checkpoint {
        return Err(BlobError::WrongCheckpoint {
            expected: checkpoint,
            found: found_checkpoint,
        });
    }
    let found_task = TaskId(u32::from_le_bytes([
        header[TASK_AT],
        header[TASK_AT + 1],
        header[TASK_AT + 2],
        header[TASK_AT + 3],
    ]));
    if found_task != task {
        return Err(BlobError::WrongTask {
            expected: task,
            found: found_task,
        });
    }
    Ok(state)
}

/// xxh3_64 of the header fields before the checksum, then the state: the same value as hashing the two
/// concatenated, without copying the state.
fn checksum(header: &[u8], state: &[u8]) -> u64 {
    let mut hasher = Xxh3::new();
    hasher.update(header);
    hasher.update(state);
    hasher.digest()
}

/// The u64 (little-endian) at `at` in the header; every caller's offset is a constant inside it.
fn u64_at(header: &[u8; HEADER_LEN], at: usize) -> u64 {
    let mut field = [0u8; 8];
    field.copy_from_slice(&header[at..at + 8]);
    u64::from_le_bytes(field)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const C: CheckpointId = CheckpointId(7);
    const T: TaskId = TaskId(3);

    #[test]
    fn round_trip_keeps_the_state() {
        for state in [&b""[..], b"x", b"some task state", &[0u8; 1000]] {
            let blob = encode(C, T, state);
            assert_eq!(blob.len(), HEADER_LEN + state.len());
            assert_eq!(decode(C, T, &blob), Ok(state));
        }
    }

    #[test]
    fn header_is_laid_out_as_documented() {
        let blob = encode(CheckpointId(0x0102_0304_0506_0708), TaskId(0x0a0b_0c0d), b"abc");
        assert_eq!(&blob[..4], b"EGCK");
        assert_eq!(blob[4], 1);
        assert_eq!(&blob[5..13], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(&blob[13..17], &[0x0d, 0x0c, 0x0b, 0x0a]);
        assert_eq!(&blob[17..25], &3u64.to_le_bytes());
        let hashed = [&blob[..25], b"abc"].concat();
        assert_eq!(&blob[25..33], &xxhash_rust::xxh3::xxh3_64(&hashed).to_le_bytes());
        assert_eq!(&blob[33..], b"abc");
    }

    /// Each kind of damage is reported as the error that names it.
    #[test]
    fn each_kind_of_damage_is_named() {
        let blob = encode(C, T, b"state");
        let check = |bytes: &[u8], expect: BlobError| assert_eq!(decode(C, T, bytes), Err(expect));

        check(
            &blob[..HEADER_LEN - 1],
            BlobError::ShortHeader {
                expected: HEADER_LEN,
                found: HEADER_LEN - 1,
            },
        );
        let mut bad = blob.clone();
        bad[0] = b'X';
        check(
            &bad,
            BlobError::BadMagic {
                expected: *b"EGCK",
                found: *b"XGCK",
            },
        );
        let mut bad = blob.clone();
        bad[VERSION_AT] = 2;
        check(&bad, BlobError::UnsupportedVersion { expected: 1, found: 2 });
        check(
            &blob[..blob.len() - 1],
            BlobError::LengthMismatch { expected: 5, found: 4 },
        );
        check(
            &[&blob[..], b"!"].concat(),
            BlobError::LengthMismatch { expected: 5, found: 6 },
        );
        let mut bad = blob.clone();
        bad[HEADER_LEN] ^= 1;
        assert!(matches!(decode(C, T, &bad), Err(BlobError::ChecksumMismatch { .. })));
        // A damaged id is damage (the checksum covers it), not a blob of another checkpoint.
        let mut bad = blob.clone();
        bad[CHECKPOINT_AT] ^= 1;
        assert!(matches!(decode(C, T, &bad), Err(BlobError::ChecksumMismatch { .. })));
        check(
            &encode(CheckpointId(8), T, b"state"),
            BlobError::WrongCheckpoint {
                expected: C,
                found: CheckpointId(8),
            },
        );
        check(
            &encode(C, TaskId(4), b"state"),
            BlobError::WrongTask {
                expected: T,
                found: TaskId(4),
            },
        );
    }

    #[test]
    fn errors_name_the_numbers() {
        let e = decode(C, T, &encode(C, TaskId(4), b"")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "blob belongs to task 4, not 3 (copied or moved to the wrong place)"
        );
        let e = decode(C, T, b"PK\x03\x04 and then some more bytes to pass the header").unwrap_err();
        assert_eq!(
            e.to_string(),
            "blob starts with \"PK\\x03\\x04\", not \"EGCK\": not a checkpoint blob"
        );
    }

    proptest! {
        /// Whatever the bytes, decode returns (an error, almost always) instead of panicking.
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128), c in any::<u64>(), t in any::<u32>()) {
            let _ = decode(CheckpointId(c), TaskId(t), &bytes);
        }

        /// Arbitrary bytes after a valid-looking magic and version still never panic (they reach the length and
        /// checksum checks).
        #[test]
        fn decode_never_panics_past_the_magic(tail in proptest::collection::vec(any::<u8>(), 0..128)) {
            let bytes = [&MAGIC[..], &[VERSION], &tail].concat();
            let _ = decode(C, T, &bytes);
        }

        #[test]
        fn round_trip_any_state(state in proptest::collection::vec(any::<u8>(), 0..512), c in any::<u64>(), t in any::<u32>()) {
            let blob = encode(CheckpointId(c), TaskId(t), &state);
            prop_assert_eq!(decode(CheckpointId(c), TaskId(t), &blob), Ok(&state[..]));
        }

        #[test]
        fn any_flipped_byte_is_detected(state in proptest::collection::vec(any::<u8>(), 0..256), at in any::<prop::sample::Index>(), mask in 1u8..=255) {
            let mut blob = encode(C, T, &state);
            let at = at.index(blob.len());
            blob[at] ^= mask;
            prop_assert!(decode(C, T, &blob).is_err(), "flipping byte {} with {:#04x} went unnoticed", at, mask);
        }

        #[test]
        fn any_truncation_is_detected(state in proptest::collection::vec(any::<u8>(), 0..256), cut in any::<prop::sample::Index>()) {
            let blob = encode(C, T, &state);
            let cut = cut.index(blob.len());
            prop_assert!(decode(C, T, &blob[..cut]).is_err(), "truncation to {} bytes went unnoticed", cut);
        }

        #[test]
        fn trailing_bytes_are_detected(state in proptest::collection::vec(any::<u8>(), 0..256), extra in proptest::collection::vec(any::<u8>(), 1..16)) {
            let blob = [encode(C, T, &state), extra].concat();
            prop_assert!(decode(C, T, &blob).is_err());
        }
    }
}
