//! The line-file source: a spout that emits each line of a file, or of every file of a directory, optionally
//! following lines appended later (like `tail -F`).
//!
//! Each task reads the files whose name hashes to it (FNV-1a of the name, modulo the parallelism), so every file is
//! read by exactly one task and a new file in a followed directory always goes to the same task. A task reads its
//! files in name order. Its position is a byte offset per file name:
//!
//! - **effectively-once**: the positions are the spout's checkpointed state ([`Stateful`]); a rollback reopens each
//!   file at the offset saved with the checkpoint, so every line is emitted again exactly from where the restored
//!   checkpoint's cut was.
//! - **at-least-once**: every line is emitted with a message id; a failed (or timed out) line is emitted again, with
//!   the same id, before any new line. A task that restarts (its process killed) has no saved position and reads
//!   its files again from the start: at least once, with duplicates.
//! - **at-most-once**: lines are emitted once, untracked.
//!
//! Positions assume files are only appended to. A followed file that shrinks (truncated) or whose inode changes
//! (replaced, as log rotation does) is read again from its start, and says so in the log.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use egret_api::metrics::Counter;
use egret_api::{
    CheckpointId, KeyedState, MessageId, OutputDeclarer, ReliabilityMode, Spout, SpoutCollector, Stateful,
    TopologyContext, UserError,
};

/// The fields a file source emits: the file's name (relative to the source's directory, or the file's own name),
/// the byte offset where the line starts, and the line without its line ending.
pub const FILE_SOURCE_FIELDS: [&str; 3] = ["file", "offset", "line"];

/// Lines emitted per `next_tuple` call at most: the runtime gets control back often enough to send and take acks.
const LINES_PER_CALL: usize = 64;

/// Why a file source cannot start.
#[derive(Debug, thiserror::Error)]
pub enum FileSourceError {
    #[error("file source {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("file source {path}: neither a regular file nor a directory")]
    NotAFile { path: PathBuf },
    #[error("file source: the saved position does not decode: {0}")]
    BadState(egret_api::StateError),
}

/// Where and how a [`FileSource`] reads.
#[derive(Debug, Clone)]
pub struct FileSourceConfig {
    /// A regular file, or a directory whose regular files (names not starting with '.') are read.
    pub path: PathBuf,
    /// Keep reading: emit lines appended later and, for a directory, files created later. A line is emitted only once
    /// its newline is written. Without it, the source reads what is there (a last line without newline included)
    /// and then emits nothing more.
    pub follow: bool,
    /// How often a following source that reached the end of everything looks for new lines and files.
    pub poll_interval: Duration,
}

impl FileSourceConfig {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileSourceConfig {
            path: path.into(),
            follow: false,
            poll_interval: Duration::from_millis(100),
        }
    }

    pub fn follow(mut self, follow: bool) -> Self {
        self.follow = follow;
        self
    }

    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }
}

/// One file this task reads.
struct TrackedFile {
    name: String,
    path: PathBuf,
    /// The byte offset of the next line to emit.
    offset: u64,
    /// Open at `offset` while there may be more to read; `None` before the first read and after a seek is needed.
    reader: Option<BufReader<File>>,
    /// The inode the reader was opened on: another one at the same path means the file was replaced.
    inode: Option<u64>,
    /// Read to its end (without follow: for good).
    at_end: bool,
}

/// A line emitted under at-least-once whose tree is not complete yet.
struct PendingLine {
    file: String,
    offset: u64,
    line: String,
}

/// The line-file source spout (see the module documentation).
pub struct FileSource {
    config: FileSourceConfig,
    mode: ReliabilityMode,
    task_index: u64,
    tasks: u64,
    /// This task's files, in name order.
    files: Vec<TrackedFile>,
    /// Positions restored by `init_state`, applied when the files are listed at `open`.
    restored: BTreeMap<String, u64>,
    /// The file being read (an index into `files`).
    current: usize,
    last_scan: Option<Instant>,
    next_id: MessageId,
    pending: HashMap<MessageId, PendingLine>,
    replay: VecDeque<MessageId>,
    line: Vec<u8>,
    lines_emitted: Option<Counter>,
}

