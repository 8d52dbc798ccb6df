//! Batch records: the binary format tuples, acks and fails travel in, between tasks in any mode.
//!
//! A batch is a sequence of records, each starting with a kind byte; integers are little-endian.
//!
//! ```text
//! DATA  1 | dest u32 | src u32 | stream u32 | key u64 | nroots u16 | values_len u32 | roots (12 B each) | values
//! ACK   2 | dest u32 | root u64 | xor u64        -- dest is the spout task that owns the root
//! FAIL  3 | dest u32 | root u64
//! MARKER 4 | dest u32 | src u32 | checkpoint u64  -- src's output to dest before checkpoint is all ahead of it
//! EPOCH 5 | dest u32 | epoch u32                  -- effectively-once: the rollback epoch the batch was sent in
//! ```
//!
//! `key` is 0 and `nroots` 0 when acking is off. A MARKER's checkpoint id only grows (a later checkpoint has a
//! greater id); the receiving task aligns its inputs on markers (`crate::checkpoint`), and [`Segments`] splits a
//! received batch at them. Values are `egret_api::value`'s canonical encoding and are not
//! checked here: a router forwards them as bytes, and the bolt's typed getters report corrupt values. This module
//! never panics on bytes from a peer: a malformed record ends the batch with a [`BatchError`].

use std::time::Instant;

use egret_api::{CheckpointId, Root, RootId, Roots, StreamIndex, TaskId};

pub const KIND_DATA: u8 = 1;
pub const KIND_ACK: u8 = 2;
pub const KIND_FAIL: u8 = 3;
pub const KIND_MARKER: u8 = 4;
pub const KIND_EPOCH: u8 = 5;
pub const DATA_HEADER_LEN: usize = 27;
pub const ACK_LEN: usize = 21;
pub const FAIL_LEN: usize = 13;
pub const MARKER_LEN: usize = 17;
pub const EPOCH_LEN: usize = 9;
/// The most roots a DATA record can carry (its `nroots` field is a u16).
pub const MAX_ROOTS: usize = u16::MAX as usize;
/// The largest encoded values a tuple may carry: a batch of one such tuple still fits a frame
/// (`egret_transport::DEFAULT_MAX_FRAME`, 16 MiB) with room for the batch that closes at [`BATCH_CLOSE_BYTES`].
pub const MAX_TUPLE_BYTES: usize = 8 * 1024 * 1024;
/// A batch closes once it holds this many bytes, whatever its tuple count.
pub const BATCH_CLOSE_BYTES: usize = 1024 * 1024;

/// A batch as it travels: the records, back to back.
pub type Batch = Vec<u8>;

/// One tuple as read from a batch; borrows the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataRecord<'a> {
    pub dest: TaskId,
    pub src: TaskId,
    pub stream: StreamIndex,
    pub key: u64,
    pub roots: Roots<'a>,
    pub values: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record<'a> {
    Data(DataRecord<'a>),
    Ack {
        dest: TaskId,
        root: RootId,
        xor: u64,
    },
    Fail {
        dest: TaskId,
        root: RootId,
    },
    /// A checkpoint marker: everything `src` sent to `dest` before it belongs to the checkpoint, nothing after.
    Marker {
        dest: TaskId,
        src: TaskId,
        checkpoint: CheckpointId,
    },
    /// Effectively-once: the records after it were sent in rollback epoch `epoch` (the first record of every batch;
    /// a receiver drops batches of older epochs, whose tuples a rollback has undone).
    Epoch {
        dest: TaskId,
        epoch: u32,
    },
}

impl Record<'_> {
    pub fn dest(&self) -> TaskId {
        match self {
            Record::Data(d) => d.dest,
            Record::Ack { dest, .. }
            | Record::Fail { dest, .. }
            | Record::Marker { dest, .. }
            | Record::Epoch { dest, .. } => *dest,
        }
    }
}

