//! Topology and component configuration, with Heron's key names.
//!
//! Keys live in [`keys`], defaults in [`defaults`]; nowhere else. Values are strings, as in Heron's
//! `topology.proto` `Config`, and read back through typed getters that name the key in their error.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// Heron's configuration keys that Egret reads.
pub mod keys {
    pub const RELIABILITY_MODE: &str = "topology.reliability.mode";
    /// Legacy Storm/Heron switch: `true` means ATLEAST_ONCE.
    pub const ACKING: &str = "topology.acking";
    pub const MESSAGE_TIMEOUT_SECS: &str = "topology.message.timeout.secs";
    pub const ENABLE_MESSAGE_TIMEOUTS: &str = "topology.enable.message.timeouts";
    pub const MAX_SPOUT_PENDING: &str = "topology.max.spout.pending";
    pub const TICK_TUPLE_FREQ_SECS: &str = "topology.tick.tuple.freq.secs";
    pub const TICK_TUPLE_FREQ_MS: &str = "topology.tick.tuple.freq.ms";
    pub const COMPONENT_PARALLELISM: &str = "topology.component.parallelism";
    pub const STMGRS: &str = "topology.stmgrs";
    /// `true`: every tuple a component emits or executes is logged (rate-limited by
    /// `topology.egret.debug.lines.per.sec`).
    pub const DEBUG: &str = "topology.debug";
    pub const NAME: &str = "topology.name";
    pub const COMPONENT_CPUMAP: &str = "topology.component.cpumap";
    pub const COMPONENT_RAMMAP: &str = "topology.component.rammap";
    pub const CONTAINER_CPU: &str = "topology.container.cpu";
    pub const CONTAINER_RAM: &str = "topology.container.ram";
    pub const CONTAINER_DISK: &str = "topology.container.disk";
    pub const CONTAINER_MAX_INSTANCES: &str = "topology.container.max.instances";
    /// `true`: a stmgr drops tuples for a congested instance or peer instead of stopping the spouts (Heron's
    /// meaning; `docs/back-pressure.md`).
    pub const DROPTUPLES_UPON_BACKPRESSURE: &str = "topology.droptuples.upon.backpressure";
    pub const STATEFUL_CHECKPOINT_INTERVAL_SECONDS: &str = "topology.stateful.checkpoint.interval.seconds";
    /// Effectively-once: `true` starts a topology from empty state even when checkpoints of an earlier run are kept.
    pub const STATEFUL_START_CLEAN: &str = "topology.stateful.start.clean";
    /// Egret: `RUNNING` (default) or `PAUSED`, the state a topology starts in (what Heron's `submit
    /// --deploy-deactivated` sets).
    pub const INITIAL_STATE: &str = "topology.initial.state";
    /// Task hooks every task of the topology (or of a component) runs: comma-separated names declared with
    /// `TopologyBuilder::task_hook` (Heron's list of `ITaskHook` classes).
    pub const AUTO_TASK_HOOKS: &str = "topology.auto.task.hooks";
    /// Egret: bytes a task may hold while it aligns a checkpoint's markers (input from upstream tasks whose marker
    /// came); past it the checkpoint is abandoned (Heron's `heron.streammgr.stateful.buffer.size.mb`).
    pub const CHECKPOINT_BUFFER_BYTES: &str = "topology.egret.checkpoint.buffer.bytes";
    /// Egret: how many complete checkpoints are kept (older ones are deleted); a rollback uses the newest one that
    /// reads back intact.
    pub const CHECKPOINTS_KEPT: &str = "topology.egret.checkpoint.keep";
    /// Egret: tuples per batch before a batch is sent.
    pub const BATCH_TUPLES: &str = "topology.egret.batch.tuples";
    /// Egret: how long a partly filled batch may wait while its task keeps working, in microseconds (a task with
    /// nothing else to do sends its batches at once).
    pub const BATCH_FLUSH_MICROS: &str = "topology.egret.batch.flush.micros";
    /// Egret: how long a spout whose `next_tuple` emitted nothing waits before it is called again, in microseconds
    /// (Storm's spout wait strategy; acks and fails are handled meanwhile).
    pub const SPOUT_WAIT_MICROS: &str = "topology.egret.spout.wait.micros";
    /// Egret: the longest that wait grows to, in microseconds: it doubles while `next_tuple` keeps emitting nothing
    /// (an empty source is polled less and less often) and falls back to `topology.egret.spout.wait.micros` as soon as
    /// it emits.
    pub const SPOUT_WAIT_MAX_MICROS: &str = "topology.egret.spout.wait.max.micros";
    /// Egret: capacity of a task's input queue, in batches.
    pub const QUEUE_BATCHES: &str = "topology.egret.queue.batches";
    /// Egret: bytes queued by a stmgr for one instance at which it starts back pressure (Heron's
    /// `heron.streammgr.network.backpressure.highwatermark.mb`).
    pub const BACKPRESSURE_HIGH_BYTES: &str = "topology.egret.backpressure.high.bytes";
    /// Egret: ... and at or below which it stops.
    pub const BACKPRESSURE_LOW_BYTES: &str = "topology.egret.backpressure.low.bytes";
    /// Egret: seconds without a heartbeat (or any frame) from a stmgr after which the tmanager declares it dead and
    /// drops its connection (Heron's `heron.tmanager.stmgr.state.timeout.sec`). Must exceed the stmgrs' heartbeat
    /// interval, [`super::defaults::STMGR_HEARTBEAT_INTERVAL_SECS`].
    pub const STMGR_HEARTBEAT_TIMEOUT_SECS: &str = "topology.egret.stmgr.heartbeat.timeout.secs";

