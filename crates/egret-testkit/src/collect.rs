//! What the connectors' effectively-once Streamlet tests share: a sink that counts the elements it receives in
//! checkpointed state and shows them to the test (so that a test can check that each element arrived exactly once),
//! and the run that fails tasks while the input is being produced.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use std::time::Duration;

use egret_api::{CheckpointId, KeyedState, Stateful, TaskId, Topology, TopologyContext, UserError};
use egret_simulator::Running;

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

/// The task id of `component`'s task `index`.
pub fn task_of(topology: &Topology, component: &str, index: u32) -> TaskId {
    let ci = topology
        .component_index(component)
        .unwrap_or_else(|| panic!("no component {component}"));
    topology
        .tasks()
        .find(|&(_, c, i)| c == ci && i == index)
        .map(|(t, _, _)| t)
        .unwrap_or_else(|| panic!("{component} has no task {index}"))
}

/// Produces the input in `chunks` (`produce(c)` for each, 40 ms apart) while each of `victims` is failed in turn, each
/// after a checkpoint completed and 50 ms more, so that output past the checkpoint is rolled back and replayed.
pub fn fail_while_producing(running: &Running, victims: &[TaskId], chunks: u64, produce: impl FnMut(u64) + Send) {
    let mut produce = produce;
    std::thread::scope(|scope| {
        let producer = scope.spawn(move || {
            for c in 0..chunks {
                produce(c);
                std::thread::sleep(Duration::from_millis(40));
            }
        });
        for &victim in victims {
            running
                .wait_for_checkpoints(1, Duration::from_secs(30))
                .expect("a checkpoint completes");
            std::thread::sleep(Duration::from_millis(50));
            assert!(running.fail_task(victim), "task {victim} runs");
        }
        producer.join().expect("the producer does not panic");
    });
}
