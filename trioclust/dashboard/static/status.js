// The /status page: polls json/status and redraws. No libraries, no network
// beyond this server. Task keys come from users: text goes into the page
// through textContent only, never as HTML.
"use strict";

const REFRESH_MS = Number(document.body.dataset.refreshMs) || 500;
const STATE_COLORS = {
  released: "#d5dbe5", waiting: "#b9c2d0", queued: "#8e9bb0", "no-worker": "#e0a640",
  processing: "#3b7ddd", memory: "#2e9d5b", erred: "#d64545",
};
const STREAM_KEEP = 3000;   // spans kept by the page
const RECENT_KEEP = 12;     // runs in the table of recent runs
const LANE_PX = 16;

let lastId = 0;
// Finished runs arrive merged into spans: runs in a row on one worker thread,
// of one prefix and outcome, less than a pixel apart (the server merges what
// one poll brings; addSpan joins it to what the poll before brought).
let finished = [];          // spans, oldest first
let recentRuns = [];        // the newest runs, in full, oldest first
let resolution = 0.01;      // seconds one pixel of the task stream covers
const lastSpan = new Map(); // worker + thread -> its newest span
let latest = null;          // the last /json/status document
let clockOffset = 0;        // server time minus this browser's time, seconds

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (name === "class") node.className = value;
    else if (name === "style") Object.assign(node.style, value);
    else node.setAttribute(name, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function fmtBytes(n) {
  if (!n) return "0 B";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n.toFixed(0) : n.toFixed(n < 10 ? 2 : 1)) + " " + units[i];
}

function fmtSeconds(s) {
  if (s < 0.001) return (s * 1e6).toFixed(0) + " µs";
  if (s < 1) return (s * 1000).toFixed(s < 0.01 ? 2 : 1) + " ms";
  if (s < 120) return s.toFixed(2) + " s";
  return (s / 60).toFixed(1) + " min";
}

// Each key prefix keeps the colour it got when first seen on this page.
const PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948",
                 "#ff9da7", "#9c755f", "#86bcb6", "#a0cbe8", "#8cd17d", "#d4a6c8"];
const prefixColors = new Map();
function prefixColor(prefix) {
  if (!prefixColors.has(prefix)) prefixColors.set(prefix, PALETTE[prefixColors.size % PALETTE.length]);
  return prefixColors.get(prefix);
}

function serverNow() { return Date.now() / 1000 + clockOffset; }

function replaceChildren(node, children) { node.replaceChildren(...children); }

// ------------------------------------------------------------------ summary
function tile(label, value, sub) {
  return el("div", { class: "tile" }, el("div", { class: "label" }, label),
    el("div", { class: "value" }, value), sub ? el("div", { class: "sub" }, sub) : null);
}

function renderSummary(doc) {
  const t = doc.totals, s = doc.task_stream.totals;
  const mem = t.memory_limit ? `of ${fmtBytes(t.memory_limit)}` : "no limit set";
  replaceChildren(document.getElementById("summary"), [
    tile("Workers", t.workers, `${t.nthreads} threads`),
    tile("Memory", fmtBytes(t.memory), mem),
    tile("Processing", doc.tasks.processing, `${doc.tasks.queued + doc.tasks.waiting + doc.tasks["no-worker"]} waiting`),
    tile("In memory", doc.tasks.memory, `${fmtBytes(t.nbytes)} stored`),
    tile("Completed", s.memory, `${s.erred} erred`),
    tile("Clients", doc.scheduler.clients, `${t.tasks} tasks known`),
  ]);
}

