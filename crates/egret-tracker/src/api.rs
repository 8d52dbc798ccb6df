//! The routes of `/api/v1` and their handlers. Handlers read files and scrape metrics managers with blocking
//! calls, so each runs its work on tokio's blocking pool and the runtime threads stay free for other requests.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use egret_proto::egret::{MetricKind, MetricsQuery};
use egret_statemgr::StateManager;
use serde_json::{Value, json};

use crate::explain::{check_cluster, existing};
use crate::prometheus::{self, Sample};
use crate::{Opts, TrackerError, logs};

pub(crate) const CLUSTERS: &str = "/api/v1/clusters";
pub(crate) const TOPOLOGIES: &str = "/api/v1/topologies";
pub(crate) const TOPOLOGY: &str = "/api/v1/topologies/{cluster}/{name}";
pub(crate) const METRICS: &str = "/api/v1/topologies/{cluster}/{name}/metrics";
pub(crate) const BACKPRESSURE: &str = "/api/v1/topologies/{cluster}/{name}/backpressure";
pub(crate) const LOGS: &str = "/api/v1/topologies/{cluster}/{name}/logs/{process}";
pub(crate) const TIMESERIES: &str = "/api/v1/topologies/{cluster}/{name}/timeseries";
pub(crate) const EXCEPTIONS: &str = "/api/v1/topologies/{cluster}/{name}/exceptions";
pub(crate) const CHECKPOINTS: &str = "/api/v1/topologies/{cluster}/{name}/checkpoints";
pub(crate) const OPENAPI: &str = "/api/v1/openapi.json";

/// The component the stmgrs publish their own series under (their task is their container).
const STMGR_COMPONENT: &str = "__stmgr__";

/// A metric name no series has, so an exceptions query does not carry every time series along.
const NO_SERIES: &str = "__tracker-exceptions-only";

const OPENAPI_DOC: &str = include_str!("openapi.json");

/// The tracker's routes, ready for `axum::serve`.
pub fn router(opts: Opts) -> Router {
    Router::new()
        .route(CLUSTERS, get(clusters))
        .route(TOPOLOGIES, get(topologies))
        .route(TOPOLOGY, get(topology))
        .route(METRICS, get(metrics))
        .route(BACKPRESSURE, get(backpressure))
        .route(LOGS, get(log_page))
        .route(TIMESERIES, get(timeseries))
        .route(EXCEPTIONS, get(exceptions))
        .route(CHECKPOINTS, get(checkpoints))
        .route(OPENAPI, get(openapi))
        .merge(crate::ui::routes())
        .fallback(not_found)
        .with_state(opts)
}

fn error_response(e: &TrackerError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(json!({"error": e.to_string()}))).into_response()
}

/// Runs `f` on the blocking pool and answers with its JSON or its error.
async fn blocking(f: impl FnOnce() -> Result<Value, TrackerError> + Send + 'static) -> Response {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => axum::Json(v).into_response(),
        Ok(Err(e)) => error_response(&e),
        Err(e) => error_response(&TrackerError::Worker(e.to_string())),
    }
}

async fn not_found(uri: axum::http::Uri) -> Response {
    let body = json!({"error": format!("no route {uri}; the API is described at {OPENAPI}")});
    (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_DOC).into_response()
}

/// A topology's secret, to talk to its tmanager.
fn secret_of(opts: &Opts, cluster: &str, name: &str) -> Result<egret_transport::auth::TopologySecret, TrackerError> {
    egret_transport::auth::TopologySecret::load(&opts.egret_home, cluster, name).map_err(|e| TrackerError::Tmanager {
        topology: name.to_string(),
        reason: e.to_string(),
    })
}

async fn clusters(State(opts): State<Opts>) -> Response {
    axum::Json(json!(egret_statemgr::config::clusters(&opts.egret_home))).into_response()
}

async fn topologies(State(opts): State<Opts>) -> Response {
    blocking(move || Ok(Value::Array(crate::explain::list_all(&opts.egret_home)?))).await
}

async fn topology(State(opts): State<Opts>, Path((cluster, name)): Path<(String, String)>) -> Response {
    blocking(move || {
        let state = existing(&opts.egret_home, &cluster, &name)?;
        let mut out = crate::explain::explain_from(&*state, &opts.egret_home, &cluster, &name)?;
        out["execution_state"] = match state.get_execution_state(&name)? {
            Some(e) => json!({
                "topology_name": e.topology_name,
                "topology_id": e.topology_id,
                "cluster": e.cluster,
                "submission_time_ms": e.submission_time_ms,
                "submission_user": e.submission_user,
                "egret_version": e.egret_version,
                "containers": e.containers,
                "package": e.package,
                "topology_args": e.topology_args,
            }),
            None => Value::Null,
        };
        Ok(out)
    })
    .await
}

