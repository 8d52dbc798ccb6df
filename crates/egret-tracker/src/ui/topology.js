// The live part of the topology page: every few seconds it asks the tracker for the tmanager's time series and
// exceptions, and fills the rate tables, the totals and the charts. Counters are cumulative, so a rate is the
// difference of two successive reports over their time apart.
"use strict";
(function () {
  const api = document.body.dataset.api;
  const REFRESH_MS = 5000;
  const WINDOW_MS = 10 * 60 * 1000;
  const COUNTERS = { "__emit-count": "emit", "__execute-count": "execute", "__ack-count": "ack", "__fail-count": "fail" };
  const MEANS = { "__execute-latency": "execute-latency", "__complete-latency": "complete-latency" };
  const BACK_PRESSURE = "__time_spent_back_pressure_by_compid";
  // The p99 of the trees completed in the last report interval (the tmanager derives it from the spouts'
  // histograms); a component shows its largest task's, since quantiles of tasks do not average.
  const P99 = "__complete-latency-p99";
  const NAMES = Object.keys(COUNTERS).concat(Object.keys(MEANS), [BACK_PRESSURE, P99]).join(",");
  const SVG = "http://www.w3.org/2000/svg";

  function fmt(v, digits) { return v === undefined ? "-" : v.toFixed(digits); }

  // Rate points [t, tuples/s] between successive points; a counter that went down (a restarted task) restarts
  // from zero.
  function rates(points) {
    const out = [];
    for (let i = 1; i < points.length; i++) {
      const dt = points[i][0] - points[i - 1][0];
      if (dt <= 0) continue;
      const dv = points[i][1] - points[i - 1][1];
      out.push([points[i][0], (dv >= 0 ? dv : points[i][1]) * 1000 / dt]);
    }
    return out;
  }

  function fillRow(row, m) {
    for (const key of ["emit", "execute", "ack", "fail"]) row.querySelector("." + key).textContent = fmt(m[key], 1);
    for (const key of ["execute-latency", "complete-latency"]) {
      const s = m[key];
      row.querySelector("." + key).textContent = s && s.n ? fmt(s.sum / s.n, 3) : "-";
    }
    row.querySelector(".complete-p99").textContent = fmt(m.p99, 3);
    row.querySelector(".back-pressure").textContent = fmt(m.bp, 0);
    // User metrics: "name=value" (a multi-counter's keys as "name[key]"), sorted by name.
    const user = m.user || {};
    row.querySelector(".user").textContent = Object.keys(user).sort()
      .map((k) => `${k}=${Number.isInteger(user[k].value) ? user[k].value : user[k].value.toFixed(3)}`).join(", ");
  }

  function chart(title, lines) {
    const W = 380, H = 130, L = 44, B = 18;
    const div = document.createElement("div");
    div.className = "chart";
    div.dataset.component = title;
    div.innerHTML = '<div class="title"></div><div class="legend"><span class="emit">emit/s</span> ' +
      '<span class="execute">execute/s</span></div>';
    div.querySelector(".title").textContent = title;
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("width", W);
    svg.setAttribute("height", H);
    const all = lines.flatMap((l) => l.points);
    if (all.length === 0) { div.appendChild(svg); return div; }
    // A lone point still gets a window, so it shows as a dot at the right rather than nowhere.
    const t1 = Math.max(...all.map((p) => p[0])), t0 = Math.min(t1 - REFRESH_MS, ...all.map((p) => p[0]));
    const vmax = Math.max(1, ...all.map((p) => p[1]));
    const x = (t) => L + (t1 > t0 ? (t - t0) / (t1 - t0) : 1) * (W - L - 6);
    const y = (v) => 6 + (1 - v / vmax) * (H - B - 6);
    const axis = document.createElementNS(SVG, "polyline");
    axis.setAttribute("points", `${L},6 ${L},${H - B} ${W - 6},${H - B}`);
    axis.setAttribute("style", "stroke:#c3ccd6;fill:none");
    svg.appendChild(axis);
    const label = (text, tx, ty, anchor) => {
      const el = document.createElementNS(SVG, "text");
      el.setAttribute("x", tx); el.setAttribute("y", ty); el.setAttribute("text-anchor", anchor);
      el.textContent = text; svg.appendChild(el);
    };
    label(vmax.toFixed(0), L - 4, 14, "end");
    label("0", L - 4, H - B, "end");
    label(`last ${Math.round((t1 - t0) / 1000)} s`, W - 6, H - 4, "end");
    for (const l of lines) {
      if (l.points.length === 0) continue;
      const pl = document.createElementNS(SVG, "polyline");
      pl.setAttribute("class", l.kind);
      pl.setAttribute("points", l.points.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" "));
      svg.appendChild(pl);
      for (const p of l.points) {
        const dot = document.createElementNS(SVG, "circle");
        dot.setAttribute("class", l.kind);
        dot.setAttribute("cx", x(p[0]).toFixed(1)); dot.setAttribute("cy", y(p[1]).toFixed(1)); dot.setAttribute("r", 2);
        svg.appendChild(dot);
      }
    }
    div.appendChild(svg);
    return div;
  }

  // Sums per-task rate points of one component into 5 s buckets, since containers report at different instants.
  function bucketed(list) {
    const sums = new Map();
    for (const [t, v] of list) {
      const b = Math.round(t / REFRESH_MS) * REFRESH_MS;
      sums.set(b, (sums.get(b) || 0) + v);
    }
    return [...sums.entries()].sort((a, b) => a[0] - b[0]);
  }

  async function refreshMetrics() {
    const r = await fetch(`${api}/timeseries?name=${encodeURIComponent(NAMES)}&user=true&since_ms=${Date.now() - WINDOW_MS}`);
    const series = await r.json();
    if (!r.ok) throw new Error(series.error || r.statusText);
    const tasks = new Map(), history = new Map();
    let known = false;
    for (const s of series) {
      const key = s.component + "\u0000" + s.task;
      if (!tasks.has(key)) tasks.set(key, { component: s.component, task: s.task });
      const m = tasks.get(key), last = s.points[s.points.length - 1];
      if (!s.name.startsWith("__")) {
        // A user metric: its latest value (counters are totals since the task started).
        if (!last) continue;
        m.user = m.user || {};
        m.user[s.key ? `${s.name}[${s.key}]` : s.name] = { kind: s.kind, value: last[1] };
      } else if (COUNTERS[s.name]) {
        const rs = rates(s.points);
        if (rs.length === 0) continue;
        const kind = COUNTERS[s.name];
        m[kind] = (m[kind] || 0) + rs[rs.length - 1][1];
        if (kind === "emit") known = true;
        if (kind === "emit" || kind === "execute") {
          if (!history.has(s.component)) history.set(s.component, { emit: [], execute: [] });
          history.get(s.component)[kind].push(...rs);
        }
      } else if (MEANS[s.name] && last) {
        const k = MEANS[s.name];
        m[k] = m[k] || { sum: 0, n: 0 };
        m[k].sum += last[1]; m[k].n += 1;
      } else if (s.name === BACK_PRESSURE && last) {
        m.bp = (m.bp || 0) + last[1];
      } else if (s.name === P99 && last) {
        m.p99 = last[1];
      }
    }
    const components = new Map();
    let emit = 0, execute = 0;
    for (const m of tasks.values()) {
      const row = document.querySelector(`#tasks tr[data-component="${CSS.escape(m.component)}"][data-task="${m.task}"]`);
      if (row) fillRow(row, m);
      if (!components.has(m.component)) components.set(m.component, {});
      const c = components.get(m.component);
      for (const k of ["emit", "execute", "ack", "fail", "bp"]) if (m[k] !== undefined) c[k] = (c[k] || 0) + m[k];
      if (m.p99 !== undefined) c.p99 = Math.max(c.p99 || 0, m.p99);
      // A component's counter is the sum of its tasks'; its gauge, the mean of its tasks'.
      for (const [k, u] of Object.entries(m.user || {})) {
        c.user = c.user || {};
        const agg = c.user[k] || (c.user[k] = { kind: u.kind, sum: 0, n: 0 });
        agg.sum += u.value; agg.n += 1;
        agg.value = u.kind === "counter" ? agg.sum : agg.sum / agg.n;
      }
      for (const k of ["execute-latency", "complete-latency"]) {
        if (m[k]) { c[k] = c[k] || { sum: 0, n: 0 }; c[k].sum += m[k].sum; c[k].n += m[k].n; }
      }
      emit += m.emit || 0; execute += m.execute || 0;
    }
    for (const [name, c] of components) {
      const row = document.querySelector(`#components tr[data-component="${CSS.escape(name)}"]`);
      if (row) fillRow(row, c);
    }
    if (known) {
      document.getElementById("emit-rate-total").textContent = emit.toFixed(1);
      document.getElementById("execute-rate-total").textContent = execute.toFixed(1);
    }
    const charts = document.getElementById("charts");
    charts.replaceChildren(...[...history.entries()].map(([name, h]) => chart(name, [
      { kind: "emit", points: bucketed(h.emit) }, { kind: "execute", points: bucketed(h.execute) }])));
  }

  async function refreshExceptions() {
    const r = await fetch(`${api}/exceptions`);
    const list = await r.json();
    if (!r.ok) throw new Error(list.error || r.statusText);
    const body = document.querySelector("#exceptions tbody");
    body.replaceChildren();
    for (const e of list) {
      const tr = body.insertRow();
      for (const v of [e.component, e.task, e.message, e.count, new Date(e.first_ms).toISOString(),
        new Date(e.last_ms).toISOString()]) tr.insertCell().textContent = v;
    }
    if (list.length === 0) body.innerHTML = '<tr><td colspan="6" class="empty">no exceptions reported</td></tr>';
  }

  async function refresh() {
    const status = document.getElementById("status");
    try {
      await Promise.all([refreshMetrics(), refreshExceptions()]);
      status.textContent = "updated " + new Date().toLocaleTimeString();
      status.className = "";
    } catch (e) {
      status.textContent = "metrics unavailable: " + e.message;
      status.className = "error";
    }
    setTimeout(refresh, REFRESH_MS);
  }
  refresh();
})();
