//! Heron UI for Egret: HTML pages over the same data as the JSON API. Everything a page needs (CSS, JS, the SVG
//! of the logical plan) is embedded in the binary or rendered here, so the UI works with no asset from the
//! internet. The pages render what the state manager knows on the server; the live numbers (rates, latencies,
//! charts, exceptions) are filled in by `topology.js` from the `/timeseries` and `/exceptions` endpoints.
//!
//! Elements a test (or a script) can rely on: each logical-plan node is `<g class="component" data-component=..>`,
//! each edge `<g class="edge" data-from=.. data-to=.. data-grouping=..>`, and `#emit-rate-total` holds the
//! topology's total emit rate in tuples/s as a plain number once two reports are known.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde_json::Value;

use crate::explain::existing;
use crate::{Opts, TrackerError, logs};

const STYLE: &str = include_str!("ui/style.css");
const TOPOLOGY_JS: &str = include_str!("ui/topology.js");

pub(crate) fn routes() -> Router<Opts> {
    Router::new()
        .route("/", get(index))
        .route("/topologies/{cluster}/{name}", get(topology))
        .route("/topologies/{cluster}/{name}/logs/{process}", get(log))
}

/// Escapes text for HTML element content and double-quoted attributes; names come from submitted topologies.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes one URL path segment, so a name cannot change the shape of a link.
fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn page(title: &str, body: &str, script: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} - Egret</title>\
         <style>{STYLE}</style></head>\n{body}\n{script}</html>\n",
        esc(title)
    )
}

fn error_page(e: &TrackerError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = format!(
        "<body><header><a href=\"/\">Egret</a></header><main><h1>{}</h1><p class=\"error\">{}</p></main></body>",
        status,
        esc(&e.to_string())
    );
    (status, Html(page("error", &body, ""))).into_response()
}

/// Runs `f` on the blocking pool (it reads files) and answers with its page or an error page.
async fn blocking_page(f: impl FnOnce() -> Result<String, TrackerError> + Send + 'static) -> Response {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(html)) => Html(html).into_response(),
        Ok(Err(e)) => error_page(&e),
        Err(e) => error_page(&TrackerError::Worker(e.to_string())),
    }
}

