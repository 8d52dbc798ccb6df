//! Egret's topology API: what a topology author writes against.
//!
//! A topology is a graph of [`Spout`]s (sources) and [`Bolt`]s (operators). Each runs as one or more tasks;
//! bolts subscribe to streams with a [`Grouping`]. Build one with [`TopologyBuilder`], which validates it and
//! reports every problem at once. The same topology runs in the simulator (`egret-simulator`) and, later, as real
//! processes.

pub mod collector;
pub mod component;
pub mod config;
pub mod context;
pub mod fields;
pub mod grouping;
pub mod hooks;
pub mod ids;
pub mod key_groups;
pub mod metrics;
pub mod retry;
pub mod sink_batch;
pub mod state;
pub mod topology;
pub mod tuple;
pub mod value;

pub use collector::{BasicCollector, BoltCollector, EmitError, EmitRequest, EmitSink, SpoutCollector};
pub use component::{BasicBolt, BasicBoltAdapter, Bolt, DEFAULT_STREAM, OutputDeclarer, Spout, StreamDecl, UserError};
pub use config::{Config, ConfigError, ReliabilityMode, defaults, keys};
pub use context::TopologyContext;
pub use fields::Fields;
pub use grouping::{CustomGrouping, Grouping};
pub use hooks::{TaskHook, TaskHookFactory};
pub use ids::{CheckpointId, MessageId, Root, RootId, Roots, StreamIndex, TaskId};
pub use key_groups::StateKey;
pub use metrics::{MetricError, MetricRegistry, Reducer};
pub use sink_batch::SinkBatch;
pub use state::{KeyedState, StateError, Stateful};
pub use topology::{
    ComponentDeclarer, ComponentDef, ComponentKind, Input, KeyCheck, RescaleError, Resources, StreamInfo, Topology,
    TopologyBuilder, TopologyError, TopologyErrors,
};
pub use tuple::{AckState, Anchor, FieldSel, OwnedTuple, StreamSource, Tuple, TupleError};
pub use value::{Serde, ToValue, Value, ValueRef, Values};
