//! Egret: real-time stream processing with Heron's model — topologies of spouts and bolts, groupings, acking —
//! in Rust.
//!
//! Depend on this crate to write a topology. Everything in `egret_api` is re-exported at the top level; the
//! in-process simulator is [`simulator`].
//!
//! ```
//! use egret::*;
//!
//! struct Numbers(i64);
//! impl Spout for Numbers {
//!     fn declare_outputs(&self, out: &mut OutputDeclarer) { out.declare(["n"]); }
//!     fn next_tuple(&mut self, out: &mut SpoutCollector<'_>) {
//!         if self.0 < 100 { out.emit((self.0,)); self.0 += 1; }
//!     }
//! }
//! struct Sum(i64);
//! impl BasicBolt for Sum {
//!     fn execute(&mut self, t: &Tuple<'_>, _out: &mut BasicCollector<'_, '_>) -> Result<(), UserError> {
//!         self.0 += t.get_i64("n")?;
//!         Ok(())
//!     }
//! }
//!
//! let mut builder = TopologyBuilder::new("sum");
//! builder.set_spout("numbers", 1, || Numbers(0));
//! builder.set_basic_bolt("sum", 1, || Sum(0)).global_grouping("numbers");
//! let running = simulator::Simulator::start(builder.build().unwrap()).unwrap();
//! running.wait_until(std::time::Duration::from_secs(10), |m| m.component("sum").executed == 100).unwrap();
//! let finished = running.stop();
//! assert_eq!(finished.bolts::<Sum>("sum")[0].0, 4950);
//! ```

pub use egret_api::*;

/// Runs a topology inside this process (Heron's "pure library" mode).
pub mod simulator {
    pub use egret_simulator::*;
}

/// The Streamlet API: typed functional pipelines compiled to spouts and bolts (`docs/streamlets.md`).
pub mod streamlet {
    pub use egret_streamlet::*;
}

/// Heron's windowed bolts: a [`windowed::WindowedBolt`] over count or duration windows, in processing or event
/// time, run as a bolt by [`windowed::WindowedBoltAdapter`] (`docs/windowed-bolts.md`).
pub mod windowed {
    pub use egret_streamlet::window::Window;
    pub use egret_streamlet::windowed_bolt::*;
}

use std::time::Duration;

use egret_instance::{InstanceEnv, env};
use egret_proto::Message;

/// The `main` of a topology binary: build the topology (from the same arguments every time) and hand it here.
///
/// - Started by `egret submit` (with `EGRET_DEFINITION_OUT` set), it writes the topology definition and exits;
///   an invalid topology prints every problem and exits with status 2.
/// - Started by an executor as an instance (`EGRET_INSTANCE` set), it runs its one task until its stmgr goes away.
/// - Started by hand, it runs the whole topology in the simulator until interrupted, printing rates.
pub fn run(topology: Result<Topology, TopologyErrors>) -> ! {
    let topology = match topology {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    if let Some(path) = std::env::var_os(env::DEFINITION_OUT) {
        let defn =
            egret_proto::defn::to_definition(&topology, topology.name(), egret_proto::api::TopologyState::Running);
        if let Err(e) = std::fs::write(&path, defn.encode_to_vec()) {
            eprintln!(
                "cannot write the topology definition to {}: {e}",
                path.to_string_lossy()
            );
            std::process::exit(1);
        }
        std::process::exit(0);
    }
    if let Some(instance) = InstanceEnv::from_env() {
        init_instance_logging(&topology, instance.as_ref().ok());
        let result = instance.and_then(|env| egret_instance::run(topology, env));
        if let Err(e) = result {
            tracing::error!(error = %e, "instance exiting");
        }
        std::process::exit(1);
    }
    simulate(topology)
}

/// Every line of an instance's log names it: topology, container, process (as the executor names it and its log
/// file), component and task.
fn init_instance_logging(topology: &Topology, env: Option<&InstanceEnv>) {
    let Some(env) = env else {
        // The environment is broken (the error says how): the topology is all we know.
        egret_scheduler::logging::init(&[("topology", &topology.name())]);
        return;
    };
    let component = topology
        .task_component(env.task)
        .map_or("?", |(ci, _)| topology.components()[ci].name.as_str());
    let process = format!("instance-{}-{component}", env.task);
    egret_scheduler::logging::init(&[
        ("topology", &env.topology),
        ("container", &env.container),
        ("process", &process),
        ("component", &component),
        ("task", &env.task),
    ]);
}

fn simulate(topology: Topology) -> ! {
    eprintln!(
        "{}: not started by `egret submit`, so running it in the simulator until interrupted.\n\
         To run it as processes: egret submit local <this binary> [its arguments]",
        topology.name()
    );
    let names: Vec<String> = topology.components().iter().map(|c| c.name.clone()).collect();
    let running = match simulator::Simulator::start(topology) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    loop {
        std::thread::sleep(Duration::from_secs(5));
        let m = running.metrics();
        let line: Vec<String> = names
            .iter()
            .map(|n| {
                let c = m.component(n);
                format!(
                    "{n}: emitted {} executed {} acked {} failed {}",
                    c.emitted, c.executed, c.acked, c.failed
                )
            })
            .collect();
        eprintln!("{}", line.join(" | "));
    }
}
