//! Building and validating a topology: the logical plan (components, streams, groupings, config) plus the task
//! layout every mode of running derives from it the same way.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use crate::component::{BasicBolt, BasicBoltAdapter, Bolt, DEFAULT_STREAM, OutputDeclarer, Spout, StreamDecl};
use crate::config::keys::Scope;
use crate::config::{Config, ConfigError};
use crate::fields::Fields;
use crate::grouping::{CustomGrouping, Grouping};
use crate::hooks::{TaskHook, TaskHookFactory};
use crate::ids::{StreamIndex, TaskId};
use crate::tuple::{SYSTEM_COMPONENT, StreamSource};

pub type SpoutFactory = Arc<dyn Fn() -> Box<dyn Spout> + Send + Sync>;
pub type BoltFactory = Arc<dyn Fn() -> Box<dyn Bolt> + Send + Sync>;

/// How to make a component's tasks: one call per task. A topology read from a stored definition (by a daemon,
/// which runs no user code) has no factories.
#[derive(Clone)]
pub enum ComponentKind {
    Spout(Option<SpoutFactory>),
    Bolt(Option<BoltFactory>),
}

impl ComponentKind {
    pub fn is_spout(&self) -> bool {
        matches!(self, ComponentKind::Spout(_))
    }
}

/// One subscription of a bolt.
#[derive(Debug, Clone)]
pub struct Input {
    pub component: String,
    pub stream: String,
    pub grouping: Grouping,
}

/// Requested resources of one task of a component (Heron's cpumap / rammap entries).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Resources {
    pub cpu: Option<f64>,
    pub ram_bytes: Option<u64>,
    pub disk_bytes: Option<u64>,
}

/// A spout or bolt as declared.
#[derive(Clone)]
pub struct ComponentDef {
    pub name: String,
    pub kind: ComponentKind,
    pub parallelism: u32,
    pub config: Config,
    pub resources: Resources,
    pub outputs: Vec<StreamDecl>,
    pub inputs: Vec<Input>,
}

impl ComponentDef {
    pub fn output(&self, stream: &str) -> Option<&StreamDecl> {
        self.outputs.iter().find(|s| s.name == stream)
    }
}

impl fmt::Debug for ComponentDef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ComponentDef")
            .field("name", &self.name)
            .field("spout", &self.kind.is_spout())
            .field("parallelism", &self.parallelism)
            .field("outputs", &self.outputs)
            .field("inputs", &self.inputs)
            .finish()
    }
}