// ------------------------------------------------------------------ workers
function memoryBar(used, limit, managed, spilled) {
  const frac = limit ? Math.min(used / limit, 1) : 0;
  const managedFrac = limit ? Math.min(managed / limit, frac) : 0;
  const cls = frac > 0.85 ? "fill-bad" : frac > 0.6 ? "fill-warn" : "fill-ok";
  const text = limit ? `${fmtBytes(used)} / ${fmtBytes(limit)}` : `${fmtBytes(used)} (no limit)`;
  const title = `${text}; managed ${fmtBytes(managed)}, unmanaged ${fmtBytes(Math.max(used - managed, 0))}, spilled to disk ${fmtBytes(spilled || 0)}`;
  return el("div", { class: "bar", title },
    el("div", { class: cls, style: { left: "0", width: `${frac * 100}%` } }),
    el("div", { class: "fill-managed", style: { left: "0", width: `${managedFrac * 100}%` } }),
    el("span", { class: "text" }, spilled ? `${text} (+${fmtBytes(spilled)} on disk)` : text));
}

function renderWorkers(doc) {
  const rows = doc.workers.map((w) => el("tr", { "data-worker": w.address },
    el("td", {}, el("a", { href: `info/worker/${encodeURIComponent(w.address)}` },
        el("div", { class: "wname" }, w.name)),
      w.name !== w.address ? el("div", { class: "waddr mono" }, w.address) : null),
    el("td", { class: "num" }, w.nthreads),
    el("td", { class: "num" }, `${Math.round(w.cpu)} %`),
    el("td", {}, memoryBar(w.memory, w.memory_limit, w.managed, w.spilled)),
    el("td", { class: "num" }, w.processing),
    el("td", { class: "num" }, w.stored),
    el("td", { class: "num" }, fmtBytes(w.nbytes))));
  replaceChildren(document.querySelector("#workers tbody"), rows);
  document.getElementById("no-workers").hidden = rows.length > 0;
}

// ------------------------------------------------------------ task states
function renderStates(doc) {
  const chips = Object.entries(doc.tasks).map(([state, n]) =>
    el("div", { class: "state", "data-state": state },
      el("span", { class: "dot", style: { background: STATE_COLORS[state] || "#999" } }),
      state, el("b", {}, n)));
  replaceChildren(document.getElementById("states"), chips);
}

function renderProgress(doc) {
  const order = ["memory", "erred", "processing", "queued", "no-worker", "waiting", "released"];
  const cells = [];
  for (const p of doc.progress) {
    const bar = el("div", { class: "bar", title: order.filter((s) => p[s]).map((s) => `${s}: ${p[s]}`).join(", ") });
    let left = 0;
    for (const state of order) {
      if (!p[state]) continue;
      const width = (p[state] / p.total) * 100;
      bar.append(el("div", { style: { left: `${left}%`, width: `${width}%`, background: STATE_COLORS[state] } }));
      left += width;
    }
    cells.push(el("div", { class: "name", title: p.prefix }, p.prefix), bar,
      el("div", { class: "count" }, `${p.memory + p.erred} / ${p.total}`));
  }
  replaceChildren(document.getElementById("progress"), cells);
  document.getElementById("no-progress").hidden = cells.length > 0;
}

// ------------------------------------------------------------ task stream
function assignLanes(runs) {
  const lanes = [];  // per lane: the time its last run ends
  for (const run of runs) {
    let lane = lanes.findIndex((end) => end <= run.start);
    if (lane < 0) { lane = lanes.length; lanes.push(0); }
    lanes[lane] = run.stop;
    run.lane = lane;
  }
  return Math.max(lanes.length, 1);
}

function addSpan(span) {
  const thread = `${span.worker} ${span.thread}`;
  const tail = lastSpan.get(thread);
  if (tail && tail.prefix === span.prefix && tail.status === span.status
      && Math.abs(span.start - tail.stop) <= resolution) {
    tail.stop = Math.max(tail.stop, span.stop);
    tail.count += span.count;
  } else {
    finished.push(span);
    lastSpan.set(thread, span);
  }
}

