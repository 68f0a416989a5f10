// A flow's graph as SVG: its leaf nodes in layers from the start node (longest path over
// the forward edges), back edges curving round the side. Nested flows are not boxes of
// their own: an edge into a flow goes to its start node, an edge out of it leaves from
// its exits (its nodes with no successor inside it).

import { s } from "./dom.js";

const W = 168;
const H = 38;
const GAP_X = 36;
const GAP_Y = 56;
const PAD = 24;

function leafGraph(graph) {
  const byId = new Map(graph.nodes.map((n) => [n.id, n]));
  const children = new Map();
  for (const n of graph.nodes) {
    if (n.parent) {
      if (!children.has(n.parent)) children.set(n.parent, []);
      children.get(n.parent).push(n);
    }
  }
  const isContainer = (id) => children.has(id);
  const out = new Map();
  for (const e of graph.edges) {
    if (!out.has(e.from)) out.set(e.from, []);
    out.get(e.from).push(e);
  }
  const entry = (id, seen = new Set()) => {
    if (!isContainer(id) || seen.has(id)) return id;
    seen.add(id);
    const kids = children.get(id);
    const first = kids.find((k) => k.start) || kids[0];
    return entry(first.id, seen);
  };
  const exits = (id, seen = new Set()) => {
    if (!isContainer(id) || seen.has(id)) return [id];
    seen.add(id);
    const kids = children.get(id);
    const inside = new Set(kids.map((k) => k.id));
    const ends = kids.filter((k) => !(out.get(k.id) || []).some((e) => inside.has(e.to)));
    return ends.flatMap((k) => exits(k.id, seen));
  };
  const leaves = graph.nodes.filter((n) => !isContainer(n.id));
  const edges = [];
  for (const e of graph.edges) {
    if (!byId.has(e.to) && !byId.has(e.from)) continue;
    const to = entry(e.to);
    for (const from of exits(e.from)) edges.push({ from, to, action: e.action });
  }
  const start = entry(graph.start || (leaves[0] && leaves[0].id));
  return { leaves, edges, start };
}

export function layout(graph) {
  const { leaves, edges, start } = leafGraph(graph);
  const ids = leaves.map((n) => n.id);
  const succ = new Map(ids.map((id) => [id, []]));
  for (const e of edges) if (succ.has(e.from) && succ.has(e.to)) succ.get(e.from).push(e);
  // Depth-first from the start: edges to a node on the current path go back.
  const back = new Set();
  const state = new Map();
  const order = [];
  const visit = (id) => {
    state.set(id, 1);
    for (const e of succ.get(id) || []) {
      if (state.get(e.to) === 1) back.add(e);
      else if (!state.has(e.to)) visit(e.to);
    }
    state.set(id, 2);
    order.push(id);
  };
  if (start && succ.has(start)) visit(start);
  for (const id of ids) if (!state.has(id)) visit(id);
  const layer = new Map(ids.map((id) => [id, 0]));
  for (const id of order.reverse()) {
    for (const e of succ.get(id)) {
      if (!back.has(e)) layer.set(e.to, Math.max(layer.get(e.to), layer.get(id) + 1));
    }
  }
  const rows = [];
  for (const id of ids) {
    const l = layer.get(id);
    (rows[l] ||= []).push(id);
  }
  // One pass of barycentres: a node sits under the nodes that lead to it.
  const pos = new Map();
  rows.forEach((row, r) => {
    if (r > 0) {
      const centre = (id) => {
        const from = edges.filter((e) => e.to === id && pos.has(e.from) && !back.has(e));
        if (!from.length) return Number.MAX_SAFE_INTEGER;
        return from.reduce((sum, e) => sum + pos.get(e.from), 0) / from.length;
      };
      row.sort((a, b) => centre(a) - centre(b));
    }
    row.forEach((id, i) => pos.set(id, i));
  });
  const widest = Math.max(1, ...rows.map((row) => row.length));
  const width = PAD * 2 + widest * W + (widest - 1) * GAP_X + 60;
  const boxes = new Map();
  rows.forEach((row, r) => {
    const span = row.length * W + (row.length - 1) * GAP_X;
    const left = (width - 60 - span) / 2;
    row.forEach((id, i) => {
      boxes.set(id, { x: left + i * (W + GAP_X), y: PAD + r * (H + GAP_Y) });
    });
  });
  const height = PAD * 2 + rows.length * H + Math.max(0, rows.length - 1) * GAP_Y;
  return { leaves, edges, back, boxes, width, height };
}