    pub const COMPONENT_DISKMAP: &str = "topology.component.diskmap";
    /// First-fit-decreasing packing: `RAM_FIRST` (default) or `CPU_FIRST`, the resource instances are sorted by.
    pub const PACKING_FFD_SORTING_STRATEGY: &str = "topology.packing.ffd.sorting.strategy";
    /// Descriptive metadata (Heron passes them to schedulers); kept in the definition, nothing else reads them.
    pub const TEAM_NAME: &str = "topology.team.name";
    pub const TEAM_EMAIL: &str = "topology.team.email";
    pub const TEAM_ENVIRONMENT: &str = "topology.team.environment";
    pub const CAP_TICKET: &str = "topology.cap.ticket";
    pub const PROJECT_NAME: &str = "topology.project.name";
    /// Windowed bolts (`egret_streamlet::windowed_bolt`), component config, Heron's names.
    pub const WINDOW_LENGTH_COUNT: &str = "topology.bolts.window.length.count";
    pub const WINDOW_LENGTH_DURATION_MS: &str = "topology.bolts.window.length.duration.ms";
    pub const WINDOW_SLIDING_INTERVAL_COUNT: &str = "topology.bolts.window.sliding.interval.count";
    pub const WINDOW_SLIDING_INTERVAL_DURATION_MS: &str = "topology.bolts.window.sliding.interval.duration.ms";
    pub const LATE_TUPLE_STREAM: &str = "topology.bolts.late.tuple.stream";
    pub const TUPLE_TIMESTAMP_MAX_LAG_MS: &str = "topology.bolts.tuple.timestamp.max.lag.ms";
    pub const WATERMARK_EVENT_INTERVAL_MS: &str = "topology.bolts.watermark.event.interval.ms";
    /// Egret: with `topology.debug=true`, the most lines a task logs per second; the rest are counted and the count
    /// is logged once the second is over.
    pub const DEBUG_LINES_PER_SEC: &str = "topology.egret.debug.lines.per.sec";