/// The epoch of a batch that starts with an EPOCH record, and the records after it; `None` for any other batch.
pub fn split_epoch(batch: &[u8]) -> Option<(u32, &[u8])> {
    if batch.len() >= EPOCH_LEN && batch[0] == KIND_EPOCH {
        Some((u32_at(batch, 5), &batch[EPOCH_LEN..]))
    } else {
        None
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("record at byte {offset} truncated: needs {needed} bytes, {available} left")]
    Truncated {
        offset: usize,
        needed: usize,
        available: usize,
    },
    #[error("record at byte {offset} has unknown kind {kind}")]
    UnknownKind { offset: usize, kind: u8 },
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Iterates the records of a batch; stops after the first error.
pub struct BatchReader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> BatchReader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        BatchReader { bytes, at: 0 }
    }

    fn need(&self, n: usize) -> Result<&'a [u8], BatchError> {
        let rest = &self.bytes[self.at..];
        if rest.len() < n {
            return Err(BatchError::Truncated {
                offset: self.at,
                needed: n,
                available: rest.len(),
            });
        }
        Ok(rest)
    }

    fn read(&mut self) -> Result<Record<'a>, BatchError> {
        let rest = &self.bytes[self.at..];
        match rest[0] {
            KIND_DATA => {
                let h = self.need(DATA_HEADER_LEN)?;
                let nroots = u16::from_le_bytes([h[21], h[22]]) as usize;
                let values_len = u32_at(h, 23) as usize;
                let total = DATA_HEADER_LEN + nroots * Root::ENCODED_LEN + values_len;
                let r = self.need(total)?;
                let roots_end = DATA_HEADER_LEN + nroots * Root::ENCODED_LEN;
                self.at += total;
                Ok(Record::Data(DataRecord {
                    dest: TaskId(u32_at(r, 1)),
                    src: TaskId(u32_at(r, 5)),
                    stream: StreamIndex(u32_at(r, 9)),
                    key: u64_at(r, 13),
                    roots: Roots::new(&r[DATA_HEADER_LEN..roots_end]),
                    values: &r[roots_end..total],
                }))
            }
            KIND_ACK => {
                let r = self.need(ACK_LEN)?;
                self.at += ACK_LEN;
                Ok(Record::Ack {
                    dest: TaskId(u32_at(r, 1)),
                    root: RootId(u64_at(r, 5)),
                    xor: u64_at(r, 13),
                })
            }
            KIND_FAIL => {
                let r = self.need(FAIL_LEN)?;
                self.at += FAIL_LEN;
                Ok(Record::Fail {
                    dest: TaskId(u32_at(r, 1)),
                    root: RootId(u64_at(r, 5)),
                })
            }
            KIND_MARKER => {
                let r = self.need(MARKER_LEN)?;
                self.at += MARKER_LEN;
                Ok(Record::Marker {
                    dest: TaskId(u32_at(r, 1)),
                    src: TaskId(u32_at(r, 5)),
                    checkpoint: CheckpointId(u64_at(r, 9)),
                })
            }
            KIND_EPOCH => {
                let r = self.need(EPOCH_LEN)?;
                self.at += EPOCH_LEN;
                Ok(Record::Epoch {
                    dest: TaskId(u32_at(r, 1)),
                    epoch: u32_at(r, 5),
                })
            }
            kind => Err(BatchError::UnknownKind { offset: self.at, kind }),
        }
    }
}

impl<'a> Iterator for BatchReader<'a> {
    type Item = Result<Record<'a>, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.at >= self.bytes.len() {
            return None;
        }
        let r = self.read();
        if r.is_err() {
            self.at = self.bytes.len();
        }
        Some(r)
    }
}

/// One piece of a received batch as checkpoint alignment needs it: the runs of records between markers, and the
/// markers themselves. Read with [`Segments`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment<'a> {
    /// Records back to back, none of them a marker, whose DATA records all come from `src` (the `src` of the first
    /// one; `None` if the run holds only ACK/FAIL records). A run that meets a corrupt record ends with the rest of
    /// the batch, so that whoever processes it reports the error as for any batch.
    Records { src: Option<TaskId>, bytes: &'a [u8] },
    Marker {
        dest: TaskId,
        src: TaskId,
        checkpoint: CheckpointId,
    },
}

/// Splits a received batch at its markers, and (defensively) wherever the DATA records' `src` changes, so that
/// each [`Segment::Records`] can be given to the aligner as coming from one upstream task. Egret's batches come
/// from one task each (an `Outbox` belongs to one task's emitter), so the second split never happens today.
/// Reads record headers only, never values; never panics.
pub struct Segments<'a> {
    reader: BatchReader<'a>,
}

impl<'a> Segments<'a> {
    pub fn new(batch: &'a [u8]) -> Self {
        Segments {
            reader: BatchReader::new(batch),
        }
    }
}

