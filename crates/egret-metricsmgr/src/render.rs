//! The Prometheus text exposition format (version 0.0.4) of a [`Snapshot`].
//!
//! Every published family is `egret_` + Heron's name with its leading underscores stripped and every character a
//! Prometheus name cannot hold (`-`, `/`, ...) replaced by `_`. Names ending in `-count` are counters, the rest
//! gauges. A series carries `topology`, `component`, `task` and, when the value has one, `stream`. Families are
//! sorted by name and series by labels, so the same snapshot always renders to the same text.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::state::Snapshot;

/// Families whose name starts with this are the manager's own; published names that map onto them are dropped
/// rather than mixed into the manager's series under the wrong `# TYPE`.
const OWN_PREFIX: &str = "egret_metricsmgr_";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// The labels of one series besides `topology`, in the order they are written and sorted. The manager's own
/// series have none of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
struct Labels {
    component: Option<String>,
    task: Option<i32>,
    stream: Option<String>,
    /// Only when two processes publish for the same (component, task): without it their series would carry the
    /// same labels, and Prometheus rejects a scrape with duplicate series.
    process: Option<String>,
}

struct Family {
    help: String,
    kind: Kind,
    series: BTreeMap<Labels, f64>,
}

/// The Prometheus name of a metric published under Heron's `name`: `__emit-count` -> `egret_emit_count`,
/// `__time_spent_back_pressure_by_compid/word` -> `egret_time_spent_back_pressure_by_compid_word`.
pub fn metric_name(name: &str) -> String {
    let mut out = String::with_capacity(6 + name.len());
    out.push_str("egret_");
    out.extend(
        name.trim_start_matches('_')
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }),
    );
    out
}

