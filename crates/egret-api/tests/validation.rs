//! A bad topology is refused with every problem named: component, stream, field.

use egret_api::*;

struct S;
impl Spout for S {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["word", "n"]);
        out.declare_direct_stream("direct", ["x"]);
    }
    fn next_tuple(&mut self, _out: &mut SpoutCollector<'_>) {}
}

struct B;
impl Bolt for B {
    fn execute(&mut self, _t: &Tuple<'_>, _out: &mut BoltCollector<'_>) {}
}

struct DupStreams;
impl Bolt for DupStreams {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["a", "a"]);
        out.declare(["b"]);
    }
    fn execute(&mut self, _t: &Tuple<'_>, _out: &mut BoltCollector<'_>) {}
}

fn ignore<T>(_: T) {}

type Edit = Box<dyn FnOnce(&mut TopologyBuilder)>;

/// Builds a topology with `edit` applied to a valid base and returns the errors.
fn check(edit: impl FnOnce(&mut TopologyBuilder)) -> Vec<TopologyError> {
    let mut b = TopologyBuilder::new("ok");
    b.set_spout("spout", 1, || S);
    edit(&mut b);
    match b.build() {
        Ok(_) => vec![],
        Err(e) => e.0,
    }
}

#[test]
fn valid_topology_builds() {
    assert_eq!(
        check(|b| ignore(b.set_bolt("bolt", 2, || B).fields_grouping("spout", ["word"]))),
        vec![]
    );
}

#[test]
fn each_problem_is_named() {
    use TopologyError::*;
    let s = |x: &str| x.to_string();
    let cases: Vec<(Edit, TopologyError)> = vec![
        (
            Box::new(|b| ignore(b.set_bolt("bolt", 1, || B).shuffle_grouping("nope"))),
            UnknownComponent {
                component: s("bolt"),
                producer: s("nope"),
            },
        ),
        (
            Box::new(|b| {
                ignore(
                    b.set_bolt("bolt", 1, || B)
                        .grouping("spout", "other", Grouping::Shuffle),
                )
            }),
            UnknownStream {
                component: s("bolt"),
                producer: s("spout"),
                stream: s("other"),
            },
        ),
        (
            Box::new(|b| ignore(b.set_bolt("bolt", 1, || B).fields_grouping("spout", ["wrd"]))),
            GroupingOnUndeclaredField {
                component: s("bolt"),
                producer: s("spout"),
                stream: s("default"),
                field: s("wrd"),
                declared: s("[word, n]"),
            },
        ),
        (
            Box::new(|b| ignore(b.set_spout("spout", 1, || S))),
            DuplicateComponent(s("spout")),
        ),
        (
            Box::new(|b| ignore(b.set_bolt("bolt", 0, || B).shuffle_grouping("spout"))),
            ZeroParallelism { component: s("bolt") },
        ),
        (
            Box::new(|b| ignore(b.set_bolt("bolt", 1, || B))),
            BoltWithoutInput { component: s("bolt") },
        ),
        (
            Box::new(|b| {
                ignore(
                    b.set_bolt("bolt", 1, || B)
                        .grouping("spout", "default", Grouping::Direct),
                )
            }),
            DirectGroupingOnPlainStream {
                component: s("bolt"),
                producer: s("spout"),
                stream: s("default"),
            },
        ),
        (
            Box::new(|b| {
                ignore(
                    b.set_bolt("bolt", 1, || B)
                        .grouping("spout", "direct", Grouping::Shuffle),
                )
            }),
            PlainGroupingOnDirectStream {
                component: s("bolt"),
                producer: s("spout"),
                stream: s("direct"),
                grouping: "shuffle",
            },
        ),
        (
            Box::new(|b| {
                ignore(
                    b.set_bolt("bolt", 1, || B)
                        .shuffle_grouping("spout")
                        .shuffle_grouping("spout"),
                )
            }),
            DuplicateInput {
                component: s("bolt"),
                producer: s("spout"),
                stream: s("default"),
            },
        ),
        (
            Box::new(|b| {
                ignore(
                    b.set_bolt("bolt", 1, || B)
                        .fields_grouping("spout", Vec::<String>::new()),
                )
            }),
            EmptyFieldsGrouping {
                component: s("bolt"),
                producer: s("spout"),
                stream: s("default"),
            },
        ),
        (
            Box::new(|b| ignore(b.set_bolt("has space", 1, || B).shuffle_grouping("spout"))),
            InvalidComponentName(s("has space")),
        ),
        (
            Box::new(|b| ignore(b.set_bolt("__system", 1, || B).shuffle_grouping("spout"))),
            InvalidComponentName(s("__system")),
        ),
        (
            Box::new(|b| {
                b.config().set("topology.max.spout.pendng", 3);
            }),
            UnknownConfigKey {
                scope: s("topology config"),
                key: s("topology.max.spout.pendng"),
            },
        ),
        (
            Box::new(|b| {
                ignore(
                    b.set_bolt("bolt", 1, || B)
                        .shuffle_grouping("spout")
                        .config(keys::RELIABILITY_MODE, "SOMETIMES"),
                )
            }),
            BadConfig {
                scope: s("component \"bolt\" config"),
                error: ConfigError {
                    key: s(keys::RELIABILITY_MODE),
                    value: s("SOMETIMES"),
                    expected: "ATMOST_ONCE, ATLEAST_ONCE or EFFECTIVELY_ONCE",
                },
            },
        ),
    ];
    for (edit, expected) in cases {
        let errors = check(edit);
        assert_eq!(errors, vec![expected.clone()], "for {expected}");
    }
}

