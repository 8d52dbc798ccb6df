//! Exclamation: a chain of two bolts, each appending "!!!", run in the simulator for a few seconds.
//!
//!     cargo run --release -p egret-examples --bin exclamation

use std::time::Duration;

use egret::simulator::Simulator;
use egret_examples::exclamation::{self, ExclamationBolt};

fn main() -> anyhow::Result<()> {
    let running = Simulator::start(exclamation::topology(1)?)?;
    let finished = running.run_for(Duration::from_secs(2));
    for bolt in finished.bolts::<ExclamationBolt>("exclaim2") {
        println!("exclaim2 executed {} tuples; the last ones:", bolt.executed);
        for word in &bolt.recent {
            println!("  {word}");
        }
    }
    Ok(())
}
