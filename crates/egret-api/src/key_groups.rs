//! Which task owns a key: the fields-grouping hash and the key groups that make rescaling a keyed component cheap.
//! Identical in every process, machine and language (`docs/fields-hash.md`).
//!
//! `hash = xxh3_64(concat(canonical encoding of each grouping field, in the grouping's field order))` with seed 0;
//! `key_group = hash % KEY_GROUPS`; the consumer's `n` tasks (sorted by id) own contiguous ranges of key groups:
//! `index = key_group * n / KEY_GROUPS`. Keyed state is stored per key group ([`crate::state`]), so when `n`
//! changes each key group's state moves whole to its new owner and no key is split or hashed again. The canonical
//! encoding is [`crate::value`]'s (a tag byte, then the payload). The test vectors below are copied into
//! `docs/fields-hash.md`; any other implementation must reproduce them.

use std::ops::Range;

use xxhash_rust::xxh3::{Xxh3Default, xxh3_64};

use crate::value::{Encoder, ToValue};

/// How many key groups keys are hashed into: a constant of the wire contract (like Flink's max parallelism, but
/// fixed), so that a key's group never changes, whatever the parallelism. A fields-grouped component with more
/// tasks than this leaves the extra ones without keys.
pub const KEY_GROUPS: u32 = 1024;

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

/// The key group of a hash.
pub fn key_group(hash: u64) -> u32 {
    (hash % KEY_GROUPS as u64) as u32
}

/// The index into the sorted target tasks that a hash selects: the owner of its key group.
pub fn select(hash: u64, targets: usize) -> usize {
    owner(key_group(hash), targets)
}

/// The index (among `targets` tasks) of the task that owns `group`.
pub fn owner(group: u32, targets: usize) -> usize {
    (group as u64 * targets as u64 / KEY_GROUPS as u64) as usize
}

/// The key groups that the task at `index` of `targets` owns: those `g` with `owner(g, targets) == index`.
pub fn owned_groups(index: usize, targets: usize) -> Range<u32> {
    // owner(g) = floor(g * n / G) >= i  <=>  g >= ceil(i * G / n).
    let first =
        |i: usize| ((i as u64 * KEY_GROUPS as u64).div_ceil(targets.max(1) as u64)).min(KEY_GROUPS as u64) as u32;
    first(index)..first(index + 1)
}

/// A key of keyed state: hashed exactly as the fields grouping hashes the tuple fields it stands for, so that the
/// state of a key lives in the task its tuples go to. A single value is one field (a `String` key is a grouping on
/// one string field); a tuple `(A, B)` is a grouping on two fields, in that order.
pub trait StateKey {
    /// Encodes the key as the grouping fields' values.
    fn encode_fields(&self, enc: &mut Encoder);

    /// The fields hash of the key.
    fn key_hash(&self) -> u64 {
        let mut enc = Encoder::new();
        self.encode_fields(&mut enc);
        fields_hash((0..enc.len()).map(|i| enc.field(i)))
    }
}

macro_rules! one_field_key {
    ($($t:ty),*) => {$(
        impl StateKey for $t {
            fn encode_fields(&self, enc: &mut Encoder) {
                ToValue::encode(self, enc)
            }
        }
    )*};
}
one_field_key!(
    String,
    &str,
    Vec<u8>,
    bool,
    i8,
    i16,
    i32,
    i64,
    u8,
    u16,
    u32,
    crate::Value
);

macro_rules! tuple_key {
    ($($n:ident),+) => {
        impl<$($n: StateKey),+> StateKey for ($($n,)+) {
            #[allow(non_snake_case)]
            fn encode_fields(&self, enc: &mut Encoder) {
                let ($($n,)+) = self;
                $($n.encode_fields(enc);)+
            }
        }
    };
}
tuple_key!(A, B);
tuple_key!(A, B, C);
tuple_key!(A, B, C, D);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Encoder;

    fn hash_of(values: &[crate::Value]) -> u64 {
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
        use crate::Value::*;
        // Part of the wire contract: docs/fields-hash.md lists the same vectors.
        let vectors: &[(&[crate::Value], u64)] = &[
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
        assert_eq!(key_group(0xa0843c6306707846), 70);
        assert_eq!(select(0xa0843c6306707846, 3), 0);
    }

    #[test]
    fn every_key_group_has_exactly_one_owner_and_ranges_are_contiguous() {
        for n in [1usize, 2, 3, 5, 7, 1000, 1024, 1500] {
            let mut next = 0;
            for i in 0..n {
                let r = owned_groups(i, n);
                assert_eq!(r.start, next, "n={n} i={i}");
                for g in r.clone() {
                    assert_eq!(owner(g, n), i, "n={n} g={g}");
                }
                next = r.end;
            }
            assert_eq!(next, KEY_GROUPS, "n={n}");
        }
    }

    #[test]
    fn a_state_key_hashes_like_the_grouping_fields_it_stands_for() {
        assert_eq!("egret".to_string().key_hash(), 0x27bc4d6c0290b1a1);
        assert_eq!(42i64.key_hash(), 0xa21e1a867f970bec);
        assert_eq!(("heron", 7i64).key_hash(), 0xa0843c6306707846);
        assert_eq!(crate::Value::Str("egret".into()).key_hash(), 0x27bc4d6c0290b1a1);
    }
}
