//! Egret's shared machinery, used by every mode of running (simulator, local processes, Kubernetes):
//!
//! - [`batch`]: the record format tuples, acks, fails and checkpoint markers travel in;
//! - [`checkpoint`]: checkpoint alignment of a receiving task's inputs;
//! - [`router`] and [`fields_hash`]: groupings turned into destination tasks;
//! - [`ledger`]: the at-least-once XOR ledger with timeouts;
//! - [`outbox`] and [`queue`]: batching and bounded queues that push back;
//! - [`drop_gate`]: `topology.droptuples.upon.backpressure`, dropping for a congested destination instead;
//! - [`task`]: the spout and bolt drivers that call user code; [`debug_log`]: `topology.debug`'s rate-limited lines;
//! - [`metrics`]: per-task counters with Heron's names.
//!
//! Nothing here does I/O or reads the clock on its own: callers pass the time in.

pub mod batch;
pub mod checkpoint;
pub mod coordinator;
pub mod debug_log;
pub mod driver;
pub mod drop_gate;
pub mod fields_hash;
pub mod ledger;
pub mod metrics;
pub mod outbox;
pub mod queue;
pub mod rng;
pub mod router;
pub mod task;

pub use batch::{Batch, BatchError};
pub use metrics::{TaskMetrics, TaskMetricsSnapshot};
pub use outbox::{Outbox, Transport};
pub use task::{BoltTask, EmitCycle, SpoutTask, TaskError};