/// The query's pairs; a key outside `allowed` is a bad query, since a misspelt filter would silently match all.
fn query(raw: Option<String>, allowed: &[&str]) -> Result<Vec<(String, String)>, TrackerError> {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if let Some((k, _)) = pairs.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
        return Err(TrackerError::BadQuery(format!(
            "unknown parameter {k:?} (allowed: {})",
            allowed.join(", ")
        )));
    }
    Ok(pairs)
}

/// Every value given for `key`, repeated or comma-separated; empty means no filter.
fn values_of(pairs: &[(String, String)], key: &str) -> Vec<String> {
    pairs
        .iter()
        .filter(|(k, _)| k == key)
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(String::from)
        .collect()
}

/// One number from the query, if given.
fn number_of(pairs: &[(String, String)], key: &str) -> Result<Option<u64>, TrackerError> {
    let mut found = None;
    for (_, v) in pairs.iter().filter(|(k, _)| k == key) {
        if found.is_some() {
            return Err(TrackerError::BadQuery(format!("{key} is given twice")));
        }
        let n = v
            .parse::<u64>()
            .map_err(|_| TrackerError::BadQuery(format!("{key}={v:?} is not a non-negative integer")))?;
        found = Some(n);
    }
    Ok(found)
}

/// Scrapes every metrics manager of a topology now. One that does not answer (restarting, say) is left out and
/// logged; only when none answers is the request an error.
fn scrape_topology(
    opts: &Opts,
    cluster: &str,
    name: &str,
) -> Result<(Arc<dyn StateManager>, Vec<Sample>), TrackerError> {
    let state = existing(&opts.egret_home, cluster, name)?;
    let mut samples = Vec::new();
    let mut failures = Vec::new();
    let mut managers = 0;
    for l in state.locations(name)?.into_iter().filter(|l| l.http_port > 0) {
        managers += 1;
        let Ok(port) = u16::try_from(l.http_port) else {
            failures.push(format!("{}: http port {} is out of range", l.process, l.http_port));
            continue;
        };
        match prometheus::scrape_samples(&l.host, port) {
            Ok(scraped) => samples.extend(prometheus::task_samples(scraped)),
            Err(e) => failures.push(format!("{}: {e}", l.process)),
        }
    }
    if managers > 0 && failures.len() == managers {
        return Err(TrackerError::Scrape {
            topology: name.to_string(),
            failures: failures.join("; "),
        });
    }
    for f in &failures {
        tracing::warn!(topology = %name, failure = %f, "left out a metrics manager");
    }
    // Stable, so a histogram's buckets keep the order the metrics manager wrote them in (increasing bounds).
    samples.sort_by(|a, b| {
        (&a.component, a.task, &a.name, &a.stream, &a.process).cmp(&(
            &b.component,
            b.task,
            &b.name,
            &b.stream,
            &b.process,
        ))
    });
    Ok((state, samples))
}

fn sample_json(s: &Sample) -> Value {
    let mut v = json!({"name": s.name, "component": s.component, "task": s.task, "value": s.value});
    if let Some(stream) = &s.stream {
        v["stream"] = json!(stream);
    }
    if let Some(process) = &s.process {
        v["process"] = json!(process);
    }
    if let Some(le) = &s.le {
        v["le"] = json!(le);
    }
    if let Some(key) = &s.key {
        v["key"] = json!(key);
    }
    v
}

