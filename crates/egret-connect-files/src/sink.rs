//! The file sink: a bolt that writes one line per tuple into rolled files that appear atomically.
//!
//! Lines are written to a hidden temporary file in the output directory (`.<name>.inprogress`); a file becomes
//! visible under its final name only whole: flushed, fsynced, renamed, and the directory fsynced. A reader of the
//! directory (another topology's [`crate::FileSource`], a batch job) never sees half a file. Each task writes its
//! own files (`<prefix>-<task>-...`), so tasks never collide.
//!
//! - **at-most-once** and **at-least-once**: a file rolls (becomes visible) when it reaches `roll_bytes` or is
//!   `roll_interval` old (checked at each tuple and at tick tuples: give the sink a tick,
//!   `topology.tick.tuple.freq.ms`, so an idle sink still rolls). Files are `<prefix>-<task>-<seq><suffix>` with a
//!   sequence number that grows. Under at-least-once a line is acked only once it is fsynced (every `sync_lines`
//!   lines or `sync_interval`), so a line acked is never lost; a write that fails fails the unsynced lines, which
//!   replay. A task that restarts makes the temporary file it left visible (its lines were acked, or under
//!   at-most-once simply written), cut after its last whole line. Replays can write a line twice.
//! - **effectively-once**: output is committed with the checkpoints. At a checkpoint's `pre_save` the lines written
//!   since the previous one are fsynced and renamed to a hidden pending file named after the checkpoint; when the
//!   checkpoint is complete (`post_save`) the pending files up to it are renamed to
//!   `<prefix>-<task>-c<checkpoint><suffix>`. On a rollback to checkpoint C (or a restart restoring it) the pending
//!   files up to C are committed (C is complete, only its `post_save` was lost) and the later ones and the unsaved
//!   temporary file are deleted: their lines are produced again by the replay. So the directory holds each line
//!   exactly once. Files roll at checkpoints only.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use egret_api::metrics::Counter;
use egret_api::value::ValueRef;
use egret_api::{
    Bolt, BoltCollector, CheckpointId, OutputDeclarer, OwnedTuple, ReliabilityMode, Stateful, TopologyContext, Tuple,
    UserError,
};

/// Writes a tuple as one line (without the newline) into the string it is given.
pub type LineFormat = Arc<dyn Fn(&Tuple<'_>, &mut String) -> Result<(), UserError> + Send + Sync>;

/// Why the file sink could not do something.
#[derive(Debug, thiserror::Error)]
pub enum FileSinkError {
    #[error("file sink {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("file sink: the saved state is {0} bytes, not 8 (a checkpoint id)")]
    BadState(usize),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> FileSinkError + '_ {
    move |source| FileSinkError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where and how a [`FileSink`] writes.
#[derive(Debug, Clone)]
pub struct FileSinkConfig {
    /// The output directory (created if missing).
    pub dir: PathBuf,
    /// File names start with it: `<prefix>-<task>-...`.
    pub prefix: String,
    /// File names end with it, e.g. `.txt`.
    pub suffix: String,
    /// At-most/at-least-once: roll when the file reaches this many bytes.
    pub roll_bytes: u64,
    /// At-most/at-least-once: roll when the file is this old.
    pub roll_interval: Duration,
    /// At-least-once: fsync (and then ack) after this many lines...
    pub sync_lines: usize,
    /// ... or when the oldest unsynced line is this old.
    pub sync_interval: Duration,
}

impl FileSinkConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FileSinkConfig {
            dir: dir.into(),
            prefix: "part".into(),
            suffix: ".txt".into(),
            roll_bytes: 64 << 20,
            roll_interval: Duration::from_secs(60),
            sync_lines: 1024,
            sync_interval: Duration::from_millis(200),
        }
    }

    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    pub fn suffix(mut self, suffix: impl Into<String>) -> Self {
        self.suffix = suffix.into();
        self
    }

    pub fn roll_bytes(mut self, bytes: u64) -> Self {
        self.roll_bytes = bytes;
        self
    }

    pub fn roll_interval(mut self, interval: Duration) -> Self {
        self.roll_interval = interval;
        self
    }

    pub fn sync(mut self, lines: usize, interval: Duration) -> Self {
        self.sync_lines = lines.max(1);
        self.sync_interval = interval;
        self
    }
}

