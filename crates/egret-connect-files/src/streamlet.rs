//! The file connectors as Streamlet sources and sinks: [`file_lines`] (each line of a file or directory, as a
//! `String`) and [`LineFileSink`] (each element as a line, through its `Display`), with the same delivery rules as
//! the spout and the bolt.

use std::fmt::Display;
use std::marker::PhantomData;

use egret_api::{CheckpointId, ReliabilityMode, Stateful, TopologyContext, UserError};
use egret_streamlet::{Builder, Sink, Streamlet};

use crate::sink::{FileSinkConfig, LineFileWriter};
use crate::source::{FileSource, FileSourceConfig};

/// A source streamlet of the lines of `config.path` (a [`FileSource`] per task; under effectively-once its
/// positions are checkpointed, under at-least-once failed lines replay).
pub fn file_lines(builder: &Builder, config: FileSourceConfig) -> Streamlet<String> {
    builder.new_spout_source(
        move || FileSource::new(config.clone()),
        |t| Ok(t.get_str("line")?.to_string()),
    )
}

/// A Streamlet sink writing each element's `Display` as a line into atomic rolled files (see [`crate::sink`]).
/// Under at-least-once the Streamlet runtime acks an element when `put` returns, so the sink hands each line to the
/// operating system at once (a killed process loses nothing acked; a machine crash may lose what was not fsynced
/// yet, which the [`crate::FileSink`] bolt does not).
pub struct LineFileSink<T> {
    writer: LineFileWriter,
    line: String,
    _element: PhantomData<fn(T)>,
}

impl<T> LineFileSink<T> {
    pub fn new(config: FileSinkConfig) -> Self {
        LineFileSink {
            writer: LineFileWriter::new(config),
            line: String::new(),
            _element: PhantomData,
        }
    }
}

impl<T: Display + Send + 'static> Sink<T> for LineFileSink<T> {
    fn setup(&mut self, ctx: &TopologyContext) -> Result<(), UserError> {
        self.writer.prepare(ctx)
    }

    fn put(&mut self, element: T) -> Result<(), UserError> {
        use std::fmt::Write as _;
        self.line.clear();
        let _ = write!(self.line, "{element}");
        if self.line.contains('\n') {
            self.line = self.line.replace('\n', "\\n");
        }
        self.writer.write_line(&self.line)?;
        match self.writer.mode() {
            ReliabilityMode::EffectivelyOnce => {}
            ReliabilityMode::AtLeastOnce => {
                self.writer.flush()?;
                if self.writer.roll_due() {
                    self.writer.roll()?;
                }
            }
            ReliabilityMode::AtMostOnce => {
                if self.writer.roll_due() {
                    self.writer.roll()?;
                }
            }
        }
        Ok(())
    }

    fn cleanup(&mut self) {
        self.writer.close();
    }

    fn state(&mut self) -> Option<&mut dyn Stateful> {
        Some(self)
    }
}

impl<T> Stateful for LineFileSink<T> {
    fn init_state(&mut self, restored: Option<&[u8]>) -> Result<(), UserError> {
        Ok(self.writer.restore(restored)?)
    }

    fn pre_save(&mut self, checkpoint: CheckpointId, out: &mut Vec<u8>) -> Result<(), UserError> {
        Ok(self.writer.save(checkpoint, out)?)
    }

    fn post_save(&mut self, checkpoint: CheckpointId) {
        if let Err(e) = self.writer.commit(checkpoint) {
            tracing::warn!(checkpoint = checkpoint.0, error = %e, "file sink: commit failed");
        }
    }

    fn pre_restore(&mut self, _checkpoint: Option<CheckpointId>) {
        self.writer.discard_unsaved();
    }
}