async fn metrics(
    State(opts): State<Opts>,
    Path((cluster, name)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Response {
    blocking(move || {
        check_cluster(&opts.egret_home, &cluster)?;
        let q = query(raw, &["component", "name"])?;
        let components = values_of(&q, "component");
        // Accept the Prometheus family name as well as the short one.
        let names: Vec<String> = values_of(&q, "name")
            .into_iter()
            .map(|n| n.strip_prefix("egret_").map(String::from).unwrap_or(n))
            .collect();
        let (_, samples) = scrape_topology(&opts, &cluster, &name)?;
        let out: Vec<Value> = samples
            .iter()
            .filter(|s| components.is_empty() || components.contains(&s.component))
            .filter(|s| names.is_empty() || names.contains(&s.name))
            .map(sample_json)
            .collect();
        Ok(Value::Array(out))
    })
    .await
}

/// The checkpoint series the instances publish (effectively-once), per instance.
fn is_checkpoint_metric(name: &str) -> bool {
    name.starts_with("checkpoint") || name == "dropped_stale_count"
}

async fn checkpoints(State(opts): State<Opts>, Path((cluster, name)): Path<(String, String)>) -> Response {
    blocking(move || {
        let state = crate::explain::existing(&opts.egret_home, &cluster, &name)?;
        let mut out = crate::explain::checkpoints(&*state, &name)?;
        // Per instance, what it last published; a topology whose metrics managers do not answer still shows the
        // store and the record.
        let mut instances: BTreeMap<(String, i64), serde_json::Map<String, Value>> = BTreeMap::new();
        if let Ok((_, samples)) = scrape_topology(&opts, &cluster, &name) {
            for s in samples.iter().filter(|s| is_checkpoint_metric(&s.name)) {
                instances
                    .entry((s.component.clone(), s.task))
                    .or_default()
                    .insert(s.name.clone(), json!(s.value));
            }
        }
        out["instances"] = instances
            .into_iter()
            .map(|((component, task), metrics)| json!({"component": component, "task": task, "metrics": metrics}))
            .collect();
        Ok(out)
    })
    .await
}

fn is_back_pressure(name: &str) -> bool {
    name.starts_with("time_spent_back_pressure") || name == "back_pressure_active"
}

async fn backpressure(State(opts): State<Opts>, Path((cluster, name)): Path<(String, String)>) -> Response {
    blocking(move || {
        let (state, samples) = scrape_topology(&opts, &cluster, &name)?;
        let pplan = state.get_physical_plan(&name)?;
        let samples: Vec<&Sample> = samples.iter().filter(|s| is_back_pressure(&s.name)).collect();
        let metrics_of = |component: &str, task: i64| -> serde_json::Map<String, Value> {
            samples
                .iter()
                .filter(|s| s.component == component && s.task == task)
                .map(|s| (s.name.clone(), json!(s.value)))
                .collect()
        };
        // Stmgrs and instances come from the physical plan, so each is listed even before its first series; any
        // series the plan does not explain (a stale plan) is listed too.
        let mut stmgrs: BTreeMap<i64, String> = pplan
            .iter()
            .flat_map(|p| p.stmgrs.iter().map(|s| (i64::from(s.container), s.id.clone())))
            .collect();
        let mut instances: BTreeMap<(i64, String), String> = pplan
            .iter()
            .flat_map(|p| {
                p.instances
                    .iter()
                    .map(|i| ((i64::from(i.task_id), i.component.clone()), i.stmgr_id.clone()))
            })
            .collect();
        for s in &samples {
            if s.component == STMGR_COMPONENT {
                stmgrs.entry(s.task).or_insert_with(|| format!("stmgr-{}", s.task));
            } else {
                instances.entry((s.task, s.component.clone())).or_default();
            }
        }
        let stmgrs: Vec<Value> = stmgrs
            .iter()
            .map(|(c, id)| json!({"id": id, "container": c, "metrics": metrics_of(STMGR_COMPONENT, *c)}))
            .collect();
        let instances: Vec<Value> = instances
            .iter()
            .map(|((task, component), stmgr)| {
                json!({"component": component, "task": task, "stmgr": stmgr, "metrics": metrics_of(component, *task)})
            })
            .collect();
        Ok(json!({"topology": name, "stmgrs": stmgrs, "instances": instances}))
    })
    .await
}

async fn timeseries(
    State(opts): State<Opts>,
    Path((cluster, name)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Response {
    blocking(move || {
        check_cluster(&opts.egret_home, &cluster)?;
        let q = query(raw, &["component", "name", "since_ms", "user"])?;
        let mut components = values_of(&q, "component");
        // The tmanager filters on one component; several would need several queries, which no page needs.
        if components.len() > 1 {
            return Err(TrackerError::BadQuery(format!(
                "component is given {} times; the time series take at most one",
                components.len()
            )));
        }
        let since_ms = number_of(&q, "since_ms")?.unwrap_or(0);
        let user_metrics = match values_of(&q, "user").as_slice() {
            [] => false,
            [v] if v == "true" => true,
            [v] if v == "false" => false,
            other => {
                return Err(TrackerError::BadQuery(format!(
                    "user={other:?}: give user=true (every user metric too) or user=false, once"
                )));
            }
        };
        let request = MetricsQuery {
            component: components.pop().unwrap_or_default(),
            names: values_of(&q, "name"),
            since_ms: i64::try_from(since_ms).unwrap_or(i64::MAX),
            user_metrics,
            ..Default::default()
        };
        let state = existing(&opts.egret_home, &cluster, &name)?;
        let response = crate::tmanager::query(&*state, &secret_of(&opts, &cluster, &name)?, &name, request)?;
        let out: Vec<Value> = response
            .series
            .iter()
            .map(|s| {
                json!({
                    "component": s.component,
                    "task": s.task_id,
                    "name": s.name,
                    "stream": s.stream,
                    "key": s.key,
                    "kind": match MetricKind::try_from(s.kind) {
                        Ok(MetricKind::Counter) => "counter",
                        Ok(MetricKind::Gauge) => "gauge",
                        _ if s.name.ends_with("-count") => "counter",
                        _ => "gauge",
                    },
                    "points": s.points.iter().map(|p| json!([p.time_ms, p.value])).collect::<Vec<_>>(),
                })
            })
            .collect();
        Ok(Value::Array(out))
    })
    .await
}

async fn exceptions(State(opts): State<Opts>, Path((cluster, name)): Path<(String, String)>) -> Response {
    blocking(move || {
        let state = existing(&opts.egret_home, &cluster, &name)?;
        // Names filter series only; asking for none keeps the answer to the exceptions.
        let request = MetricsQuery {
            names: vec![NO_SERIES.to_string()],
            ..Default::default()
        };
        let response = crate::tmanager::query(&*state, &secret_of(&opts, &cluster, &name)?, &name, request)?;
        let out: Vec<Value> = response
            .exceptions
            .iter()
            .map(|e| {
                json!({
                    "component": e.component,
                    "task": e.task_id,
                    "message": e.message,
                    "count": e.count,
                    "first_ms": e.first_ms,
                    "last_ms": e.last_ms,
                })
            })
            .collect();
        Ok(Value::Array(out))
    })
    .await
}

async fn log_page(
    State(opts): State<Opts>,
    Path((cluster, name, process)): Path<(String, String, String)>,
    RawQuery(raw): RawQuery,
) -> Response {
    blocking(move || {
        check_cluster(&opts.egret_home, &cluster)?;
        let q = query(raw, &["offset", "length"])?;
        let offset = number_of(&q, "offset")?;
        let length = number_of(&q, "length")?;
        let (log, dir) = logs::locate(&opts.egret_home, &cluster, &name, &process)?;
        logs::read_page(&process, &log, &dir, offset, length)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_documents_exactly_the_routes() {
        let doc: Value = serde_json::from_str(OPENAPI_DOC).expect("openapi.json is JSON");
        assert!(doc["openapi"].as_str().unwrap_or("").starts_with("3."));
        let mut documented: Vec<&str> = doc["paths"]
            .as_object()
            .expect("paths")
            .keys()
            .map(|k| k.as_str())
            .collect();
        documented.sort();
        let mut routes = vec![
            CLUSTERS,
            TOPOLOGIES,
            TOPOLOGY,
            METRICS,
            BACKPRESSURE,
            LOGS,
            TIMESERIES,
            EXCEPTIONS,
            CHECKPOINTS,
            OPENAPI,
        ];
        routes.sort();
        assert_eq!(documented, routes);
        for (path, item) in doc["paths"].as_object().unwrap() {
            assert!(
                item["get"]["responses"]["200"].is_object(),
                "{path} documents its 200 answer"
            );
        }
    }

    #[test]
    fn queries_are_checked() {
        let q = query(Some("name=a,b&name=c&component=to-all".into()), &["name", "component"]).unwrap();
        assert_eq!(values_of(&q, "name"), ["a", "b", "c"]);
        assert_eq!(values_of(&q, "component"), ["to-all"]);
        assert!(matches!(
            query(Some("nmae=a".into()), &["name"]),
            Err(TrackerError::BadQuery(_))
        ));
        let q = query(Some("offset=10".into()), &["offset", "length"]).unwrap();
        assert_eq!(number_of(&q, "offset").unwrap(), Some(10));
        assert_eq!(number_of(&q, "length").unwrap(), None);
        let q = query(Some("offset=-1".into()), &["offset"]).unwrap();
        assert!(matches!(number_of(&q, "offset"), Err(TrackerError::BadQuery(_))));
    }
}
