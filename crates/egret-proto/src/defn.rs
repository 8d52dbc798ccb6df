//! Topology definitions: Egret's [`Topology`] to and from Heron's `api::Topology`, the `.defn` a topology binary
//! writes when `egret submit` asks it to describe itself.
//!
//! Mapping (Heron's conventions where Heron has one):
//! - each component's parallelism is its config key `topology.component.parallelism`;
//! - requested resources are the topology config maps `topology.component.cpumap` / `rammap` / `diskmap`
//!   (`name:value,name:value`, RAM and disk in bytes);
//! - every output field is typed `OBJECT`; a direct stream is listed in the component config key
//!   [`DIRECT_STREAMS_KEY`] (Heron's schema has no such flag);
//! - a custom grouping's `custom_grouping_object` holds its name (UTF-8);
//! - config values serialized by Java or Python (`serialized_value`) cannot be read and are reported as skipped.

use std::collections::BTreeMap;
use std::sync::Arc;

use egret_api::{
    ComponentDef, ComponentKind, Config, CustomGrouping, Fields, Grouping, Input, KeyCheck, Resources, StreamDecl,
    TaskId, Topology, TopologyErrors, Tuple, keys,
};

use crate::api;

/// Component config key listing the component's direct streams, comma separated.
pub const DIRECT_STREAMS_KEY: &str = "topology.egret.direct.streams";
/// Component config key listing the component's task ids, comma separated, once a rescale made them differ from
/// the ones dealt in component order (Heron keeps task ids in the packing plan only; Egret's instances and stmgrs
/// derive routing from the definition, so the definition carries them).
pub const TASK_IDS_KEY: &str = "topology.egret.task.ids";
pub use egret_api::keys::COMPONENT_DISKMAP;

