// pooler-lab live view: frames (format watch/1, docs/formats.md) by server-sent events,
// drawn with uPlot. No request leaves this machine: the page, the library and the stream all
// come from `lab watch` itself.
"use strict";

const params = new URLSearchParams(location.search);
const TOKEN = params.get("token");
const WINDOW_S = Math.max(30, Number(params.get("window") || document.body.dataset.window || 180));
const LABELS = {
  direct: "Direct connection", session: "Shared pooler · session mode",
  transaction: "Shared pooler · transaction mode", dedicated: "Dedicated pooler (PgBouncer)",
};
const PORTS = { direct: 5432, session: 5432, transaction: 6543, dedicated: 6543 };
const ORIGINS = { direct: "#1f6fd1", shared: "#7048e8", dedicated: "#2b8a3e",
                  dedicated_auth: "#868e96", local: "#adb5bd" };
const C = { clients: "#1f6fd1", waiting: "#e8590c", servers: "#2b8a3e", limit: "#c92a2a",
            pool: "#495057", p50: "#2b8a3e", p95: "#e8590c", p99: "#c92a2a", rps: "#1f6fd1",
            errors: "#c92a2a" };

let frames = [];
let lastT = 0;
const charts = {};
const panels = {};
let dirty = false;

function $(id) { return document.getElementById(id); }
function fmt(v, digits = 0) { return v === null || v === undefined ? "-" : Number(v).toFixed(digits); }
function ms(v) { return v === null || v === undefined ? "-" : (v < 10 ? v.toFixed(1) : v.toFixed(0)) + " ms"; }

// ---- the stream
function connect() {
  const es = new EventSource("events" + (TOKEN ? "?token=" + encodeURIComponent(TOKEN) : ""));
  es.onopen = () => setSource();
  es.onmessage = (e) => {
    const f = JSON.parse(e.data);
    if (f.t <= lastT) return;  // a reconnect sends the window again
    lastT = f.t;
    frames.push(f);
    const cut = f.t - WINDOW_S;
    while (frames.length && frames[0].t < cut) frames.shift();
    if (!dirty) { dirty = true; requestAnimationFrame(render); }
  };
  es.onerror = () => {
    const s = $("source");
    s.textContent = "stream lost: retrying"; s.className = "pill lost";
  };
}

// ---- charts
function bandsPlugin(kinds) {
  // shaded time ranges under the lines: schedule spikes (orange), unreachable (red)
  return { hooks: { drawClear: [(u) => {
    const ctx = u.ctx; const { top, height } = u.bbox;
    for (const [kind, color] of kinds) {
      for (const [a, b] of (u._bands && u._bands[kind]) || []) {
        const x0 = u.valToPos(a, "x", true); const x1 = u.valToPos(b, "x", true);
        ctx.fillStyle = color;
        ctx.fillRect(x0, top, Math.max(x1 - x0, 2), height);
      }
    }
  }] } };
}

function clockTime(t) {
  const d = new Date(t * 1000);
  return [d.getHours(), d.getMinutes(), d.getSeconds()].map((n) => String(n).padStart(2, "0")).join(":");
}

function makeChart(el, series, height) {
  const opts = {
    width: Math.max(el.clientWidth, 200), height,
    series: [{}, ...series.map((s) => ({ label: s.label, stroke: s.color, width: s.dash ? 2 : 3,
                                         dash: s.dash ? [10, 6] : undefined, points: { show: false },
                                         spanGaps: false }))],
    scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(1, (max || 0) * 1.12)] } },
    axes: [
      { font: "15px system-ui, sans-serif", stroke: "#333", grid: { stroke: "#eee" }, space: 90,
        values: (u, splits) => splits.map(clockTime) },
      { font: "15px system-ui, sans-serif", stroke: "#333", grid: { stroke: "#eee" }, size: 56 },
    ],
    legend: { show: true, live: false },
    cursor: { show: false },
    plugins: [bandsPlugin([["spike", "rgba(247,140,0,0.18)"], ["down", "rgba(224,49,49,0.22)"]])],
  };
  const u = new uPlot(opts, [[], ...series.map(() => [])], el);
  u._bands = {};
  // follow the panel's width (the grid settles after the panels exist; the window resizes)
  new ResizeObserver(() => {
    const w = el.clientWidth;
    if (w > 0 && Math.abs(w - u.width) > 2) u.setSize({ width: w, height: u.height });
  }).observe(el);
  return u;
}