function edgePath(a, b, isBack, width) {
  if (isBack) {
    const x = width - 30;
    return `M${a.x + W} ${a.y + H / 2} C${x} ${a.y + H / 2}, ${x} ${b.y + H / 2}, ${b.x + W} ${b.y + H / 2}`;
  }
  const x1 = a.x + W / 2;
  const y1 = a.y + H;
  const x2 = b.x + W / 2;
  const y2 = b.y;
  const mid = (y1 + y2) / 2;
  return `M${x1} ${y1} C${x1} ${mid}, ${x2} ${mid}, ${x2} ${y2 - 2}`;
}

function shortLabel(id) {
  return id.length > 22 ? `…${id.slice(-21)}` : id;
}

// The graph as an <svg>; returns {svg, paint(states)} where states maps node id -> one
// of done, running, failed, waiting (anything else: not reached).
export function drawGraph(graph) {
  const g = layout(graph);
  const svg = s("svg", {
    class: "graph",
    viewBox: `0 0 ${g.width} ${g.height}`,
    width: g.width,
    height: g.height,
    role: "img",
    "aria-label": "flow graph",
  });
  svg.append(
    s(
      "defs",
      null,
      s(
        "marker",
        { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
        s("path", { d: "M0 0 L10 5 L0 10 z", class: "arrowhead" }),
      ),
    ),
  );
  for (const e of g.edges) {
    const a = g.boxes.get(e.from);
    const b = g.boxes.get(e.to);
    if (!a || !b) continue;
    const isBack = g.back.has(e);
    const d = edgePath(a, b, isBack, g.width);
    svg.append(s("path", { d, class: isBack ? "edge back" : "edge", "marker-end": "url(#arrow)" }));
    if (e.action && e.action !== "default") {
      const lx = isBack ? g.width - 26 : (a.x + b.x + W) / 2 + 4;
      const ly = isBack ? (a.y + b.y + H) / 2 : (a.y + H + b.y) / 2;
      svg.append(s("text", { x: lx, y: ly, class: "edge-label" }, e.action));
    }
  }
  const shapes = new Map();
  for (const n of g.leaves) {
    const box = g.boxes.get(n.id);
    const group = s("g", { class: "node pending", "data-node": n.id, "data-state": "pending" });
    group.append(
      s("title", null, `${n.id} (${n.type})`),
      s("rect", { x: box.x, y: box.y, width: W, height: H, rx: 7 }),
      s("text", { x: box.x + W / 2, y: box.y + H / 2 + 4, "text-anchor": "middle" }, shortLabel(n.id)),
    );
    svg.append(group);
    shapes.set(n.id, group);
  }
  const paint = (states) => {
    for (const [id, group] of shapes) {
      const state = states.get(id) || "pending";
      if (group.dataset.state !== state) {
        group.dataset.state = state;
        group.setAttribute("class", `node ${state}`);
      }
    }
  };
  return { svg, paint, ids: g.leaves.map((n) => n.id) };
}

// A graph of the nodes a run visited, in the order it first reached them, for callers
// the server shows no flow graph (it is a flow internal).
export function pathGraph(nodes) {
  const unique = [...new Set(nodes)];
  return {
    start: unique[0],
    nodes: unique.map((id, i) => ({ id, type: "node", kind: "node", parent: null, start: i === 0 })),
    edges: unique.slice(1).map((id, i) => ({ from: unique[i], to: id, action: "default" })),
  };
}