function renderStream(doc) {
  const now = serverNow();
  const running = doc.task_stream.running.filter((r) => r.start !== null)  // not queued on the worker
    .map((r) => ({ ...r, stop: now, status: "running" }));
  // back to where the last 300 spans ended, or the oldest run under way began
  const recentStarts = finished.slice(-300).map((r) => r.stop).concat(running.map((r) => r.start));
  const oldest = recentStarts.length ? Math.min(...recentStarts) : now - 10;
  const span = Math.min(Math.max(now - oldest, 5), 60) * 1.05;
  const t0 = now - span;
  document.getElementById("stream-window").textContent = `last ${span.toFixed(0)} s`;

  const byWorker = new Map(doc.workers.map((w) => [w.address, []]));
  for (const run of finished.concat(running)) {
    if (run.stop < t0) continue;
    if (!byWorker.has(run.worker)) byWorker.set(run.worker, []);
    byWorker.get(run.worker).push({ ...run });
  }
  const rows = [];
  for (const [worker, runs] of byWorker) {
    runs.sort((a, b) => a.start - b.start);
    rows.push({ worker, runs, lanes: assignLanes(runs) });
  }

  const canvas = document.getElementById("stream");
  const labelW = 170, top = 6, axisH = 20;
  const height = Math.max(top + rows.reduce((n, r) => n + r.lanes * LANE_PX + 6, 0) + axisH, 90);
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 800;
  const pxW = Math.round(width * ratio), pxH = Math.round(height * ratio);
  if (canvas.width !== pxW || canvas.height !== pxH) {  // resizing reallocates: only when it changes
    canvas.style.height = height + "px";
    canvas.width = pxW;
    canvas.height = pxH;
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  ctx.font = "12px ui-monospace, 'DejaVu Sans Mono', monospace";
  ctx.textBaseline = "middle";
  const x = (t) => labelW + ((t - t0) / span) * (width - labelW - 10);
  resolution = span / Math.max(width - labelW - 10, 100);

  let y = top;
  const names = new Map(doc.workers.map((w) => [w.address, w.name]));
  for (const row of rows) {
    const h = row.lanes * LANE_PX;
    ctx.fillStyle = "#f0f3f8";
    ctx.fillRect(labelW, y, width - labelW - 10, h);
    ctx.fillStyle = "#1d2330";
    let label = names.get(row.worker) || row.worker;
    while (label.length > 4 && ctx.measureText(label).width > labelW - 12) label = "…" + label.slice(2);
    ctx.fillText(label, 6, y + h / 2);
    for (const run of row.runs) {
      const x0 = Math.max(x(run.start), labelW);
      const w = Math.max(x(run.stop) - x0, 2);
      ctx.globalAlpha = run.status === "running" ? 0.55 : 1;
      ctx.fillStyle = run.status === "erred" ? "#d64545"
        : run.status === "memory" || run.status === "running" ? prefixColor(run.prefix) : "#9aa3b2";
      ctx.fillRect(x0, y + run.lane * LANE_PX + 1, w, LANE_PX - 2);
      ctx.globalAlpha = 1;
    }
    y += h + 6;
  }
  if (!rows.length || rows.every((r) => !r.runs.length)) {
    ctx.fillStyle = "#6b7384";
    ctx.fillText("No task ran in this window.", labelW + 12, top + 22);
  }
  // time axis: seconds before now
  ctx.fillStyle = "#6b7384";
  ctx.strokeStyle = "#d5dbe5";
  const step = span > 40 ? 10 : span > 15 ? 5 : span > 6 ? 2 : 1;
  for (let ago = 0; ago <= span; ago += step) {
    const px = x(now - ago);
    ctx.beginPath(); ctx.moveTo(px, top); ctx.lineTo(px, height - axisH + 2); ctx.stroke();
    ctx.textAlign = "center";
    ctx.fillText(ago === 0 ? "now" : `-${ago}s`, px, height - axisH / 2);
  }
  ctx.textAlign = "left";

  const coloured = (run) => run.status === "memory" || run.status === "running";
  const prefixes = [...new Set(rows.flatMap((r) => r.runs.filter(coloured).map((run) => run.prefix)))].slice(0, 20);
  const swatch = (color, label, cls) =>
    el("span", cls ? { class: cls } : {}, el("i", { style: { background: color } }), label);
  replaceChildren(document.getElementById("legend"), [
    ...prefixes.map((p) => swatch(prefixColor(p), p)),
    swatch("#d64545", "erred", "muted"), swatch("#9aa3b2", "cancelled / lost", "muted"),
  ]);

  const recent = recentRuns.slice().reverse().map((r) => el("tr", {},
    el("td", { class: "mono", title: r.key }, r.key.length > 60 ? r.key.slice(0, 57) + "…" : r.key),
    el("td", { class: "mono" }, names.get(r.worker) || r.worker),
    el("td", { class: "num" }, fmtSeconds(r.stop - r.sent)),
    el("td", { class: r.status === "memory" ? "status-memory" : r.status === "erred" ? "status-erred" : "status-other" }, r.status),
    el("td", { class: "num muted" }, fmtSeconds(Math.max(now - r.stop, 0)) + " ago")));
  replaceChildren(document.querySelector("#recent tbody"), recent);
}

// ---------------------------------------------------------------- polling
function setConnected(up, text) {
  const node = document.getElementById("connection");
  node.className = "conn " + (up ? "up" : "down");
  node.textContent = text;
}

function render(doc) {
  document.getElementById("scheduler").textContent = `scheduler ${doc.scheduler.address}`;
  renderSummary(doc);
  renderWorkers(doc);
  renderStates(doc);
  renderProgress(doc);
  renderStream(doc);
}

// While nothing happens (no run finished or under way, the same counts),
// each poll waits twice as long as the one before, up to IDLE_MAX times the
// refresh interval; anything new brings it back to the refresh interval. A
// hidden tab polls at the slowest pace.
const IDLE_MAX = 8;
let idlePolls = 0;
let lastShape = "";

function shapeOf(doc) {  // what changes when work happens (not CPU or memory)
  return JSON.stringify([doc.tasks, doc.task_stream.totals, doc.workers.map((w) => [w.address, w.processing, w.stored])]);
}

function nextDelay() {
  if (document.hidden) return REFRESH_MS * IDLE_MAX;
  return REFRESH_MS * Math.min(2 ** Math.max(idlePolls - 1, 0), IDLE_MAX);
}

async function poll() {
  try {
    const response = await fetch(`json/status?since=${lastId}&resolution=${resolution.toPrecision(3)}`, { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const doc = await response.json();
    clockOffset = doc.now - Date.now() / 1000;
    const stream = doc.task_stream;
    if (stream.last_id < lastId) {  // a new scheduler: the next poll asks for all it has
      finished = []; recentRuns = []; lastSpan.clear(); lastId = 0;
    } else if (stream.last_id !== lastId) {
      stream.spans.forEach(addSpan);
      recentRuns = recentRuns.concat(stream.recent).slice(-RECENT_KEEP);
      lastId = stream.last_id;
    }
    if (finished.length > STREAM_KEEP) finished = finished.slice(-STREAM_KEEP);
    const shape = shapeOf(doc);
    const busy = stream.spans.length > 0 || stream.running.length > 0 || shape !== lastShape;
    idlePolls = busy ? 0 : idlePolls + 1;
    lastShape = shape;
    latest = doc;
    render(doc);
    setConnected(true, busy ? "live" : "live (idle)");
  } catch (err) {
    idlePolls = 2;  // retry every other refresh interval
    setConnected(false, "offline: retrying");
  } finally {
    setTimeout(poll, nextDelay());
  }
}

// a tab shown again asks at once rather than at the end of a slow wait
document.addEventListener("visibilitychange", () => { if (!document.hidden) idlePolls = 0; });

window.addEventListener("resize", () => { if (latest) renderStream(latest); });
poll();