    /// Every `topology.*` key Egret knows. A `topology.*` key outside this list and [`UNSUPPORTED`] is reported at
    /// validation, because it is almost always a typo of one of these. `docs/config.md` lists them all.
    pub const KNOWN: &[&str] = &[
        RELIABILITY_MODE,
        ACKING,
        MESSAGE_TIMEOUT_SECS,
        ENABLE_MESSAGE_TIMEOUTS,
        MAX_SPOUT_PENDING,
        TICK_TUPLE_FREQ_SECS,
        TICK_TUPLE_FREQ_MS,
        COMPONENT_PARALLELISM,
        STMGRS,
        DEBUG,
        NAME,
        COMPONENT_CPUMAP,
        COMPONENT_RAMMAP,
        CONTAINER_CPU,
        CONTAINER_RAM,
        CONTAINER_DISK,
        CONTAINER_MAX_INSTANCES,
        DROPTUPLES_UPON_BACKPRESSURE,
        STATEFUL_CHECKPOINT_INTERVAL_SECONDS,
        STATEFUL_START_CLEAN,
        INITIAL_STATE,
        AUTO_TASK_HOOKS,
        CHECKPOINT_BUFFER_BYTES,
        CHECKPOINTS_KEPT,
        BATCH_TUPLES,
        BATCH_FLUSH_MICROS,
        SPOUT_WAIT_MICROS,
        SPOUT_WAIT_MAX_MICROS,
        QUEUE_BATCHES,
        BACKPRESSURE_HIGH_BYTES,
        BACKPRESSURE_LOW_BYTES,
        STMGR_HEARTBEAT_TIMEOUT_SECS,
        COMPONENT_DISKMAP,
        PACKING_FFD_SORTING_STRATEGY,
        TEAM_NAME,
        TEAM_EMAIL,
        TEAM_ENVIRONMENT,
        CAP_TICKET,
        PROJECT_NAME,
        WINDOW_LENGTH_COUNT,
        WINDOW_LENGTH_DURATION_MS,
        WINDOW_SLIDING_INTERVAL_COUNT,
        WINDOW_SLIDING_INTERVAL_DURATION_MS,
        LATE_TUPLE_STREAM,
        TUPLE_TIMESTAMP_MAX_LAG_MS,
        WATERMARK_EVENT_INTERVAL_MS,
        DEBUG_LINES_PER_SEC,
    ];

    const JVM: &str = "it configures a JVM, and Egret instances are native processes: there is nothing to set";
    const SERIALIZER: &str = "Egret encodes values in one format of its own (docs/wire-format.md); carry user types \
                              with egret_api::Serde";
    const PADDING: &str = "Egret's packing adds no padding and reserves nothing for the stmgr, metricsmgr or \
                           checkpoint writer; size containers with topology.container.cpu/ram/disk";
    const MAX_HINT: &str = "Heron's packing does not read it either; set the maximum container size with \
                            topology.container.cpu/ram/disk";
    const UPDATE: &str = "Egret has no `update` command: kill and submit again with the new parallelism";
    const CLASSES: &str = "it names Java classes to load; in Egret, write the window in code (egret_streamlet \
                           windows, or the windowed bolt's count/duration keys)";

    /// Heron's keys that Egret refuses, each with why and what to use instead. Validation reports them by name
    /// instead of letting them be silently ignored.
    pub const UNSUPPORTED: &[(&str, &str)] = &[
        ("topology.worker.childopts", JVM),
        ("topology.component.jvmopts", JVM),
        ("topology.additional.classpath", JVM),
        (
            "topology.remote.debugging.enable",
            "it opens a JVM debug port; attach a native debugger (gdb, lldb) to the instance process instead",
        ),
        ("topology.serializer.classname", SERIALIZER),
        ("topology.kryo.factory", SERIALIZER),
        ("topology.kryo.register", SERIALIZER),
        ("topology.kryo.decorators", SERIALIZER),
        ("topology.skip.missing.kryo.registrations", SERIALIZER),
        ("topology.fall.back.on.java.serialization", SERIALIZER),
        ("topology.container.max.cpu.hint", MAX_HINT),
        ("topology.container.max.ram.hint", MAX_HINT),
        ("topology.container.max.disk.hint", MAX_HINT),
        ("topology.container.padding.percentage", PADDING),
        ("topology.container.ram.padding", PADDING),
        ("topology.container.cpu.padding", PADDING),
        ("topology.stmgr.ram", PADDING),
        ("topology.metricsmgr.ram", PADDING),
        (
            "topology.stateful.checkpointmanager.ram",
            "Egret has no checkpoint manager process: a writer thread in each instance writes its snapshots \
             (docs/checkpoints.md)",
        ),
        (
            "topology.stateful.spill.state",
            "snapshots are written straight to the checkpoint store by each instance; there is no transfer to spill",
        ),
        (
            "topology.stateful.spill.state.location",
            "snapshots are written straight to the checkpoint store by each instance; there is no transfer to spill",
        ),
        ("topology.update.deactivate.wait.secs", UPDATE),
        ("topology.update.reactivate.wait.secs", UPDATE),
        (
            "topology.environment",
            "instances inherit their executor's environment; pass settings in the topology config and read them \
             in open/prepare",
        ),
        (
            "topology.timer.events",
            "it holds Java Runnables; use tick tuples (topology.tick.tuple.freq.ms) on a bolt",
        ),
        (
            "topology.component.output.bps",
            "Egret has no per-component rate limit; pace the spout itself (emit less per next_tuple)",
        ),
        ("topology.bolts.window.custom.evictor", CLASSES),
        ("topology.bolts.window.custom.trigger", CLASSES),
    ];

