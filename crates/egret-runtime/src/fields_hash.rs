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
        // Part of the wire contract: docs/fields-hash.md lists the same vectors.
        let vectors: &[(&[egret_api::Value], u64)] = &[
            (&[Str("egret".into())], 0x27bc4d6c0290b1a1),
            (&[I64(42)], 0xa21e1a867f970bec),
            (&[Str("heron".into()), I64(7)], 0xa0843c6306707846),
            (&[Null], 0xc44bdff4074eecdb),
            (&[Bool(true)], 0x070d80d6a76865f3),
            (&[F64(1.5)], 0x58bdc64af8b48dc4),
        ];
        for (values, expected) in vectors {
            assert_eq!(hash_of(values), *expected, "{values:?}");
        }
        // Hashing several fields equals hashing their concatenation.
        let mut enc = Encoder::new();
        enc.str("heron");
        enc.i64(7);
        assert_eq!(hash_of(vectors[2].0), xxh3_64(enc.bytes()));
        assert_eq!(select(0xa0843c6306707846, 3), 0);
    }
}