#[derive(Debug, thiserror::Error)]
pub enum DefnError {
    #[error("{0}")]
    Invalid(#[from] TopologyErrors),
    #[error("definition is not a Heron topology: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("component {component}: input from {producer}/{stream} has unknown grouping type {gtype}")]
    UnknownGrouping {
        component: String,
        producer: String,
        stream: String,
        gtype: i32,
    },
    #[error("topology config {key} = {value:?} is not a list of component:value entries")]
    BadResourceMap { key: String, value: String },
    #[error("component {component}: {TASK_IDS_KEY} = {value:?} is not a list of task ids")]
    BadTaskIds { component: String, value: String },
    #[error("{0}")]
    Layout(#[from] egret_api::RescaleError),
}

/// A definition read back: the topology (without code) and what could not be carried over.
#[derive(Debug)]
pub struct Definition {
    pub id: String,
    pub topology: Topology,
    pub state: api::TopologyState,
    /// Config keys whose values were serialized by another language and are ignored.
    pub skipped_config: Vec<String>,
}

fn config_to_proto(c: &Config) -> api::Config {
    api::Config {
        kvs: c
            .iter()
            .map(|(k, v)| api::config::KeyValue {
                key: k.to_string(),
                value: Some(v.to_string()),
                serialized_value: None,
                r#type: Some(api::ConfigValueType::StringValue as i32),
            })
            .collect(),
    }
}

fn config_from_proto(c: Option<&api::Config>, scope: &str, skipped: &mut Vec<String>) -> Config {
    let mut out = Config::new();
    for kv in c.map(|c| c.kvs.as_slice()).unwrap_or_default() {
        match &kv.value {
            Some(v) => {
                out.set(kv.key.clone(), v);
            }
            None => skipped.push(format!("{scope}: {}", kv.key)),
        }
    }
    out
}

fn stream_id(component: &str, stream: &str) -> api::StreamId {
    api::StreamId {
        id: stream.to_string(),
        component_name: component.to_string(),
    }
}

fn schema(fields: &Fields) -> api::StreamSchema {
    api::StreamSchema {
        keys: fields
            .iter()
            .map(|f| api::stream_schema::KeyType {
                key: f.to_string(),
                r#type: api::Type::Object as i32,
            })
            .collect(),
    }
}

fn resource_map(topology: &Topology, get: impl Fn(&Resources) -> Option<String>) -> Option<String> {
    let entries: Vec<String> = topology
        .components()
        .iter()
        .filter_map(|c| get(&c.resources).map(|v| format!("{}:{v}", c.name)))
        .collect();
    (!entries.is_empty()).then(|| entries.join(","))
}

/// Writes the definition Heron's tools and Egret's daemons read.
pub fn to_definition(topology: &Topology, id: &str, state: api::TopologyState) -> api::Topology {
    let mut topology_config = topology.config().clone();
    if let Some(m) = resource_map(topology, |r| r.cpu.map(|v| v.to_string())) {
        topology_config.set(keys::COMPONENT_CPUMAP, m);
    }
    if let Some(m) = resource_map(topology, |r| r.ram_bytes.map(|v| v.to_string())) {
        topology_config.set(keys::COMPONENT_RAMMAP, m);
    }
    if let Some(m) = resource_map(topology, |r| r.disk_bytes.map(|v| v.to_string())) {
        topology_config.set(COMPONENT_DISKMAP, m);
    }
    let mut spouts = Vec::new();
    let mut bolts = Vec::new();
    let task_ids = (!topology.has_derived_task_ids()).then(|| topology.task_ids());
    for (ci, c) in topology.components().iter().enumerate() {
        let mut config = c.config.clone();
        config.set(keys::COMPONENT_PARALLELISM, c.parallelism);
        if let Some(ids) = &task_ids {
            let list: Vec<String> = ids[ci].iter().map(u32::to_string).collect();
            config.set(TASK_IDS_KEY, list.join(","));
        }
        let direct: Vec<&str> = c.outputs.iter().filter(|s| s.direct).map(|s| s.name.as_str()).collect();
        if !direct.is_empty() {
            config.set(DIRECT_STREAMS_KEY, direct.join(","));
        }
        let comp = api::Component {
            name: c.name.clone(),
            class_name: None,
            config: config_to_proto(&config),
            serialized_object: None,
            spec: None,
            cpp_class_info: None,
        };
        let outputs = c
            .outputs
            .iter()
            .map(|s| api::OutputStream {
                stream: stream_id(&c.name, &s.name),
                schema: schema(&s.fields),
            })
            .collect();
        if c.kind.is_spout() {
            spouts.push(api::Spout { comp, outputs });
        } else {
            let inputs = c.inputs.iter().map(input_to_proto).collect();
            bolts.push(api::Bolt { comp, inputs, outputs });
        }
    }
    api::Topology {
        id: id.to_string(),
        name: topology.name().to_string(),
        spouts,
        bolts,
        state: state as i32,
        topology_config: Some(config_to_proto(&topology_config)),
    }
}

fn input_to_proto(i: &Input) -> api::InputStream {
    use api::Grouping as G;
    let (gtype, fields, custom) = match &i.grouping {
        Grouping::Shuffle => (G::Shuffle, None, None),
        Grouping::Fields(f) => (G::Fields, Some(schema(&Fields::new(f.iter().cloned()))), None),
        Grouping::All => (G::All, None, None),
        Grouping::Global => (G::Lowest, None, None),
        Grouping::Direct => (G::Direct, None, None),
        Grouping::None => (G::None, None, None),
        Grouping::Custom(c) => (G::Custom, None, Some(c.name().as_bytes().to_vec())),
    };
    api::InputStream {
        stream: stream_id(&i.component, &i.stream),
        gtype: gtype as i32,
        grouping_fields: fields,
        custom_grouping_object: custom,
        r#type: None,
    }
}

/// A custom grouping known only by name: daemons never route tuples, so they never call it.
struct NamedGrouping(String);

impl CustomGrouping for NamedGrouping {
    fn name(&self) -> &str {
        &self.0
    }
    fn choose(&self, _tuple: &Tuple<'_>, _targets: &[TaskId], _out: &mut Vec<TaskId>) {}
}

fn parse_map(config: &Config, key: &str) -> Result<BTreeMap<String, String>, DefnError> {
    let Some(v) = config.get(key) else {
        return Ok(BTreeMap::new());
    };
    let mut out = BTreeMap::new();
    for entry in v.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, value) = entry.rsplit_once(':').ok_or_else(|| DefnError::BadResourceMap {
            key: key.into(),
            value: v.into(),
        })?;
        out.insert(name.to_string(), value.to_string());
    }
    Ok(out)
}

/// Reads a definition (Egret's or Heron's) and validates it; the components have no code.
pub fn from_definition(d: &api::Topology) -> Result<Definition, DefnError> {
    let mut skipped = Vec::new();
    let config = config_from_proto(d.topology_config.as_ref(), "topology", &mut skipped);
    let bad = |key: &str, value: &str| DefnError::BadResourceMap {
        key: key.into(),
        value: value.into(),
    };
    let cpus = parse_map(&config, keys::COMPONENT_CPUMAP)?;
    let rams = parse_map(&config, keys::COMPONENT_RAMMAP)?;
    let disks = parse_map(&config, COMPONENT_DISKMAP)?;
    let mut components = Vec::new();
    let mut task_ids: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    let comps = d
        .spouts
        .iter()
        .map(|s| (&s.comp, &s.outputs, None))
        .chain(d.bolts.iter().map(|b| (&b.comp, &b.outputs, Some(&b.inputs))));
    for (comp, outputs, inputs) in comps {
        let mut cconfig = config_from_proto(Some(&comp.config), &comp.name, &mut skipped);
        let parallelism = match cconfig.remove(keys::COMPONENT_PARALLELISM) {
            Some(p) => p.trim().parse::<u32>().unwrap_or(0),
            None => 1,
        };
        if let Some(v) = cconfig.remove(TASK_IDS_KEY) {
            let ids = v
                .split(',')
                .map(|t| t.trim().parse::<u32>())
                .collect::<Result<Vec<u32>, _>>()
                .map_err(|_| DefnError::BadTaskIds {
                    component: comp.name.clone(),
                    value: v.clone(),
                })?;
            task_ids.insert(comp.name.clone(), ids);
        }
        let direct: Vec<String> = cconfig
            .remove(DIRECT_STREAMS_KEY)
            .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
            .unwrap_or_default();
        let outputs = outputs
            .iter()
            .map(|o| StreamDecl {
                name: o.stream.id.clone(),
                fields: Fields::new(o.schema.keys.iter().map(|k| k.key.clone())),
                direct: direct.contains(&o.stream.id),
            })
            .collect();
        let resources = Resources {
            cpu: match cpus.get(&comp.name) {
                Some(v) => Some(v.parse().map_err(|_| bad(keys::COMPONENT_CPUMAP, v))?),
                None => None,
            },
            ram_bytes: match rams.get(&comp.name) {
                Some(v) => Some(v.parse().map_err(|_| bad(keys::COMPONENT_RAMMAP, v))?),
                None => None,
            },
            disk_bytes: match disks.get(&comp.name) {
                Some(v) => Some(v.parse().map_err(|_| bad(COMPONENT_DISKMAP, v))?),
                None => None,
            },
        };
        let (kind, inputs) = match inputs {
            None => (ComponentKind::Spout(None), Vec::new()),
            Some(inputs) => (
                ComponentKind::Bolt(None),
                inputs
                    .iter()
                    .map(|i| input_from_proto(&comp.name, i))
                    .collect::<Result<_, _>>()?,
            ),
        };
        components.push(ComponentDef {
            name: comp.name.clone(),
            kind,
            parallelism,
            config: cconfig,
            resources,
            outputs,
            inputs,
        });
    }
    let mut topology = Topology::from_parts(d.name.clone(), config, components, KeyCheck::Lenient)?;
    if !task_ids.is_empty() {
        // Components without the key keep the ids dealt to them (a definition edited by hand may list only some).
        let layout = topology
            .components()
            .iter()
            .zip(topology.task_ids())
            .map(|(c, derived)| task_ids.remove(&c.name).unwrap_or(derived))
            .collect();
        topology = topology.with_task_ids(layout)?;
    }
    let state = api::TopologyState::try_from(d.state).unwrap_or(api::TopologyState::Running);
    Ok(Definition {
        id: d.id.clone(),
        topology,
        state,
        skipped_config: skipped,
    })
}

fn input_from_proto(component: &str, i: &api::InputStream) -> Result<Input, DefnError> {
    use api::Grouping as G;
    let grouping = match G::try_from(i.gtype) {
        Ok(G::Shuffle) => Grouping::Shuffle,
        Ok(G::Fields) => Grouping::Fields(
            i.grouping_fields
                .as_ref()
                .map(|s| s.keys.iter().map(|k| k.key.clone()).collect())
                .unwrap_or_default(),
        ),
        Ok(G::All) => Grouping::All,
        Ok(G::Lowest) => Grouping::Global,
        Ok(G::Direct) => Grouping::Direct,
        Ok(G::None) => Grouping::None,
        Ok(G::Custom) => Grouping::Custom(Arc::new(NamedGrouping(
            String::from_utf8_lossy(i.custom_grouping_object.as_deref().unwrap_or_default()).into_owned(),
        ))),
        Err(_) => {
            return Err(DefnError::UnknownGrouping {
                component: component.into(),
                producer: i.stream.component_name.clone(),
                stream: i.stream.id.clone(),
                gtype: i.gtype,
            });
        }
    };
    Ok(Input {
        component: i.stream.component_name.clone(),
        stream: i.stream.id.clone(),
        grouping,
    })
}

/// Checks that a topology built by a binary matches the stored definition it is about to run under: same
/// components, parallelism, streams and inputs. A mismatch means the binary changed or was given other arguments.
/// The parallelism of a rescaled definition (one whose task ids were changed) is not compared: the binary runs
/// with the stored layout ([`Topology::with_layout_of`]).
pub fn same_shape(a: &Topology, b: &Topology) -> Result<(), String> {
    if a.components().len() != b.components().len() {
        return Err(format!(
            "{} components here, {} in the stored definition",
            a.components().len(),
            b.components().len()
        ));
    }
    for (x, y) in a.components().iter().zip(b.components()) {
        let rescaled = !b.has_derived_task_ids();
        if x.name != y.name || (x.parallelism != y.parallelism && !rescaled) || x.kind.is_spout() != y.kind.is_spout() {
            return Err(format!(
                "component {} (parallelism {}) here, {} (parallelism {}) in the stored definition",
                x.name, x.parallelism, y.name, y.parallelism
            ));
        }
        if x.outputs != y.outputs {
            return Err(format!(
                "component {} declares other streams than the stored definition",
                x.name
            ));
        }
        let inputs = |c: &ComponentDef| -> Vec<String> {
            c.inputs
                .iter()
                .map(|i| format!("{}/{}/{:?}", i.component, i.stream, i.grouping))
                .collect()
        };
        if inputs(x) != inputs(y) {
            return Err(format!(
                "component {} subscribes differently than the stored definition",
                x.name
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use egret_api::*;
    use prost::Message;

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
        fn declare_outputs(&self, out: &mut OutputDeclarer) {
            out.declare(["y"]);
        }
        fn execute(&mut self, _t: &Tuple<'_>, _out: &mut BoltCollector<'_>) {}
    }
    struct Custom;
    impl CustomGrouping for Custom {
        fn name(&self) -> &str {
            "my-grouping"
        }
        fn choose(&self, _t: &Tuple<'_>, targets: &[TaskId], out: &mut Vec<TaskId>) {
            out.push(targets[0])
        }
    }

    fn topology() -> Topology {
        let mut b = TopologyBuilder::new("wc");
        b.config()
            .set(keys::RELIABILITY_MODE, "ATLEAST_ONCE")
            .set(keys::STMGRS, 2);
        b.set_spout("word", 2, || S).cpu(0.5).ram_mb(64);
        b.set_bolt("count", 3, || B)
            .fields_grouping("word", ["word"])
            .direct_grouping("word", "d")
            .config("my.key", "v");
        b.set_bolt("sink", 1, || B)
            .custom_grouping("count", Custom)
            .global_grouping("word");
        b.build().unwrap()
    }

    #[test]
    fn round_trip_keeps_the_shape_and_the_config() {
        let t = topology();
        let d = to_definition(&t, "wc-1", api::TopologyState::Paused);
        let bytes = d.encode_to_vec();
        let back = from_definition(&api::Topology::decode(&bytes[..]).unwrap()).unwrap();
        assert_eq!(back.id, "wc-1");
        assert_eq!(back.state, api::TopologyState::Paused);
        assert!(back.skipped_config.is_empty());
        same_shape(&t, &back.topology).unwrap();
        let count = back.topology.component("count").unwrap();
        assert_eq!(count.config.get("my.key"), Some("v"));
        assert_eq!(back.topology.config().get(keys::STMGRS), Some("2"));
        let word = back.topology.component("word").unwrap();
        assert_eq!(word.resources.ram_bytes, Some(64 * 1024 * 1024));
        assert_eq!(word.resources.cpu, Some(0.5));
        assert!(word.output("d").unwrap().direct);
        let sink = back.topology.component("sink").unwrap();
        assert!(matches!(&sink.inputs[0].grouping, Grouping::Custom(c) if c.name() == "my-grouping"));
        // Heron's field numbers: parallelism in component config, LOWEST for global.
        let heron_count = d.bolts.iter().find(|b| b.comp.name == "count").unwrap();
        assert!(
            heron_count
                .comp
                .config
                .kvs
                .iter()
                .any(|kv| kv.key == keys::COMPONENT_PARALLELISM && kv.value.as_deref() == Some("3"))
        );
        let sink = d.bolts.iter().find(|b| b.comp.name == "sink").unwrap();
        assert!(sink.inputs.iter().any(|i| i.gtype == api::Grouping::Lowest as i32));
    }

    #[test]
    fn a_rescaled_topology_keeps_its_task_ids_through_the_definition() {
        let t = topology();
        // Components by name: count 1-3, sink 4, word 5-6. count: 3 -> 5 (7 and 8 new), word: 2 -> 1 (6 removed).
        let r = t.rescaled(&[("count".into(), 5), ("word".into(), 1)]).unwrap();
        assert_eq!(r.task_ids(), vec![vec![1, 2, 3, 7, 8], vec![4], vec![5]]);
        assert_eq!(r.task_count(), 7);
        assert_eq!(r.max_task_id(), 8);
        assert_eq!(r.task_component(TaskId(6)), None, "a removed task");
        assert_eq!(r.task_component(TaskId(8)), Some((0, 4)));
        assert_eq!(r.component("count").unwrap().parallelism, 5);
        let back = from_definition(&to_definition(&r, "wc-1", api::TopologyState::Running)).unwrap();
        assert_eq!(back.topology.task_ids(), r.task_ids());
        assert!(
            back.topology
                .component("count")
                .unwrap()
                .config
                .get(TASK_IDS_KEY)
                .is_none()
        );
        // The binary builds the old shape; it runs with the stored layout.
        same_shape(&t, &back.topology).unwrap();
        assert_eq!(t.with_layout_of(&back.topology).unwrap().task_ids(), r.task_ids());
        // Untouched topologies carry no ids.
        let d = to_definition(&t, "wc-1", api::TopologyState::Running);
        assert!(
            d.bolts
                .iter()
                .all(|b| b.comp.config.kvs.iter().all(|kv| kv.key != TASK_IDS_KEY))
        );
        assert!(t.rescaled(&[("nope".into(), 2)]).is_err());
        assert!(t.rescaled(&[("count".into(), 0)]).is_err());
    }

    #[test]
    fn a_broken_definition_names_the_problem() {
        let mut d = to_definition(&topology(), "wc-1", api::TopologyState::Running);
        let count = d.bolts.iter_mut().find(|b| b.comp.name == "count").unwrap();
        count.inputs[0].grouping_fields.as_mut().unwrap().keys[0].key = "wrd".into();
        let err = from_definition(&d).unwrap_err().to_string();
        assert!(err.contains("groups word/default on field \"wrd\""), "{err}");
    }

    #[test]
    fn serialized_config_values_are_skipped_and_reported() {
        let mut d = to_definition(&topology(), "wc-1", api::TopologyState::Running);
        d.topology_config.as_mut().unwrap().kvs.push(api::config::KeyValue {
            key: "topology.python.thing".into(),
            value: None,
            serialized_value: Some(vec![0x80, 4]),
            r#type: Some(api::ConfigValueType::PythonSerializedValue as i32),
        });
        let back = from_definition(&d).unwrap();
        assert_eq!(back.skipped_config, vec!["topology: topology.python.thing".to_string()]);
    }
}
