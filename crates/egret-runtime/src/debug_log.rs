//! `topology.debug=true`: a `tracing` line (INFO) for every tuple a task emits or executes, with its component,
//! task, stream and values, as Heron logs every emitted tuple in debug mode.
//!
//! A busy task handles millions of tuples a second, so lines are limited per task to
//! `topology.egret.debug.lines.per.sec` per second ([`RateLimit`]); the lines left out are counted, and the count is
//! logged with the first line of the next second. The task holds a `DebugLog` only when debug is on: off, the cost
//! is one `Option` check per emit and per executed tuple.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use egret_api::value::decode_ref;
use egret_api::{StreamSource, TaskId};
use tracing::info;

/// Longest rendering of a tuple's values in a line; the rest is cut (a tuple may hold up to 8 MiB).
const MAX_VALUES_CHARS: usize = 512;

/// At most `per_sec` lines in each one-second window (a window starts with the first line after the previous one
/// ended); what is left out is counted.
#[derive(Debug, Clone)]
pub struct RateLimit {
    per_sec: u64,
    window_start: Option<Instant>,
    written: u64,
    suppressed: u64,
}

/// What [`RateLimit::allow`] decided about one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Write the line; `suppressed` lines were left out in the window(s) before it and should be reported first.
    Write { suppressed: u64 },
    /// Leave it out (counted).
    Suppress,
}

impl RateLimit {
    /// `per_sec` is at least 1.
    pub fn new(per_sec: u64) -> Self {
        RateLimit {
            per_sec: per_sec.max(1),
            window_start: None,
            written: 0,
            suppressed: 0,
        }
    }

    pub fn allow(&mut self, now: Instant) -> Verdict {
        let window_over = self
            .window_start
            .is_none_or(|start| now.saturating_duration_since(start) >= Duration::from_secs(1));
        if window_over {
            self.window_start = Some(now);
            self.written = 0;
        }
        if self.written >= self.per_sec {
            self.suppressed += 1;
            return Verdict::Suppress;
        }
        self.written += 1;
        Verdict::Write {
            suppressed: std::mem::take(&mut self.suppressed),
        }
    }
}

/// One task's debug lines.
#[derive(Debug)]
pub struct DebugLog {
    component: String,
    task: TaskId,
    limit: RateLimit,
}

impl DebugLog {
    pub fn new(component: &str, task: TaskId, lines_per_sec: u64) -> Self {
        DebugLog {
            component: component.to_string(),
            task,
            limit: RateLimit::new(lines_per_sec),
        }
    }

    /// Whether a line may be written now; reports the lines left out before it.
    fn allow(&mut self, now: Instant) -> bool {
        match self.limit.allow(now) {
            Verdict::Suppress => false,
            Verdict::Write { suppressed } => {
                if suppressed > 0 {
                    info!(
                        component = %self.component,
                        task = self.task.0,
                        suppressed,
                        "debug lines left out (topology.egret.debug.lines.per.sec)"
                    );
                }
                true
            }
        }
    }

    /// A tuple emitted on `stream` to `dests`, its values encoded.
    pub fn emitted(&mut self, now: Instant, stream: &str, dests: &[TaskId], values: &[u8]) {
        if self.allow(now) {
            info!(
                component = %self.component,
                task = self.task.0,
                stream,
                to = ?dests.iter().map(|t| t.0).collect::<Vec<_>>(),
                values = %render_values(values),
                "emitted"
            );
        }
    }

    /// A tuple of `source` from task `from` executed.
    pub fn executed(&mut self, now: Instant, source: &StreamSource, from: TaskId, values: &[u8]) {
        if self.allow(now) {
            info!(
                component = %self.component,
                task = self.task.0,
                from_component = %source.component,
                stream = %source.stream,
                from_task = from.0,
                values = %render_values(values),
                "executed"
            );
        }
    }
}