impl FileSource {
    pub fn new(config: FileSourceConfig) -> Self {
        FileSource {
            config,
            mode: ReliabilityMode::AtMostOnce,
            task_index: 0,
            tasks: 1,
            files: Vec::new(),
            restored: BTreeMap::new(),
            current: 0,
            last_scan: None,
            next_id: 0,
            pending: HashMap::new(),
            replay: VecDeque::new(),
            line: Vec::new(),
            lines_emitted: None,
        }
    }

    /// The positions of this task's files: name → byte offset of the next line.
    pub fn positions(&self) -> BTreeMap<String, u64> {
        self.files.iter().map(|f| (f.name.clone(), f.offset)).collect()
    }

    /// Lines emitted under at-least-once whose trees are not complete yet.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Adds the files this task reads that are not tracked yet; their position is the restored one, or 0.
    fn scan(&mut self) -> Result<(), FileSourceError> {
        let root = &self.config.path;
        let meta = std::fs::metadata(root).map_err(|source| FileSourceError::Io {
            path: root.clone(),
            source,
        })?;
        let found: Vec<(String, PathBuf)> = if meta.is_file() {
            let name = root
                .file_name()
                .map_or_else(|| root.display().to_string(), |n| n.to_string_lossy().into_owned());
            vec![(name, root.clone())]
        } else if meta.is_dir() {
            let entries = std::fs::read_dir(root).map_err(|source| FileSourceError::Io {
                path: root.clone(),
                source,
            })?;
            let mut found = Vec::new();
            for entry in entries {
                let entry = entry.map_err(|source| FileSourceError::Io {
                    path: root.clone(),
                    source,
                })?;
                let name = entry.file_name().to_string_lossy().into_owned();
                // Hidden files are where writers keep what is not finished (a file sink's temporary files).
                if name.starts_with('.') || !entry.file_type().is_ok_and(|t| t.is_file()) {
                    continue;
                }
                found.push((name, entry.path()));
            }
            found
        } else {
            return Err(FileSourceError::NotAFile { path: root.clone() });
        };
        // The file being read stays the current one when others are added before it.
        let current = self.files.get(self.current).map(|f| f.name.clone());
        let mut added = false;
        for (name, path) in found {
            if file_task(&name, self.tasks) != self.task_index || self.files.iter().any(|f| f.name == name) {
                continue;
            }
            let offset = self.restored.get(&name).copied().unwrap_or(0);
            tracing::debug!(file = %path.display(), offset, "file source: reading a file");
            self.files.push(TrackedFile {
                name,
                path,
                offset,
                reader: None,
                inode: None,
                at_end: false,
            });
            added = true;
        }
        if added {
            self.files.sort_by(|a, b| a.name.cmp(&b.name));
            self.current = current
                .and_then(|n| self.files.iter().position(|f| f.name == n))
                .unwrap_or(0);
        }
        self.last_scan = Some(Instant::now());
        Ok(())
    }

    /// Under follow: looks again at every file (grown, truncated, replaced) and for new ones.
    fn rescan(&mut self) {
        if let Err(e) = self.scan() {
            tracing::warn!(error = %e, "file source: cannot list the files to follow");
        }
        for f in &mut self.files {
            let Ok(meta) = std::fs::metadata(&f.path) else {
                continue;
            };
            if f.inode.is_some_and(|i| i != meta.ino()) || meta.len() < f.offset {
                tracing::warn!(
                    file = %f.path.display(),
                    offset = f.offset,
                    len = meta.len(),
                    "file source: the file was truncated or replaced; reading it again from its start"
                );
                f.offset = 0;
                f.reader = None;
                f.inode = None;
                f.at_end = false;
            } else if meta.len() > f.offset {
                f.at_end = false;
            }
        }
        self.current = 0;
    }