/// Escapes a label value as the exposition format requires: backslash, double quote and newline.
pub fn escape_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// `# HELP` text escapes backslash and newline (not quotes).
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Sample values as Prometheus parses them (Go's `ParseFloat` plus `+Inf`/`-Inf`/`NaN`).
fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// Help for the names Egret's tasks publish; latencies are published in milliseconds.
fn help_for(family: &str, published: &str) -> String {
    let known = match family {
        "egret_emit_count" => "Tuples emitted by a task (emit calls), per output stream.",
        "egret_execute_count" => "Tuples executed by a bolt task, per input stream.",
        "egret_ack_count" => "Spout tasks: tuple trees completed. Bolt tasks: tuples acked.",
        "egret_fail_count" => "Spout tasks: tuple trees failed or timed out. Bolt tasks: tuples failed.",
        "egret_exception_count" => "Errors reported by a task (user errors, bad emits, corrupt records).",
        "egret_execute_latency" => "Mean time a bolt task spends in execute, in milliseconds.",
        "egret_complete_latency" => "Mean emit-to-complete latency of a spout task's tuple trees, in milliseconds.",
        _ => return format!("Egret metric {published}, as published."),
    };
    known.to_string()
}

fn write_labels(out: &mut String, topology: &str, labels: &Labels) {
    let _ = write!(out, "{{topology=\"{}\"", escape_label_value(topology));
    if let Some(c) = &labels.component {
        let _ = write!(out, ",component=\"{}\"", escape_label_value(c));
    }
    if let Some(t) = labels.task {
        let _ = write!(out, ",task=\"{t}\"");
    }
    if let Some(s) = &labels.stream {
        let _ = write!(out, ",stream=\"{}\"", escape_label_value(s));
    }
    if let Some(p) = &labels.process {
        let _ = write!(out, ",process=\"{}\"", escape_label_value(p));
    }
    out.push('}');
}

/// Renders `snapshot` for `topology` in the text exposition format, deterministically.
///
/// When two published names map to the same family (`__a-b` and `__a/b`), the family takes the help and type of the
/// first name in sorted order, and of two values with the same labels the later one in sorted order is shown.
pub fn render(topology: &str, snapshot: &Snapshot) -> String {
    let mut processes: BTreeMap<(&str, i32), BTreeSet<&str>> = BTreeMap::new();
    for key in snapshot.series.keys() {
        processes
            .entry((key.component.as_str(), key.task_id))
            .or_default()
            .insert(key.process.as_str());
    }

    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    for (publisher, series) in &snapshot.series {
        let shared = processes
            .get(&(publisher.component.as_str(), publisher.task_id))
            .is_some_and(|p| p.len() > 1);
        for (key, &value) in series {
            let name = metric_name(&key.name);
            if name.starts_with(OWN_PREFIX) {
                continue;
            }
            let family = families.entry(name).or_insert_with_key(|name| Family {
                help: help_for(name, &key.name),
                kind: if key.name.ends_with("-count") {
                    Kind::Counter
                } else {
                    Kind::Gauge
                },
                series: BTreeMap::new(),
            });
            let labels = Labels {
                component: Some(publisher.component.clone()),
                task: Some(publisher.task_id),
                stream: (!key.stream.is_empty()).then(|| key.stream.clone()),
                process: shared.then(|| publisher.process.clone()),
            };
            family.series.insert(labels, value);
        }
    }

    let own = [
        (
            "egret_metricsmgr_frames_rejected",
            "Frames from publishers that were not PublishMetrics or did not decode; each dropped its connection.",
            Kind::Counter,
            snapshot.frames_rejected,
        ),
        (
            "egret_metricsmgr_publishers",
            "Publisher connections open now.",
            Kind::Gauge,
            snapshot.publishers,
        ),
        (
            "egret_metricsmgr_series_dropped",
            "Published values refused because the manager already kept its maximum number of series.",
            Kind::Counter,
            snapshot.series_dropped,
        ),
    ];
    for (name, help, kind, value) in own {
        families.insert(
            name.to_string(),
            Family {
                help: help.to_string(),
                kind,
                series: BTreeMap::from([(Labels::default(), value as f64)]),
            },
        );
    }

    let mut out = String::new();
    for (name, family) in &families {
        let _ = writeln!(out, "# HELP {name} {}", escape_help(&family.help));
        let _ = writeln!(out, "# TYPE {name} {}", family.kind.as_str());
        for (labels, &value) in &family.series {
            out.push_str(name);
            write_labels(&mut out, topology, labels);
            let _ = writeln!(out, " {}", format_value(value));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{PublisherKey, SeriesKey};
    use egret_proto::egret::{MetricValue, PublishMetrics};

    fn publish(s: &mut Snapshot, component: &str, task_id: i32, process: &str, values: &[(&str, &str, f64)]) {
        s.apply(PublishMetrics {
            component: component.into(),
            task_id,
            process: process.into(),
            metrics: values
                .iter()
                .map(|&(name, stream, value)| MetricValue {
                    name: name.into(),
                    stream: stream.into(),
                    value,
                })
                .collect(),
            ..Default::default()
        });
    }

    #[test]
    fn heron_names_become_prometheus_names() {
        assert_eq!(metric_name("__emit-count"), "egret_emit_count");
        assert_eq!(metric_name("__execute-count"), "egret_execute_count");
        assert_eq!(metric_name("__ack-count"), "egret_ack_count");
        assert_eq!(metric_name("__fail-count"), "egret_fail_count");
        assert_eq!(metric_name("__execute-latency"), "egret_execute_latency");
        assert_eq!(metric_name("__complete-latency"), "egret_complete_latency");
        assert_eq!(
            metric_name("__time_spent_back_pressure_by_compid/word"),
            "egret_time_spent_back_pressure_by_compid_word"
        );
        assert_eq!(metric_name("plain"), "egret_plain");
        assert_eq!(metric_name("__a.b c\"é"), "egret_a_b_c__");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label_value("plain"), "plain");
        assert_eq!(escape_label_value("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
        assert_eq!(escape_help("a\\b\nc\"d"), "a\\\\b\\nc\"d");
    }

    #[test]
    fn values_are_written_as_prometheus_parses_them() {
        assert_eq!(format_value(42.0), "42");
        assert_eq!(format_value(1.5), "1.5");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
    }

    #[test]
    fn render_is_sorted_typed_and_labelled() {
        let mut s = Snapshot::default();
        publish(&mut s, "word", 10, "i10", &[("__emit-count", "default", 7.0)]);
        publish(
            &mut s,
            "word",
            3,
            "i3",
            &[("__emit-count", "default", 42.0), ("__execute-latency", "", 0.25)],
        );
        publish(&mut s, "count", 1, "i1", &[("__execute-count", "a\"b", 2.0)]);
        s.publishers = 2;
        s.frames_rejected = 1;
        let text = render("t", &s);
        let expected = "\
# HELP egret_emit_count Tuples emitted by a task (emit calls), per output stream.
# TYPE egret_emit_count counter
egret_emit_count{topology=\"t\",component=\"word\",task=\"3\",stream=\"default\"} 42
egret_emit_count{topology=\"t\",component=\"word\",task=\"10\",stream=\"default\"} 7
# HELP egret_execute_count Tuples executed by a bolt task, per input stream.
# TYPE egret_execute_count counter
egret_execute_count{topology=\"t\",component=\"count\",task=\"1\",stream=\"a\\\"b\"} 2
# HELP egret_execute_latency Mean time a bolt task spends in execute, in milliseconds.
# TYPE egret_execute_latency gauge
egret_execute_latency{topology=\"t\",component=\"word\",task=\"3\"} 0.25
# HELP egret_metricsmgr_frames_rejected Frames from publishers that were not PublishMetrics or did not decode; \
each dropped its connection.
# TYPE egret_metricsmgr_frames_rejected counter
egret_metricsmgr_frames_rejected{topology=\"t\"} 1
# HELP egret_metricsmgr_publishers Publisher connections open now.
# TYPE egret_metricsmgr_publishers gauge
egret_metricsmgr_publishers{topology=\"t\"} 2
# HELP egret_metricsmgr_series_dropped Published values refused because the manager already kept its maximum \
number of series.
# TYPE egret_metricsmgr_series_dropped counter
egret_metricsmgr_series_dropped{topology=\"t\"} 0
";
        assert_eq!(text, expected);
    }

    #[test]
    fn render_is_deterministic_whatever_the_publish_order() {
        let values = [
            ("word", 3, "i3", "__emit-count", "default", 1.0),
            ("word", 3, "i3", "__emit-count", "other", 2.0),
            ("count", 5, "i5", "__execute-count", "default", 3.0),
            ("count", 5, "i5", "__time_spent_back_pressure_by_compid/word", "", 4.0),
            ("spout", 1, "i1", "__complete-latency", "", 5.5),
        ];
        let mut forward = Snapshot::default();
        for &(c, t, p, n, st, v) in &values {
            publish(&mut forward, c, t, p, &[(n, st, v)]);
        }
        let mut backward = Snapshot::default();
        for &(c, t, p, n, st, v) in values.iter().rev() {
            publish(&mut backward, c, t, p, &[(n, st, v)]);
        }
        let text = render("t", &forward);
        assert_eq!(text, render("t", &backward));
        assert_eq!(text, render("t", &forward));
        let families: Vec<_> = text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).collect();
        let mut sorted = families.clone();
        sorted.sort();
        assert_eq!(families, sorted);
        assert!(text.contains("# TYPE egret_time_spent_back_pressure_by_compid_word gauge\n"));
        assert!(text.contains("# TYPE egret_complete_latency gauge\n"));
    }

    #[test]
    fn two_processes_for_one_task_are_told_apart() {
        let mut s = Snapshot::default();
        publish(&mut s, "word", 3, "old", &[("__emit-count", "", 1.0)]);
        publish(&mut s, "word", 3, "new", &[("__emit-count", "", 2.0)]);
        publish(&mut s, "word", 4, "only", &[("__emit-count", "", 3.0)]);
        let text = render("t", &s);
        assert!(text.contains("egret_emit_count{topology=\"t\",component=\"word\",task=\"3\",process=\"new\"} 2\n"));
        assert!(text.contains("egret_emit_count{topology=\"t\",component=\"word\",task=\"3\",process=\"old\"} 1\n"));
        assert!(text.contains("egret_emit_count{topology=\"t\",component=\"word\",task=\"4\"} 3\n"));
    }

    #[test]
    fn published_names_cannot_pose_as_the_managers_own() {
        let mut s = Snapshot::default();
        publish(&mut s, "word", 3, "i3", &[("__metricsmgr_publishers", "", 99.0)]);
        let text = render("t", &s);
        assert!(!text.contains("99"));
        assert!(text.contains("egret_metricsmgr_publishers{topology=\"t\"} 0\n"));
        assert_eq!(
            s.series[&PublisherKey {
                component: "word".into(),
                task_id: 3,
                process: "i3".into()
            }][&SeriesKey {
                name: "__metricsmgr_publishers".into(),
                stream: String::new()
            }],
            99.0
        );
    }
}