/// The default line: the tuple's values separated by tabs (strings as they are, with newlines and tabs escaped as
/// `\n` and `\t`; numbers and booleans as Rust prints them; null as nothing; bytes in hex; lists and maps as debug).
pub fn tab_separated(tuple: &Tuple<'_>, line: &mut String) -> Result<(), UserError> {
    for (i, v) in tuple.values().enumerate() {
        if i > 0 {
            line.push('\t');
        }
        match v? {
            ValueRef::Null => {}
            ValueRef::Bool(b) => {
                let _ = write!(line, "{b}");
            }
            ValueRef::I64(n) => {
                let _ = write!(line, "{n}");
            }
            ValueRef::F64(x) => {
                let _ = write!(line, "{x}");
            }
            ValueRef::Str(s) => escape_into(s, line),
            ValueRef::Bytes(b) => {
                for byte in b {
                    let _ = write!(line, "{byte:02x}");
                }
            }
            other => escape_into(&format!("{other:?}"), line),
        }
    }
    Ok(())
}

fn escape_into(s: &str, line: &mut String) {
    for c in s.chars() {
        match c {
            '\n' => line.push_str("\\n"),
            '\r' => line.push_str("\\r"),
            '\t' => line.push_str("\\t"),
            '\\' => line.push_str("\\\\"),
            c => line.push(c),
        }
    }
}

/// The file names one sink task uses and the directory operations on them. I/O only; no policy.
pub(crate) struct TaskFiles {
    dir: PathBuf,
    prefix: String,
    suffix: String,
    task: u32,
}

/// What a sink task found in the directory when it started.
#[derive(Debug, Default)]
pub(crate) struct Found {
    /// Pending (saved, not committed) files: checkpoint and path.
    pub pending: Vec<(u64, PathBuf)>,
    /// Temporary files being written when the task stopped.
    pub in_progress: Vec<PathBuf>,
    /// The greatest sequence number of a rolled or temporary file.
    pub max_seq: Option<u64>,
}

impl TaskFiles {
    pub fn new(config: &FileSinkConfig, task: u32) -> Self {
        TaskFiles {
            dir: config.dir.clone(),
            prefix: config.prefix.clone(),
            suffix: config.suffix.clone(),
            task,
        }
    }

    fn stem(&self) -> String {
        format!("{}-{:05}-", self.prefix, self.task)
    }

    /// A rolled file (at-most/at-least-once).
    pub fn rolled(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{}{seq:010}{}", self.stem(), self.suffix))
    }

    pub fn rolling(&self, seq: u64) -> PathBuf {
        self.dir
            .join(format!(".{}{seq:010}{}.inprogress", self.stem(), self.suffix))
    }

    /// A committed checkpoint's file (effectively-once).
    pub fn committed(&self, checkpoint: u64) -> PathBuf {
        self.dir
            .join(format!("{}c{checkpoint:020}{}", self.stem(), self.suffix))
    }

    pub fn pending(&self, checkpoint: u64) -> PathBuf {
        self.dir
            .join(format!(".{}c{checkpoint:020}{}.pending", self.stem(), self.suffix))
    }

    /// Effectively-once: what is written since the last checkpoint.
    pub fn unsaved(&self) -> PathBuf {
        self.dir
            .join(format!(".{}unsaved{}.inprogress", self.stem(), self.suffix))
    }

    pub fn create_dir(&self) -> Result<(), FileSinkError> {
        std::fs::create_dir_all(&self.dir).map_err(io_err(&self.dir))
    }

