//! Windowed sums: sliding event-time windows of a windowed bolt, run in the simulator.
//!
//!     cargo run --release -p egret-examples --bin windowed-sums

use std::time::Duration;

use egret::simulator::Simulator;
use egret::windowed::WindowedBoltAdapter;
use egret_examples::windowed_sums::{self, Sums};

fn main() -> anyhow::Result<()> {
    let running = Simulator::start(windowed_sums::topology(1000)?)?;
    let finished = running.run_for(Duration::from_secs(2));
    for adapter in finished.bolts::<WindowedBoltAdapter<Sums>>("sums") {
        for (start, end, sum, count) in &adapter.bolt().windows {
            println!("[{start} ms, {end} ms): {count} numbers, sum {sum}");
        }
    }
    Ok(())
}
