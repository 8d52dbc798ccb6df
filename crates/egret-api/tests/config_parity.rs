//! `docs/config.md` against the code: every key the table lists is treated by validation as the table says, and
//! every key the code knows or refuses is in the table.

use std::collections::BTreeMap;

use egret_api::keys::{self, KeyStatus, Scope};
use egret_api::*;

struct S;
impl Spout for S {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(["word"]);
    }
    fn next_tuple(&mut self, _out: &mut SpoutCollector<'_>) {}
}

struct B;
impl Bolt for B {
    fn execute(&mut self, _t: &Tuple<'_>, _out: &mut BoltCollector<'_>) {}
}

/// One row of the table: the key, Egret's answer, and the explanation.
struct Row {
    status: String,
    how: String,
}

fn table() -> BTreeMap<String, Row> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/config.md");
    let text = std::fs::read_to_string(path).expect("docs/config.md is readable");
    let mut rows = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("| `topology.")) {
        let cells: Vec<&str> = line.trim_matches('|').split(" | ").map(str::trim).collect();
        assert!(cells.len() >= 2, "a row without an answer: {line}");
        let key = cells[0].trim_matches('`').to_string();
        let row = Row {
            status: cells[1].to_string(),
            how: cells.get(2).copied().unwrap_or_default().to_string(),
        };
        assert!(rows.insert(key.clone(), row).is_none(), "{key} is listed twice");
    }
    assert!(rows.len() > 50, "the table was not found in docs/config.md");
    rows
}

/// The errors of a small valid topology with `key` set in the topology config or in the bolt's config.
fn errors_with(key: &str, value: &str, scope: Scope) -> Vec<TopologyError> {
    let mut b = TopologyBuilder::new("parity");
    b.set_spout("spout", 1, || S);
    let bolt = b.set_bolt("bolt", 1, || B).shuffle_grouping("spout");
    match scope {
        Scope::Topology => {
            b.config().set(key, value);
        }
        Scope::Component => {
            bolt.config(key, value);
        }
    }
    b.build().err().map(|e| e.0).unwrap_or_default()
}

fn refused_by_validation(key: &str, scope: Scope) -> bool {
    errors_with(key, "1", scope).iter().any(|e| {
        matches!(e, TopologyError::UnsupportedConfigKey { key: k, .. } if k == key)
            && e.to_string().contains(&format!("Egret does not support {key}"))
    })
}

fn unknown_to_validation(key: &str, scope: Scope) -> bool {
    errors_with(key, "1", scope)
        .iter()
        .any(|e| matches!(e, TopologyError::UnknownConfigKey { key: k, .. } if k == key))
}

#[test]
fn every_key_in_the_docs_table_is_treated_as_the_table_says() {
    for (key, row) in table() {
        let topology_only = row.how.to_ascii_lowercase().contains("topology config only");
        let (at_topology, at_component) = match row.status.as_str() {
            "honoured" | "other default" | "metadata" | "windowed bolts" => (true, !topology_only),
            "component only" => (false, true),
            "refused" => (false, false),
            other => panic!("{key}: unknown answer {other:?} in docs/config.md"),
        };
        for (scope, accepted) in [(Scope::Topology, at_topology), (Scope::Component, at_component)] {
            let status = keys::status(&key, scope);
            assert!(!unknown_to_validation(&key, scope), "{key} is unknown to validation");
            if accepted {
                assert_eq!(status, KeyStatus::Known, "{key} in {scope:?} config");
                assert!(!refused_by_validation(&key, scope), "{key} refused in {scope:?} config");
            } else {
                assert!(
                    matches!(status, KeyStatus::Refused(_)),
                    "{key} in {scope:?} config: {status:?}"
                );
                assert!(
                    refused_by_validation(&key, scope),
                    "{key} not refused in {scope:?} config"
                );
            }
        }
    }
}

#[test]
fn every_key_the_code_knows_or_refuses_is_in_the_docs_table() {
    let table = table();
    for key in keys::KNOWN.iter().chain(keys::UNSUPPORTED.iter().map(|(k, _)| k)) {
        assert!(table.contains_key(*key), "{key} is missing from docs/config.md");
    }
    for key in table.keys() {
        assert!(
            keys::KNOWN.contains(&key.as_str()) || keys::unsupported(key).is_some(),
            "{key} is in docs/config.md but neither in keys::KNOWN nor in keys::UNSUPPORTED"
        );
    }
}

