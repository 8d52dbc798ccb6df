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
}

/// A map from keys to values whose snapshot is one call: the usual state of a bolt (counts per word, a sum per
/// account) or a spout (a position per partition). Keys and values are any serde types; the bytes are postcard's.
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

    /// The state saved by [`KeyedState::save`], or an empty one for `None` (a clean start).
    pub fn restore(bytes: Option<&[u8]>) -> Result<Self, StateError> {
        match bytes {
            None => Ok(Self::new()),
            Some(b) => postcard::from_bytes(b)
                .map(|map| KeyedState { map })
                .map_err(StateError::Decode),
        }
    }

    /// Appends the encoded state to `out`.
    pub fn save(&self, out: &mut Vec<u8>) -> Result<(), StateError> {
        let bytes = postcard::to_stdvec(&self.map).map_err(StateError::Encode)?;
        out.extend_from_slice(&bytes);
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
        assert!(matches!(
            KeyedState::<String, u64>::restore(Some(&bytes[..bytes.len() - 1])),
            Err(StateError::Decode(_))
        ));
    }
}