    /// This task's files in the directory.
    pub fn find(&self) -> Result<Found, FileSinkError> {
        let stem = self.stem();
        let hidden = format!(".{stem}");
        let mut found = Found::default();
        for entry in std::fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let entry = entry.map_err(io_err(&self.dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(rest) = name.strip_prefix(&hidden) {
                if let Some(ck) = rest
                    .strip_prefix('c')
                    .and_then(|r| r.strip_suffix(".pending"))
                    .and_then(|r| r.strip_suffix(self.suffix.as_str()))
                    .and_then(|n| n.parse::<u64>().ok())
                {
                    found.pending.push((ck, entry.path()));
                } else if rest.ends_with(".inprogress") {
                    if let Some(seq) = rest
                        .strip_suffix(".inprogress")
                        .and_then(|r| r.strip_suffix(self.suffix.as_str()))
                        .and_then(|n| n.parse::<u64>().ok())
                    {
                        found.max_seq = found.max_seq.max(Some(seq));
                    }
                    found.in_progress.push(entry.path());
                }
            } else if let Some(seq) = name
                .strip_prefix(&stem)
                .and_then(|r| r.strip_suffix(self.suffix.as_str()))
                .and_then(|n| n.parse::<u64>().ok())
            {
                found.max_seq = found.max_seq.max(Some(seq));
            }
        }
        found.pending.sort();
        Ok(found)
    }

    /// Makes renames and removals in the directory durable.
    pub fn sync_dir(&self) -> Result<(), FileSinkError> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&self.dir))
    }

    pub fn rename(&self, from: &Path, to: &Path) -> Result<(), FileSinkError> {
        std::fs::rename(from, to).map_err(io_err(from))
    }

    pub fn remove(&self, path: &Path) -> Result<(), FileSinkError> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(path)(e)),
            _ => Ok(()),
        }
    }
}

/// Cuts a file left by a killed writer after its last whole line (a write may have been cut short).
fn cut_after_last_line(path: &Path) -> Result<(), FileSinkError> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if keep < bytes.len() {
        let f = OpenOptions::new().write(true).open(path).map_err(io_err(path))?;
        f.set_len(keep as u64).map_err(io_err(path))?;
        f.sync_all().map_err(io_err(path))?;
    }
    Ok(())
}

/// The file being written.
struct OpenFile {
    path: PathBuf,
    writer: BufWriter<File>,
    bytes: u64,
    opened: Instant,
    seq: u64,
}

impl OpenFile {
    fn create(path: PathBuf, seq: u64) -> Result<Self, FileSinkError> {
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)
            .map_err(io_err(&path))?;
        Ok(OpenFile {
            writer: BufWriter::with_capacity(64 * 1024, file),
            path,
            bytes: 0,
            opened: Instant::now(),
            seq,
        })
    }

    fn write_line(&mut self, line: &str) -> Result<(), FileSinkError> {
        self.writer
            .write_all(line.as_bytes())
            .and_then(|()| self.writer.write_all(b"\n"))
            .map_err(io_err(&self.path))?;
        self.bytes += line.len() as u64 + 1;
        Ok(())
    }

    /// Written to the file and on disk.
    fn sync(&mut self) -> Result<(), FileSinkError> {
        self.writer.flush().map_err(io_err(&self.path))?;
        self.writer.get_ref().sync_data().map_err(io_err(&self.path))
    }
}

/// The writing side of a file sink, shared by the bolt and the Streamlet sink: one task's files, its mode's rules.
pub struct LineFileWriter {
    config: FileSinkConfig,
    mode: ReliabilityMode,
    files: Option<TaskFiles>,
    open: Option<OpenFile>,
    next_seq: u64,
    /// Effectively-once: the checkpoint `init_state` restored (`None`: a clean start).
    restored: Option<u64>,
    /// Effectively-once: checkpoints whose pending file awaits the checkpoint's completion.
    pending: Vec<u64>,
    lines_written: Option<Counter>,
    files_committed: Option<Counter>,
}