/// Everything wrong with a topology, each naming the component, stream or field at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TopologyError {
    #[error("topology name {0:?} is invalid: use 1-100 of A-Z a-z 0-9 _ . -")]
    InvalidTopologyName(String),
    #[error("component name {0:?} is invalid: use 1-100 of A-Z a-z 0-9 _ . - and do not start with __")]
    InvalidComponentName(String),
    #[error("component {0:?} is declared more than once")]
    DuplicateComponent(String),
    #[error("component {component:?} has parallelism 0; it needs at least 1 task")]
    ZeroParallelism { component: String },
    #[error(
        "{scope}: topology.auto.task.hooks names {hook:?}, but no task hook of that name is declared (TopologyBuilder::task_hook)"
    )]
    UnknownTaskHook { scope: String, hook: String },
    #[error("the topology has no spout")]
    NoSpout,
    #[error("bolt {component:?} has no input: subscribe it to a stream with a grouping")]
    BoltWithoutInput { component: String },
    #[error("bolt {component:?} subscribes to unknown component {producer:?}")]
    UnknownComponent { component: String, producer: String },
    #[error("bolt {component:?} subscribes to stream {stream:?} of {producer:?}, which declares no such stream")]
    UnknownStream {
        component: String,
        producer: String,
        stream: String,
    },
    #[error("bolt {component:?} subscribes to {producer}/{stream} twice")]
    DuplicateInput {
        component: String,
        producer: String,
        stream: String,
    },
    #[error(
        "bolt {component:?} groups {producer}/{stream} on field {field:?}, which the stream does not declare (fields: {declared})"
    )]
    GroupingOnUndeclaredField {
        component: String,
        producer: String,
        stream: String,
        field: String,
        declared: String,
    },
    #[error("bolt {component:?} uses a fields grouping on {producer}/{stream} with no fields")]
    EmptyFieldsGrouping {
        component: String,
        producer: String,
        stream: String,
    },
    #[error("bolt {component:?} uses direct grouping on {producer}/{stream}, which is not declared direct")]
    DirectGroupingOnPlainStream {
        component: String,
        producer: String,
        stream: String,
    },
    #[error("bolt {component:?} uses {grouping} grouping on direct stream {producer}/{stream}; use direct grouping")]
    PlainGroupingOnDirectStream {
        component: String,
        producer: String,
        stream: String,
        grouping: &'static str,
    },
    #[error("component {component:?} declares stream {stream:?} twice")]
    DuplicateStream { component: String, stream: String },
    #[error("component {component:?} declares stream name {stream:?}, which is invalid (empty or reserved __)")]
    InvalidStreamName { component: String, stream: String },
    #[error("component {component:?} declares field {field:?} twice on stream {stream:?}")]
    DuplicateField {
        component: String,
        stream: String,
        field: String,
    },
    #[error("{scope}: {error}")]
    BadConfig { scope: String, error: ConfigError },
    #[error("{scope}: unknown config key {key:?} (a typo of a topology.* key?)")]
    UnknownConfigKey { scope: String, key: String },
    /// A key Egret knows and refuses (`docs/config.md`): named, with why and what to use instead.
    #[error("{scope}: Egret does not support {key} here: {why}")]
    UnsupportedConfigKey {
        scope: String,
        key: String,
        why: &'static str,
    },
    #[error(
        "topology config sets topology.name to {config_name:?}, but the topology is named {name:?}: remove the key"
    )]
    ConfigNameMismatch { config_name: String, name: String },
    #[error(
        "topology.droptuples.upon.backpressure=true cannot be combined with EFFECTIVELY_ONCE: a dropped tuple never \
         reaches the state a checkpoint saves, so the state would not be exact; use ATLEAST_ONCE (drops are replayed \
         after the message timeout) or leave back pressure on"
    )]
    DropTuplesUnderEffectivelyOnce,
    #[error("topology config {key} names component {component:?}, which the topology does not declare")]
    ResourceMapUnknownComponent { key: &'static str, component: String },
    #[error(
        "component {component:?} sets topology.reliability.mode to {mode}, but delivery semantics are topology-wide \
         ({topology_mode}): set it on the topology"
    )]
    ComponentReliabilityMode {
        component: String,
        mode: String,
        topology_mode: String,
    },
    #[error(
        "component {component:?} is on a cycle ({cycle}); effectively-once topologies must be acyclic, since a \
         checkpoint's markers could never align on a cycle"
    )]
    CycleUnderEffectivelyOnce { component: String, cycle: String },
}

/// A non-empty list of [`TopologyError`]s.
#[derive(Debug, Clone, PartialEq)]
pub struct TopologyErrors(pub Vec<TopologyError>);

impl fmt::Display for TopologyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid topology ({} problem{})",
            self.0.len(),
            if self.0.len() == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for TopologyErrors {}

/// Declares the components of a topology, then validates them with [`TopologyBuilder::build`].
pub struct TopologyBuilder {
    name: String,
    config: Config,
    components: Vec<ComponentDef>,
    task_hooks: TaskHooks,
}

/// Task hooks declared by name, for `topology.auto.task.hooks` to pick.
#[derive(Clone, Default)]
pub struct TaskHooks(BTreeMap<String, TaskHookFactory>);

impl fmt::Debug for TaskHooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

impl TopologyBuilder {
    pub fn new(name: impl Into<String>) -> Self {
        TopologyBuilder {
            name: name.into(),
            config: Config::new(),
            components: Vec::new(),
            task_hooks: TaskHooks::default(),
        }
    }

    /// Declares a task hook by name: tasks whose config lists `name` in `topology.auto.task.hooks` (set on the
    /// topology for every task, or on a component) run one made by `factory`.
    pub fn task_hook<H, F>(&mut self, name: impl Into<String>, factory: F) -> &mut Self
    where
        H: TaskHook + 'static,
        F: Fn() -> H + Send + Sync + 'static,
    {
        let factory: TaskHookFactory = Arc::new(move || Box::new(factory()) as Box<dyn TaskHook>);
        self.task_hooks.0.insert(name.into(), factory);
        self
    }

    /// Topology-wide config (Heron's `topology_config`).
    pub fn config(&mut self) -> &mut Config {
        &mut self.config
    }

    pub fn set_config(&mut self, config: Config) -> &mut Self {
        self.config = config;
        self
    }

    /// Adds a spout; `factory` makes one instance per task.
    pub fn set_spout<S, F>(&mut self, name: impl Into<String>, parallelism: u32, factory: F) -> ComponentDeclarer<'_>
    where
        S: Spout,
        F: Fn() -> S + Send + Sync + 'static,
    {
        let factory: SpoutFactory = Arc::new(move || Box::new(factory()) as Box<dyn Spout>);
        let mut out = OutputDeclarer::new();
        factory().declare_outputs(&mut out);
        self.push(name.into(), parallelism, ComponentKind::Spout(Some(factory)), out)
    }