    /// Reads the next line of the current file into `self.line`; returns the file's index and the line's offset,
    /// or `None` when every file is at its end for now.
    fn read_line(&mut self, out: &mut SpoutCollector<'_>) -> Option<(usize, u64)> {
        while self.current < self.files.len() {
            let follow = self.config.follow;
            let f = &mut self.files[self.current];
            if f.at_end {
                self.current += 1;
                continue;
            }
            if f.reader.is_none() {
                match open_at(&f.path, f.offset) {
                    Ok((reader, inode)) => {
                        f.reader = Some(reader);
                        f.inode = Some(inode);
                    }
                    Err(e) => {
                        // A file listed a moment ago may be gone; following, it is looked for again later.
                        tracing::warn!(file = %f.path.display(), error = %e, "file source: cannot open");
                        out.report_error(&e);
                        f.at_end = true;
                        continue;
                    }
                }
            }
            let Some(reader) = f.reader.as_mut() else {
                continue;
            };
            self.line.clear();
            match reader.read_until(b'\n', &mut self.line) {
                Ok(0) => {
                    f.at_end = true;
                    self.current += 1;
                }
                Ok(n) => {
                    let complete = self.line.last() == Some(&b'\n');
                    if !complete && follow {
                        // The rest of the line is not written yet: read it again, whole, later.
                        f.reader = None;
                        f.at_end = true;
                        self.current += 1;
                        continue;
                    }
                    let offset = f.offset;
                    f.offset += n as u64;
                    if complete {
                        self.line.pop();
                        if self.line.last() == Some(&b'\r') {
                            self.line.pop();
                        }
                    }
                    return Some((self.current, offset));
                }
                Err(e) => {
                    tracing::warn!(file = %f.path.display(), offset = f.offset, error = %e, "file source: read failed");
                    out.report_error(&e);
                    f.reader = None;
                    f.at_end = true;
                    self.current += 1;
                }
            }
        }
        None
    }
}

/// Opens `path` positioned at `offset`, with its inode.
fn open_at(path: &Path, offset: u64) -> std::io::Result<(BufReader<File>, u64)> {
    let mut file = File::open(path)?;
    let meta = file.metadata()?;
    // A file shorter than the saved position was not only appended to: start again rather than emit nothing.
    let offset = if meta.len() < offset {
        tracing::warn!(file = %path.display(), offset, len = meta.len(), "file source: shorter than the saved position; reading it from its start");
        0
    } else {
        offset
    };
    file.seek(SeekFrom::Start(offset))?;
    Ok((BufReader::with_capacity(64 * 1024, file), meta.ino()))
}

/// The task (by index within the component) that reads the file named `name`: FNV-1a of the name, modulo `tasks`.
/// A stable hash, not the position in a listing, so a file created later does not move the others.
pub fn file_task(name: &str, tasks: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h % tasks.max(1)
}

impl Spout for FileSource {
    fn declare_outputs(&self, out: &mut OutputDeclarer) {
        out.declare(FILE_SOURCE_FIELDS);
    }

    fn open(&mut self, ctx: &TopologyContext) -> Result<(), UserError> {
        self.mode = ctx.config().reliability_mode()?;
        self.task_index = u64::from(ctx.component_index());
        self.tasks = u64::from(ctx.parallelism().max(1));
        self.scan()?;
        self.lines_emitted = Some(ctx.register_counter("file-source-lines", Duration::from_secs(1))?);
        tracing::info!(
            path = %self.config.path.display(),
            follow = self.config.follow,
            files = self.files.len(),
            mode = self.mode.as_str(),
            "file source: open"
        );
        Ok(())
    }