impl LineFileWriter {
    pub fn new(config: FileSinkConfig) -> Self {
        LineFileWriter {
            config,
            mode: ReliabilityMode::AtMostOnce,
            files: None,
            open: None,
            next_seq: 0,
            restored: None,
            pending: Vec::new(),
            lines_written: None,
            files_committed: None,
        }
    }

    pub fn config(&self) -> &FileSinkConfig {
        &self.config
    }

    pub fn mode(&self) -> ReliabilityMode {
        self.mode
    }

    /// Starts the task: settles what an earlier run of this task left in the directory (see the module doc).
    pub fn prepare(&mut self, ctx: &TopologyContext) -> Result<(), UserError> {
        self.mode = ctx.config().reliability_mode()?;
        let files = TaskFiles::new(&self.config, ctx.task_id().0);
        files.create_dir()?;
        let found = files.find()?;
        if self.mode == ReliabilityMode::EffectivelyOnce {
            for (checkpoint, path) in &found.pending {
                if self.restored.is_some_and(|r| *checkpoint <= r) {
                    files.rename(path, &files.committed(*checkpoint))?;
                    tracing::info!(checkpoint, task = ctx.task_id().0, "file sink: committed at restore");
                } else {
                    files.remove(path)?;
                    tracing::info!(
                        checkpoint,
                        task = ctx.task_id().0,
                        "file sink: discarded output of a rolled-back checkpoint"
                    );
                }
            }
            files.remove(&files.unsaved())?;
        } else {
            for path in &found.in_progress {
                let rolled = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_prefix('.'))
                    .and_then(|n| n.strip_suffix(".inprogress"))
                    .map(|n| files.dir.join(n));
                match rolled {
                    Some(rolled) => {
                        cut_after_last_line(path)?;
                        files.rename(path, &rolled)?;
                        tracing::info!(file = %rolled.display(), "file sink: rolled the file an earlier run left");
                    }
                    None => files.remove(path)?,
                }
            }
        }
        files.sync_dir()?;
        self.next_seq = found.max_seq.map_or(0, |s| s + 1);
        self.files = Some(files);
        self.lines_written = Some(ctx.register_counter("file-sink-lines", Duration::from_secs(1))?);
        self.files_committed = Some(ctx.register_counter("file-sink-files", Duration::from_secs(1))?);
        Ok(())
    }

    fn task_files(&self) -> Result<&TaskFiles, FileSinkError> {
        self.files.as_ref().ok_or_else(|| FileSinkError::Io {
            path: self.config.dir.clone(),
            source: std::io::Error::other("the sink is not prepared"),
        })
    }

    /// Appends one line (without its newline). Under at-most/at-least-once it may roll the file first.
    pub fn write_line(&mut self, line: &str) -> Result<(), FileSinkError> {
        if self.open.is_none() {
            let files = self.task_files()?;
            let (path, seq) = if self.mode == ReliabilityMode::EffectivelyOnce {
                (files.unsaved(), 0)
            } else {
                (files.rolling(self.next_seq), self.next_seq)
            };
            self.open = Some(OpenFile::create(path, seq)?);
            self.next_seq += 1;
        }
        if let Some(f) = self.open.as_mut() {
            f.write_line(line)?;
        }
        if let Some(c) = &self.lines_written {
            c.incr();
        }
        Ok(())
    }

    /// Written lines are handed to the operating system (they survive the process, not the machine).
    pub fn flush(&mut self) -> Result<(), FileSinkError> {
        match self.open.as_mut() {
            Some(f) => f.writer.flush().map_err(io_err(&f.path)),
            None => Ok(()),
        }
    }

    /// Written lines are on disk.
    pub fn sync(&mut self) -> Result<(), FileSinkError> {
        match self.open.as_mut() {
            Some(f) => f.sync(),
            None => Ok(()),
        }
    }

    /// At-most/at-least-once: the open file is big or old enough to roll.
    pub fn roll_due(&self) -> bool {
        self.open
            .as_ref()
            .is_some_and(|f| f.bytes >= self.config.roll_bytes || f.opened.elapsed() >= self.config.roll_interval)
    }

    /// At-most/at-least-once: makes the open file visible under its final name.
    pub fn roll(&mut self) -> Result<(), FileSinkError> {
        let Some(mut f) = self.open.take() else {
            return Ok(());
        };
        f.sync()?;
        let files = self.task_files()?;
        let rolled = files.rolled(f.seq);
        files.rename(&f.path, &rolled)?;
        files.sync_dir()?;
        tracing::debug!(file = %rolled.display(), bytes = f.bytes, "file sink: rolled");
        if let Some(c) = &self.files_committed {
            c.incr();
        }
        Ok(())
    }

    /// Forgets the open file after a failed write (its lines are failed and replay); it is rolled as it is at the
    /// task's next start, or now if it can be.
    pub fn abandon_open_file(&mut self) {
        if let Some(f) = self.open.take() {
            tracing::warn!(file = %f.path.display(), "file sink: abandoning the file after a failed write");
        }
    }

    /// Effectively-once `pre_save`: the lines since the last checkpoint become the checkpoint's pending file.
    pub fn save(&mut self, checkpoint: CheckpointId, out: &mut Vec<u8>) -> Result<(), FileSinkError> {
        if let Some(mut f) = self.open.take() {
            f.sync()?;
            let files = self.task_files()?;
            files.rename(&f.path, &files.pending(checkpoint.0))?;
            files.sync_dir()?;
            self.pending.push(checkpoint.0);
        }
        out.extend_from_slice(&checkpoint.0.to_le_bytes());
        Ok(())
    }

    /// Effectively-once `post_save`: commits the pending files of `checkpoint` and older ones.
    pub fn commit(&mut self, checkpoint: CheckpointId) -> Result<(), FileSinkError> {
        let files = self.task_files()?;
        let mut committed = 0;
        for &c in self.pending.iter().filter(|&&c| c <= checkpoint.0) {
            let (from, to) = (files.pending(c), files.committed(c));
            match std::fs::rename(&from, &to) {
                Ok(()) => committed += 1,
                // Committed by an earlier attempt that failed after this rename.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && to.exists() => {}
                Err(source) => return Err(FileSinkError::Io { path: from, source }),
            }
        }
        if committed > 0 {
            files.sync_dir()?;
        }
        self.pending.retain(|&c| c > checkpoint.0);
        if let Some(c) = &self.files_committed {
            c.incr_by(committed);
        }
        Ok(())
    }

    /// Effectively-once `init_state`: the checkpoint being restored, whose pending output is committed at prepare.
    pub fn restore(&mut self, restored: Option<&[u8]>) -> Result<(), FileSinkError> {
        self.restored = match restored {
            None => None,
            Some(b) => Some(u64::from_le_bytes(
                b.try_into().map_err(|_| FileSinkError::BadState(b.len()))?,
            )),
        };
        Ok(())
    }

    /// Effectively-once `pre_restore`: what is not saved is dropped (the replay writes it again).
    pub fn discard_unsaved(&mut self) {
        if let Some(f) = self.open.take()
            && let Err(e) = std::fs::remove_file(&f.path)
        {
            tracing::warn!(file = %f.path.display(), error = %e, "file sink: cannot remove unsaved output");
        }
    }

    /// At stop: under at-most/at-least-once the open file is rolled; under effectively-once unsaved output stays
    /// hidden (it belongs to no checkpoint).
    pub fn close(&mut self) {
        if self.mode != ReliabilityMode::EffectivelyOnce
            && let Err(e) = self.roll()
        {
            tracing::warn!(error = %e, "file sink: cannot roll the last file");
        }
    }
}

