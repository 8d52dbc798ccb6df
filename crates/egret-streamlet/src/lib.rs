//! The Streamlet API (Heron's functional API): typed pipelines compiled to the spouts and bolts the rest of Egret
//! runs, so a streamlet topology runs unchanged in the simulator and on a cluster, and shows in `egret explain`, the
//! tracker and the UI under its operators' names. See `docs/streamlets.md`.
//!
//! ```
//! use egret_streamlet::{Builder, SourceContext};
//! let b = Builder::new();
//! let lines = b.new_source(|_cx: SourceContext| ["the quick fox", "the lazy dog"].into_iter().map(String::from));
//! lines
//!     .flat_map(|l: String| l.split_whitespace().map(String::from).collect::<Vec<_>>())
//!     .count_by_key(|w: &String| w.clone())
//!     .name("count");
//! let topology = b.build("streamlet-word-count", egret_api::Config::new()).unwrap();
//! assert!(topology.component("count").is_some());
//! ```

mod builder;
mod component;
mod key_bytes;
mod ops;
mod spout_source;
pub mod window;
mod windowed;
pub mod windowed_bolt;

pub use builder::{Builder, Element, Streamlet};
pub use component::{SourceContext, StreamletBolt, StreamletSpout};
pub use ops::{Sink, Transformer};
pub use window::{Window, WindowConfig};
pub use windowed::{JoinSide, JoinType, WindowSpec, Windowed};