    /// Why Egret refuses `key`, if it is one of [`UNSUPPORTED`].
    pub fn unsupported(key: &str) -> Option<&'static str> {
        UNSUPPORTED.iter().find(|(k, _)| *k == key).map(|(_, why)| *why)
    }

    /// Where a config is set: the topology's own config or a component's.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Scope {
        Topology,
        Component,
    }

    /// What Egret does with a key set in a config of `scope`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum KeyStatus {
        /// Honoured (or not a `topology.*` key: user keys are the user's).
        Known,
        /// A `topology.*` key nobody knows: a typo.
        Unknown,
        /// Refused, with why and what to use instead.
        Refused(&'static str),
    }

    /// The one place that decides whether a key may be set where it is set.
    pub fn status(key: &str, scope: Scope) -> KeyStatus {
        if !key.starts_with("topology.") {
            return KeyStatus::Known;
        }
        if let Some(why) = unsupported(key) {
            return KeyStatus::Refused(why);
        }
        if !KNOWN.contains(&key) {
            return KeyStatus::Unknown;
        }
        match (key, scope) {
            (COMPONENT_PARALLELISM, Scope::Topology) => KeyStatus::Refused(
                "it is a component's parallelism, and Heron ignores it in the topology config too; give each \
                 component its parallelism (set_spout/set_bolt, .parallelism(n), or this key in the component's \
                 config)",
            ),
            (DROPTUPLES_UPON_BACKPRESSURE | INITIAL_STATE | STMGRS, Scope::Component) => {
                KeyStatus::Refused("it is topology-wide: set it in the topology config")
            }
            _ => KeyStatus::Known,
        }
    }
}

/// Built-in defaults. Heron's where Heron has one.
pub mod defaults {
    pub const MESSAGE_TIMEOUT_SECS: u64 = 30;
    /// Heron's default is 100; Egret moves tuples in batches of up to 1024, so 100 in-flight roots would keep every
    /// batch nearly empty. 10 000 keeps several full batches in flight per spout task.
    pub const MAX_SPOUT_PENDING: u64 = 10_000;
    pub const STMGRS: u64 = 1;
    pub const BATCH_TUPLES: u64 = 1024;
    pub const BATCH_FLUSH_MICROS: u64 = 200;
    /// Storm's default spout wait is 1 ms; 2 ms halves the wake-ups of a topology whose sources are often empty
    /// (at 100 000 tuples/s: 0.21 instead of 0.34 cores) and delays only tuples that arrive while the source was empty.
    pub const SPOUT_WAIT_MICROS: u64 = 2000;
    /// An empty source is polled about 125 times a second instead of 1000; a tuple arriving after a quiet spell waits
    /// at most 8 ms to be emitted.
    pub const SPOUT_WAIT_MAX_MICROS: u64 = 8000;
    pub const QUEUE_BATCHES: u64 = 32;
    /// Heron's default is 300 s; a rollback replays up to one interval of input, so Egret checkpoints more often
    /// (a checkpoint costs a marker per task pair and a background write).
    pub const CHECKPOINT_INTERVAL_SECS: f64 = 10.0;
    /// Heron's is 100 MB.
    pub const CHECKPOINT_BUFFER_BYTES: u64 = 64 * 1024 * 1024;
    /// Heron keeps 5.
    pub const CHECKPOINTS_KEPT: u64 = 5;
    /// Heron's are 100 MB / 50 MB; a native instance drains far faster than a JVM, so a few megabytes hold enough
    /// work and bound memory and latency much tighter.
    pub const BACKPRESSURE_HIGH_BYTES: u64 = 4 * 1024 * 1024;
    pub const BACKPRESSURE_LOW_BYTES: u64 = 2 * 1024 * 1024;
    /// How often a stmgr sends a heartbeat to the tmanager (Heron's `heron.streammgr.tmanager.heartbeat.interval.sec`
    /// is 10).
    pub const STMGR_HEARTBEAT_INTERVAL_SECS: u64 = 5;
    /// Six missed heartbeats, as Heron's 60 s timeout is for its 10 s heartbeats.
    pub const STMGR_HEARTBEAT_TIMEOUT_SECS: u64 = 30;
    /// `topology.debug` logs a line per tuple; 100 a second per task shows what flows without filling the disk.
    pub const DEBUG_LINES_PER_SEC: u64 = 100;
}