/// The file sink bolt (see the module documentation). Declares no output.
pub struct FileSink {
    writer: LineFileWriter,
    format: LineFormat,
    line: String,
    /// At-least-once: written, not yet fsynced, so not yet acked.
    unsynced: Vec<OwnedTuple>,
    oldest_unsynced: Option<Instant>,
}

impl FileSink {
    /// Writes each tuple as its tab-separated values.
    pub fn new(config: FileSinkConfig) -> Self {
        Self::with_format(config, Arc::new(tab_separated))
    }

    pub fn with_format(config: FileSinkConfig, format: LineFormat) -> Self {
        FileSink {
            writer: LineFileWriter::new(config),
            format,
            line: String::new(),
            unsynced: Vec::new(),
            oldest_unsynced: None,
        }
    }

    /// At-least-once: fsyncs, then acks what was written; on failure fails it (it replays).
    fn sync_and_ack(&mut self, out: &mut BoltCollector<'_>) {
        if self.unsynced.is_empty() {
            return;
        }
        match self.writer.sync() {
            Ok(()) => {
                for t in self.unsynced.drain(..) {
                    out.ack(&t);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, lines = self.unsynced.len(), "file sink: sync failed; failing the lines");
                out.report_error(&e);
                self.writer.abandon_open_file();
                for t in self.unsynced.drain(..) {
                    out.fail(&t);
                }
            }
        }
        self.oldest_unsynced = None;
    }