function ranges(xs, flags) {
  const out = []; let start = null;
  for (let i = 0; i < xs.length; i++) {
    if (flags[i] && start === null) start = xs[i];
    if (!flags[i] && start !== null) { out.push([start, xs[i]]); start = null; }
  }
  if (start !== null) out.push([start, xs[xs.length - 1] + 0.5]);
  return out;
}

function endpointPanel(name) {
  const el = document.createElement("section");
  el.className = "panel endpoint"; el.dataset.endpoint = name;
  const direct = name === "direct";
  el.innerHTML = `
    <div class="panel-head"><h2>${LABELS[name] || name} <span class="muted">:${PORTS[name] || ""}</span></h2></div>
    <div class="numbers stats">
      <div class="stat" data-measure="clients"><span class="label c-clients">${direct ? "backends (direct)" : "clients"}</span><span class="value c-clients">-</span></div>
      ${direct ? "" : `<div class="stat" data-measure="waiting"><span class="label c-waiting">waiting</span><span class="value c-waiting">-</span></div>
      <div class="stat" data-measure="servers"><span class="label c-servers">server conns</span><span class="value c-servers">-</span></div>`}
    </div>
    <div class="limits"></div>
    <div class="why"></div>
    <div class="chart"></div>`;
  $("endpoints").appendChild(el);
  const series = direct
    ? [{ label: "backends", color: C.clients }, { label: "max_connections", color: C.limit, dash: true }]
    : [{ label: "clients", color: C.clients }, { label: "waiting", color: C.waiting },
       { label: "server conns", color: C.servers }, { label: "pool_size", color: C.pool, dash: true },
       { label: "max_client_conn", color: C.limit, dash: true }];
  el._series = series;
  panels[name] = el;
}

function ensureLayout(f) {
  if (!charts.postgres) {
    const series = [{ label: "all backends", color: "#111" }];
    for (const o of ["direct", "shared", "dedicated"]) series.push({ label: o, color: ORIGINS[o] });
    series.push({ label: "max_connections", color: C.limit, dash: true });
    charts.postgres = makeChart($("chart-postgres"), series, 200);
  }
  const fresh = Object.keys(f.endpoints || {}).filter((name) => !panels[name]);
  for (const name of fresh) endpointPanel(name);  // every panel first: the grid settles
  for (const name of fresh) charts[name] = makeChart(panels[name].querySelector(".chart"), panels[name]._series, 200);
  if (f.run && !charts.rps) {
    charts.rps = makeChart($("chart-rps"), [{ label: "req/s", color: C.rps }, { label: "errors/s", color: C.errors }], 200);
    charts.latency = makeChart($("chart-latency"), [{ label: "p50", color: C.p50 }, { label: "p95", color: C.p95 },
                                                    { label: "p99", color: C.p99 }], 200);
  }
}

// ---- drawing
function setSource() {
  const f = frames[frames.length - 1]; const s = $("source");
  if (!f) { s.textContent = "waiting for the first frame"; s.className = "pill"; return; }
  if (f.source === "replay") { s.textContent = "REPLAY of a finished run"; s.className = "pill replay"; }
  else if (f.run && !f.run.done) { s.textContent = "LIVE · run " + (f.run.id || ""); s.className = "pill live"; }
  else if (f.run) { s.textContent = "LIVE · run " + (f.run.id || "") + " (between segments)"; s.className = "pill live"; }
  else { s.textContent = "LIVE · no run: the lab as it is"; s.className = "pill live"; }
}

