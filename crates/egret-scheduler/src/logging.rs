//! The one log format of every process the scheduler starts (supervisor, executors, tmanager, stmgrs, metrics
//! managers, instances) and of the tracker.
//!
//! Each process writes its log to stderr, which its parent redirects to `<log dir>/<process>.log`: one plain-text
//! line per `tracing` event, with the time (UTC), the level, who the process is (`topology=word-count container=1
//! process=stmgr-1`, and `component=count task=3` for an instance), the message and the event's fields:
//!
//! ```text
//! 2026-05-03T10:11:12.123456Z  INFO topology=word-count container=1 process=stmgr-1: task registered task=3
//! ```
//!
//! The identity is part of the format rather than a span, so lines from every thread of the process carry it.
//! The default level is INFO; `RUST_LOG` (an `EnvFilter`, e.g. `RUST_LOG=egret_stmgr=debug`) overrides it, and the
//! children of a process inherit it. Libraries only emit events; binaries call [`init`] once, first thing.
//! Panics still reach the log: the default panic hook writes to stderr.

use std::fmt::{self, Display, Write as _};

use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Installs the subscriber of this process: events at INFO and above (or as `RUST_LOG` says) go to stderr, each
/// line naming the process by `identity` (`key=value` pairs, in order). Does nothing if a subscriber is already
/// installed (a test that starts two daemons in one process).
pub fn init(identity: &[(&str, &dyn Display)]) {
    let mut filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .from_env_lossy();
    // The ZooKeeper client says at INFO what the state manager already logs once (sessions opened and ended), on
    // every connection: its warnings are enough unless RUST_LOG asks for more.
    if std::env::var_os("RUST_LOG").is_none()
        && let Ok(quiet) = "zookeeper_client=warn".parse()
    {
        filter = filter.add_directive(quiet);
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .event_format(Line::new(identity))
        .try_init();
}

/// Formats one event as one line: time, level, the process's identity, the spans it is in, message and fields.
pub struct Line {
    identity: String,
}

impl Line {
    pub fn new(identity: &[(&str, &dyn Display)]) -> Line {
        let mut s = String::new();
        for (key, value) in identity {
            if !s.is_empty() {
                s.push(' ');
            }
            let _ = write!(s, "{key}={value}");
        }
        Line { identity: s }
    }
}

impl<S, N> FormatEvent<S, N> for Line
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        SystemTime.format_time(&mut w)?;
        write!(w, " {:>5} {}", event.metadata().level(), self.identity)?;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                write!(w, " {}", span.name())?;
                if let Some(fields) = span.extensions().get::<FormattedFields<N>>()
                    && !fields.is_empty()
                {
                    write!(w, "{{{fields}}}")?;
                }
            }
        }
        w.write_str(": ")?;
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_line_names_the_process_then_the_message_and_fields() {
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || out.clone())
            .with_ansi(false)
            .event_format(Line::new(&[
                ("topology", &"word-count"),
                ("container", &1),
                ("process", &"stmgr-1"),
            ]))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(task = 3, peer = %"127.0.0.1:4000", "task registered");
            let span = tracing::info_span!("conn", peer = 7);
            let _in = span.enter();
            tracing::info!("inside");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        let (time, rest) = lines[0].split_once(' ').unwrap();
        assert!(time.ends_with('Z') && time.contains('T'), "{time}");
        assert_eq!(
            rest,
            " WARN topology=word-count container=1 process=stmgr-1: task registered task=3 peer=127.0.0.1:4000"
        );
        assert!(
            lines[1].ends_with("  INFO topology=word-count container=1 process=stmgr-1 conn{peer=7}: inside"),
            "{}",
            lines[1]
        );
    }
}