    /// Adds a bolt; `factory` makes one instance per task.
    pub fn set_bolt<B, F>(&mut self, name: impl Into<String>, parallelism: u32, factory: F) -> ComponentDeclarer<'_>
    where
        B: Bolt,
        F: Fn() -> B + Send + Sync + 'static,
    {
        let factory: BoltFactory = Arc::new(move || Box::new(factory()) as Box<dyn Bolt>);
        let mut out = OutputDeclarer::new();
        factory().declare_outputs(&mut out);
        self.push(name.into(), parallelism, ComponentKind::Bolt(Some(factory)), out)
    }

    /// Adds a [`BasicBolt`] (anchors and acks for you).
    pub fn set_basic_bolt<B, F>(
        &mut self,
        name: impl Into<String>,
        parallelism: u32,
        factory: F,
    ) -> ComponentDeclarer<'_>
    where
        B: BasicBolt,
        F: Fn() -> B + Send + Sync + 'static,
    {
        self.set_bolt(name, parallelism, move || BasicBoltAdapter(factory()))
    }

    fn push(
        &mut self,
        name: String,
        parallelism: u32,
        kind: ComponentKind,
        out: OutputDeclarer,
    ) -> ComponentDeclarer<'_> {
        self.components.push(ComponentDef {
            name,
            kind,
            parallelism,
            config: Config::new(),
            resources: Resources::default(),
            outputs: out.into_streams(),
            inputs: Vec::new(),
        });
        ComponentDeclarer {
            def: self.components.last_mut().expect("just pushed"),
        }
    }

    /// Validates everything and reports every problem found, not only the first.
    pub fn build(mut self) -> Result<Topology, TopologyErrors> {
        let mut errors = apply_resource_maps(&self.config, &mut self.components);
        errors.extend(validate(&self.name, &self.config, &self.components, KeyCheck::Strict));
        let mut check_hooks = |scope: String, config: &Config| {
            for hook in auto_task_hooks(config) {
                if !self.task_hooks.0.contains_key(&hook) {
                    errors.push(TopologyError::UnknownTaskHook {
                        scope: scope.clone(),
                        hook,
                    });
                }
            }
        };
        check_hooks("topology config".into(), &self.config);
        for c in &self.components {
            check_hooks(format!("component {:?} config", c.name), &c.config);
        }
        if !errors.is_empty() {
            return Err(TopologyErrors(errors));
        }
        let mut t = Topology::from_parts(self.name, self.config, self.components, KeyCheck::Strict)?;
        t.task_hooks = self.task_hooks;
        Ok(t)
    }
}

/// Heron's per-component resource maps in the topology config (`topology.component.cpumap` = `spout:0.5,bolt:2`;
/// ram and disk in bytes) become the components' requests, where `cpu`/`ram_mb`/`disk_mb` did not set one.
fn apply_resource_maps(config: &Config, components: &mut [ComponentDef]) -> Vec<TopologyError> {
    use crate::keys;
    type Set = fn(&mut Resources, &str) -> bool;
    let maps: [(&'static str, &'static str, Set); 3] = [
        (
            keys::COMPONENT_CPUMAP,
            "component:cores pairs, comma separated",
            |r, v| {
                match v.parse::<f64>() {
                    Ok(cpu) if r.cpu.is_none() => r.cpu = Some(cpu),
                    Ok(_) => {}
                    Err(_) => return false,
                }
                true
            },
        ),
        (
            keys::COMPONENT_RAMMAP,
            "component:bytes pairs, comma separated",
            |r, v| {
                match v.parse::<u64>() {
                    Ok(ram) if r.ram_bytes.is_none() => r.ram_bytes = Some(ram),
                    Ok(_) => {}
                    Err(_) => return false,
                }
                true
            },
        ),
        (
            keys::COMPONENT_DISKMAP,
            "component:bytes pairs, comma separated",
            |r, v| {
                match v.parse::<u64>() {
                    Ok(disk) if r.disk_bytes.is_none() => r.disk_bytes = Some(disk),
                    Ok(_) => {}
                    Err(_) => return false,
                }
                true
            },
        ),
    ];
    let mut errors = Vec::new();
    for (key, expected, set) in maps {
        let Some(map) = config.get(key) else { continue };
        let bad = || TopologyError::BadConfig {
            scope: "topology config".into(),
            error: ConfigError {
                key: key.into(),
                value: map.into(),
                expected,
            },
        };
        for entry in map.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let Some((name, value)) = entry.rsplit_once(':') else {
                errors.push(bad());
                break;
            };
            match components.iter_mut().find(|c| c.name == name) {
                Some(c) => {
                    if !set(&mut c.resources, value.trim()) {
                        errors.push(bad());
                        break;
                    }
                }
                None => errors.push(TopologyError::ResourceMapUnknownComponent {
                    key,
                    component: name.to_string(),
                }),
            }
        }
    }
    errors
}