fn time_of(ms: i64) -> String {
    // UTC, without a date crate: days since the epoch to a civil date (Howard Hinnant's algorithm).
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

async fn index(State(opts): State<Opts>) -> Response {
    blocking_page(move || {
        let rows = crate::explain::list_all(&opts.egret_home)?;
        let mut body = String::from(
            "<body><header><a href=\"/\">Egret</a> <span class=\"crumb\">topologies</span></header><main>\
             <h1>Topologies</h1><table id=\"topologies\"><thead><tr><th>name</th><th>cluster</th><th>state</th>\
             <th>containers</th><th>submitted</th><th>user</th></tr></thead><tbody>",
        );
        for r in &rows {
            let name = r["name"].as_str().unwrap_or_default();
            let cluster = r["cluster"].as_str().unwrap_or_default();
            let submitted = r["submitted_ms"]
                .as_i64()
                .filter(|&t| t > 0)
                .map(time_of)
                .unwrap_or_default();
            let _ = write!(
                body,
                "<tr data-topology=\"{}\"><td><a href=\"/topologies/{}/{}\">{}</a></td><td>{}</td>\
                 <td class=\"state\">{}{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>",
                esc(name),
                seg(cluster),
                seg(name),
                esc(name),
                esc(cluster),
                esc(r["state"].as_str().unwrap_or_default()),
                if r["rescaling"] == true { " · rescaling" } else { "" },
                r["containers"].as_i64().unwrap_or(0),
                esc(&submitted),
                esc(r["user"].as_str().unwrap_or_default()),
            );
        }
        if rows.is_empty() {
            body.push_str("<tr><td colspan=\"6\" class=\"empty\">no topology runs on the local cluster</td></tr>");
        }
        body.push_str(
            "</tbody></table><p class=\"note\">JSON: <a href=\"/api/v1/openapi.json\">/api/v1</a></p></main></body>",
        );
        Ok(page("Topologies", &body, ""))
    })
    .await
}

/// One edge of the logical plan: `from` feeds `to` through `stream` with `grouping`.
#[derive(Debug, Clone, PartialEq)]
struct Edge {
    from: String,
    to: String,
    stream: String,
    grouping: String,
}

/// Components (name, is spout) and edges of an explain `logical_plan`.
fn plan_of(logical_plan: &Value) -> (Vec<(String, bool)>, Vec<Edge>) {
    let mut nodes = Vec::new();
    let mut edges = Vec::new();
    for c in logical_plan.as_array().into_iter().flatten() {
        let Some(name) = c["name"].as_str() else { continue };
        nodes.push((name.to_string(), c["kind"] == "spout"));
        for i in c["inputs"].as_array().into_iter().flatten() {
            edges.push(Edge {
                from: i["component"].as_str().unwrap_or_default().to_string(),
                to: name.to_string(),
                stream: i["stream"].as_str().unwrap_or_default().to_string(),
                grouping: i["grouping"].as_str().unwrap_or_default().to_string(),
            });
        }
    }
    (nodes, edges)
}

/// Each node's layer: 0 for components without inputs, else one past its deepest input. A cycle (not a valid
/// topology, but the definition comes from a client) stops growing after one pass per node.
fn layers(nodes: &[(String, bool)], edges: &[Edge]) -> BTreeMap<String, usize> {
    let mut layer: BTreeMap<String, usize> = nodes.iter().map(|(n, _)| (n.clone(), 0)).collect();
    for _ in 0..nodes.len() {
        let mut changed = false;
        for e in edges {
            let (Some(&from), Some(&to)) = (layer.get(&e.from), layer.get(&e.to)) else {
                continue;
            };
            if e.from != e.to && to < from + 1 {
                layer.insert(e.to.clone(), from + 1);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    layer
}

const NODE_W: usize = 150;
const NODE_H: usize = 44;
const COL_W: usize = 300;
const ROW_H: usize = 90;
const MARGIN: usize = 20;

/// The logical plan as an SVG: layers left to right, each edge a line with its grouping written on it.
fn plan_svg(logical_plan: &Value) -> String {
    let (nodes, edges) = plan_of(logical_plan);
    let layer = layers(&nodes, &edges);
    let mut columns: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
    for (n, _) in &nodes {
        columns.entry(layer[n]).or_default().push(n);
    }
    let rows = columns.values().map(Vec::len).max().unwrap_or(1).max(1);
    let height = rows * ROW_H + 2 * MARGIN;
    let width = columns.len().max(1) * COL_W - (COL_W - NODE_W) + 2 * MARGIN;
    let mut pos: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for (col, names) in &columns {
        // Centre each column vertically, so a lone spout sits level with the middle of its bolts.
        let top = MARGIN + (rows - names.len()) * ROW_H / 2 + (ROW_H - NODE_H) / 2;
        for (i, n) in names.iter().enumerate() {
            pos.insert(n, (MARGIN + col * COL_W, top + i * ROW_H));
        }
    }
    let mut svg = format!(
        "<svg id=\"plan\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"logical plan\">\
         <defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"8\" markerHeight=\"8\" \
         orient=\"auto-start-reverse\"><path d=\"M 0 0 L 10 5 L 0 10 z\" fill=\"#5b6b7f\"/></marker></defs>"
    );
    for e in &edges {
        let (Some(&(fx, fy)), Some(&(tx, ty))) = (pos.get(e.from.as_str()), pos.get(e.to.as_str())) else {
            continue;
        };
        let (x1, y1, x2, y2) = (fx + NODE_W, fy + NODE_H / 2, tx, ty + NODE_H / 2);
        let label = if e.stream.is_empty() || e.stream == "default" {
            e.grouping.clone()
        } else {
            format!("{}: {}", e.stream, e.grouping)
        };
        // The label sits near the target end, where edges from one source have fanned out and do not overlap.
        let (lx, ly) = (x1 + (x2.saturating_sub(x1)) * 3 / 5, (y1 * 2 + y2 * 3) / 5);
        let _ = write!(
            svg,
            "<g class=\"edge\" data-from=\"{}\" data-to=\"{}\" data-stream=\"{}\" data-grouping=\"{}\">\
             <line x1=\"{x1}\" y1=\"{y1}\" x2=\"{x2}\" y2=\"{y2}\" marker-end=\"url(#arrow)\"/>\
             <text x=\"{lx}\" y=\"{}\" text-anchor=\"middle\">{}</text></g>",
            esc(&e.from),
            esc(&e.to),
            esc(&e.stream),
            esc(&e.grouping),
            ly.saturating_sub(6),
            esc(&label)
        );
    }
    for (n, spout) in &nodes {
        let (x, y) = pos[n.as_str()];
        let kind = if *spout { "spout" } else { "bolt" };
        let _ = write!(
            svg,
            "<g class=\"component {kind}\" data-component=\"{}\" data-kind=\"{kind}\">\
             <rect x=\"{x}\" y=\"{y}\" width=\"{NODE_W}\" height=\"{NODE_H}\" rx=\"8\"/>\
             <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\
             <text class=\"kind\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">{kind}</text></g>",
            esc(n),
            x + NODE_W / 2,
            y + 19,
            esc(n),
            x + NODE_W / 2,
            y + 35,
        );
    }
    svg.push_str("</svg>");
    svg
}

const RATE_COLUMNS: &str = "<th>emit/s</th><th>execute/s</th><th>ack/s</th><th>fail/s</th>\
    <th>execute latency (ms)</th><th>complete latency (ms)</th><th>complete p99 (ms)</th><th>back pressure (ms)</th>\
    <th>user metrics</th>";
const RATE_CELLS: &str = "<td class=\"num emit\">-</td><td class=\"num execute\">-</td><td class=\"num ack\">-</td>\
    <td class=\"num fail\">-</td><td class=\"num execute-latency\">-</td><td class=\"num complete-latency\">-</td>\
    <td class=\"num complete-p99\">-</td><td class=\"num back-pressure\">-</td><td class=\"user\"></td>";

fn topology_page(opts: &Opts, cluster: &str, name: &str) -> Result<String, TrackerError> {
    let state = existing(&opts.egret_home, cluster, name)?;
    let data = crate::explain::explain_from(&*state, &opts.egret_home, cluster, name)?;
    let plan = &data["logical_plan"];
    let api = format!("/api/v1/topologies/{}/{}", seg(cluster), seg(name));
    let page_base = format!("/topologies/{}/{}", seg(cluster), seg(name));
    let mut body = format!(
        "<body data-api=\"{}\"><header><a href=\"/\">Egret</a> <span class=\"crumb\">{} / {}</span> \
         <span class=\"state\">{}</span> <span id=\"status\">loading metrics…</span></header><main>",
        esc(&api),
        esc(cluster),
        esc(name),
        esc(data["state"].as_str().unwrap_or_default()),
    );
    scaling_section(&data["scaling"], &mut body);
    let _ = write!(
        body,
        "<section><h2>Logical plan</h2><div class=\"plan\">{}</div></section>",
        plan_svg(plan)
    );
    body.push_str(
        "<section><h2>Throughput</h2><p class=\"totals\">emit rate <span id=\"emit-rate-total\" class=\"big\">\
         waiting for two reports</span> tuples/s &middot; execute rate <span id=\"execute-rate-total\" class=\"big\">\
         -</span> tuples/s</p><div id=\"charts\"></div></section>",
    );
    let _ = write!(
        body,
        "<section><h2>Components</h2><table id=\"components\"><thead><tr><th>component</th><th>kind</th>\
         <th>parallelism</th><th>task ids</th>{RATE_COLUMNS}</tr></thead><tbody>"
    );
    let components = plan.as_array().cloned().unwrap_or_default();
    let scaling = data["scaling"]["components"].as_array().cloned().unwrap_or_default();
    for c in &components {
        let n = c["name"].as_str().unwrap_or_default();
        let s = scaling.iter().find(|s| s["name"] == n).unwrap_or(&Value::Null);
        let _ = write!(
            body,
            "<tr data-component=\"{}\"><td>{}</td><td>{}</td><td class=\"num parallelism\">{}</td>\
             <td class=\"task-ids\">{}</td>{RATE_CELLS}</tr>",
            esc(n),
            esc(n),
            esc(c["kind"].as_str().unwrap_or_default()),
            c["parallelism"].as_i64().unwrap_or(0),
            task_ids_cell(&c["tasks"], s),
        );
    }
    let container_of: BTreeMap<i64, i64> = data["packing_plan"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| {
            let id = c["container"].as_i64().unwrap_or(0);
            c["instances"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(move |i| Some((i["task"].as_i64()?, id)))
        })
        .collect();
    let _ = write!(
        body,
        "</tbody></table></section><section><h2>Tasks</h2><table id=\"tasks\"><thead><tr><th>component</th>\
         <th>task</th><th>container</th>{RATE_COLUMNS}</tr></thead><tbody>"
    );
    for c in &components {
        let n = c["name"].as_str().unwrap_or_default();
        for t in c["tasks"].as_array().into_iter().flatten().filter_map(Value::as_i64) {
            let container = container_of.get(&t).map(ToString::to_string).unwrap_or_default();
            let _ = write!(
                body,
                "<tr data-component=\"{}\" data-task=\"{t}\"><td>{}</td><td class=\"num\">{t}</td>\
                 <td class=\"num\">{container}</td>{RATE_CELLS}</tr>",
                esc(n),
                esc(n)
            );
        }
    }
    body.push_str(
        "</tbody></table></section><section><h2>Exceptions</h2><table id=\"exceptions\"><thead><tr>\
         <th>component</th><th>task</th><th>message</th><th>count</th><th>first</th><th>last</th></tr></thead>\
         <tbody><tr><td colspan=\"6\" class=\"empty\">loading…</td></tr></tbody></table></section>\
         <section><h2>Processes</h2><table id=\"processes\"><thead><tr><th>process</th><th>container</th>\
         <th>pid</th><th>state</th><th>restarts</th><th>log</th></tr></thead><tbody>",
    );
    for p in data["processes"].as_array().into_iter().flatten() {
        let n = p["name"].as_str().unwrap_or_default();
        let _ = write!(
            body,
            "<tr data-process=\"{}\"><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td>\
             <td class=\"num\">{}</td><td><a class=\"log\" href=\"{page_base}/logs/{}\">log</a> \
             <a href=\"{api}/logs/{}\">json</a></td></tr>",
            esc(n),
            esc(n),
            // Empty for the supervisor, which belongs to no container.
            p["container"].as_i64().map(|c| c.to_string()).unwrap_or_default(),
            p["pid"].as_i64().unwrap_or(0),
            esc(p["state"].as_str().unwrap_or_default()),
            p["restarts"].as_i64().unwrap_or(0),
            seg(n),
            seg(n),
        );
    }
    body.push_str("</tbody></table></section>");
    checkpoints_section(&*state, name, &api, &mut body);
    body.push_str("</main></body>");
    Ok(page(name, &body, &format!("<script>{TOPOLOGY_JS}</script>")))
}

/// Task ids as ascending runs: `1-3, 7`.
fn id_ranges(ids: &Value) -> String {
    let mut ids: Vec<u64> = ids.as_array().into_iter().flatten().filter_map(Value::as_u64).collect();
    ids.sort_unstable();
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for id in ids {
        match runs.last_mut() {
            Some((_, last)) if *last + 1 == id => *last = id,
            _ => runs.push((id, id)),
        }
    }
    let parts: Vec<String> = runs
        .iter()
        .map(|&(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") })
        .collect();
    parts.join(", ")
}

/// A component's task ids, and while it rescales those with no running instance yet and those leaving.
fn task_ids_cell(tasks: &Value, scaling: &Value) -> String {
    let mut cell = esc(&id_ranges(tasks));
    for (key, class, what) in [
        ("pending", "pending", "no instance running yet"),
        ("leaving", "leaving", "leaving"),
    ] {
        if scaling[key].as_array().is_some_and(|a| !a.is_empty()) {
            let _ = write!(
                cell,
                " <span class=\"{class}\">({what}: {})</span>",
                esc(&id_ranges(&scaling[key]))
            );
        }
    }
    cell
}

/// While the topology rescales: how many tasks of the new layout have a running instance, and what else the
/// rescale waits for (nothing for a topology that is not rescaling).
fn scaling_section(scaling: &Value, body: &mut String) {
    if scaling["rescaling"] != Value::Bool(true) {
        return;
    }
    let _ = write!(
        body,
        "<section id=\"scaling\" class=\"rescaling\"><h2>Rescaling</h2><p class=\"big\" id=\"rescaling\" \
         title=\"tasks of the new layout with a running instance\">rescaling: {} of {} new tasks running</p><ul>",
        scaling["tasks_running"].as_u64().unwrap_or(0),
        scaling["tasks"].as_u64().unwrap_or(0),
    );
    for w in scaling["waiting"].as_array().into_iter().flatten() {
        let _ = write!(body, "<li>waiting: {}</li>", esc(w.as_str().unwrap_or_default()));
    }
    let changed: Vec<String> = scaling["components"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| {
            ["pending", "leaving"]
                .iter()
                .any(|k| c[k].as_array().is_some_and(|a| !a.is_empty()))
        })
        .map(|c| {
            format!(
                "{}: parallelism {}, tasks {}",
                esc(c["name"].as_str().unwrap_or_default()),
                c["parallelism"].as_u64().unwrap_or(0),
                task_ids_cell(&c["task_ids"], c)
            )
        })
        .collect();
    for c in changed {
        let _ = write!(body, "<li>{c}</li>");
    }
    let checkpoint = &scaling["checkpoint"];
    if let Some(id) = checkpoint["newest_complete"].as_u64() {
        let under = match checkpoint["under_current_layout"].as_bool() {
            Some(true) => ", taken under the new layout",
            Some(false) => ", taken under an older layout",
            None => "",
        };
        let _ = write!(body, "<li>newest complete checkpoint: {id}{under}</li>");
    }
    body.push_str("</ul></section>");
}

/// Effectively-once: the rollback epoch and the checkpoints the store keeps (nothing for other topologies).
fn checkpoints_section(state: &dyn egret_statemgr::StateManager, name: &str, api: &str, body: &mut String) {
    let Ok(c) = crate::explain::checkpoints(state, name) else {
        return;
    };
    let Some(epoch) = c["epoch"].as_u64() else { return };
    let _ = write!(
        body,
        "<section><h2>Checkpoints</h2><p>rollback epoch <span class=\"big\">{epoch}</span> · store <code>{}</code> · \
         <a href=\"{api}/checkpoints\">json</a></p><table id=\"checkpoints\"><thead><tr><th>checkpoint</th>\
         <th>complete</th><th>tasks</th><th>bytes</th></tr></thead><tbody>",
        esc(c["store"].as_str().unwrap_or_default()),
    );
    for k in c["kept"].as_array().into_iter().flatten().rev() {
        let _ = write!(
            body,
            "<tr><td class=\"num\">{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            k["id"].as_u64().unwrap_or(0),
            if k["complete"].as_bool() == Some(true) {
                "yes"
            } else {
                "—"
            },
            k["tasks"].as_u64().unwrap_or(0),
            k["bytes"].as_u64().unwrap_or(0),
        );
    }
    body.push_str("</tbody></table></section>");
}

async fn topology(State(opts): State<Opts>, Path((cluster, name)): Path<(String, String)>) -> Response {
    blocking_page(move || topology_page(&opts, &cluster, &name)).await
}

async fn log(State(opts): State<Opts>, Path((cluster, name, process)): Path<(String, String, String)>) -> Response {
    blocking_page(move || {
        let (path, dir) = logs::locate(&opts.egret_home, &cluster, &name, &process)?;
        let tail = logs::read_page(&process, &path, &dir, None, None)?;
        let body = format!(
            "<body><header><a href=\"/\">Egret</a> <span class=\"crumb\"><a href=\"/topologies/{}/{}\">{} / {}</a> \
             / {}</span></header><main><p class=\"note\">the last {} of {} bytes of {}</p><pre id=\"log\">{}</pre>\
             </main></body>",
            seg(&cluster),
            seg(&name),
            esc(&cluster),
            esc(&name),
            esc(&process),
            tail["length"].as_u64().unwrap_or(0),
            tail["total"].as_u64().unwrap_or(0),
            esc(&path.display().to_string()),
            esc(tail["data"].as_str().unwrap_or_default()),
        );
        Ok(page(&format!("{name}: {process}"), &body, ""))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn grouping_check() -> Value {
        json!([
            {"name": "numbers", "kind": "spout", "inputs": []},
            {"name": "by-word", "kind": "bolt", "inputs": [{"component": "numbers", "stream": "default", "grouping": "fields(word)"}]},
            {"name": "to-all", "kind": "bolt", "inputs": [{"component": "numbers", "stream": "default", "grouping": "all"}]},
            {"name": "global", "kind": "bolt", "inputs": [{"component": "by-word", "stream": "counts", "grouping": "global"}]},
        ])
    }

    #[test]
    fn layers_follow_the_inputs() {
        let (nodes, edges) = plan_of(&grouping_check());
        let l = layers(&nodes, &edges);
        assert_eq!((l["numbers"], l["by-word"], l["to-all"], l["global"]), (0, 1, 1, 2));
        let cyclic = json!([
            {"name": "a", "kind": "bolt", "inputs": [{"component": "b", "grouping": "shuffle"}]},
            {"name": "b", "kind": "bolt", "inputs": [{"component": "a", "grouping": "shuffle"}]},
        ]);
        let (nodes, edges) = plan_of(&cyclic);
        assert_eq!(layers(&nodes, &edges).len(), 2, "a cycle terminates");
    }

    #[test]
    fn the_svg_has_a_group_per_component_and_edge() {
        let svg = plan_svg(&grouping_check());
        for n in ["numbers", "by-word", "to-all", "global"] {
            assert!(svg.contains(&format!("data-component=\"{n}\"")), "{n}: {svg}");
        }
        assert!(svg.contains(
            "data-from=\"numbers\" data-to=\"by-word\" data-stream=\"default\" data-grouping=\"fields(word)\""
        ));
        assert!(svg.contains(">counts: global</text>"), "{svg}");
        assert_eq!(svg.matches("<g class=\"edge\"").count(), 3);
    }

    #[test]
    fn names_are_escaped() {
        assert_eq!(esc("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
        assert_eq!(seg("a b/../c"), "a%20b%2F..%2Fc");
        let svg = plan_svg(&json!([{"name": "<script>", "kind": "spout", "inputs": []}]));
        assert!(!svg.contains("<script>"), "{svg}");
    }

    #[test]
    fn task_ids_read_as_runs() {
        assert_eq!(id_ranges(&json!([1, 2, 3, 7, 9, 10])), "1-3, 7, 9-10");
        assert_eq!(id_ranges(&json!([])), "");
    }

    #[test]
    fn the_topology_page_shows_parallelism_task_ids_and_a_rescale_in_progress() {
        use crate::explain::tests::{OLD, instances, publish, store, word_count};
        let home = egret_testkit::TempHome::new("egret-tracker-ui-rescale");
        let state = home.state();
        let old = word_count(egret_api::Config::new());
        publish(&*state, &store(&*state, &old));
        instances(&*state, OLD);
        let opts = Opts {
            egret_home: home.0.clone(),
        };
        let html = topology_page(&opts, egret_testkit::CLUSTER, "wc").unwrap();
        assert!(!html.contains("id=\"rescaling\""), "steady: {html}");
        assert!(
            html.contains("<td class=\"num parallelism\">2</td><td class=\"task-ids\">4-5</td>"),
            "{html}"
        );

        let new = old.rescaled(&[("count".into(), 3), ("split".into(), 1)]).unwrap();
        publish(&*state, &store(&*state, &new));
        let html = topology_page(&opts, egret_testkit::CLUSTER, "wc").unwrap();
        assert!(html.contains("rescaling: 4 of 5 new tasks running"), "{html}");
        assert!(html.contains("waiting: no instance runs for task(s) [6] yet"), "{html}");
        assert!(
            html.contains(
                "<td class=\"num parallelism\">3</td><td class=\"task-ids\">1-2, 6 \
                 <span class=\"pending\">(no instance running yet: 6)</span></td>"
            ),
            "{html}"
        );
        assert!(html.contains("<span class=\"leaving\">(leaving: 5)</span>"), "{html}");
    }

    #[test]
    fn times_are_utc() {
        assert_eq!(time_of(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(time_of(1_700_000_000_000), "2023-11-14 22:13:20 UTC");
    }
}
