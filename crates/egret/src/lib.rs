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