#[test]
fn a_refused_key_is_named_with_what_to_use_instead_not_called_a_typo() {
    let errors = errors_with(
        "topology.serializer.classname",
        "org.apache.heron.api.serializer.KryoSerializer",
        Scope::Topology,
    );
    assert_eq!(errors.len(), 1, "{errors:?}");
    let text = errors[0].to_string();
    assert!(
        text.contains("Egret does not support topology.serializer.classname"),
        "{text}"
    );
    assert!(text.contains("egret_api::Serde"), "{text}");
    assert!(!text.contains("typo"), "{text}");
}

#[test]
fn component_parallelism_is_refused_in_the_topology_config_and_is_the_parallelism_in_a_component() {
    let errors = errors_with(keys::COMPONENT_PARALLELISM, "4", Scope::Topology);
    assert!(
        errors
            .iter()
            .any(|e| e.to_string().contains("Heron ignores it in the topology config")),
        "{errors:?}"
    );
    let mut b = TopologyBuilder::new("parallel");
    b.set_spout("spout", 1, || S);
    b.set_bolt("bolt", 1, || B)
        .shuffle_grouping("spout")
        .config(keys::COMPONENT_PARALLELISM, 3);
    let t = b.build().expect("valid");
    let bolt = t.component_index("bolt").expect("bolt");
    assert_eq!(t.tasks_of(bolt).count(), 3);
}

#[test]
fn droptuples_is_refused_under_effectively_once_and_at_component_level() {
    let mut b = TopologyBuilder::new("drops");
    b.set_spout("spout", 1, || S);
    b.set_bolt("bolt", 1, || B).shuffle_grouping("spout");
    b.config()
        .set(keys::RELIABILITY_MODE, "EFFECTIVELY_ONCE")
        .set(keys::DROPTUPLES_UPON_BACKPRESSURE, true);
    let errors = b.build().err().map(|e| e.0).unwrap_or_default();
    assert_eq!(errors, vec![TopologyError::DropTuplesUnderEffectivelyOnce]);
    assert!(refused_by_validation(
        keys::DROPTUPLES_UPON_BACKPRESSURE,
        Scope::Component
    ));
    assert_eq!(
        errors_with(keys::DROPTUPLES_UPON_BACKPRESSURE, "true", Scope::Topology),
        vec![]
    );
}

#[test]
fn initial_state_must_be_running_or_paused() {
    assert_eq!(errors_with(keys::INITIAL_STATE, "PAUSED", Scope::Topology), vec![]);
    let errors = errors_with(keys::INITIAL_STATE, "SLEEPING", Scope::Topology);
    assert!(
        matches!(&errors[..], [TopologyError::BadConfig { error, .. }] if error.expected == "RUNNING or PAUSED"),
        "{errors:?}"
    );
}

#[test]
fn a_config_topology_name_must_be_the_topology_name() {
    assert_eq!(errors_with(keys::NAME, "parity", Scope::Topology), vec![]);
    assert_eq!(
        errors_with(keys::NAME, "other", Scope::Topology),
        vec![TopologyError::ConfigNameMismatch {
            config_name: "other".into(),
            name: "parity".into()
        }]
    );
}

#[test]
fn resource_maps_in_the_topology_config_become_component_requests() {
    let mut b = TopologyBuilder::new("maps");
    b.set_spout("spout", 1, || S).cpu(2.0);
    b.set_bolt("bolt", 1, || B).shuffle_grouping("spout");
    b.config()
        .set(keys::COMPONENT_CPUMAP, "spout:0.5,bolt:0.25")
        .set(keys::COMPONENT_RAMMAP, "bolt:1048576");
    let t = b.build().expect("valid");
    let spout = t.component("spout").expect("spout");
    let bolt = t.component("bolt").expect("bolt");
    assert_eq!(spout.resources.cpu, Some(2.0), "an explicit request wins");
    assert_eq!(bolt.resources.cpu, Some(0.25));
    assert_eq!(bolt.resources.ram_bytes, Some(1_048_576));

    let mut b = TopologyBuilder::new("maps");
    b.set_spout("spout", 1, || S);
    b.config().set(keys::COMPONENT_RAMMAP, "nobody:5,spout:lots");
    let errors = b.build().err().map(|e| e.0).unwrap_or_default();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors.iter().any(
            |e| matches!(e, TopologyError::ResourceMapUnknownComponent { component, .. } if component == "nobody")
        )
    );
    assert!(errors.iter().any(|e| matches!(e, TopologyError::BadConfig { .. })));
}
