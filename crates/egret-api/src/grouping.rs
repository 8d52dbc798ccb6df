//! How a bolt subscribes to a stream: which of its tasks receives each tuple.
//! The selection itself (hashing, round robin) is `egret_runtime::router`; this is the declaration.

use std::fmt;
use std::sync::Arc;

use crate::ids::TaskId;
use crate::tuple::Tuple;

/// A user-defined grouping: picks target tasks for each tuple.
pub trait CustomGrouping: Send + Sync {
    /// A stable name; it identifies the grouping in the topology definition.
    fn name(&self) -> &str;
    /// Push the chosen tasks (each one of `targets`, which are sorted) into `out`. Tasks not in `targets` are
    /// ignored, and counted as an error of the emitting task.
    fn choose(&self, tuple: &Tuple<'_>, targets: &[TaskId], out: &mut Vec<TaskId>);
}

/// Heron's groupings.
#[derive(Clone)]
pub enum Grouping {
    /// Round robin over the target tasks.
    Shuffle,
    /// Equal values of these fields always reach the same task (fields hash, see `docs/fields-hash.md`).
    Fields(Vec<String>),
    /// Every task receives every tuple.
    All,
    /// The task with the lowest id receives everything (Heron's LOWEST).
    Global,
    /// The emitter names the task (`emit_direct`); the stream must be declared direct.
    Direct,
    /// No preference; Egret treats it as shuffle, as Heron does.
    None,
    /// A user function chooses.
    Custom(Arc<dyn CustomGrouping>),
}

impl Grouping {
    pub fn fields<I, S>(names: I) -> Grouping
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Grouping::Fields(names.into_iter().map(Into::into).collect())
    }

    pub fn custom(g: impl CustomGrouping + 'static) -> Grouping {
        Grouping::Custom(Arc::new(g))
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Grouping::Shuffle => "shuffle",
            Grouping::Fields(_) => "fields",
            Grouping::All => "all",
            Grouping::Global => "global",
            Grouping::Direct => "direct",
            Grouping::None => "none",
            Grouping::Custom(_) => "custom",
        }
    }
}

impl fmt::Debug for Grouping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Grouping::Fields(fs) => write!(f, "fields({})", fs.join(", ")),
            Grouping::Custom(c) => write!(f, "custom({})", c.name()),
            other => f.write_str(other.kind()),
        }
    }
}

impl fmt::Display for Grouping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}
