//! File connectors for Egret (`docs/connectors.md`):
//!
//! - [`FileSource`]: a spout emitting the lines of a file or of a directory's files (`file`, `offset`, `line`),
//!   optionally following appended lines and new files; its position is its checkpointed state under
//!   effectively-once, failed lines replay under at-least-once.
//! - [`FileSink`]: a bolt writing one line per tuple into files that appear atomically (temporary name, fsync,
//!   rename), rolled by size and age, or under effectively-once committed with each complete checkpoint, so the
//!   output directory holds each line exactly once.
//! - [`file_lines`] and [`LineFileSink`]: the same as a Streamlet source and sink.

pub mod sink;
pub mod source;
pub mod streamlet;

pub use sink::{FileSink, FileSinkConfig, FileSinkError, LineFileWriter, LineFormat, tab_separated};
pub use source::{FILE_SOURCE_FIELDS, FileSource, FileSourceConfig, FileSourceError, file_task};
pub use streamlet::{LineFileSink, file_lines};