/// Sets a component's parallelism, inputs, config and resources.
pub struct ComponentDeclarer<'a> {
    def: &'a mut ComponentDef,
}

impl ComponentDeclarer<'_> {
    pub fn parallelism(self, n: u32) -> Self {
        self.def.parallelism = n;
        self
    }
    /// Sets a component config key. `topology.component.parallelism` is the component's parallelism, as in Heron
    /// (a value that is not a number is kept, for validation to report).
    pub fn config(self, key: impl Into<String>, value: impl ToString) -> Self {
        let (key, value) = (key.into(), value.to_string());
        if key == crate::keys::COMPONENT_PARALLELISM
            && let Ok(n) = value.trim().parse::<u32>()
        {
            self.def.parallelism = n;
            return self;
        }
        self.def.config.set(key, value);
        self
    }
    pub fn cpu(self, cores: f64) -> Self {
        self.def.resources.cpu = Some(cores);
        self
    }
    pub fn ram_mb(self, mb: u64) -> Self {
        self.def.resources.ram_bytes = Some(mb * 1024 * 1024);
        self
    }
    pub fn disk_mb(self, mb: u64) -> Self {
        self.def.resources.disk_bytes = Some(mb * 1024 * 1024);
        self
    }

    /// Subscribes to `stream` of `component` with `grouping`.
    pub fn grouping(self, component: impl Into<String>, stream: impl Into<String>, grouping: Grouping) -> Self {
        self.def.inputs.push(Input {
            component: component.into(),
            stream: stream.into(),
            grouping,
        });
        self
    }
    pub fn shuffle_grouping(self, component: impl Into<String>) -> Self {
        self.grouping(component, DEFAULT_STREAM, Grouping::Shuffle)
    }
    pub fn fields_grouping<I, S>(self, component: impl Into<String>, fields: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.grouping(component, DEFAULT_STREAM, Grouping::fields(fields))
    }
    pub fn all_grouping(self, component: impl Into<String>) -> Self {
        self.grouping(component, DEFAULT_STREAM, Grouping::All)
    }
    pub fn global_grouping(self, component: impl Into<String>) -> Self {
        self.grouping(component, DEFAULT_STREAM, Grouping::Global)
    }
    pub fn none_grouping(self, component: impl Into<String>) -> Self {
        self.grouping(component, DEFAULT_STREAM, Grouping::None)
    }
    pub fn direct_grouping(self, component: impl Into<String>, stream: impl Into<String>) -> Self {
        self.grouping(component, stream, Grouping::Direct)
    }
    pub fn custom_grouping(self, component: impl Into<String>, grouping: impl CustomGrouping + 'static) -> Self {
        self.grouping(component, DEFAULT_STREAM, Grouping::custom(grouping))
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn check_config(scope: String, config: &Config, level: Scope, keys: KeyCheck, errors: &mut Vec<TopologyError>) {
    for error in config.check() {
        errors.push(TopologyError::BadConfig {
            scope: scope.clone(),
            error,
        });
    }
    if keys == KeyCheck::Strict {
        for key in config.unknown_topology_keys() {
            errors.push(TopologyError::UnknownConfigKey {
                scope: scope.clone(),
                key,
            });
        }
        for (key, why) in config.refused_keys(level) {
            errors.push(TopologyError::UnsupportedConfigKey {
                scope: scope.clone(),
                key,
                why,
            });
        }
    }
}

/// The hook names listed in `topology.auto.task.hooks` (comma-separated).
fn auto_task_hooks(config: &Config) -> Vec<String> {
    config
        .get(crate::config::keys::AUTO_TASK_HOOKS)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// Whether unknown `topology.*` config keys are errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyCheck {
    /// Built with Egret's builder: an unknown `topology.*` key is a typo.
    Strict,
    /// Read from a stored definition, possibly written by Heron's tools, which set keys Egret does not use.
    Lenient,
}

fn validate(name: &str, config: &Config, components: &[ComponentDef], keys: KeyCheck) -> Vec<TopologyError> {
    use TopologyError::*;
    let mut errors = Vec::new();
    if !valid_name(name) {
        errors.push(InvalidTopologyName(name.to_string()));
    }
    check_config("topology config".into(), config, Scope::Topology, keys, &mut errors);
    if keys == KeyCheck::Strict
        && let Some(config_name) = config.get(crate::keys::NAME)
        && config_name != name
    {
        errors.push(ConfigNameMismatch {
            config_name: config_name.to_string(),
            name: name.to_string(),
        });
    }

    let mut seen = BTreeSet::new();
    for c in components {
        if !valid_name(&c.name) || c.name.starts_with("__") {
            errors.push(InvalidComponentName(c.name.clone()));
        }
        if !seen.insert(c.name.as_str()) {
            errors.push(DuplicateComponent(c.name.clone()));
        }
        if c.parallelism == 0 {
            errors.push(ZeroParallelism {
                component: c.name.clone(),
            });
        }
        check_config(
            format!("component {:?} config", c.name),
            &c.config,
            Scope::Component,
            keys,
            &mut errors,
        );
        let mut streams = BTreeSet::new();
        for s in &c.outputs {
            if s.name.is_empty() || s.name.starts_with("__") {
                errors.push(InvalidStreamName {
                    component: c.name.clone(),
                    stream: s.name.clone(),
                });
            }
            if !streams.insert(s.name.as_str()) {
                errors.push(DuplicateStream {
                    component: c.name.clone(),
                    stream: s.name.clone(),
                });
            }
            let mut fields = BTreeSet::new();
            for f in s.fields.iter() {
                if !fields.insert(f) {
                    errors.push(DuplicateField {
                        component: c.name.clone(),
                        stream: s.name.clone(),
                        field: f.to_string(),
                    });
                }
            }
        }
    }
    if !components.iter().any(|c| c.kind.is_spout()) {
        errors.push(NoSpout);
    }

    let by_name: BTreeMap<&str, &ComponentDef> = components.iter().map(|c| (c.name.as_str(), c)).collect();
    for c in components.iter().filter(|c| !c.kind.is_spout()) {
        if c.inputs.is_empty() {
            errors.push(BoltWithoutInput {
                component: c.name.clone(),
            });
        }
        let mut subscribed = BTreeSet::new();
        for input in &c.inputs {
            let (component, producer, stream) = (c.name.clone(), input.component.clone(), input.stream.clone());
            if !subscribed.insert((input.component.as_str(), input.stream.as_str())) {
                errors.push(DuplicateInput {
                    component,
                    producer,
                    stream,
                });
                continue;
            }
            let Some(src) = by_name.get(input.component.as_str()) else {
                errors.push(UnknownComponent { component, producer });
                continue;
            };
            let Some(decl) = src.output(&input.stream) else {
                errors.push(UnknownStream {
                    component,
                    producer,
                    stream,
                });
                continue;
            };
            match &input.grouping {
                Grouping::Direct if !decl.direct => {
                    errors.push(DirectGroupingOnPlainStream {
                        component,
                        producer,
                        stream,
                    });
                }
                Grouping::Direct => {}
                other if decl.direct => {
                    errors.push(PlainGroupingOnDirectStream {
                        component,
                        producer,
                        stream,
                        grouping: other.kind(),
                    });
                }
                Grouping::Fields(fields) => {
                    if fields.is_empty() {
                        errors.push(EmptyFieldsGrouping {
                            component: component.clone(),
                            producer: producer.clone(),
                            stream: stream.clone(),
                        });
                    }
                    for f in fields {
                        if decl.fields.index_of(f).is_none() {
                            errors.push(GroupingOnUndeclaredField {
                                component: component.clone(),
                                producer: producer.clone(),
                                stream: stream.clone(),
                                field: f.clone(),
                                declared: decl.fields.to_string(),
                            });
                        }
                    }
                }
                _ => {}
            }
        }
    }
    check_semantics(config, components, &mut errors);
    errors
}

/// Delivery semantics are one for the whole topology, and effectively-once needs an acyclic graph.
fn check_semantics(config: &Config, components: &[ComponentDef], errors: &mut Vec<TopologyError>) {
    let Ok(mode) = config.reliability_mode() else { return };
    for c in components {
        let merged = config.merged_with(&c.config);
        if let Ok(m) = merged.reliability_mode()
            && m != mode
        {
            errors.push(TopologyError::ComponentReliabilityMode {
                component: c.name.clone(),
                mode: m.as_str().into(),
                topology_mode: mode.as_str().into(),
            });
        }
    }
    if mode != crate::ReliabilityMode::EffectivelyOnce {
        return;
    }
    // Drops would leave holes in the state a checkpoint saves, and no replay fills them.
    if config.drop_tuples_upon_backpressure() == Ok(true) {
        errors.push(TopologyError::DropTuplesUnderEffectivelyOnce);
    }
    // A depth-first walk from every component along its consumers; meeting a component still on the path closes a
    // cycle.
    let consumers: Vec<Vec<usize>> = components
        .iter()
        .map(|p| {
            components
                .iter()
                .enumerate()
                .filter(|(_, c)| c.inputs.iter().any(|i| i.component == p.name))
                .map(|(i, _)| i)
                .collect()
        })
        .collect();
    let mut state = vec![0u8; components.len()]; // 0 unseen, 1 on the path, 2 done
    let mut path = Vec::new();
    fn visit(
        i: usize,
        consumers: &[Vec<usize>],
        state: &mut [u8],
        path: &mut Vec<usize>,
        components: &[ComponentDef],
        errors: &mut Vec<TopologyError>,
    ) {
        state[i] = 1;
        path.push(i);
        for &n in &consumers[i] {
            match state[n] {
                0 => visit(n, consumers, state, path, components, errors),
                1 => {
                    let from = path.iter().position(|&p| p == n).unwrap_or(0);
                    let mut names: Vec<&str> = path[from..].iter().map(|&p| components[p].name.as_str()).collect();
                    names.push(components[n].name.as_str());
                    errors.push(TopologyError::CycleUnderEffectivelyOnce {
                        component: components[n].name.clone(),
                        cycle: names.join(" -> "),
                    });
                }
                _ => {}
            }
        }
        path.pop();
        state[i] = 2;
    }
    for i in 0..components.len() {
        if state[i] == 0 {
            visit(i, &consumers, &mut state, &mut path, components, errors);
        }
    }
}

/// Task ids dealt from 1 in component order.
fn derived_task_ids(components: &[ComponentDef]) -> Vec<Vec<u32>> {
    let mut next = 1u32;
    components
        .iter()
        .map(|c| {
            let ids = (next..next + c.parallelism).collect();
            next += c.parallelism;
            ids
        })
        .collect()
}

/// Why a rescale (or a stored task layout) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RescaleError {
    #[error("the topology has no component {0:?}")]
    UnknownComponent(String),
    #[error("component {0:?} cannot have parallelism 0")]
    Zero(String),
    #[error("task layout: {0}")]
    Layout(String),
}

