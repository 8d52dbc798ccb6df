//! A Streamlet sink for the connector tests: it counts the elements it receives in checkpointed state and shows
//! them to the test, so that a test can check that each element arrived exactly once under effectively-once.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use egret_api::{CheckpointId, KeyedState, Stateful, TopologyContext, UserError};

/// What the collecting sinks hold, per sink task: element → times received. A sink's map is its checkpointed state,
/// replaced by the restored one at each restore (a rollback or a failed task), so the union is what the topology's
/// current cut holds: under effectively-once each element exactly once.
pub type Received = Arc<Mutex<BTreeMap<u32, BTreeMap<String, u32>>>>;

/// A Streamlet sink counting the elements it receives (see [`Received`]).
pub struct Collect {
    task: Option<u32>,
    mine: KeyedState<String, u32>,
    received: Received,
}

impl Collect {
    pub fn new(received: &Received) -> Self {
        Collect {
            task: None,
            mine: KeyedState::new(),
            received: Arc::clone(received),
        }
    }

    fn publish(&self) {
        if let Some(task) = self.task {
            let mine = self.mine.iter().map(|(k, v)| (k.clone(), *v)).collect();
            self.received.lock().unwrap().insert(task, mine);
        }
    }
}

impl egret_streamlet::Sink<String> for Collect {
    fn setup(&mut self, ctx: &TopologyContext) -> Result<(), UserError> {
        self.task = Some(ctx.task_id().0);
        self.publish();
        Ok(())
    }

    fn put(&mut self, element: String) -> Result<(), UserError> {
        *self.mine.entry(element.clone()).or_insert(0) += 1;
        if let Some(task) = self.task {
            *self
                .received
                .lock()
                .unwrap()
                .entry(task)
                .or_default()
                .entry(element)
                .or_default() += 1;
        }
        Ok(())
    }

    fn state(&mut self) -> Option<&mut dyn Stateful> {
        Some(self)
    }
}

impl Stateful for Collect {
    fn init_state(&mut self, restored: Option<&[u8]>) -> Result<(), UserError> {
        self.mine = KeyedState::restore(restored)?;
        self.publish();
        Ok(())
    }

    fn pre_save(&mut self, _checkpoint: CheckpointId, out: &mut Vec<u8>) -> Result<(), UserError> {
        Ok(self.mine.save_whole(out)?)
    }
}

/// Every element the sinks hold, with the times each was received.
pub fn received_union(received: &Received) -> BTreeMap<String, u32> {
    let mut all = BTreeMap::new();
    for mine in received.lock().unwrap().values() {
        for (k, n) in mine {
            *all.entry(k.clone()).or_default() += n;
        }
    }
    all
}
