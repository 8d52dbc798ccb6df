//! The Prometheus text exposition format (version 0.0.4) of a [`Snapshot`].
//!
//! Every published family is `egret_` + Heron's name with its leading underscores stripped and every character a
//! Prometheus name cannot hold (`-`, `/`, ...) replaced by `_`. Names ending in `-count` are counters, the rest
//! gauges; published histograms are histograms (series `<family>_bucket` with an `le` label per bucket, up to
//! `le="+Inf"`, then `<family>_sum` and `<family>_count`). A series carries `topology`, `component`, `task` and, when
//! the value has one, `stream`. Families are sorted by name and series by labels, so the same snapshot always
//! renders to the same text. [`crate::exposition::parse`] reads it back.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use egret_proto::egret::MetricKind;

use crate::state::{Histogram, Snapshot};

/// Families whose name starts with this are the manager's own; published names that map onto them are dropped
/// rather than mixed into the manager's series under the wrong `# TYPE`.
const OWN_PREFIX: &str = "egret_metricsmgr_";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// What one series of a family holds: a number for counters and gauges, the buckets for a histogram.
enum SeriesValue<'a> {
    Number(f64),
    Histogram(&'a Histogram),
}

/// The labels of one series besides `topology`, in the order they are written and sorted. The manager's own
/// series have none of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
struct Labels {
    component: Option<String>,
    task: Option<i32>,
    stream: Option<String>,
    /// A user multi-counter's key.
    key: Option<String>,
    /// Only when two processes publish for the same (component, task): without it their series would carry the
    /// same labels, and Prometheus rejects a scrape with duplicate series.
    process: Option<String>,
}

struct Family<'a> {
    help: String,
    kind: Kind,
    series: BTreeMap<Labels, SeriesValue<'a>>,
}

/// The Prometheus name of a metric published under Heron's `name`: `__emit-count` -> `egret_emit_count`,
/// `__time_spent_back_pressure_by_compid/word` -> `egret_time_spent_back_pressure_by_compid_word`. A name without
/// the system prefix `__` is a user metric's: `words-seen` -> `egret_user_words_seen`.
pub fn metric_name(name: &str) -> String {
    let mut out = String::with_capacity(11 + name.len());
    out.push_str(if is_user_metric(name) { "egret_user_" } else { "egret_" });
    out.extend(
        name.trim_start_matches('_')
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }),
    );
    out
}

