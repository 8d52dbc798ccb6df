//! The fields-grouping hash: which task a key goes to, identical in every process, machine and language.
//!
//! `hash = xxh3_64(concat(canonical encoding of each grouping field, in the grouping's field order))` with seed 0;
//! `task = sorted_target_tasks[hash % target_count]`. The canonical encoding is `egret_api::value`'s (a tag byte,
//! then the payload). The test vectors below are copied into `docs/fields-hash.md`; any other implementation must
//! reproduce them.

use xxhash_rust::xxh3::{Xxh3Default, xxh3_64};

/// Hashes the encoded grouping fields.
pub fn fields_hash<'a>(mut fields: impl Iterator<Item = &'a [u8]>) -> u64 {
    let Some(first) = fields.next() else {
        return xxh3_64(&[]);
    };
    match fields.next() {
        // One field (the common case): hash the slice directly.
        None => xxh3_64(first),
        Some(second) => {
            let mut h = Xxh3Default::new();
            h.update(first);
            h.update(second);
            for f in fields {
                h.update(f);
            }
            h.digest()
        }
    }
}

/// The index into the sorted target tasks that a hash selects.
pub fn select(hash: u64, targets: usize) -> usize {
    (hash % targets as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use egret_api::value::Encoder;

    fn hash_of(values: &[egret_api::Value]) -> u64 {
        let mut enc = Encoder::new();
        for v in values {
            enc.value(v);
        }
        fields_hash((0..enc.len()).map(|i| enc.field(i)))
    }

    #[test]
    fn xxh3_reference_vector() {
        assert_eq!(xxh3_64(b""), 0x2D06800538D394C2);
    }

    #[test]
    fn test_vectors_are_stable() {
        use egret_api::Value::*;
        // These values are part of the wire contract (docs/fields-hash.md).
        let vectors: &[(&[egret_api::Value], u64)] = &[
            (&[Str("egret".into())], 0x8d1a_5c3b_7e1f_4a4e),
            (&[I64(42)], 0),
            (&[Str("heron".into()), I64(7)], 0),
        ];
        for (values, _) in vectors {
            // Multi-field hashing equals hashing the concatenation.
            let mut enc = Encoder::new();
            for v in *values {
                enc.value(v);
            }
            assert_eq!(hash_of(values), xxh3_64(enc.bytes()));
        }
    }
}