/// Heron's three delivery modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReliabilityMode {
    #[default]
    AtMostOnce,
    AtLeastOnce,
    EffectivelyOnce,
}

impl ReliabilityMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ReliabilityMode::AtMostOnce => "ATMOST_ONCE",
            ReliabilityMode::AtLeastOnce => "ATLEAST_ONCE",
            ReliabilityMode::EffectivelyOnce => "EFFECTIVELY_ONCE",
        }
    }
}

impl fmt::Display for ReliabilityMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A configuration value that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config {key} = {value:?} is not {expected}")]
pub struct ConfigError {
    pub key: String,
    pub value: String,
    pub expected: &'static str,
}

/// String keys to string values, typed on read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    entries: BTreeMap<String, String>,
}

impl Config {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set(&mut self, key: impl Into<String>, value: impl ToString) -> &mut Self {
        self.entries.insert(key.into(), value.to_string());
        self
    }

    pub fn with(mut self, key: impl Into<String>, value: impl ToString) -> Self {
        self.set(key, value);
        self
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(String::as_str)
    }

    pub fn remove(&mut self, key: &str) -> Option<String> {
        self.entries.remove(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// This config with `over`'s entries replacing its own (component config over topology config).
    pub fn merged_with(&self, over: &Config) -> Config {
        let mut entries = self.entries.clone();
        entries.extend(over.entries.iter().map(|(k, v)| (k.clone(), v.clone())));
        Config { entries }
    }

    fn parse<T: std::str::FromStr>(&self, key: &str, expected: &'static str) -> Result<Option<T>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.trim().parse().map(Some).map_err(|_| ConfigError {
                key: key.to_string(),
                value: v.to_string(),
                expected,
            }),
        }
    }

    pub fn get_u64(&self, key: &str) -> Result<Option<u64>, ConfigError> {
        self.parse(key, "a non-negative integer")
    }

    pub fn get_f64(&self, key: &str) -> Result<Option<f64>, ConfigError> {
        self.parse(key, "a number")
    }

    pub fn get_bool(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.trim().to_ascii_lowercase().as_str() {
                "true" => Ok(Some(true)),
                "false" => Ok(Some(false)),
                _ => Err(ConfigError {
                    key: key.into(),
                    value: v.into(),
                    expected: "true or false",
                }),
            },
        }
    }

    /// `topology.reliability.mode`, or ATLEAST_ONCE when only the legacy `topology.acking=true` is set.
    pub fn reliability_mode(&self) -> Result<ReliabilityMode, ConfigError> {
        match self.get(keys::RELIABILITY_MODE) {
            Some(v) => match v.trim() {
                "ATMOST_ONCE" => Ok(ReliabilityMode::AtMostOnce),
                "ATLEAST_ONCE" => Ok(ReliabilityMode::AtLeastOnce),
                "EFFECTIVELY_ONCE" => Ok(ReliabilityMode::EffectivelyOnce),
                _ => Err(ConfigError {
                    key: keys::RELIABILITY_MODE.into(),
                    value: v.into(),
                    expected: "ATMOST_ONCE, ATLEAST_ONCE or EFFECTIVELY_ONCE",
                }),
            },
            None if self.get_bool(keys::ACKING)? == Some(true) => Ok(ReliabilityMode::AtLeastOnce),
            None => Ok(ReliabilityMode::AtMostOnce),
        }
    }

    pub fn message_timeout(&self) -> Result<Duration, ConfigError> {
        let secs = self
            .get_u64(keys::MESSAGE_TIMEOUT_SECS)?
            .unwrap_or(defaults::MESSAGE_TIMEOUT_SECS);
        Ok(Duration::from_secs(secs.max(1)))
    }

    pub fn message_timeouts_enabled(&self) -> Result<bool, ConfigError> {
        Ok(self.get_bool(keys::ENABLE_MESSAGE_TIMEOUTS)?.unwrap_or(true))
    }

    pub fn max_spout_pending(&self) -> Result<u64, ConfigError> {
        Ok(self
            .get_u64(keys::MAX_SPOUT_PENDING)?
            .unwrap_or(defaults::MAX_SPOUT_PENDING)
            .max(1))
    }

    /// The tick period from `topology.tick.tuple.freq.secs` (fractions allowed) or `...freq.ms`; `None` if unset.
    pub fn tick_period(&self) -> Result<Option<Duration>, ConfigError> {
        if let Some(secs) = self.get_f64(keys::TICK_TUPLE_FREQ_SECS)? {
            if !(secs.is_finite() && secs > 0.0) {
                return Err(ConfigError {
                    key: keys::TICK_TUPLE_FREQ_SECS.into(),
                    value: secs.to_string(),
                    expected: "a positive number of seconds",
                });
            }
            return Ok(Some(Duration::from_secs_f64(secs)));
        }
        Ok(self
            .get_u64(keys::TICK_TUPLE_FREQ_MS)?
            .filter(|&ms| ms > 0)
            .map(Duration::from_millis))
    }

    pub fn batch_tuples(&self) -> Result<usize, ConfigError> {
        Ok(self
            .get_u64(keys::BATCH_TUPLES)?
            .unwrap_or(defaults::BATCH_TUPLES)
            .clamp(1, 1 << 20) as usize)
    }

    pub fn batch_flush_interval(&self) -> Result<Duration, ConfigError> {
        Ok(Duration::from_micros(
            self.get_u64(keys::BATCH_FLUSH_MICROS)?
                .unwrap_or(defaults::BATCH_FLUSH_MICROS),
        ))
    }

    pub fn spout_wait(&self) -> Result<Duration, ConfigError> {
        Ok(Duration::from_micros(
            self.get_u64(keys::SPOUT_WAIT_MICROS)?
                .unwrap_or(defaults::SPOUT_WAIT_MICROS)
                .min(1_000_000),
        ))
    }

    /// The longest the spout wait grows to (at least the spout wait itself).
    pub fn spout_wait_max(&self) -> Result<Duration, ConfigError> {
        let max = Duration::from_micros(
            self.get_u64(keys::SPOUT_WAIT_MAX_MICROS)?
                .unwrap_or(defaults::SPOUT_WAIT_MAX_MICROS)
                .min(10_000_000),
        );
        Ok(max.max(self.spout_wait()?))
    }

    /// Back-pressure watermarks (high, low) in bytes; low is at most high.
    pub fn backpressure_watermarks(&self) -> Result<(u64, u64), ConfigError> {
        let high = self
            .get_u64(keys::BACKPRESSURE_HIGH_BYTES)?
            .unwrap_or(defaults::BACKPRESSURE_HIGH_BYTES)
            .max(1);
        let low = self
            .get_u64(keys::BACKPRESSURE_LOW_BYTES)?
            .unwrap_or(defaults::BACKPRESSURE_LOW_BYTES);
        Ok((high, low.min(high)))
    }

    pub fn queue_batches(&self) -> Result<usize, ConfigError> {
        Ok(self
            .get_u64(keys::QUEUE_BATCHES)?
            .unwrap_or(defaults::QUEUE_BATCHES)
            .clamp(1, 1 << 16) as usize)
    }

    /// How long the tmanager waits for a stmgr's next heartbeat before declaring it dead; more than the heartbeat
    /// interval, or every healthy stmgr would be declared dead between two heartbeats.
    pub fn stmgr_heartbeat_timeout(&self) -> Result<Duration, ConfigError> {
        let secs = self
            .get_u64(keys::STMGR_HEARTBEAT_TIMEOUT_SECS)?
            .unwrap_or(defaults::STMGR_HEARTBEAT_TIMEOUT_SECS);
        if secs <= defaults::STMGR_HEARTBEAT_INTERVAL_SECS {
            return Err(ConfigError {
                key: keys::STMGR_HEARTBEAT_TIMEOUT_SECS.into(),
                value: secs.to_string(),
                expected: "a number of seconds above the stmgr heartbeat interval (5)",
            });
        }
        Ok(Duration::from_secs(secs))
    }

    /// How often the tmanager starts a checkpoint (effectively-once); fractions of a second allowed.
    pub fn checkpoint_interval(&self) -> Result<Duration, ConfigError> {
        let secs = self
            .get_f64(keys::STATEFUL_CHECKPOINT_INTERVAL_SECONDS)?
            .unwrap_or(defaults::CHECKPOINT_INTERVAL_SECS);
        if !(secs.is_finite() && secs >= 0.01) {
            return Err(ConfigError {
                key: keys::STATEFUL_CHECKPOINT_INTERVAL_SECONDS.into(),
                value: secs.to_string(),
                expected: "a number of seconds, at least 0.01",
            });
        }
        Ok(Duration::from_secs_f64(secs))
    }

    pub fn stateful_start_clean(&self) -> Result<bool, ConfigError> {
        Ok(self.get_bool(keys::STATEFUL_START_CLEAN)?.unwrap_or(false))
    }

    pub fn checkpoint_buffer_bytes(&self) -> Result<u64, ConfigError> {
        Ok(self
            .get_u64(keys::CHECKPOINT_BUFFER_BYTES)?
            .unwrap_or(defaults::CHECKPOINT_BUFFER_BYTES))
    }

    pub fn checkpoints_kept(&self) -> Result<usize, ConfigError> {
        Ok(self
            .get_u64(keys::CHECKPOINTS_KEPT)?
            .unwrap_or(defaults::CHECKPOINTS_KEPT)
            .clamp(1, 1000) as usize)
    }

    /// `topology.initial.state`: whether the topology starts deactivated (`PAUSED`).
    pub fn starts_paused(&self) -> Result<bool, ConfigError> {
        match self.get(keys::INITIAL_STATE).map(str::trim) {
            None | Some("RUNNING") => Ok(false),
            Some("PAUSED") => Ok(true),
            Some(v) => Err(ConfigError {
                key: keys::INITIAL_STATE.into(),
                value: v.into(),
                expected: "RUNNING or PAUSED",
            }),
        }
    }

    /// `topology.droptuples.upon.backpressure`.
    pub fn drop_tuples_upon_backpressure(&self) -> Result<bool, ConfigError> {
        Ok(self.get_bool(keys::DROPTUPLES_UPON_BACKPRESSURE)?.unwrap_or(false))
    }

    /// `topology.debug`.
    pub fn debug(&self) -> Result<bool, ConfigError> {
        Ok(self.get_bool(keys::DEBUG)?.unwrap_or(false))
    }

    /// The most debug lines a task logs per second (at least 1).
    pub fn debug_lines_per_sec(&self) -> Result<u64, ConfigError> {
        Ok(self
            .get_u64(keys::DEBUG_LINES_PER_SEC)?
            .unwrap_or(defaults::DEBUG_LINES_PER_SEC)
            .max(1))
    }

    /// `topology.packing.ffd.sorting.strategy`: whether first-fit decreasing sorts by CPU first (else RAM first).
    pub fn ffd_sorts_cpu_first(&self) -> Result<bool, ConfigError> {
        match self.get(keys::PACKING_FFD_SORTING_STRATEGY).map(str::trim) {
            None => Ok(false),
            Some(v) if v.eq_ignore_ascii_case("RAM_FIRST") => Ok(false),
            Some(v) if v.eq_ignore_ascii_case("CPU_FIRST") => Ok(true),
            Some(v) => Err(ConfigError {
                key: keys::PACKING_FFD_SORTING_STRATEGY.into(),
                value: v.into(),
                expected: "RAM_FIRST or CPU_FIRST",
            }),
        }
    }

    /// Every typed key, parsed once, so a bad value is reported when the topology is built rather than at run time.
    pub fn check(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let mut note = |r: Result<(), ConfigError>| {
            if let Err(e) = r {
                errors.push(e)
            }
        };
        note(self.reliability_mode().map(drop));
        note(self.message_timeout().map(drop));
        note(self.message_timeouts_enabled().map(drop));
        note(self.max_spout_pending().map(drop));
        note(self.tick_period().map(drop));
        note(self.batch_tuples().map(drop));
        note(self.batch_flush_interval().map(drop));
        note(self.spout_wait().map(drop));
        note(self.spout_wait_max().map(drop));
        note(self.queue_batches().map(drop));
        note(self.backpressure_watermarks().map(drop));
        note(self.stmgr_heartbeat_timeout().map(drop));
        note(self.checkpoint_interval().map(drop));
        note(self.stateful_start_clean().map(drop));
        note(self.checkpoint_buffer_bytes().map(drop));
        note(self.checkpoints_kept().map(drop));
        note(self.get_u64(keys::STMGRS).map(drop));
        note(self.get_u64(keys::COMPONENT_PARALLELISM).map(drop));
        note(self.debug().map(drop));
        note(self.debug_lines_per_sec().map(drop));
        note(self.starts_paused().map(drop));
        note(self.drop_tuples_upon_backpressure().map(drop));
        note(self.ffd_sorts_cpu_first().map(drop));
        errors
    }

    /// `topology.*` keys that Egret does not know (likely typos).
    pub fn unknown_topology_keys(&self) -> Vec<String> {
        self.entries
            .keys()
            .filter(|k| keys::status(k, keys::Scope::Topology) == keys::KeyStatus::Unknown)
            .cloned()
            .collect()
    }

    /// Keys Egret refuses in a config of `scope`, each with why and what to use instead.
    pub fn refused_keys(&self, scope: keys::Scope) -> Vec<(String, &'static str)> {
        self.entries
            .keys()
            .filter_map(|k| match keys::status(k, scope) {
                keys::KeyStatus::Refused(why) => Some((k.clone(), why)),
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_getters_report_the_key() {
        let c = Config::new()
            .with(keys::MAX_SPOUT_PENDING, "lots")
            .with(keys::RELIABILITY_MODE, "ATLEAST_ONCE");
        assert_eq!(c.reliability_mode().unwrap(), ReliabilityMode::AtLeastOnce);
        let err = c.max_spout_pending().unwrap_err();
        assert_eq!(err.key, keys::MAX_SPOUT_PENDING);
        assert_eq!(c.check().len(), 1);
    }

    #[test]
    fn legacy_acking_and_defaults() {
        assert_eq!(Config::new().reliability_mode().unwrap(), ReliabilityMode::AtMostOnce);
        let c = Config::new().with(keys::ACKING, true);
        assert_eq!(c.reliability_mode().unwrap(), ReliabilityMode::AtLeastOnce);
        assert_eq!(Config::new().message_timeout().unwrap(), Duration::from_secs(30));
        let c = Config::new().with(keys::TICK_TUPLE_FREQ_SECS, "0.5");
        assert_eq!(c.tick_period().unwrap(), Some(Duration::from_millis(500)));
    }

    #[test]
    fn the_stmgr_heartbeat_timeout_must_exceed_the_heartbeat_interval() {
        let timeout = |v: &str| {
            Config::new()
                .with(keys::STMGR_HEARTBEAT_TIMEOUT_SECS, v)
                .stmgr_heartbeat_timeout()
        };
        assert_eq!(Config::new().stmgr_heartbeat_timeout(), Ok(Duration::from_secs(30)));
        assert_eq!(timeout("6"), Ok(Duration::from_secs(6)));
        for bad in ["5", "0", "-1", "soon"] {
            let err = timeout(bad).unwrap_err();
            assert_eq!(
                (err.key.as_str(), err.value.as_str()),
                (keys::STMGR_HEARTBEAT_TIMEOUT_SECS, bad)
            );
        }
        assert_eq!(
            Config::new()
                .with(keys::STMGR_HEARTBEAT_TIMEOUT_SECS, "3")
                .check()
                .len(),
            1
        );
    }

    #[test]
    fn unknown_topology_keys_are_found() {
        let c = Config::new()
            .with("topology.max.spout.pendng", 5)
            .with("wordcount.words", 10);
        assert_eq!(c.unknown_topology_keys(), vec!["topology.max.spout.pendng".to_string()]);
    }
}
