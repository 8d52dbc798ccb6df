//! Groupings turned into task selection: for one output stream, which tasks receive a tuple.
//!
//! Every mode routes here, at the emitting task, on the encoded values (no decoding): shuffle is round robin from
//! a random start, fields hashes the grouping fields' bytes (`fields_hash`), all returns every task, global the
//! lowest task id, direct the task the emitter named, custom calls the user's function. `None` is shuffle.

use std::sync::Arc;

use egret_api::value::Encoder;
use egret_api::{CustomGrouping, Grouping, Roots, StreamIndex, StreamSource, TaskId, Topology, Tuple};

use crate::fields_hash;
use crate::rng::FastRng;

enum Selector {
    RoundRobin { next: usize },
    Fields(Vec<usize>),
    All,
    Lowest,
    Direct,
    Custom(Arc<dyn CustomGrouping>),
}

struct Consumer {
    /// Sorted ascending.
    tasks: Vec<TaskId>,
    selector: Selector,
}

/// Why a tuple could not be routed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("task {task} does not consume this direct stream")]
    BadDirectTask { task: TaskId },
    #[error("custom grouping {grouping} chose task {task}, which does not consume the stream")]
    BadCustomTask { grouping: String, task: TaskId },
}

/// The consumers of one stream and how each selects its tasks.
pub struct StreamRouter {
    consumers: Vec<Consumer>,
    source: Arc<StreamSource>,
}

impl StreamRouter {
    /// Builds the router of `stream` from the topology; `rng` picks the shuffle start points.
    pub fn new(topology: &Topology, stream: StreamIndex, rng: &mut FastRng) -> StreamRouter {
        let info = topology.stream(stream).expect("stream index from this topology");
        let consumers = topology
            .consumers(stream)
            .map(|(ci, input)| {
                let tasks: Vec<TaskId> = topology.tasks_of(ci).collect();
                let selector = match &input.grouping {
                    Grouping::Shuffle | Grouping::None => Selector::RoundRobin {
                        next: rng.below(tasks.len()),
                    },
                    Grouping::Fields(names) => Selector::Fields(
                        // Validation guarantees every grouping field is declared.
                        names.iter().filter_map(|n| info.decl.fields.index_of(n)).collect(),
                    ),
                    Grouping::All => Selector::All,
                    Grouping::Global => Selector::Lowest,
                    Grouping::Direct => Selector::Direct,
                    Grouping::Custom(c) => Selector::Custom(Arc::clone(c)),
                };
                Consumer { tasks, selector }
            })
            .collect();
        StreamRouter {
            consumers,
            source: Arc::clone(&info.source),
        }
    }

    pub fn has_consumers(&self) -> bool {
        !self.consumers.is_empty()
    }

