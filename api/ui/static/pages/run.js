// One run: its graph coloured by what happened to each node, live from the event stream;
// the step timeline a page at a time; a step's delta, output and traceback; the form a
// waiting run asks for; and the controls the caller's role may use.

import { api, streamEvents } from "../api.js";
import { can } from "../app.js";
import { badge, clear, fill, h, json, ms, when } from "../dom.js";
import { drawGraph, pathGraph } from "../graph.js";
import { schemaForm } from "../schemaform.js";

const PAGE = 100;
const TERMINAL = new Set(["succeeded", "failed", "cancelled", "timed_out"]);
const STRIDE = 10_000_000; // core/events.py: an event id is seq * STRIDE + k
const STEP_FINISHED_K = STRIDE - 2;
const KNOWN_PAGES = 10; // node colours: at most this many pages of history are read
const MAX_OUTPUT = 2000;

function stepState(status) {
  return status === "succeeded" ? "done" : "failed";
}

export function renderRun(root, runId) {
  const abort = new AbortController();
  const path = `/v1/runs/${encodeURIComponent(runId)}`;
  let run = null;
  let graph = null;
  let pathNodes = [];
  const states = new Map(); // node -> done | running | failed | waiting
  let page = 0; // index of the timeline page shown
  let rows = []; // the steps of that page
  let events = 0;
  let pending = []; // events not drawn yet: drawn once per frame
  let frame = 0;

  const head = h("div", { class: "page-head" });
  const controls = h("div", { class: "controls", id: "run-controls" });
  const summary = h("div", { class: "summary" });
  const graphBox = h("div", { class: "graph-box", id: "run-graph" });
  const waitingBox = h("div", { id: "waiting" });
  const live = h("div", { class: "output live", id: "live-output" });
  const timelineBody = h("tbody");
  const pager = h("div", { class: "pager" });
  const detail = h("div", { class: "step-detail", id: "step-detail" });
  const streamState = h("span", { class: "muted", id: "stream-state" }, "connecting");
  const counter = h("span", { class: "muted", id: "event-count", "data-events": "0" }, "0 events");
  const error = h("div", { class: "form-error", role: "alert", id: "run-error" });
  root.append(
    head,
    error,
    controls,
    summary,
    h(
      "div",
      { class: "run-grid" },
      h("section", { class: "card" }, h("h2", null, "Graph"), graphBox, h("div", { class: "legend" }, legend())),
      h(
        "section",
        { class: "card" },
        waitingBox,
        h("h2", null, "Live output ", streamState, " · ", counter),
        live,
        h("h2", null, "Step"),
        detail,
      ),
    ),
    h(
      "section",
      { class: "card" },
      h("h2", null, "Timeline"),
      h(
        "table",
        { class: "timeline", id: "timeline" },
        h("thead", null, h("tr", null, ["#", "Node", "Status", "Attempts", "Duration", "", "Action", "Started"].map((t) => h("th", null, t)))),
        timelineBody,
      ),
      pager,
    ),
  );

  const paint = () => {
    if (!run) return;
    const shown = new Map(states);
    if (run.current_node && !TERMINAL.has(run.status)) {
      if (run.status === "waiting") shown.set((run.waiting_for && run.waiting_for.node) || run.current_node, "waiting");
      else if (run.status === "running") shown.set(run.current_node, "running");
    }
    if (run.status === "failed" && run.error && run.error.node) shown.set(run.error.node, "failed");
    if (graph) graph.paint(shown);
  };

  const drawHead = () => {
    fill(head, 
      h("h1", null, `${run.flow} `, h("span", { class: "mono small" }, run.id)),
      badge(run.status),
    );
    fill(summary, 
      h(
        "dl",
        null,
        item("Version", run.flow_version),
        item("Created", when(run.created_at)),
        item("Started", when(run.started_at)),
        item("Finished", when(run.finished_at)),
        item("Steps", run.steps),
        item("Current node", run.current_node || ""),
        item("Trigger", run.trigger ? run.trigger.type : ""),
        item("Retries", run.retries),
        run.parent ? item("Replay of", h("a", { href: `#/runs/${run.parent.run}` }, `${run.parent.run.slice(0, 8)}… step ${run.parent.seq}`)) : null,
      ),
      run.error ? h("div", { class: "error-box" }, h("strong", null, `${run.error.type}: `), run.error.message, run.error.node ? ` (at ${run.error.node})` : "", run.error.traceback ? h("pre", { class: "traceback" }, run.error.traceback) : null) : null,
      TERMINAL.has(run.status) && run.output !== null && run.output !== undefined ? h("details", { open: true }, h("summary", null, "Output"), json(run.output)) : null,
    );
    drawControls();
    drawWaiting();
    paint();
  };

  const act = async (label, call) => {
    error.textContent = "";
    try {
      const result = await call();
      if (result && result.id && result.id !== run.id) {
        location.hash = `#/runs/${result.id}`;
        return;
      }
      if (result && result.id) {
        const wasFinished = TERMINAL.has(run.status);
        run = result;
        drawHead();
        if (wasFinished && !TERMINAL.has(run.status)) connect();
      }
    } catch (err) {
      error.textContent = `${label}: ${err.message}`;
    }
  };

  const button = (name, label, permission, show, call) =>
    can(permission) && show
      ? h("button", { type: "button", "data-action": name, onclick: () => act(label, call) }, label)
      : null;

  const drawControls = () => {
    const st = run.status;
    fill(controls, 
      button("cancel", "Cancel", "runs:cancel", !TERMINAL.has(st), () => api(`${path}/cancel`, { method: "POST" })),
      button("retry", "Retry", "runs:retry", ["failed", "timed_out", "cancelled"].includes(st), () => api(`${path}/retry`, { method: "POST", body: {} })),
      button("pause", "Pause", "runs:control", ["running", "queued"].includes(st), () => api(`${path}/pause`, { method: "POST" })),
      button("unpause", "Unpause", "runs:control", st === "paused", () => api(`${path}/unpause`, { method: "POST" })),
    );
  };

  const drawWaiting = () => {
    clear(waitingBox);
    if (run.status !== "waiting" || !run.waiting_for) return;
    const request = run.waiting_for.request || {};
    const section = h("div", { class: "waiting-box" }, h("h2", null, `Waiting at ${run.waiting_for.node}`));
    if (request.prompt) section.append(h("p", { class: "prompt" }, request.prompt));
    if (can("runs:resume")) {
      const form = schemaForm(request.schema || {});
      section.append(
        h(
          "form",
          {
            id: "resume-form",
            onsubmit: async (event) => {
              event.preventDefault();
              form.clearErrors();
              let payload;
              try {
                payload = form.value();
              } catch {
                return;
              }
              try {
                run = await api(`${path}/resume`, { method: "POST", body: { payload } });
                drawHead();
              } catch (err) {
                form.showErrors(err.problem, ["body", "payload"]);
              }
            },
          },
          form.element,
          h("button", { type: "submit", class: "primary", "data-action": "resume" }, "Resume"),
        ),
      );
    } else {
      section.append(json(request));
    }
    waitingBox.append(section);
  };

  // --- the timeline --------------------------------------------------------------------

  const stepRow = (step, longest) =>
    h(
      "tr",
      { "data-seq": step.seq, class: "step", onclick: () => showStep(step.seq) },
      h("td", { class: "num" }, step.seq),
      h("td", { class: "mono" }, step.node),
      h("td", null, badge(step.status)),
      h("td", { class: "num" }, step.attempts),
      h("td", { class: "num" }, ms(step.duration_ms)),
      h("td", { class: "bar-cell" }, bar(step.duration_ms, longest)),
      h("td", null, step.action || ""),
      h("td", null, when(step.started_at)),
    );

  const drawTimeline = () => {
    const longest = Math.max(1, ...rows.map((r) => r.duration_ms || 0));
    clear(timelineBody);
    if (!rows.length) timelineBody.append(h("tr", null, h("td", { colspan: 8, class: "muted" }, "No steps yet.")));
    for (const step of rows) timelineBody.append(stepRow(step, longest));
    const pages = Math.max(1, Math.ceil((run ? run.steps : 0) / PAGE));
    const nav = (label, target, name) =>
      h("button", { type: "button", "data-page": name, disabled: target === page || target < 0 || target >= pages, onclick: () => loadPage(target) }, label);
    fill(pager, 
      nav("« First", 0, "first"),
      nav("‹ Prev", page - 1, "prev"),
      h("span", { class: "muted" }, `page ${page + 1} of ${pages}`),
      nav("Next ›", page + 1, "next"),
      nav("Last »", pages - 1, "last"),
    );
  };

  const loadPage = async (index) => {
    page = index;
    const data = await api(`${path}/steps`, { query: { limit: PAGE, cursor: index > 0 ? index * PAGE : undefined }, signal: abort.signal });
    rows = data.items;
    for (const step of rows) pathNodes.push(step.node);
    drawTimeline();
  };

  const showStep = async (seq) => {
    fill(detail, h("p", { class: "muted" }, `step ${seq}…`));
    try {
      const step = await api(`${path}/steps/${seq}`, { signal: abort.signal });
      fill(detail, 
        h("h3", null, `#${step.seq} ${step.node} `, badge(step.status)),
        h("dl", null, item("Attempts", step.attempts), item("Duration", ms(step.duration_ms)), item("Action", step.action || ""), item("Worker", step.worker || "")),
        step.error ? h("div", { class: "error-box" }, h("strong", null, `${step.error.type}: `), step.error.message, step.error.traceback ? h("pre", { class: "traceback", "data-traceback": "" }, step.error.traceback) : null) : null,
        step.delta ? h("details", { open: true }, h("summary", null, "State delta"), json(step.delta)) : null,
        step.output && step.output.length ? h("details", { open: true }, h("summary", null, "Output"), h("pre", { class: "output" }, step.output.map(chunkText).join(""))) : null,
        can("runs:retry")
          ? h("button", { type: "button", "data-action": "replay", onclick: () => act("Replay", () => api(`${path}/replay`, { method: "POST", body: { from_seq: step.seq } })) }, `Replay from step ${step.seq}`)
          : null,
      );
    } catch (err) {
      fill(detail, h("p", { class: "form-error" }, err.message));
    }
  };

  // --- live ----------------------------------------------------------------------------

  const onEvent = (event) => {
    pending.push(event);
    if (!frame) frame = requestAnimationFrame(flush);
  };

  const flush = () => {
    frame = 0;
    const batch = pending;
    pending = [];
    let head = false;
    let timeline = false;
    for (const { event, data } of batch) {
      events += 1;
      if (event === "run.status") {
        run = { ...run, status: data.status, current_node: data.current_node };
        head = true;
      } else if (event === "step.started") {
        run = { ...run, status: "running", current_node: data.node };
        clear(live);
        head = true;
      } else if (event === "node.output") {
        if (live.childNodes.length >= MAX_OUTPUT) live.firstChild.remove();
        live.append(h("span", { class: "chunk" }, chunkText(data.chunk)));
      } else if (event === "node.output.reset") {
        fill(live, h("span", { class: "muted" }, `attempt ${data.attempt} starts again\n`));
      } else if (event === "step.finished") {
        states.set(data.node, stepState(data.status));
        if (!graph) pathNodes.push(data.node);
        run = { ...run, steps: Math.max(run.steps, data.seq), current_node: data.next_node ?? run.current_node };
        if (data.seq > page * PAGE && data.seq <= (page + 1) * PAGE) {
          rows = [...rows.filter((r) => r.seq !== data.seq), data].sort((a, b) => a.seq - b.seq);
          timeline = true;
        }
        head = true;
      } else if (event === "run.waiting") {
        run = { ...run, status: "waiting", waiting_for: { node: data.node, request: data.request } };
        head = true;
      } else if (event === "run.finished") {
        run = data;
        head = true;
      }
    }
    counter.textContent = `${events} events`;
    counter.dataset.events = String(events);
    const now = String(performance.now());
    if (!counter.dataset.firstAt) counter.dataset.firstAt = now;
    counter.dataset.lastAt = now;
    if (!graph && pathNodes.length) drawPathGraph();
    if (timeline) drawTimeline();
    if (head) drawHead();
  };

  let streaming = false;
  const connect = () => {
    if (streaming) return;
    streaming = true;
    // Live from the last committed step: the history is on the timeline already.
    const after = run.steps > 0 ? run.steps * STRIDE + STEP_FINISHED_K - 1 : 0;
    streamEvents(`${path}/events`, {
      after,
      signal: abort.signal,
      onEvent,
      onState: (st) => {
        streamState.textContent = st;
        streamState.dataset.state = st;
      },
    }).finally(() => {
      streaming = false;
    });
  };

  const drawPathGraph = () => {
    fill(graphBox, drawGraph(pathGraph(pathNodes)).svg, h("p", { class: "muted small" }, "The nodes this run reached (the flow's graph is shown to engineers and admins)."));
    paintPath();
  };
  const paintPath = () => {
    const svg = graphBox.querySelector("svg");
    if (!svg) return;
    for (const g of svg.querySelectorAll("[data-node]")) {
      const state = states.get(g.dataset.node) || "pending";
      g.dataset.state = state;
      g.setAttribute("class", `node ${state}`);
    }
  };

  // History beyond the first page, read in the background, colours the nodes reached.
  const learnHistory = async () => {
    const total = Math.min(run.steps, KNOWN_PAGES * 1000);
    for (let after = 0; after < total; after += 1000) {
      const data = await api(`${path}/steps`, { query: { limit: 1000, cursor: after || undefined }, signal: abort.signal });
      for (const step of data.items) {
        states.set(step.node, stepState(step.status));
        if (!graph) pathNodes.push(step.node);
      }
      if (!data.next_cursor) break;
    }
    if (graph) paint();
    else if (pathNodes.length) drawPathGraph();
  };

  const start = async () => {
    try {
      run = await api(path, { signal: abort.signal });
    } catch (err) {
      fill(root, h("p", { class: "form-error" }, err.status === 404 ? "No such run." : err.message));
      return;
    }
    drawHead();
    connect();
    const [flow] = await Promise.all([
      api(`/v1/flows/${encodeURIComponent(run.flow)}`, { query: { version: run.flow_version }, signal: abort.signal }).catch(() => null),
      loadPage(0),
    ]);
    if (flow && flow.graph) {
      graph = drawGraph(flow.graph);
      fill(graphBox, graph.svg);
    }
    for (const step of rows) states.set(step.node, stepState(step.status));
    if (graph) paint();
    else drawPathGraph();
    root.dataset.ready = "true";
    if (run.steps > rows.length) learnHistory().catch(() => {});
  };
  start();
  return () => {
    abort.abort();
    if (frame) cancelAnimationFrame(frame);
  };
}

function chunkText(chunk) {
  return typeof chunk === "string" ? chunk : `${JSON.stringify(chunk)}\n`;
}

function item(label, value) {
  return [h("dt", null, label), h("dd", null, value === null || value === undefined ? "" : value)];
}

function bar(value, longest) {
  const el = h("span", { class: "bar" });
  el.style.width = `${Math.max(1, Math.round(((value || 0) / longest) * 100))}%`;
  return el;
}

function legend() {
  return ["done", "running", "waiting", "failed", "pending"].map((st) =>
    h("span", { class: `key ${st}` }, st === "pending" ? "not reached" : st),
  );
}
