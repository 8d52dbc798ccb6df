//! State that survives failures (effectively-once): the [`Stateful`] hooks a spout or bolt implements, and
//! [`KeyedState`], a typed map the runtime can snapshot.
//!
//! Under `topology.reliability.mode=EFFECTIVELY_ONCE` the runtime takes a consistent checkpoint of every task every
//! `topology.stateful.checkpoint.interval.seconds`: it asks each stateful component for its state with
//! [`Stateful::pre_save`] at the point in its input where the checkpoint's markers met (see `docs/checkpoints.md`).
//! After any failure every task goes back to the newest checkpoint that every task saved: the component is created
//! anew, [`Stateful::init_state`] gets the bytes it saved, and spouts emit again from the position they kept in their
//! state. A component that keeps nothing across tuples needs none of this.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::Hash;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::component::UserError;
use crate::ids::CheckpointId;
use crate::key_groups::{StateKey, key_group};

/// Heron's `IStatefulComponent` (and, with the optional hooks, `ITwoPhaseStatefulComponent`). A spout or bolt
/// opts in by returning itself from `Spout::stateful` / `Bolt::stateful`.
pub trait Stateful {
    /// Called once on a fresh component before `open`/`prepare`: `restored` is what [`Stateful::pre_save`] wrote at
    /// the checkpoint being restored, `None` on a clean start. An error stops the task from starting.
    fn init_state(&mut self, restored: Option<&[u8]>) -> Result<(), UserError>;

    /// Writes the component's state at `checkpoint` into `out` (empty when called). Everything the component did
    /// before this call belongs to the checkpoint, nothing after it. Keep it to a copy: the runtime writes the bytes
    /// to the store on another thread while processing continues. An error abandons this checkpoint for the task.
    fn pre_save(&mut self, checkpoint: CheckpointId, out: &mut Vec<u8>) -> Result<(), UserError>;

    /// `checkpoint` is complete: every task saved it, so it will never be rolled back past (the commit of a
    /// two-phase sink that pre-committed at `pre_save`).
    fn post_save(&mut self, _checkpoint: CheckpointId) {}

    /// The topology is rolling back to `checkpoint` (`None`: to a clean start) and this component is about to be
    /// dropped: abort what was pre-committed after it.
    fn pre_restore(&mut self, _checkpoint: Option<CheckpointId>) {}
}

/// Why state could not be saved or restored.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot encode the state: {0}")]
    Encode(postcard::Error),
    #[error("the saved state does not decode as this component's state: {0}")]
    Decode(postcard::Error),
    #[error("keyed state is corrupt: {0}")]
    Corrupt(&'static str),
    #[error(
        "the state of task index {index} is not keyed (not a KeyedState), so it cannot be merged into {tasks} task(s); \
         only keyed state can follow a component that shrinks"
    )]
    NotKeyed { index: usize, tasks: usize },
}

/// A map from keys to values whose snapshot is one call: the usual state of a bolt (counts per word, a sum per
/// account) or a spout (a position per partition). Keys and values are any serde types; the bytes are postcard's,
/// stored per key group ([`key_group_blob`]), so that when the component's parallelism changes each key's entry
/// goes to the task its tuples now go to. For that, key the state by the value(s) of the fields the component's
/// input is grouped on (a word count groups on `word` and keys its counts by the word): [`StateKey`] hashes a key
/// exactly as the fields grouping hashes those fields.
///
/// ```
/// use egret_api::KeyedState;
/// let mut counts: KeyedState<String, u64> = KeyedState::new();
/// *counts.entry("egret".to_string()).or_insert(0) += 1;
/// let mut bytes = Vec::new();
/// counts.save(&mut bytes).unwrap();
/// let restored: KeyedState<String, u64> = KeyedState::restore(Some(&bytes)).unwrap();
/// assert_eq!(restored.get("egret"), Some(&1));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedState<K: Eq + Hash, V> {
    map: HashMap<K, V>,
}

impl<K: Eq + Hash, V> Default for KeyedState<K, V> {
    fn default() -> Self {
        KeyedState { map: HashMap::new() }
    }
}