impl<'a> Iterator for Segments<'a> {
    type Item = Segment<'a>;

    fn next(&mut self) -> Option<Segment<'a>> {
        let bytes = self.reader.bytes;
        let start = self.reader.at;
        if start >= bytes.len() {
            return None;
        }
        let mut src = None;
        while self.reader.at < bytes.len() {
            let at = self.reader.at;
            match self.reader.read() {
                Ok(Record::Marker {
                    dest,
                    src: from,
                    checkpoint,
                }) => {
                    if at == start {
                        return Some(Segment::Marker {
                            dest,
                            src: from,
                            checkpoint,
                        });
                    }
                    // The marker starts the next segment.
                    self.reader.at = at;
                    break;
                }
                Ok(Record::Data(d)) => match src {
                    None => src = Some(d.src),
                    Some(s) if s != d.src => {
                        self.reader.at = at;
                        break;
                    }
                    Some(_) => {}
                },
                Ok(_) => {}
                Err(_) => {
                    self.reader.at = bytes.len();
                    break;
                }
            }
        }
        Some(Segment::Records {
            src,
            bytes: &bytes[start..self.reader.at],
        })
    }
}

/// Appends records to a batch being filled for one destination.
#[derive(Debug)]
pub struct BatchBuilder {
    buf: Vec<u8>,
    records: usize,
    opened_at: Option<Instant>,
}

impl BatchBuilder {
    pub fn new() -> Self {
        BatchBuilder {
            buf: Vec::new(),
            records: 0,
            opened_at: None,
        }
    }

    pub fn records(&self) -> usize {
        self.records
    }