#[test]
fn every_problem_is_reported_at_once() {
    let mut b = TopologyBuilder::new("bad name!");
    b.set_bolt("dups", 0, || DupStreams);
    let err = b.build().unwrap_err();
    let text = err.to_string();
    for needle in [
        "topology name \"bad name!\" is invalid",
        "\"dups\" has parallelism 0",
        "the topology has no spout",
        "bolt \"dups\" has no input",
        "declares stream \"default\" twice",
        "declares field \"a\" twice",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    assert_eq!(err.0.len(), 6, "{text}");
}

#[test]
fn task_layout_is_deterministic() {
    let mut b = TopologyBuilder::new("t");
    b.set_spout("z-spout", 2, || S);
    b.set_bolt("a-bolt", 3, || B).shuffle_grouping("z-spout");
    let t = b.build().unwrap();
    // Components sorted by name, task ids dealt from 1.
    let a = t.component_index("a-bolt").unwrap();
    let z = t.component_index("z-spout").unwrap();
    assert_eq!(t.tasks_of(a).map(|t| t.0).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(t.tasks_of(z).map(|t| t.0).collect::<Vec<_>>(), vec![4, 5]);
    assert_eq!(t.task_component(TaskId(5)), Some((z, 1)));
    assert_eq!(t.task_component(TaskId(6)), None);
    assert_eq!(t.task_component(TaskId(0)), None);
}

struct Out;
impl Bolt for Out {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["x"]);
    }
    fn execute(&mut self, _t: &Tuple<'_>, _out: &mut BoltCollector<'_>) {}
}

#[test]
fn upstream_tasks_are_every_task_of_every_subscribed_component() {
    let mut b = TopologyBuilder::new("t");
    b.set_spout("s", 2, || S);
    b.set_bolt("a", 2, || Out).shuffle_grouping("s");
    // Every grouping counts, and a component may subscribe to its own stream.
    b.set_bolt("b", 3, || Out)
        .direct_grouping("s", "direct")
        .all_grouping("a")
        .shuffle_grouping("b");
    let t = b.build().unwrap();
    let ids = |task: u32| t.upstream_tasks(TaskId(task)).iter().map(|t| t.0).collect::<Vec<_>>();
    // a = 1..=2, b = 3..=5, s = 6..=7.
    assert_eq!(ids(1), vec![6, 7]);
    assert_eq!(ids(4), vec![1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(ids(6), Vec::<u32>::new(), "a spout has no upstream");
    assert_eq!(ids(99), Vec::<u32>::new(), "no such task");
}

/// A bolt with an output stream, to build cycles with.
struct Relay;
impl Bolt for Relay {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["x"]);
    }
    fn execute(&mut self, _t: &Tuple<'_>, _out: &mut BoltCollector<'_>) {}
}

#[test]
fn effectively_once_refuses_cycles_and_semantics_are_topology_wide() {
    use TopologyError::*;
    let errors = check(|b| {
        b.config().set(keys::RELIABILITY_MODE, "EFFECTIVELY_ONCE");
        b.set_bolt("a", 1, || Relay)
            .shuffle_grouping("spout")
            .shuffle_grouping("b");
        b.set_bolt("b", 1, || Relay).shuffle_grouping("a");
    });
    assert!(
        errors
            .iter()
            .any(|e| matches!(e, CycleUnderEffectivelyOnce { cycle, .. } if cycle == "a -> b -> a")),
        "{errors:?}"
    );
    // The same cycle under at-least-once is allowed (Heron allows it too).
    assert_eq!(
        check(|b| {
            b.config().set(keys::RELIABILITY_MODE, "ATLEAST_ONCE");
            b.set_bolt("a", 1, || Relay)
                .shuffle_grouping("spout")
                .shuffle_grouping("b");
            b.set_bolt("b", 1, || Relay).shuffle_grouping("a");
        }),
        vec![]
    );
    let errors = check(|b| {
        b.config().set(keys::RELIABILITY_MODE, "EFFECTIVELY_ONCE");
        b.set_bolt("bolt", 1, || B)
            .shuffle_grouping("spout")
            .config(keys::RELIABILITY_MODE, "ATLEAST_ONCE");
    });
    assert_eq!(
        errors,
        vec![ComponentReliabilityMode {
            component: "bolt".into(),
            mode: "ATLEAST_ONCE".into(),
            topology_mode: "EFFECTIVELY_ONCE".into(),
        }]
    );
}