/// Whether a published name is a user metric's (system metrics are Heron's `__` names).
pub fn is_user_metric(name: &str) -> bool {
    !name.starts_with("__")
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
fn help_for(family: &str, published: &str, kind: Kind) -> String {
    if kind == Kind::Histogram {
        let known = match family {
            "egret_execute_latency" => "Time a bolt task spends in execute, in milliseconds.",
            "egret_complete_latency" => "Emit-to-complete latency of a spout task's tuple trees, in milliseconds.",
            _ if is_user_metric(published) => {
                return format!("User histogram {published}, registered by the topology.");
            }
            _ => return format!("Egret histogram {published}, as published."),
        };
        return known.to_string();
    }
    let known = match family {
        "egret_emit_count" => "Tuples emitted by a task (emit calls), per output stream.",
        "egret_execute_count" => "Tuples executed by a bolt task, per input stream.",
        "egret_ack_count" => "Spout tasks: tuple trees completed. Bolt tasks: tuples acked.",
        "egret_fail_count" => "Spout tasks: tuple trees failed or timed out. Bolt tasks: tuples failed.",
        "egret_exception_count" => "Errors reported by a task (user errors, bad emits, corrupt records).",
        "egret_execute_latency" => "Mean time a bolt task spends in execute, in milliseconds.",
        "egret_complete_latency" => "Mean emit-to-complete latency of a spout task's tuple trees, in milliseconds.",
        _ if is_user_metric(published) => return format!("User metric {published}, registered by the topology."),
        _ => return format!("Egret metric {published}, as published."),
    };
    known.to_string()
}

/// Writes `{topology="...",...}`, with `le="..."` last when the series is a histogram's bucket.
fn write_labels(out: &mut String, topology: &str, labels: &Labels, le: Option<f64>) {
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
    if let Some(k) = &labels.key {
        let _ = write!(out, ",key=\"{}\"", escape_label_value(k));
    }
    if let Some(p) = &labels.process {
        let _ = write!(out, ",process=\"{}\"", escape_label_value(p));
    }
    if let Some(le) = le {
        let _ = write!(out, ",le=\"{}\"", format_value(le));
    }
    out.push('}');
}

/// One series of a histogram: `_bucket` per finite bound, the `+Inf` bucket, `_sum`, `_count`.
fn write_histogram(out: &mut String, name: &str, topology: &str, labels: &Labels, h: &Histogram) {
    let buckets = h.buckets().chain([(f64::INFINITY, h.count())]);
    for (le, count) in buckets {
        let _ = write!(out, "{name}_bucket");
        write_labels(out, topology, labels, Some(le));
        let _ = writeln!(out, " {count}");
    }
    let _ = write!(out, "{name}_sum");
    write_labels(out, topology, labels, None);
    let _ = writeln!(out, " {}", format_value(h.sum()));
    let _ = write!(out, "{name}_count");
    write_labels(out, topology, labels, None);
    let _ = writeln!(out, " {}", h.count());
}

/// Whether the plain family `name` would clash with a histogram family: be one, or be one of its series' names.
fn clashes_with_histogram(name: &str, families: &BTreeMap<String, Family>) -> bool {
    let is_histogram = |n: &str| families.get(n).is_some_and(|f| f.kind == Kind::Histogram);
    is_histogram(name)
        || ["_bucket", "_sum", "_count"]
            .iter()
            .any(|suffix| name.strip_suffix(suffix).is_some_and(is_histogram))
}

/// Renders `snapshot` for `topology` in the text exposition format, deterministically.
///
/// When two published names map to the same family (`__a-b` and `__a/b`), the family takes the help and type of the
/// first name in sorted order, and of two values with the same labels the later one in sorted order is shown. A
/// histogram takes precedence over values: a value whose family is a histogram's, or the name of one of its series
/// (`<histogram>_count`, ...), is not shown, since Prometheus rejects a scrape that repeats a series.
pub fn render(topology: &str, snapshot: &Snapshot) -> String {
    let mut processes: BTreeMap<(&str, i32), BTreeSet<&str>> = BTreeMap::new();
    for key in snapshot.series.keys().chain(snapshot.histograms.keys()) {
        processes
            .entry((key.component.as_str(), key.task_id))
            .or_default()
            .insert(key.process.as_str());
    }
    let labels_of = |publisher: &crate::PublisherKey, stream: &str, key: &str| {
        let shared = processes
            .get(&(publisher.component.as_str(), publisher.task_id))
            .is_some_and(|p| p.len() > 1);
        Labels {
            component: Some(publisher.component.clone()),
            task: Some(publisher.task_id),
            stream: (!stream.is_empty()).then(|| stream.to_string()),
            key: (!key.is_empty()).then(|| key.to_string()),
            process: shared.then(|| publisher.process.clone()),
        }
    };

    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    for (publisher, histograms) in &snapshot.histograms {
        for (key, histogram) in histograms {
            let name = metric_name(&key.name);
            if name.starts_with(OWN_PREFIX) {
                continue;
            }
            let family = families.entry(name).or_insert_with_key(|name| Family {
                help: help_for(name, &key.name, Kind::Histogram),
                kind: Kind::Histogram,
                series: BTreeMap::new(),
            });
            family
                .series
                .insert(labels_of(publisher, &key.stream, ""), SeriesValue::Histogram(histogram));
        }
    }
    for (publisher, series) in &snapshot.series {
        for (key, &value) in series {
            let name = metric_name(&key.name);
            if name.starts_with(OWN_PREFIX) || clashes_with_histogram(&name, &families) {
                continue;
            }
            let family = families.entry(name).or_insert_with_key(|name| {
                let kind = match MetricKind::try_from(key.kind) {
                    Ok(MetricKind::Counter) => Kind::Counter,
                    Ok(MetricKind::Gauge) => Kind::Gauge,
                    _ if key.name.ends_with("-count") => Kind::Counter,
                    _ => Kind::Gauge,
                };
                Family {
                    help: help_for(name, &key.name, kind),
                    kind,
                    series: BTreeMap::new(),
                }
            });
            family
                .series
                .insert(labels_of(publisher, &key.stream, &key.key), SeriesValue::Number(value));
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
                series: BTreeMap::from([(Labels::default(), SeriesValue::Number(value as f64))]),
            },
        );
    }

    let mut out = String::new();
    for (name, family) in &families {
        let _ = writeln!(out, "# HELP {name} {}", escape_help(&family.help));
        let _ = writeln!(out, "# TYPE {name} {}", family.kind.as_str());
        for (labels, value) in &family.series {
            match value {
                SeriesValue::Number(value) => {
                    out.push_str(name);
                    write_labels(&mut out, topology, labels, None);
                    let _ = writeln!(out, " {}", format_value(*value));
                }
                SeriesValue::Histogram(h) => write_histogram(&mut out, name, topology, labels, h),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exposition::{self, Sample};
    use crate::state::{PublisherKey, SeriesKey};
    use egret_proto::egret::{HistogramValue, MetricValue, PublishMetrics};
    use proptest::prelude::*;

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
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        });
    }

    #[test]
    fn user_metrics_render_with_their_kind_and_a_key_label() {
        use egret_proto::egret::MetricKind;
        let mut s = Snapshot::default();
        let value = |name: &str, kind: MetricKind, key: &str, value: f64| MetricValue {
            name: name.into(),
            kind: kind as i32,
            key: key.into(),
            value,
            ..Default::default()
        };
        s.apply(PublishMetrics {
            component: "count".into(),
            task_id: 3,
            process: "instance-3".into(),
            metrics: vec![
                value("words-seen", MetricKind::Counter, "", 12.0),
                value("by-word", MetricKind::Counter, "egret", 5.0),
                value("by-word", MetricKind::Counter, "heron", 7.0),
                // A gauge whose name ends like a counter's: the published kind wins over the name.
                value("queue-count", MetricKind::Gauge, "", 2.5),
            ],
            ..Default::default()
        });
        let text = render("t", &s);
        for line in [
            "# HELP egret_user_words_seen User metric words-seen, registered by the topology.",
            "# TYPE egret_user_words_seen counter",
            "egret_user_words_seen{topology=\"t\",component=\"count\",task=\"3\"} 12",
            "# TYPE egret_user_by_word counter",
            "egret_user_by_word{topology=\"t\",component=\"count\",task=\"3\",key=\"egret\"} 5",
            "egret_user_by_word{topology=\"t\",component=\"count\",task=\"3\",key=\"heron\"} 7",
            "# TYPE egret_user_queue_count gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} is not in:\n{text}");
        }
        let parsed = exposition::parse(&text).expect("the text parses");
        assert!(
            parsed
                .iter()
                .any(|x| x.name == "egret_user_by_word" && x.label("key") == Some("heron"))
        );
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
        assert_eq!(metric_name("__a.b c\"é"), "egret_a_b_c__");
        assert_eq!(metric_name("plain"), "egret_user_plain");
        assert_eq!(metric_name("words-seen.total"), "egret_user_words_seen_total");
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
                stream: String::new(),
                ..Default::default()
            }],
            99.0
        );
    }

    fn histogram(name: &str, stream: &str, bounds: &[f64], counts: &[u64], sum: f64, count: u64) -> HistogramValue {
        HistogramValue {
            name: name.into(),
            stream: stream.into(),
            upper_bounds: bounds.to_vec(),
            cumulative_counts: counts.to_vec(),
            sum,
            count,
        }
    }

    fn publisher(component: &str, task_id: i32, process: &str) -> PublisherKey {
        PublisherKey {
            component: component.into(),
            task_id,
            process: process.into(),
        }
    }

    #[test]
    fn histograms_render_buckets_sum_and_count_and_parse_back() {
        let mut s = Snapshot::default();
        let applied = s.apply_histograms(
            publisher("word", 3, "i3"),
            vec![histogram(
                "__complete-latency",
                "",
                &[0.5, 1.0, 2.5],
                &[4, 9, 9],
                7.25,
                10,
            )],
        );
        assert_eq!(applied, Default::default());
        let text = render("t", &s);
        let expected = "\
# HELP egret_complete_latency Emit-to-complete latency of a spout task's tuple trees, in milliseconds.
# TYPE egret_complete_latency histogram
egret_complete_latency_bucket{topology=\"t\",component=\"word\",task=\"3\",le=\"0.5\"} 4
egret_complete_latency_bucket{topology=\"t\",component=\"word\",task=\"3\",le=\"1\"} 9
egret_complete_latency_bucket{topology=\"t\",component=\"word\",task=\"3\",le=\"2.5\"} 9
egret_complete_latency_bucket{topology=\"t\",component=\"word\",task=\"3\",le=\"+Inf\"} 10
egret_complete_latency_sum{topology=\"t\",component=\"word\",task=\"3\"} 7.25
egret_complete_latency_count{topology=\"t\",component=\"word\",task=\"3\"} 10
";
        assert!(text.starts_with(expected), "{text}");

        let samples = exposition::parse(&text).unwrap();
        let buckets: Vec<(&str, f64)> = samples
            .iter()
            .filter(|x| x.name == "egret_complete_latency_bucket")
            .map(|x| (x.label("le").unwrap(), x.value))
            .collect();
        assert_eq!(buckets, [("0.5", 4.0), ("1", 9.0), ("2.5", 9.0), ("+Inf", 10.0)]);
        let bound: Vec<f64> = buckets.iter().map(|(le, _)| le.parse().unwrap()).collect();
        assert_eq!(bound, [0.5, 1.0, 2.5, f64::INFINITY]);
        let one = |name: &str| samples.iter().find(|x| x.name == name).map(|x| x.value);
        assert_eq!(one("egret_complete_latency_sum"), Some(7.25));
        assert_eq!(one("egret_complete_latency_count"), Some(10.0));
        assert_eq!(samples[0].label("component"), Some("word"));
    }

    #[test]
    fn a_histogram_hides_values_that_would_repeat_its_series() {
        let mut s = Snapshot::default();
        publish(
            &mut s,
            "word",
            3,
            "i3",
            &[
                ("__complete-latency", "", 1.5),
                ("__complete-latency-count", "", 2.0),
                ("__complete-latency-sum", "", 2.0),
                ("__complete-latency-bucket", "", 2.0),
                ("__complete-latency-p99", "", 3.0),
            ],
        );
        s.apply_histograms(
            publisher("word", 3, "i3"),
            vec![histogram("__complete-latency", "", &[1.0], &[1], 1.5, 1)],
        );
        let text = render("t", &s);
        assert_eq!(text.matches("# TYPE egret_complete_latency ").count(), 1, "{text}");
        assert!(text.contains("# TYPE egret_complete_latency histogram\n"), "{text}");
        assert!(!text.contains("egret_complete_latency_count counter"), "{text}");
        assert!(text.contains("egret_complete_latency_p99{topology=\"t\",component=\"word\",task=\"3\"} 3\n"));
        let samples = exposition::parse(&text).unwrap();
        let mut series: Vec<_> = samples.iter().map(|x| (&x.name, &x.labels)).collect();
        let all = series.len();
        series.sort();
        series.dedup();
        assert_eq!(series.len(), all, "no series twice:\n{text}");
    }

    #[test]
    fn malformed_histograms_are_refused_and_keep_the_last_good_one() {
        let mut s = Snapshot::default();
        let key = publisher("word", 3, "i3");
        let good = histogram("h", "", &[1.0], &[1], 1.0, 2);
        assert_eq!(s.apply_histograms(key.clone(), vec![good]), Default::default());
        let bad = [
            histogram("h", "", &[1.0, 2.0], &[1], 0.0, 1),
            histogram("h", "", &[2.0, 1.0], &[0, 1], 0.0, 1),
            histogram("h", "", &[1.0, 1.0], &[0, 1], 0.0, 1),
            histogram("h", "", &[f64::NAN], &[0], 0.0, 1),
            histogram("h", "", &[f64::INFINITY], &[1], 0.0, 1),
            histogram("h", "", &[1.0, 2.0], &[2, 1], 0.0, 2),
            histogram("h", "", &[1.0], &[3], 0.0, 2),
            histogram(
                "h",
                "",
                &vec![1.0; crate::state::MAX_BUCKETS + 1],
                &vec![0; crate::state::MAX_BUCKETS + 1],
                0.0,
                0,
            ),
        ];
        let applied = s.apply_histograms(key.clone(), bad.to_vec());
        assert_eq!(applied.dropped, 0);
        assert_eq!(applied.refused.len(), bad.len(), "{:?}", applied.refused);
        let kept = &s.histograms[&key][&SeriesKey {
            name: "h".into(),
            stream: String::new(),
            ..Default::default()
        }];
        assert_eq!(kept.count(), 2);
        assert_eq!(kept.buckets().collect::<Vec<_>>(), [(1.0, 1)]);
    }

    /// Label values with the characters the format escapes, and others.
    fn label_value() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[a-z\\\\\"\n{},= é/-]{0,8}").expect("a valid regex")
    }

    fn value() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<f64>(),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(0.0),
            (0u32..1_000_000).prop_map(f64::from),
        ]
    }

    /// Published metrics: names distinct after mapping (a lower-case stem, maybe `-count`), any labels and values.
    fn publishes() -> impl Strategy<Value = Vec<(String, i32, String, String, String, f64)>> {
        let name = ("[a-z]{1,6}", any::<bool>())
            .prop_map(|(stem, count)| format!("__{stem}{}", if count { "-count" } else { "" }));
        let process = prop_oneof![Just("p1".to_string()), Just("p2".to_string())];
        proptest::collection::vec((label_value(), -2i32..5, process, name, label_value(), value()), 0..12)
    }

    proptest! {
        /// Whatever is published, the rendered text parses, and every series shows the latest value published
        /// for it, under its labels.
        #[test]
        fn rendered_text_parses_back_to_the_published_values(
            topology in label_value(),
            values in publishes(),
        ) {
            let mut s = Snapshot::default();
            for (component, task, process, name, stream, v) in &values {
                publish(&mut s, component, *task, process, &[(name, stream, *v)]);
            }
            let text = render(&topology, &s);
            let samples = exposition::parse(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
            let own = 3;
            prop_assert_eq!(samples.len(), s.series_count() + own, "{}", text);
            for (publisher, series) in &s.series {
                for (key, v) in series {
                    let found: Vec<&Sample> = samples
                        .iter()
                        .filter(|x| {
                            x.name == metric_name(&key.name)
                                && x.label("component") == Some(publisher.component.as_str())
                                && x.label("task") == Some(publisher.task_id.to_string().as_str())
                                && x.label("stream") == (!key.stream.is_empty()).then_some(key.stream.as_str())
                                && x.label("process").is_none_or(|p| p == publisher.process)
                        })
                        .collect();
                    prop_assert_eq!(found.len(), 1, "{:?} {:?} in\n{}", publisher, key, text);
                    prop_assert_eq!(found[0].value.to_bits() == v.to_bits() || (found[0].value.is_nan() && v.is_nan()), true);
                    prop_assert_eq!(found[0].label("topology"), Some(topology.as_str()));
                }
            }
        }

        /// A histogram's buckets, sum and count parse back as rendered, whatever its bounds and labels.
        #[test]
        fn rendered_histograms_parse_back(
            component in label_value(),
            stream in label_value(),
            steps in proptest::collection::vec((1u32..1000, 0u64..100), 0..10),
            sum in value(),
            extra in 0u64..100,
        ) {
            let (mut bounds, mut counts) = (Vec::new(), Vec::new());
            let (mut bound, mut count) = (0.0, 0);
            for (b, c) in steps {
                bound += f64::from(b) / 8.0;
                count += c;
                bounds.push(bound);
                counts.push(count);
            }
            let mut s = Snapshot::default();
            let total = count + extra;
            let applied = s.apply_histograms(
                publisher(&component, 1, "p"),
                vec![histogram("__h", &stream, &bounds, &counts, sum, total)],
            );
            prop_assert_eq!(applied, Default::default());
            let text = render("t", &s);
            let samples = exposition::parse(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
            let mine: Vec<&Sample> = samples.iter().filter(|x| x.name.starts_with("egret_h_")).collect();
            prop_assert_eq!(mine.len(), bounds.len() + 3);
            for x in &mine {
                prop_assert_eq!(x.label("component"), Some(component.as_str()));
                prop_assert_eq!(x.label("stream"), (!stream.is_empty()).then_some(stream.as_str()));
            }
            let parsed: Vec<(f64, f64)> = mine[..=bounds.len()]
                .iter()
                .map(|x| (x.label("le").and_then(exposition::parse_value).unwrap_or(f64::NAN), x.value))
                .collect();
            let mut expected: Vec<(f64, f64)> = bounds.iter().zip(&counts).map(|(&b, &c)| (b, c as f64)).collect();
            expected.push((f64::INFINITY, total as f64));
            prop_assert_eq!(parsed, expected);
            prop_assert_eq!(&mine[bounds.len() + 1].name, "egret_h_sum");
            prop_assert!(mine[bounds.len() + 1].value.to_bits() == sum.to_bits() || sum.is_nan());
            prop_assert_eq!(&mine[bounds.len() + 2].name, "egret_h_count");
            prop_assert_eq!(mine[bounds.len() + 2].value, total as f64);
        }
    }
}