    pub fn bytes(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// When the first record of the open batch was added.
    pub fn opened_at(&self) -> Option<Instant> {
        self.opened_at
    }

    fn open(&mut self, now: Instant) {
        if self.records == 0 {
            self.opened_at = Some(now);
            if self.buf.capacity() == 0 {
                self.buf.reserve(16 * 1024);
            }
        }
        self.records += 1;
    }

    #[allow(clippy::too_many_arguments)]
    pub fn push_data(
        &mut self,
        now: Instant,
        dest: TaskId,
        src: TaskId,
        stream: StreamIndex,
        key: u64,
        roots: &[Root],
        values: &[u8],
    ) {
        self.open(now);
        let b = &mut self.buf;
        b.push(KIND_DATA);
        b.extend_from_slice(&dest.0.to_le_bytes());
        b.extend_from_slice(&src.0.to_le_bytes());
        b.extend_from_slice(&stream.0.to_le_bytes());
        b.extend_from_slice(&key.to_le_bytes());
        // The emitter refuses tuples beyond MAX_ROOTS and MAX_TUPLE_BYTES, so these fit their fields.
        debug_assert!(roots.len() <= MAX_ROOTS && values.len() <= MAX_TUPLE_BYTES);
        b.extend_from_slice(&(roots.len() as u16).to_le_bytes());
        b.extend_from_slice(&(values.len() as u32).to_le_bytes());
        for r in roots {
            r.encode(b);
        }
        b.extend_from_slice(values);
    }

    pub fn push_ack(&mut self, now: Instant, dest: TaskId, root: RootId, xor: u64) {
        self.open(now);
        let b = &mut self.buf;
        b.push(KIND_ACK);
        b.extend_from_slice(&dest.0.to_le_bytes());
        b.extend_from_slice(&root.0.to_le_bytes());
        b.extend_from_slice(&xor.to_le_bytes());
    }

    pub fn push_fail(&mut self, now: Instant, dest: TaskId, root: RootId) {
        self.open(now);
        let b = &mut self.buf;
        b.push(KIND_FAIL);
        b.extend_from_slice(&dest.0.to_le_bytes());
        b.extend_from_slice(&root.0.to_le_bytes());
    }

    /// A checkpoint marker from `src`: in the batch after everything `src` sent `dest` before the checkpoint.
    pub fn push_marker(&mut self, now: Instant, dest: TaskId, src: TaskId, checkpoint: CheckpointId) {
        self.open(now);
        let b = &mut self.buf;
        b.push(KIND_MARKER);
        b.extend_from_slice(&dest.0.to_le_bytes());
        b.extend_from_slice(&src.0.to_le_bytes());
        b.extend_from_slice(&checkpoint.0.to_le_bytes());
    }

    /// The EPOCH record that starts every batch of an effectively-once task. It is not counted in
    /// [`BatchBuilder::records`] (it carries no tuple) and does not open the batch's flush clock.
    pub fn push_epoch(&mut self, dest: TaskId, epoch: u32) {
        let b = &mut self.buf;
        b.push(KIND_EPOCH);
        b.extend_from_slice(&dest.0.to_le_bytes());
        b.extend_from_slice(&epoch.to_le_bytes());
    }

    /// Empties the builder, keeping its buffer.
    pub fn clear(&mut self) {
        self.records = 0;
        self.opened_at = None;
        self.buf.clear();
    }

    /// Takes the filled batch, leaving the builder empty.
    pub fn take(&mut self) -> Batch {
        self.records = 0;
        self.opened_at = None;
        let cap = self.buf.capacity().max(1024);
        std::mem::replace(&mut self.buf, Vec::with_capacity(cap))
    }
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn records_round_trip() {
        let now = Instant::now();
        let mut b = BatchBuilder::new();
        let roots = [
            Root {
                task: TaskId(3),
                id: RootId(99),
            },
            Root {
                task: TaskId(4),
                id: RootId(7),
            },
        ];
        b.push_data(
            now,
            TaskId(5),
            TaskId(1),
            StreamIndex(2),
            0xabc,
            &roots,
            b"\x00\x01\x01",
        );
        b.push_ack(now, TaskId(3), RootId(99), 0x55);
        b.push_fail(now, TaskId(4), RootId(7));
        b.push_marker(now, TaskId(5), TaskId(1), CheckpointId(u64::MAX - 1));
        assert_eq!(b.records(), 4);
        let batch = b.take();
        assert!(b.is_empty());
        let recs: Vec<_> = BatchReader::new(&batch).collect::<Result<_, _>>().unwrap();
        let Record::Data(d) = recs[0] else {
            panic!("expected data")
        };
        assert_eq!(
            (d.dest, d.src, d.stream, d.key),
            (TaskId(5), TaskId(1), StreamIndex(2), 0xabc)
        );
        assert_eq!(d.roots.iter().collect::<Vec<_>>(), roots);
        assert_eq!(d.values, b"\x00\x01\x01");
        assert_eq!(
            recs[1],
            Record::Ack {
                dest: TaskId(3),
                root: RootId(99),
                xor: 0x55
            }
        );
        assert_eq!(
            recs[2],
            Record::Fail {
                dest: TaskId(4),
                root: RootId(7)
            }
        );
        assert_eq!(
            recs[3],
            Record::Marker {
                dest: TaskId(5),
                src: TaskId(1),
                checkpoint: CheckpointId(u64::MAX - 1)
            }
        );
        assert_eq!(recs[3].dest(), TaskId(5));
        assert_eq!(recs.len(), 4);
    }

    #[test]
    fn a_truncated_marker_ends_the_batch_with_an_error() {
        let mut b = BatchBuilder::new();
        b.push_fail(Instant::now(), TaskId(1), RootId(1));
        b.push_marker(Instant::now(), TaskId(1), TaskId(2), CheckpointId(3));
        let batch = b.take();
        assert_eq!(batch.len(), FAIL_LEN + MARKER_LEN);
        for cut in FAIL_LEN + 1..batch.len() {
            let mut r = BatchReader::new(&batch[..cut]);
            assert!(matches!(r.next(), Some(Ok(Record::Fail { .. }))));
            assert_eq!(
                r.next(),
                Some(Err(BatchError::Truncated {
                    offset: FAIL_LEN,
                    needed: MARKER_LEN,
                    available: cut - FAIL_LEN
                }))
            );
            assert_eq!(r.next(), None);
        }
    }

    fn data(b: &mut BatchBuilder, src: u32) {
        b.push_data(
            Instant::now(),
            TaskId(9),
            TaskId(src),
            StreamIndex(0),
            0,
            &[],
            b"\x02\x01\0\0\0\0\0\0\0",
        );
    }

    /// Describes a batch's segments: `d<src>x<records>` for a run of records, `m<src>:<checkpoint>` for a marker.
    fn describe(batch: &[u8]) -> Vec<String> {
        Segments::new(batch)
            .map(|s| match s {
                Segment::Records { src, bytes } => {
                    let n = BatchReader::new(bytes).count();
                    format!("d{}x{n}", src.map_or(0, |t| t.0))
                }
                Segment::Marker { src, checkpoint, .. } => format!("m{}:{}", src.0, checkpoint.0),
            })
            .collect()
    }

    #[test]
    fn segments_split_at_markers_and_at_a_change_of_src() {
        let now = Instant::now();
        let mut b = BatchBuilder::new();
        data(&mut b, 1);
        data(&mut b, 1);
        b.push_marker(now, TaskId(9), TaskId(1), CheckpointId(7));
        b.push_marker(now, TaskId(9), TaskId(1), CheckpointId(8));
        data(&mut b, 1);
        data(&mut b, 2);
        b.push_ack(now, TaskId(9), RootId(1), 1);
        let batch = b.take();
        assert_eq!(describe(&batch), ["d1x2", "m1:7", "m1:8", "d1x1", "d2x2"]);
        // Segments cover the batch, in order, with nothing left out.
        let total: usize = Segments::new(&batch)
            .map(|s| match s {
                Segment::Records { bytes, .. } => bytes.len(),
                Segment::Marker { .. } => MARKER_LEN,
            })
            .sum();
        assert_eq!(total, batch.len());

        let mut b = BatchBuilder::new();
        b.push_fail(now, TaskId(9), RootId(1));
        assert_eq!(describe(&b.take()), ["d0x1"], "acks and fails have no src");
        assert_eq!(describe(&[]), Vec::<String>::new());

        // A corrupt record goes with the run it ends, to the end of the batch, for the reader to report.
        let mut b = BatchBuilder::new();
        b.push_marker(now, TaskId(9), TaskId(1), CheckpointId(1));
        data(&mut b, 1);
        let mut batch = b.take();
        batch.extend_from_slice(&[KIND_MARKER, 1, 2]);
        let segs: Vec<_> = Segments::new(&batch).collect();
        assert_eq!(segs.len(), 2);
        let Segment::Records { bytes, .. } = segs[1] else {
            panic!("expected records")
        };
        assert_eq!(bytes.len(), batch.len() - MARKER_LEN);
        assert!(BatchReader::new(bytes).any(|r| r.is_err()));
    }

    #[test]
    fn truncation_is_reported_with_offset() {
        let mut b = BatchBuilder::new();
        b.push_ack(Instant::now(), TaskId(1), RootId(1), 1);
        let batch = b.take();
        let mut r = BatchReader::new(&batch[..10]);
        assert_eq!(
            r.next(),
            Some(Err(BatchError::Truncated {
                offset: 0,
                needed: ACK_LEN,
                available: 10
            }))
        );
        assert_eq!(r.next(), None);
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            for r in BatchReader::new(&bytes) {
                if r.is_err() { break; }
            }
            let covered: usize = Segments::new(&bytes)
                .map(|s| match s {
                    Segment::Records { bytes, .. } => bytes.len(),
                    Segment::Marker { .. } => MARKER_LEN,
                })
                .sum();
            prop_assert_eq!(covered, bytes.len());
        }

        /// Random bytes made mostly of plausible record kinds, so the readers go past the first byte.
        #[test]
        fn records_of_every_kind_never_panic(
            parts in proptest::collection::vec((1u8..=5, proptest::collection::vec(any::<u8>(), 0..40)), 0..12)
        ) {
            let mut bytes = Vec::new();
            for (kind, rest) in parts {
                bytes.push(kind);
                bytes.extend_from_slice(&rest);
            }
            let _ = BatchReader::new(&bytes).count();
            let _ = Segments::new(&bytes).count();
        }

        #[test]
        fn any_prefix_of_a_valid_batch_reads_cleanly(cut in 0usize..220, n in 1usize..5) {
            let mut b = BatchBuilder::new();
            for i in 0..n {
                b.push_data(Instant::now(), TaskId(i as u32), TaskId(1), StreamIndex(0), 0, &[], b"\x02\x01\0\0\0\0\0\0\0");
            }
            b.push_marker(Instant::now(), TaskId(1), TaskId(2), CheckpointId(cut as u64));
            let batch = b.take();
            let cut = cut.min(batch.len());
            let ok = BatchReader::new(&batch[..cut]).take_while(|r| r.is_ok()).count();
            prop_assert!(ok <= n + 1);
            prop_assert_eq!(ok == n + 1, cut == batch.len());
        }
    }
}