/// One output stream of the topology, with its place in the stream table.
#[derive(Debug, Clone)]
pub struct StreamInfo {
    pub index: StreamIndex,
    /// Index of the emitting component in [`Topology::components`].
    pub component: usize,
    pub decl: StreamDecl,
    pub source: Arc<StreamSource>,
}

/// A validated topology. Components are sorted by name; task ids are dealt in that order from 1, so every process
/// that holds the same definition derives the same task layout and stream table. A rescale
/// ([`Topology::rescaled`]) keeps every remaining task's id and gives new tasks ids above the highest; the
/// definition then carries the layout ([`Topology::with_task_ids`]).
#[derive(Debug, Clone)]
pub struct Topology {
    name: String,
    config: Config,
    components: Vec<ComponentDef>,
    /// Each component's task ids, ascending.
    task_ids: Vec<Arc<[u32]>>,
    /// (component, index within it) by task id; `None` for ids no task has (0, and those a rescale removed).
    task_of: Vec<Option<(u32, u32)>>,
    streams: Vec<StreamInfo>,
    /// Empty for a topology read from a stored definition (no code).
    task_hooks: TaskHooks,
}

impl Topology {
    /// Validates components (from the builder, or read from a stored definition) into a topology.
    pub fn from_parts(
        name: String,
        config: Config,
        mut components: Vec<ComponentDef>,
        keys: KeyCheck,
    ) -> Result<Topology, TopologyErrors> {
        let errors = validate(&name, &config, &components, keys);
        if !errors.is_empty() {
            return Err(TopologyErrors(errors));
        }
        components.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Topology::from_validated(name, config, components))
    }

    /// A copy whose topology-wide config has `overrides` applied (e.g. `--config-property` at submit).
    pub fn with_config(&self, config: Config) -> Topology {
        Topology { config, ..self.clone() }
    }

    fn from_validated(name: String, config: Config, components: Vec<ComponentDef>) -> Topology {
        let task_ids = derived_task_ids(&components);
        let mut streams = Vec::new();
        for (ci, c) in components.iter().enumerate() {
            for decl in &c.outputs {
                streams.push(StreamInfo {
                    index: StreamIndex(streams.len() as u32),
                    component: ci,
                    source: Arc::new(StreamSource {
                        component: c.name.clone(),
                        stream: decl.name.clone(),
                        fields: decl.fields.clone(),
                    }),
                    decl: decl.clone(),
                });
            }
        }
        let mut t = Topology {
            name,
            config,
            components,
            task_ids: Vec::new(),
            task_of: Vec::new(),
            streams,
            task_hooks: TaskHooks::default(),
        };
        t.set_task_ids(task_ids);
        t
    }

    fn set_task_ids(&mut self, task_ids: Vec<Vec<u32>>) {
        let max = task_ids.iter().flatten().copied().max().unwrap_or(0);
        let mut task_of = vec![None; max as usize + 1];
        for (ci, ids) in task_ids.iter().enumerate() {
            for (index, &t) in ids.iter().enumerate() {
                task_of[t as usize] = Some((ci as u32, index as u32));
            }
        }
        for (c, ids) in self.components.iter_mut().zip(&task_ids) {
            c.parallelism = ids.len() as u32;
        }
        self.task_ids = task_ids.into_iter().map(Arc::from).collect();
        self.task_of = task_of;
    }

    /// Each component's task ids (ascending), in component order.
    pub fn task_ids(&self) -> Vec<Vec<u32>> {
        self.task_ids.iter().map(|ids| ids.to_vec()).collect()
    }

    /// Whether the task ids are the ones dealt at build (1.. in component order), as before any rescale.
    pub fn has_derived_task_ids(&self) -> bool {
        self.task_ids
            .iter()
            .zip(derived_task_ids(&self.components))
            .all(|(a, b)| **a == *b)
    }

    /// This topology with another task layout (each component's ids, in component order; the parallelism follows):
    /// what a rescaled definition carries. Ids must be unique, non-zero and ascending within a component.
    pub fn with_task_ids(&self, task_ids: Vec<Vec<u32>>) -> Result<Topology, RescaleError> {
        if task_ids.len() != self.components.len() {
            return Err(RescaleError::Layout(format!(
                "{} components have task ids, the topology has {}",
                task_ids.len(),
                self.components.len()
            )));
        }
        let mut seen = BTreeSet::new();
        for (c, ids) in self.components.iter().zip(&task_ids) {
            if ids.is_empty() || ids.windows(2).any(|w| w[0] >= w[1]) || ids.iter().any(|&t| t == 0 || !seen.insert(t))
            {
                return Err(RescaleError::Layout(format!(
                    "component {} has task ids {ids:?}: they must be non-empty, ascending, non-zero and unique",
                    c.name
                )));
            }
        }
        let mut t = self.clone();
        t.set_task_ids(task_ids);
        Ok(t)
    }

    /// This topology (the one a binary builds, with code) with the parallelism and task ids of `stored` (the
    /// definition it runs under, which a rescale may have changed).
    pub fn with_layout_of(&self, stored: &Topology) -> Result<Topology, RescaleError> {
        self.with_task_ids(stored.task_ids())
    }

    /// The topology after `egret update --component-parallelism`: each named component gets its new task count.
    /// Remaining tasks keep their ids (a component that shrinks loses its highest ones); new tasks get ids above
    /// the highest id in use, in component order.
    pub fn rescaled(&self, changes: &[(String, u32)]) -> Result<Topology, RescaleError> {
        let mut task_ids = self.task_ids();
        let mut next = self.max_task_id() + 1;
        for (name, n) in changes {
            let ci = self
                .component_index(name)
                .ok_or_else(|| RescaleError::UnknownComponent(name.clone()))?;
            if *n == 0 {
                return Err(RescaleError::Zero(name.clone()));
            }
            let ids = &mut task_ids[ci];
            ids.truncate(*n as usize);
            while ids.len() < *n as usize {
                ids.push(next);
                next += 1;
            }
        }
        self.with_task_ids(task_ids)
    }

    /// New hooks for a task of `component`: those its config names in `topology.auto.task.hooks` (names without a
    /// declared hook were refused at build; a topology read from storage has none).
    pub fn auto_task_hooks(&self, component: usize) -> Vec<Box<dyn TaskHook>> {
        auto_task_hooks(&self.component_config(component))
            .iter()
            .filter_map(|name| self.task_hooks.0.get(name).map(|make| make()))
            .collect()
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn config(&self) -> &Config {
        &self.config
    }
    pub fn components(&self) -> &[ComponentDef] {
        &self.components
    }
    pub fn component_index(&self, name: &str) -> Option<usize> {
        self.components.binary_search_by(|c| c.name.as_str().cmp(name)).ok()
    }
    pub fn component(&self, name: &str) -> Option<&ComponentDef> {
        self.component_index(name).map(|i| &self.components[i])
    }
    /// The config a component's tasks see: topology config overlaid with the component's own.
    pub fn component_config(&self, component: usize) -> Config {
        self.config.merged_with(&self.components[component].config)
    }
    /// Task ids of a component, ascending.
    pub fn tasks_of(&self, component: usize) -> impl Iterator<Item = TaskId> + Clone + use<> {
        let ids = Arc::clone(&self.task_ids[component]);
        (0..ids.len()).map(move |i| TaskId(ids[i]))
    }
    /// How many tasks the topology has.
    pub fn task_count(&self) -> u32 {
        self.task_ids.iter().map(|ids| ids.len() as u32).sum()
    }
    /// The highest task id (what tables indexed by task id are sized by); equal to [`Topology::task_count`] until
    /// a rescale.
    pub fn max_task_id(&self) -> u32 {
        (self.task_of.len() as u32).saturating_sub(1)
    }
    /// All task ids with their component index and index within the component, in component order.
    pub fn tasks(&self) -> impl Iterator<Item = (TaskId, usize, u32)> + '_ {
        self.task_ids
            .iter()
            .enumerate()
            .flat_map(|(ci, ids)| ids.iter().enumerate().map(move |(i, &t)| (TaskId(t), ci, i as u32)))
    }
    /// (component index, index within the component) of a task.
    pub fn task_component(&self, task: TaskId) -> Option<(usize, u32)> {
        self.task_of
            .get(task.0 as usize)
            .copied()
            .flatten()
            .map(|(ci, i)| (ci as usize, i))
    }
    pub fn streams(&self) -> &[StreamInfo] {
        &self.streams
    }
    pub fn stream(&self, index: StreamIndex) -> Option<&StreamInfo> {
        self.streams.get(index.0 as usize)
    }
    pub fn stream_index(&self, component: &str, stream: &str) -> Option<StreamIndex> {
        self.streams
            .iter()
            .find(|s| self.components[s.component].name == component && s.decl.name == stream)
            .map(|s| s.index)
    }
    /// The subscriptions to a stream: (consuming component index, its input).
    pub fn consumers(&self, index: StreamIndex) -> impl Iterator<Item = (usize, &Input)> + '_ {
        let info = &self.streams[index.0 as usize];
        let producer = &self.components[info.component].name;
        self.components.iter().enumerate().flat_map(move |(ci, c)| {
            c.inputs
                .iter()
                .filter(move |i| &i.component == producer && i.stream == info.decl.name)
                .map(move |i| (ci, i))
        })
    }
    /// The tasks that may send tuples to `task`: every task of every component whose streams `task`'s component
    /// subscribes to, whatever the grouping (with shuffle, fields, direct, all... any task of the producer may pick
    /// it), ascending and without duplicates. A component that subscribes to its own stream counts itself, `task`
    /// included. Empty for a spout or a task that does not exist. Checkpoint markers are aligned over this set.
    pub fn upstream_tasks(&self, task: TaskId) -> Vec<TaskId> {
        let Some((ci, _)) = self.task_component(task) else {
            return Vec::new();
        };
        let producers: BTreeSet<usize> = self.components[ci]
            .inputs
            .iter()
            .filter_map(|i| self.component_index(&i.component))
            .collect();
        let mut tasks: Vec<TaskId> = producers.into_iter().flat_map(|p| self.tasks_of(p)).collect();
        // After a rescale a component's new ids follow later components' ids.
        tasks.sort_unstable();
        tasks
    }
    /// Every task that may receive a tuple from `task`: the tasks of every component subscribing to any of its
    /// component's streams (a checkpoint's markers go to each of them).
    pub fn downstream_tasks(&self, task: TaskId) -> Vec<TaskId> {
        let Some((ci, _)) = self.task_component(task) else {
            return Vec::new();
        };
        let name = &self.components[ci].name;
        let mut tasks: Vec<TaskId> = (0..self.components.len())
            .filter(|&c| self.components[c].inputs.iter().any(|i| &i.component == name))
            .flat_map(|c| self.tasks_of(c))
            .collect();
        tasks.sort_unstable();
        tasks
    }
    /// The declared fields of a stream.
    pub fn fields(&self, component: &str, stream: &str) -> Option<&Fields> {
        self.component(component)?.output(stream).map(|d| &d.fields)
    }
    pub fn is_system_component(name: &str) -> bool {
        name == SYSTEM_COMPONENT
    }
}