    fn maybe_roll(&mut self, out: &mut BoltCollector<'_>) {
        if self.writer.mode() != ReliabilityMode::EffectivelyOnce && self.writer.roll_due() {
            self.sync_and_ack(out);
            if let Err(e) = self.writer.roll() {
                tracing::warn!(error = %e, "file sink: roll failed");
                out.report_error(&e);
            }
        }
    }
}

impl Bolt for FileSink {
    fn declare_outputs(&self, _out: &mut OutputDeclarer) {}

    fn prepare(&mut self, ctx: &TopologyContext) -> Result<(), UserError> {
        self.writer.prepare(ctx)
    }

    fn execute(&mut self, tuple: &Tuple<'_>, out: &mut BoltCollector<'_>) {
        let mode = self.writer.mode();
        if !tuple.is_tick() {
            self.line.clear();
            let written = (self.format)(tuple, &mut self.line)
                .and_then(|()| self.writer.write_line(&self.line).map_err(UserError::from));
            match written {
                Ok(()) if mode == ReliabilityMode::AtLeastOnce => {
                    self.unsynced.push(tuple.to_owned_tuple());
                    self.oldest_unsynced.get_or_insert_with(Instant::now);
                }
                Ok(()) => out.ack(tuple),
                Err(e) => {
                    out.report_error(&*e);
                    if mode == ReliabilityMode::AtLeastOnce {
                        self.writer.abandon_open_file();
                        for t in self.unsynced.drain(..) {
                            out.fail(&t);
                        }
                    }
                    out.fail(tuple);
                }
            }
        }
        if mode == ReliabilityMode::AtLeastOnce
            && (self.unsynced.len() >= self.writer.config().sync_lines
                || self
                    .oldest_unsynced
                    .is_some_and(|t| t.elapsed() >= self.writer.config().sync_interval))
        {
            self.sync_and_ack(out);
        }
        self.maybe_roll(out);
    }

    fn cleanup(&mut self) {
        self.writer.close();
    }

    fn stateful(&mut self) -> Option<&mut dyn Stateful> {
        Some(self)
    }
}

impl Stateful for FileSink {
    fn init_state(&mut self, restored: Option<&[u8]>) -> Result<(), UserError> {
        Ok(self.writer.restore(restored)?)
    }

    fn pre_save(&mut self, checkpoint: CheckpointId, out: &mut Vec<u8>) -> Result<(), UserError> {
        Ok(self.writer.save(checkpoint, out)?)
    }

    fn post_save(&mut self, checkpoint: CheckpointId) {
        if let Err(e) = self.writer.commit(checkpoint) {
            // The pending files stay; the next checkpoint's commit, or the next restore, commits them.
            tracing::warn!(checkpoint = checkpoint.0, error = %e, "file sink: commit failed");
        }
    }

    fn pre_restore(&mut self, _checkpoint: Option<CheckpointId>) {
        self.writer.discard_unsaved();
    }
}