function render() {
  dirty = false;
  const f = frames[frames.length - 1];
  if (!f) return;
  ensureLayout(f);
  setSource();
  const st = f.settings || {};
  $("title").textContent = `pooler-lab · lab ${f.lab}` + (st.tier ? ` (${st.tier})` : "");
  $("clock").textContent = new Date(f.t * 1000).toLocaleTimeString();
  const xs = frames.map((g) => g.t);
  const spike = ranges(xs, frames.map((g) => g.run && g.run.phase === "spike"));

  // alerts: faults and outages first, in words
  const run = f.run;
  const alerts = [];
  if (run && run.fault) alerts.push(["fault", "FAULT: " + run.fault]);
  if (run && run.unreachable && !run.done) alerts.push(["down", "UNREACHABLE: " + run.unreachable]);
  for (const [name, ep] of Object.entries(f.endpoints || {}))
    if (!ep.ok && !(run && run.unreachable)) alerts.push(["down", `${LABELS[name] || name} unreachable: ${ep.error || ""}`]);
  if (run && run.noisy && !run.done) alerts.push(["noisy", "noisy machine: " + run.noisy]);
  $("alerts").innerHTML = alerts.map(([k, t]) => `<div class="alert ${k}"></div>`).join("");
  $("alerts").querySelectorAll(".alert").forEach((el, i) => { el.textContent = alerts[i][1]; });

  const ph = $("phase");
  if (run && run.phase && !run.done) {
    ph.textContent = run.phase === "spike" ? "SPIKE" : "base load";
    ph.className = "pill" + (run.phase === "spike" ? " spike" : "");
  } else ph.className = "pill hidden";

  // Postgres
  const pg = f.postgres || {};
  $("pg-backends").textContent = fmt(pg.backends);
  $("pg-limit").textContent = `of max_connections ${fmt(pg.max_connections)}`;
  const origins = pg.by_origin || {};
  $("pg-origins").innerHTML = Object.keys(origins).sort().map((o) =>
    `<span style="color:${ORIGINS[o] || "#333"}">${o} <b>${origins[o]}</b></span>`).join("");
  $("postgres").classList.toggle("down", pg.ok === false);
  const pgc = charts.postgres;
  pgc._bands = { spike, down: ranges(xs, frames.map((g) => g.postgres && g.postgres.ok === false)) };
  pgc.setData([xs, frames.map((g) => g.postgres ? g.postgres.backends : null),
    ...["direct", "shared", "dedicated"].map((o) => frames.map((g) =>
      g.postgres && g.postgres.ok ? ((g.postgres.by_origin || {})[o] || 0) : null)),
    frames.map((g) => g.postgres ? g.postgres.max_connections : null)]);

  // endpoints
  for (const [name, ep] of Object.entries(f.endpoints || {})) {
    const el = panels[name];
    el.classList.toggle("down", !ep.ok);
    el.classList.toggle("active", !!(run && !run.done && run.endpoint === name));
    for (const m of ["clients", "waiting", "servers"]) {
      const v = el.querySelector(`[data-measure="${m}"] .value`);
      if (v) v.textContent = fmt(ep[m]);
    }
    el.querySelector(".limits").textContent = name === "direct"
      ? `max_connections ${fmt(ep.limit)}`
      : `pool_size ${fmt(ep.pool_size)} · max_client_conn ${fmt(ep.max_client_conn)}`;
    el.querySelector(".why").textContent = ep.ok ? "" : "UNREACHABLE: " + (ep.error || "");
    const get = (g, k) => { const e = (g.endpoints || {})[name]; return e ? e[k] : null; };
    const u = charts[name];
    u._bands = { spike, down: ranges(xs, frames.map((g) => { const e = (g.endpoints || {})[name]; return e && !e.ok; })) };
    u.setData(name === "direct"
      ? [xs, frames.map((g) => get(g, "clients")), frames.map((g) => get(g, "limit"))]
      : [xs, ...["clients", "waiting", "servers", "pool_size", "max_client_conn"].map((k) => frames.map((g) => get(g, k)))]);
  }

  // the run
  $("run").classList.toggle("hidden", !run);
  if (run) {
    const where = `${run.scenario} → ${run.endpoint}` + (run.repeat ? ` (${run.repeat})` : "");
    const state = run.done ? "segment done" : `${fmt(run.elapsed_s)} / ${fmt(run.duration_s)} s`;
    $("run-title").textContent = `${where} · ${state}`;
    $("rps").textContent = fmt(run.rps, 1);
    $("p50").textContent = ms(run.p50_ms); $("p95").textContent = ms(run.p95_ms); $("p99").textContent = ms(run.p99_ms);
    $("errors").textContent = fmt(run.errors); $("not-started").textContent = fmt(run.not_started);
    const classes = run.errors_by_class || {};
    $("error-classes").textContent = Object.keys(classes).length
      ? "errors by class: " + Object.entries(classes).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${v}`).join(" · ")
      : "no errors";
    const down = ranges(xs, frames.map((g) => g.run && g.run.unreachable && !g.run.done));
    const errRate = frames.map((g, i) => {
      if (!g.run || i === 0 || !frames[i - 1].run) return null;
      const prev = frames[i - 1].run;
      if (prev.endpoint !== g.run.endpoint || prev.repeat !== g.run.repeat) return null;
      const dt = g.t - frames[i - 1].t;
      return dt > 0 ? Math.max(0, (g.run.errors - prev.errors) / dt) : null;
    });
    charts.rps._bands = { spike, down };
    charts.latency._bands = { spike, down };
    charts.rps.setData([xs, frames.map((g) => g.run && !g.run.done ? g.run.rps : null), errRate]);
    charts.latency.setData([xs, ...["p50_ms", "p95_ms", "p99_ms"].map((k) =>
      frames.map((g) => g.run && !g.run.done ? g.run[k] : null))]);
  }
}

connect();