    /// Appends the destination tasks of the tuple in `enc` to `out` (one entry per copy to send).
    pub fn route(
        &mut self,
        enc: &Encoder,
        src_task: TaskId,
        direct: Option<TaskId>,
        out: &mut Vec<TaskId>,
    ) -> Result<(), RouteError> {
        for c in &mut self.consumers {
            match &mut c.selector {
                Selector::RoundRobin { next } => {
                    out.push(c.tasks[*next]);
                    *next += 1;
                    if *next == c.tasks.len() {
                        *next = 0;
                    }
                }
                Selector::Fields(indices) => {
                    let h = fields_hash::fields_hash(indices.iter().map(|&i| enc.field(i)));
                    out.push(c.tasks[fields_hash::select(h, c.tasks.len())]);
                }
                Selector::All => out.extend_from_slice(&c.tasks),
                Selector::Lowest => out.push(c.tasks[0]),
                Selector::Direct => {
                    // A direct stream may have several direct consumers; the named task belongs to one of them.
                    if let Some(task) = direct.filter(|t| c.tasks.binary_search(t).is_ok()) {
                        out.push(task);
                    }
                }
                Selector::Custom(g) => {
                    let tuple = Tuple::new(&self.source, src_task, enc.bytes(), 0, Roots::default());
                    let start = out.len();
                    g.choose(&tuple, &c.tasks, out);
                    if let Some(&bad) = out[start..].iter().find(|t| c.tasks.binary_search(t).is_err()) {
                        out.truncate(start);
                        return Err(RouteError::BadCustomTask {
                            grouping: g.name().to_string(),
                            task: bad,
                        });
                    }
                }
            }
        }
        if let Some(task) = direct
            && !out.contains(&task)
        {
            return Err(RouteError::BadDirectTask { task });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use egret_api::value::Values;
    use egret_api::{Bolt, BoltCollector, OutputDeclarer, Spout, SpoutCollector, TopologyBuilder};
    use std::collections::{HashMap, HashSet};

    #[derive(Clone)]
    struct S;
    impl Spout for S {
        fn declare_outputs(&self, out: &mut OutputDeclarer) {
            out.declare(["word", "n"]);
            out.declare_direct_stream("d", ["x"]);
        }
        fn next_tuple(&mut self, _out: &mut SpoutCollector<'_>) {}
    }
    struct B;
    impl Bolt for B {
        fn execute(&mut self, _t: &Tuple<'_>, _out: &mut BoltCollector<'_>) {}
    }

    fn topology(grouping: Grouping, consumers: u32) -> Topology {
        let mut b = TopologyBuilder::new("t");
        b.set_spout("a-spout", 1, || S);
        b.set_bolt("b", consumers, || B)
            .grouping("a-spout", "default", grouping);
        b.set_bolt("c", 1, || B).direct_grouping("a-spout", "d");
        b.build().unwrap()
    }

    fn router(grouping: Grouping, consumers: u32) -> StreamRouter {
        let t = topology(grouping, consumers);
        let idx = t.stream_index("a-spout", "default").unwrap();
        StreamRouter::new(&t, idx, &mut FastRng::new(1))
    }

    fn route(r: &mut StreamRouter, word: &str, n: i64) -> Vec<TaskId> {
        let mut enc = Encoder::new();
        (word, n).encode_all(&mut enc);
        let mut out = Vec::new();
        r.route(&enc, TaskId(1), None, &mut out).unwrap();
        out
    }

    #[test]
    fn fields_equal_keys_reach_one_task_and_keys_spread() {
        let mut r = router(Grouping::fields(["word"]), 4);
        let mut owner: HashMap<String, TaskId> = HashMap::new();
        let mut used = HashSet::new();
        for i in 0..4000 {
            let word = format!("w{}", i % 500);
            let dest = route(&mut r, &word, i);
            assert_eq!(dest.len(), 1);
            // The other field must not influence the choice.
            assert_eq!(*owner.entry(word).or_insert(dest[0]), dest[0]);
            used.insert(dest[0]);
        }
        assert_eq!(used.len(), 4, "500 keys over 4 tasks must use every task");
        let mut per_task: HashMap<TaskId, usize> = HashMap::new();
        for t in owner.values() {
            *per_task.entry(*t).or_default() += 1;
        }
        assert!(per_task.values().all(|&n| n > 80), "uneven spread: {per_task:?}");
    }

    #[test]
    fn shuffle_is_round_robin() {
        let mut r = router(Grouping::Shuffle, 3);
        let mut counts: HashMap<TaskId, usize> = HashMap::new();
        for i in 0..300 {
            *counts.entry(route(&mut r, "x", i)[0]).or_default() += 1;
        }
        assert_eq!(counts.len(), 3);
        assert!(counts.values().all(|&n| n == 100), "{counts:?}");
    }

    #[test]
    fn all_and_global() {
        let mut r = router(Grouping::All, 3);
        let all = route(&mut r, "x", 1);
        assert_eq!(all.len(), 3);
        let t = topology(Grouping::Global, 3);
        let lowest = t.tasks_of(t.component_index("b").unwrap()).min().unwrap();
        let mut r = router(Grouping::Global, 3);
        for i in 0..10 {
            assert_eq!(route(&mut r, "y", i), vec![lowest]);
        }
    }

    #[test]
    fn direct_only_to_a_consumer() {
        let t = topology(Grouping::Shuffle, 1);
        let idx = t.stream_index("a-spout", "d").unwrap();
        let mut r = StreamRouter::new(&t, idx, &mut FastRng::new(1));
        let c_task = t.tasks_of(t.component_index("c").unwrap()).next().unwrap();
        let mut enc = Encoder::new();
        (1i64,).encode_all(&mut enc);
        let mut out = Vec::new();
        r.route(&enc, TaskId(1), Some(c_task), &mut out).unwrap();
        assert_eq!(out, vec![c_task]);
        out.clear();
        assert_eq!(
            r.route(&enc, TaskId(1), Some(TaskId(99)), &mut out),
            Err(RouteError::BadDirectTask { task: TaskId(99) })
        );
    }

    #[test]
    fn custom_grouping_is_checked() {
        struct ToAll;
        impl CustomGrouping for ToAll {
            fn name(&self) -> &str {
                "last-and-bogus"
            }
            fn choose(&self, tuple: &Tuple<'_>, targets: &[TaskId], out: &mut Vec<TaskId>) {
                out.push(*targets.last().unwrap());
                if tuple.get_str("word").unwrap() == "bad" {
                    out.push(TaskId(1000));
                }
            }
        }
        let mut r = router(Grouping::custom(ToAll), 2);
        assert_eq!(route(&mut r, "ok", 1).len(), 1);
        let mut enc = Encoder::new();
        ("bad", 1i64).encode_all(&mut enc);
        let mut out = Vec::new();
        assert!(matches!(
            r.route(&enc, TaskId(1), None, &mut out),
            Err(RouteError::BadCustomTask { .. })
        ));
        assert!(out.is_empty());
    }
}