    /// A rescale under at-least-once or at-most-once (effectively-once makes a new source from the checkpoint):
    /// drop the files this task no longer reads and list again to take those it now reads, from their start
    /// (offsets are not shared outside checkpoints, so a moved file may be read twice, never skipped).
    fn update(&mut self, ctx: &TopologyContext) {
        let (index, tasks) = (u64::from(ctx.component_index()), u64::from(ctx.parallelism().max(1)));
        if (index, tasks) == (self.task_index, self.tasks) {
            return;
        }
        (self.task_index, self.tasks) = (index, tasks);
        let current = self.files.get(self.current).map(|f| f.name.clone());
        self.files.retain(|f| file_task(&f.name, tasks) == index);
        self.current = current
            .and_then(|c| self.files.iter().position(|f| f.name == c))
            .unwrap_or(0);
        if let Err(e) = self.scan() {
            tracing::warn!(error = %e, "file source: cannot list the files after a rescale");
        }
        tracing::info!(index, tasks, files = self.files.len(), "file source rescaled");
    }

    fn next_tuple(&mut self, out: &mut SpoutCollector<'_>) {
        let mut emitted = 0;
        while emitted < LINES_PER_CALL {
            if let Some(id) = self.replay.pop_front() {
                if let Some(p) = self.pending.get(&id) {
                    out.emit_with_id(id, (p.file.as_str(), p.offset as i64, p.line.as_str()));
                    emitted += 1;
                }
                continue;
            }
            let Some((index, offset)) = self.read_line(out) else {
                if self.config.follow && self.last_scan.is_none_or(|t| t.elapsed() >= self.config.poll_interval) {
                    self.rescan();
                }
                break;
            };
            let line = String::from_utf8_lossy(&self.line);
            let file = self.files[index].name.as_str();
            if self.mode == ReliabilityMode::AtLeastOnce {
                let id = self.next_id;
                self.next_id += 1;
                out.emit_with_id(id, (file, offset as i64, line.as_ref()));
                self.pending.insert(
                    id,
                    PendingLine {
                        file: file.to_string(),
                        offset,
                        line: line.into_owned(),
                    },
                );
            } else {
                out.emit((file, offset as i64, line.as_ref()));
            }
            emitted += 1;
        }
        if let Some(c) = &self.lines_emitted {
            c.incr_by(emitted as u64);
        }
    }

    fn ack(&mut self, id: MessageId) {
        self.pending.remove(&id);
    }

    fn fail(&mut self, id: MessageId) {
        if self.pending.contains_key(&id) {
            self.replay.push_back(id);
        }
    }

    fn stateful(&mut self) -> Option<&mut dyn Stateful> {
        Some(self)
    }
}

impl Stateful for FileSource {
    fn init_state(&mut self, restored: Option<&[u8]>) -> Result<(), UserError> {
        // Every file's position after a rescale (the state is saved whole), this task's own otherwise.
        self.restored = KeyedState::<String, u64>::restore(restored)
            .map_err(FileSourceError::BadState)?
            .into_map()
            .into_iter()
            .collect();
        Ok(())
    }

    fn pre_save(&mut self, _checkpoint: CheckpointId, out: &mut Vec<u8>) -> Result<(), UserError> {
        // Files of the restored state this task has not listed again (deleted since) are kept: if one reappears it
        // is not read twice. Only this task's files: after a rescale every task restores every file's position, and
        // a stale copy must not be saved again beside the owner's.
        let mut state = KeyedState::new();
        for (name, offset) in self
            .restored
            .iter()
            .filter(|(n, _)| file_task(n, self.tasks) == self.task_index)
        {
            state.insert(name.clone(), *offset);
        }
        for (name, offset) in self.positions() {
            state.insert(name, offset);
        }
        Ok(state.save_whole(out)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_source_assigns_each_file_to_one_task_stably() {
        let names: Vec<String> = (0..200).map(|i| format!("part-{i:04}.log")).collect();
        for tasks in 1..5u64 {
            let mut per_task = vec![0; tasks as usize];
            for n in &names {
                let t = file_task(n, tasks);
                assert!(t < tasks);
                assert_eq!(t, file_task(n, tasks), "the same name always goes to the same task");
                per_task[t as usize] += 1;
            }
            assert!(
                per_task.iter().all(|&c| c >= 200 / tasks as usize / 2),
                "{tasks} tasks: {per_task:?}"
            );
        }
    }
}