impl<K, V> KeyedState<K, V>
where
    K: Eq + Hash + Serialize + DeserializeOwned,
    V: Serialize + DeserializeOwned,
{
    pub fn new() -> Self {
        Self::default()
    }

    /// The state saved by [`KeyedState::save`] (whole, or the key groups a task owns after a rescale), or an empty
    /// one for `None` (a clean start). A plain postcard map (what `save` wrote before key groups) reads too.
    pub fn restore(bytes: Option<&[u8]>) -> Result<Self, StateError> {
        let Some(b) = bytes else { return Ok(Self::new()) };
        let Some(parsed) = key_group_blob::parse(b)? else {
            return postcard::from_bytes(b)
                .map(|map| KeyedState { map })
                .map_err(StateError::Decode);
        };
        let mut map = HashMap::new();
        for (_, payload) in parsed.groups {
            let entries: Vec<(K, V)> = postcard::from_bytes(payload).map_err(StateError::Decode)?;
            map.extend(entries);
        }
        Ok(KeyedState { map })
    }

    /// Appends the encoded state to `out`: the entries of each key group together (see [`key_group_blob`]).
    pub fn save(&self, out: &mut Vec<u8>) -> Result<(), StateError>
    where
        K: StateKey,
    {
        let mut groups: Vec<(u32, &K, &V)> = self.map.iter().map(|(k, v)| (key_group(k.key_hash()), k, v)).collect();
        groups.sort_unstable_by_key(|(g, _, _)| *g);
        let mut payloads: Vec<(u32, Vec<u8>)> = Vec::new();
        for chunk in groups.chunk_by(|a, b| a.0 == b.0) {
            let entries: Vec<(&K, &V)> = chunk.iter().map(|(_, k, v)| (*k, *v)).collect();
            payloads.push((chunk[0].0, postcard::to_stdvec(&entries).map_err(StateError::Encode)?));
        }
        key_group_blob::write(
            key_group_blob::Split::ByKeyGroup,
            payloads.iter().map(|(g, p)| (*g, p.as_slice())),
            out,
        );
        Ok(())
    }

    /// Appends the encoded state to `out` so that after a rescale every task of the component gets all of it (the
    /// entries of every old task) and keeps what it owns by the component's own rule: for state whose keys are not
    /// grouping keys, e.g. a source's position per partition when partitions are dealt as `p % parallelism`. Each
    /// task must then save only the entries it owns, or a stale copy could shadow the owner's.
    pub fn save_whole(&self, out: &mut Vec<u8>) -> Result<(), StateError> {
        let entries: Vec<(&K, &V)> = self.map.iter().collect();
        let payload = postcard::to_stdvec(&entries).map_err(StateError::Encode)?;
        let groups: &[(u32, &[u8])] = if entries.is_empty() {
            &[]
        } else {
            &[(0, payload.as_slice())]
        };
        key_group_blob::write(key_group_blob::Split::Whole, groups.iter().copied(), out);
        Ok(())
    }

    pub fn get<Q: Hash + Eq + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.map.get(key)
    }

    pub fn get_mut<Q: Hash + Eq + ?Sized>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
    {
        self.map.get_mut(key)
    }

    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        self.map.insert(key, value)
    }

    pub fn remove<Q: Hash + Eq + ?Sized>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        self.map.remove(key)
    }

    pub fn entry(&mut self, key: K) -> Entry<'_, K, V> {
        self.map.entry(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.map.iter()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The map itself, e.g. to hand the final counts to a test.
    pub fn into_map(self) -> HashMap<K, V> {
        self.map
    }
}

/// Keyed state as the runtime stores it: the payload of each key group apart, so that a rescale can hand each
/// group to its new owner without decoding it (`egret_checkpoint::load_rescaled` does that when a component's
/// parallelism changes).
///
/// `b"EGKG" | version 1 (u8) | split (u8: 0 by key group, 1 whole) | group count (u32 LE) | per group, ascending:
/// group (u32 LE), length (u32 LE), payload`
///
/// *Split by key group* (what [`KeyedState::save`] writes): each new task gets the groups it owns. *Whole* (what
/// [`KeyedState::save_whole`] writes): each new task gets every old task's entries and keeps what it owns by the
/// component's own rule (a source's positions per partition, when partitions are dealt as `p % parallelism`).
pub mod key_group_blob {
    use std::ops::Range;

    use super::StateError;

    const MAGIC: &[u8; 4] = b"EGKG";
    const VERSION: u8 = 1;
    const HEADER: usize = 10;

