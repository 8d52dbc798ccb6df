//! What the tracker shows of a metrics manager's Prometheus text: the `egret_*` series of tasks (those with a
//! `component` and a `task` label), read with the metrics manager's own parser ([`egret_metricsmgr::exposition`]).

use egret_metricsmgr::exposition;

pub use egret_metricsmgr::{ScrapeError, scrape_samples};

/// One series of one family, as a metrics manager rendered it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The family without its `egret_` prefix: `execute_count`; a histogram's series keep their suffix
    /// (`complete_latency_bucket`, `_sum`, `_count`).
    pub name: String,
    pub component: String,
    pub task: i64,
    pub stream: Option<String>,
    /// Set only when two processes published for the same (component, task).
    pub process: Option<String>,
    /// A histogram bucket's upper bound, as written (`0.5`, `+Inf`).
    pub le: Option<String>,
    /// A user multi-counter's key.
    pub key: Option<String>,
    pub value: f64,
}

/// The series of tasks among `samples`: an `egret_` name, a component and a numeric task. The metrics manager's
/// own series (no component) and any other are left out.
pub fn task_samples(samples: Vec<exposition::Sample>) -> Vec<Sample> {
    samples.into_iter().filter_map(task_sample).collect()
}

fn task_sample(s: exposition::Sample) -> Option<Sample> {
    let name = s.name.strip_prefix("egret_")?.to_string();
    let task = s.label("task")?.parse::<i64>().ok()?;
    let owned = |key: &str| s.label(key).map(str::to_string);
    Some(Sample {
        name,
        component: owned("component")?,
        task,
        stream: owned("stream"),
        process: owned("process"),
        le: owned("le"),
        key: owned("key"),
        value: s.value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# HELP egret_emit_count Tuples emitted by a task (emit calls), per output stream.
# TYPE egret_emit_count counter
egret_emit_count{topology=\"t\",component=\"numbers\",task=\"1\",stream=\"default\"} 1500
egret_execute_count{topology=\"t\",component=\"to-all\",task=\"5\",stream=\"numbers/default\"} 3e3
egret_time_spent_back_pressure{topology=\"t\",component=\"__stmgr__\",task=\"2\",process=\"stmgr-2-bp\"} 12.5
egret_back_pressure_active{topology=\"t\",component=\"__stmgr__\",task=\"2\"} 0 1700000000000
egret_complete_latency_bucket{topology=\"t\",component=\"numbers\",task=\"1\",le=\"+Inf\"} 9
egret_metricsmgr_publishers{topology=\"t\"} 7
egret_x{topology=\"t\",component=\"a\",task=\"three\"} 1
other_x{topology=\"t\",component=\"a\",task=\"3\"} 1
";

    #[test]
    fn keeps_the_series_of_tasks() {
        let s = task_samples(exposition::parse(TEXT).unwrap());
        assert_eq!(s.len(), 5, "{s:?}");
        assert_eq!(
            s[0],
            Sample {
                name: "emit_count".into(),
                component: "numbers".into(),
                task: 1,
                stream: Some("default".into()),
                process: None,
                le: None,
                key: None,
                value: 1500.0
            }
        );
        assert_eq!(s[1].value, 3000.0);
        assert_eq!(s[1].stream.as_deref(), Some("numbers/default"));
        assert_eq!(s[2].process.as_deref(), Some("stmgr-2-bp"));
        assert_eq!(s[2].stream, None);
        assert_eq!(s[3].name, "back_pressure_active");
        assert_eq!(s[3].value, 0.0, "a trailing timestamp is not the value");
        assert_eq!(
            (s[4].name.as_str(), s[4].le.as_deref()),
            ("complete_latency_bucket", Some("+Inf"))
        );
    }
}