/// The values of a tuple as `[v1, v2, ...]`, cut at [`MAX_VALUES_CHARS`]; bytes that do not decode are named, not
/// trusted.
fn render_values(mut bytes: &[u8]) -> String {
    let mut out = String::from("[");
    while !bytes.is_empty() && out.len() <= MAX_VALUES_CHARS {
        if out.len() > 1 {
            out.push_str(", ");
        }
        match decode_ref(bytes).and_then(|(v, used)| Ok((v.to_owned_value()?, used))) {
            Ok((v, used)) => {
                let _ = write!(out, "{v:?}");
                bytes = &bytes[used.min(bytes.len())..];
            }
            Err(e) => {
                let _ = write!(out, "<undecodable: {e}>");
                break;
            }
        }
    }
    if out.len() > MAX_VALUES_CHARS {
        let mut cut = MAX_VALUES_CHARS;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str("...");
    }
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    #[test]
    fn the_rate_limit_writes_at_most_n_lines_a_second_and_reports_the_rest() {
        let t = Instant::now();
        let mut limit = RateLimit::new(3);
        let verdicts: Vec<Verdict> = (0..10).map(|i| limit.allow(t + Duration::from_millis(i))).collect();
        assert_eq!(verdicts.iter().filter(|v| **v != Verdict::Suppress).count(), 3);
        assert_eq!(
            limit.allow(t + Duration::from_millis(1000)),
            Verdict::Write { suppressed: 7 },
            "the next second reports what the last one left out"
        );
        assert_eq!(
            limit.allow(t + Duration::from_millis(1001)),
            Verdict::Write { suppressed: 0 }
        );
    }

    /// Everything written to the log, for a test.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::ErrorKind::Other)?
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn debug_logging_of_a_flood_of_tuples_is_rate_limited_with_a_count_of_what_was_left_out() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let mut values = Vec::new();
        egret_api::value::encode_value(&mut values, &egret_api::Value::Str("hello".into()));
        egret_api::value::encode_value(&mut values, &egret_api::Value::I64(42));
        let source = StreamSource {
            component: "words".into(),
            stream: "default".into(),
            fields: egret_api::Fields::new(["w", "n"]),
        };
        let t = Instant::now();
        tracing::subscriber::with_default(subscriber, || {
            let mut log = DebugLog::new("count", TaskId(3), 100);
            for i in 0..10_000u64 {
                let now = t + Duration::from_micros(i * 10);
                log.emitted(now, "default", &[TaskId(4)], &values);
                log.executed(now, &source, TaskId(1), &values);
            }
            log.emitted(t + Duration::from_secs(1), "default", &[TaskId(4)], &values);
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let emitted = lines.iter().filter(|l| l.contains(" emitted ")).count();
        let executed = lines.iter().filter(|l| l.contains(" executed ")).count();
        assert_eq!(
            emitted + executed,
            101,
            "100 lines in the first second, then one: {lines:#?}"
        );
        assert!(
            lines.iter().any(|l| l.contains("suppressed=19900")),
            "the 19 900 lines left out are reported: {lines:#?}"
        );
        let first = lines.iter().find(|l| l.contains(" emitted ")).unwrap();
        for needle in [
            "component=count",
            "task=3",
            "stream=\"default\"",
            "to=[4]",
            "Str(\"hello\")",
            "I64(42)",
        ] {
            assert!(first.contains(needle), "{needle} missing from {first}");
        }
        let executed = lines.iter().find(|l| l.contains(" executed ")).unwrap();
        assert!(
            executed.contains("from_component=words") && executed.contains("from_task=1"),
            "{executed}"
        );
    }

    #[test]
    fn undecodable_values_are_named_and_long_ones_cut() {
        assert_eq!(render_values(&[]), "[]");
        assert!(render_values(&[0xee, 1, 2]).starts_with("[<undecodable"));
        let mut long = Vec::new();
        egret_api::value::encode_value(&mut long, &egret_api::Value::Str("x".repeat(10_000)));
        assert!(render_values(&long).len() < MAX_VALUES_CHARS + 10);
    }
}