    /// How a blob's groups are divided when the component's parallelism changes.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Split {
        ByKeyGroup = 0,
        Whole = 1,
    }

    /// A parsed blob: how it splits, and its groups with their payloads.
    #[derive(Debug)]
    pub struct Parsed<'a> {
        pub split: Split,
        pub groups: Vec<(u32, &'a [u8])>,
    }

    /// Writes `groups` (ascending group numbers, each once) to `out`.
    pub fn write<'a>(split: Split, groups: impl ExactSizeIterator<Item = (u32, &'a [u8])>, out: &mut Vec<u8>) {
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(split as u8);
        out.extend_from_slice(&(groups.len() as u32).to_le_bytes());
        for (g, payload) in groups {
            out.extend_from_slice(&g.to_le_bytes());
            out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            out.extend_from_slice(payload);
        }
    }

    /// The groups of a keyed blob; `None` if `bytes` is not one (state a component saved its own way).
    pub fn parse(bytes: &[u8]) -> Result<Option<Parsed<'_>>, StateError> {
        if !is_keyed(bytes) {
            return Ok(None);
        }
        let u32_at = |at: usize| -> Result<u32, StateError> {
            bytes
                .get(at..at + 4)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_le_bytes)
                .ok_or(StateError::Corrupt("truncated"))
        };
        if bytes[4] != VERSION {
            return Err(StateError::Corrupt("unknown version"));
        }
        let split = match bytes[5] {
            0 => Split::ByKeyGroup,
            1 => Split::Whole,
            _ => return Err(StateError::Corrupt("unknown split")),
        };
        let count = u32_at(6)? as usize;
        let mut at = HEADER;
        let mut groups = Vec::with_capacity(count.min(bytes.len() / 8));
        for _ in 0..count {
            let (g, len) = (u32_at(at)?, u32_at(at + 4)? as usize);
            let payload = bytes
                .get(at + 8..at + 8 + len)
                .ok_or(StateError::Corrupt("a group runs past the end"))?;
            groups.push((g, payload));
            at += 8 + len;
        }
        if at != bytes.len() {
            return Err(StateError::Corrupt("bytes after the last group"));
        }
        Ok(Some(Parsed { split, groups }))
    }

    pub fn is_keyed(bytes: &[u8]) -> bool {
        bytes.len() >= HEADER && &bytes[..4] == MAGIC
    }

    /// The state of the task at `index` of `tasks` after a rescale, from the states the component's `old` tasks
    /// saved (by their index; `None`: that task saved nothing).
    ///
    /// Keyed states split by key group: the groups `index` owns now ([`crate::key_groups::owned_groups`]), from
    /// whichever old task held them; saved whole: every old task's groups. State a component saved its own way
    /// (not a `KeyedState`) cannot be split: the task at `index` gets what the old task at the same index saved
    /// (nothing if it is new), and a component whose removed tasks saved such state is refused
    /// ([`StateError::NotKeyed`]) rather than lose it.
    pub fn rescale(old: &[Option<&[u8]>], index: usize, tasks: usize) -> Result<Option<Vec<u8>>, StateError> {
        let present = || old.iter().enumerate().filter_map(|(i, b)| b.map(|b| (i, b)));
        if let Some((i, _)) = present().find(|(i, b)| *i >= tasks && !b.is_empty() && !is_keyed(b)) {
            return Err(StateError::NotKeyed { index: i, tasks });
        }
        if present().all(|(_, b)| !is_keyed(b)) {
            return Ok(old.get(index).copied().flatten().map(<[u8]>::to_vec));
        }
        let owned: Range<u32> = crate::key_groups::owned_groups(index, tasks);
        let mut split = Split::ByKeyGroup;
        let mut groups: Vec<(u32, &[u8])> = Vec::new();
        for (i, b) in present() {
            match parse(b)? {
                Some(Parsed {
                    split: Split::Whole,
                    groups: gs,
                }) => {
                    split = Split::Whole;
                    groups.extend(gs);
                }
                Some(Parsed { groups: gs, .. }) => groups.extend(gs.into_iter().filter(|(g, _)| owned.contains(g))),
                // Some tasks keyed, some not: a non-keyed one that stays keeps its state only if it is its own.
                None if i == index => return Ok(Some(b.to_vec())),
                None => {}
            }
        }
        groups.sort_by_key(|(g, _)| *g);
        let mut out = Vec::new();
        write(split, groups.into_iter(), &mut out);
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_state_restores_equal_and_garbage_is_refused() {
        let mut s: KeyedState<String, u64> = KeyedState::new();
        for (i, w) in ["a", "b", "c"].iter().enumerate() {
            s.insert(w.to_string(), i as u64 * 1000);
        }
        let mut bytes = Vec::new();
        s.save(&mut bytes).unwrap();
        assert_eq!(KeyedState::restore(Some(&bytes)).unwrap(), s);
        assert!(KeyedState::<String, u64>::restore(None).unwrap().is_empty());
        assert!(KeyedState::<String, u64>::restore(Some(&bytes[..bytes.len() - 1])).is_err());
        // What `save` wrote before key groups still reads.
        let plain = postcard::to_stdvec(&s.clone().into_map()).unwrap();
        assert_eq!(KeyedState::restore(Some(&plain)).unwrap(), s);
    }

    fn counts(n: usize) -> KeyedState<String, u64> {
        let mut s = KeyedState::new();
        for i in 0..n {
            s.insert(format!("word-{i}"), i as u64);
        }
        s
    }

    /// Splits a state saved by `old` tasks (each holding the keys it owned) into `new` tasks' states.
    fn rescaled(all: &KeyedState<String, u64>, old: usize, new: usize) -> Vec<KeyedState<String, u64>> {
        use crate::key_groups::select;
        let saved: Vec<Vec<u8>> = (0..old)
            .map(|i| {
                let mut part = KeyedState::new();
                for (k, v) in all.iter().filter(|(k, _)| select(k.key_hash(), old) == i) {
                    part.insert(k.clone(), *v);
                }
                let mut b = Vec::new();
                part.save(&mut b).unwrap();
                b
            })
            .collect();
        let refs: Vec<Option<&[u8]>> = saved.iter().map(|b| Some(b.as_slice())).collect();
        (0..new)
            .map(|i| {
                let bytes = key_group_blob::rescale(&refs, i, new).unwrap();
                let part: KeyedState<String, u64> = KeyedState::restore(bytes.as_deref()).unwrap();
                for (k, _) in part.iter() {
                    assert_eq!(select(k.key_hash(), new), i, "{k} is in the task its tuples go to");
                }
                part
            })
            .collect()
    }

    #[test]
    fn keyed_state_rescales_by_key_group_to_the_tasks_the_keys_now_route_to() {
        let all = counts(5000);
        for (old, new) in [(2, 5), (5, 1), (1, 3), (3, 3), (7, 2)] {
            let parts = rescaled(&all, old, new);
            let mut merged = HashMap::new();
            for p in parts {
                for (k, v) in p.into_map() {
                    assert!(merged.insert(k, v).is_none(), "a key in two tasks");
                }
            }
            assert_eq!(merged, all.clone().into_map(), "{old} -> {new}");
        }
    }

    #[test]
    fn state_that_is_not_keyed_stays_by_index_and_cannot_shrink() {
        let (a, b) = (b"own-a".as_slice(), b"own-b".as_slice());
        assert_eq!(
            key_group_blob::rescale(&[Some(a), Some(b)], 1, 3).unwrap().as_deref(),
            Some(b)
        );
        assert_eq!(key_group_blob::rescale(&[Some(a), Some(b)], 2, 3).unwrap(), None);
        assert!(matches!(
            key_group_blob::rescale(&[Some(a), Some(b)], 0, 1),
            Err(StateError::NotKeyed { index: 1, tasks: 1 })
        ));
        // A removed task that saved nothing is no loss.
        assert_eq!(
            key_group_blob::rescale(&[Some(a), None], 0, 1).unwrap().as_deref(),
            Some(a)
        );
    }

    #[test]
    fn a_corrupt_keyed_blob_is_an_error_not_a_panic() {
        let mut b = Vec::new();
        counts(50).save(&mut b).unwrap();
        for cut in 0..b.len() {
            let _ = key_group_blob::parse(&b[..cut]);
            let _ = KeyedState::<String, u64>::restore(Some(&b[..cut]));
        }
        let mut bad = b.clone();
        bad[6] = 0xff; // a huge group count
        assert!(key_group_blob::parse(&bad).is_err());
    }

    #[test]
    fn state_saved_whole_goes_whole_to_every_new_task() {
        let saved: Vec<Vec<u8>> = [[(0i32, 10i64), (2, 12)], [(1, 11), (3, 13)]]
            .iter()
            .map(|entries| {
                let mut s = KeyedState::new();
                for (k, v) in entries {
                    s.insert(*k, *v);
                }
                let mut b = Vec::new();
                s.save_whole(&mut b).unwrap();
                b
            })
            .collect();
        let refs: Vec<Option<&[u8]>> = saved.iter().map(|b| Some(b.as_slice())).collect();
        for index in 0..3 {
            let bytes = key_group_blob::rescale(&refs, index, 3).unwrap();
            let got: KeyedState<i32, i64> = KeyedState::restore(bytes.as_deref()).unwrap();
            assert_eq!(got.len(), 4, "task {index} gets every partition's position");
            assert_eq!(got.get(&3), Some(&13));
        }
    }
}
