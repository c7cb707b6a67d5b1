// The /graph page: polls json/graph and draws it as SVG, one column per
// dependency depth. Up to a few hundred tasks: one circle per task coloured by
// state. Beyond that the server aggregates by key prefix: one box per prefix
// with a bar of its tasks' states. Keys come from users: text goes in
// through textContent only.
"use strict";

const REFRESH_MS = Number(document.body.dataset.refreshMs) || 500;
const SVG_NS = "http://www.w3.org/2000/svg";
const STATE_COLORS = {
  released: "#d5dbe5", waiting: "#b9c2d0", queued: "#8e9bb0", "no-worker": "#e0a640",
  processing: "#3b7ddd", memory: "#2e9d5b", erred: "#d64545",
};
const ORDER = ["memory", "erred", "processing", "queued", "no-worker", "waiting", "released"];

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = String(text);
  return node;
}

function columns(nodes) {
  const cols = new Map();
  for (const n of nodes) {
    if (!cols.has(n.depth)) cols.set(n.depth, []);
    cols.get(n.depth).push(n);
  }
  return [...cols.entries()].sort((a, b) => a[0] - b[0]).map((e) => e[1]);
}

function drawTasks(doc, root) {
  const cols = columns(doc.nodes);
  const colW = 60, rowH = 14, pos = new Map();
  const rows = Math.max(1, ...cols.map((c) => c.length));
  root.setAttribute("height", Math.max(120, rows * rowH + 20));
  cols.forEach((col, i) => col.forEach((n, j) => pos.set(n.id, [20 + i * colW, 12 + j * rowH])));
  const edges = svg("g", { stroke: "#c8ced8", "stroke-width": "1" });
  for (const [a, b] of doc.edges) {
    const p = pos.get(a), q = pos.get(b);
    if (p && q) edges.append(svg("line", { x1: p[0], y1: p[1], x2: q[0], y2: q[1] }));
  }
  const dots = svg("g", {});
  for (const n of doc.nodes) {
    const [x, y] = pos.get(n.id);
    const dot = svg("circle", { cx: x, cy: y, r: 5, fill: STATE_COLORS[n.state] || "#999", "data-state": n.state });
    dot.append(svg("title", {}, `${n.id}: ${n.state}`));
    dots.append(dot);
  }
  root.replaceChildren(edges, dots);
}

function drawPrefixes(doc, root) {
  const cols = columns(doc.nodes);
  const boxW = 180, boxH = 34, colW = 240, rowH = 48, pos = new Map();
  const rows = Math.max(1, ...cols.map((c) => c.length));
  root.setAttribute("height", Math.max(120, rows * rowH + 20));
  cols.forEach((col, i) => col.forEach((n, j) => pos.set(n.id, [10 + i * colW, 10 + j * rowH])));
  const edges = svg("g", { stroke: "#aab3c0", fill: "none" });
  for (const [a, b, count] of doc.edges) {
    const p = pos.get(a), q = pos.get(b);
    if (!p || !q) continue;
    const line = svg("line", { x1: p[0] + boxW, y1: p[1] + boxH / 2, x2: q[0], y2: q[1] + boxH / 2,
      "stroke-width": Math.min(1 + Math.log10(count), 6) });
    line.append(svg("title", {}, `${a} → ${b}: ${count} dependencies`));
    edges.append(line);
  }
  const boxes = svg("g", {});
  for (const n of doc.nodes) {
    const [x, y] = pos.get(n.id);
    const g = svg("g", { class: "prefix-node", "data-prefix": n.id });
    g.append(svg("rect", { x, y, width: boxW, height: boxH, rx: 4, fill: "#fff", stroke: "#8e9bb0" }));
    g.append(svg("text", { x: x + 6, y: y + 13, "font-size": 12 }, `${n.id} (${n.count})`));
    let left = 0;
    for (const state of ORDER) {
      if (!n[state]) continue;
      const w = (n[state] / n.count) * (boxW - 12);
      const part = svg("rect", { x: x + 6 + left, y: y + 19, width: w, height: 9, fill: STATE_COLORS[state] });
      part.append(svg("title", {}, `${state}: ${n[state]}`));
      g.append(part);
      left += w;
    }
    boxes.append(g);
  }
  root.replaceChildren(edges, boxes);
}

function legend() {
  const box = document.getElementById("graph-legend");
  box.replaceChildren(...ORDER.map((s) => {
    const item = document.createElement("span");
    const sw = document.createElement("span");
    sw.className = "swatch";
    sw.style.background = STATE_COLORS[s];
    item.append(sw, document.createTextNode(s));
    return item;
  }));
}

async function poll() {
  try {
    const response = await fetch("json/graph", { cache: "no-store" });
    const doc = await response.json();
    const root = document.getElementById("graph");
    document.getElementById("graph-mode").textContent = doc.mode === "tasks"
      ? `${doc.ntasks} tasks` : `${doc.ntasks} tasks in ${doc.nodes.length} prefixes`;
    document.getElementById("graph-info").textContent = `updated ${new Date().toLocaleTimeString()}`;
    root.dataset.mode = doc.mode;
    (doc.mode === "tasks" ? drawTasks : drawPrefixes)(doc, root);
  } catch (err) {
    document.getElementById("graph-info").textContent = "offline";
  }
  setTimeout(poll, REFRESH_MS);
}

legend();
poll();
