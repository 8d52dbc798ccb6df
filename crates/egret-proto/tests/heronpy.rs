//! A topology definition written by heronpy 0.20.5 (Heron's Python API) decodes and validates in Egret.
//! The fixture was produced by `tests/data/heronpy_word_count.py` with
//! `HERON_OPTIONS=cmdline.topologydefn.tmpdirectory=<dir>,cmdline.topology.initial.state=RUNNING python heronpy_word_count.py`
//! in a virtualenv with `pip install heronpy==0.20.5`.

use egret_api::{Grouping, ReliabilityMode, keys};
use egret_proto::{Message, api, defn};

#[test]
fn a_heronpy_definition_decodes_and_validates() {
    let bytes = include_bytes!("data/heronpy-word-count.defn");
    let raw = api::Topology::decode(&bytes[..]).expect("heronpy's .defn is a heron.proto.api.Topology");
    assert_eq!(raw.name, "heronpy-word-count");
    assert!(raw.id.starts_with("heronpy-word-count"));
    // heronpy names Python classes, not serialized objects.
    assert!(
        raw.spouts[0]
            .comp
            .class_name
            .as_deref()
            .unwrap_or("")
            .ends_with("WordSpout")
    );

    let d = defn::from_definition(&raw).expect("valid");
    let t = &d.topology;
    assert_eq!(d.state, api::TopologyState::Running);
    assert_eq!(t.config().reliability_mode().unwrap(), ReliabilityMode::AtLeastOnce);
    let word = t.component("word").unwrap();
    assert!(word.kind.is_spout());
    assert_eq!(word.parallelism, 2);
    assert_eq!(word.outputs[0].fields.names(), ["word"]);
    let count = t.component("count").unwrap();
    assert_eq!(count.parallelism, 3);
    assert!(matches!(&count.inputs[0].grouping, Grouping::Fields(f) if f == &["word".to_string()]));
    assert_eq!(count.config.get(keys::TICK_TUPLE_FREQ_SECS), Some("5"));
    let sink = t.component("sink").unwrap();
    assert!(matches!(sink.inputs[0].grouping, Grouping::All));
    // The cloudpickled config value cannot be read by Rust and is reported, not silently dropped.
    assert!(
        d.skipped_config.iter().any(|k| k.contains("some.python.object")),
        "{:?}",
        d.skipped_config
    );
    assert_eq!(t.task_count(), 6);
}
