// The flow catalog with each graph, and a form built from a flow's input schema that
// starts a run (the server's 422 field errors appear at their fields).

import { api } from "../api.js";
import { can } from "../app.js";
import { clear, h } from "../dom.js";
import { drawGraph } from "../graph.js";
import { schemaForm } from "../schemaform.js";

export function renderFlows(root) {
  const abort = new AbortController();
  const list = h("div", { class: "flow-list", id: "flow-list" });
  root.append(h("div", { class: "page-head" }, h("h1", null, "Flows")), list);
  api("/v1/flows", { signal: abort.signal })
    .then(async (page) => {
      const latest = new Map();
      for (const f of page.items) latest.set(f.name, f);
      for (const f of [...latest.values()].sort((a, b) => a.name.localeCompare(b.name))) {
        const box = h("div", { class: "mini-graph" });
        list.append(
          h(
            "a",
            { class: "card flow-card", href: `#/flows/${encodeURIComponent(f.name)}`, "data-flow": f.name },
            h("h3", null, f.name, h("span", { class: "muted small" }, ` v${f.version} · ${f.mode}`)),
            h("p", { class: "muted" }, f.description || ""),
            box,
          ),
        );
        api(`/v1/flows/${encodeURIComponent(f.name)}`, { signal: abort.signal })
          .then((detail) => {
            if (detail.graph) box.append(drawGraph(detail.graph).svg);
          })
          .catch(() => {});
      }
      list.dataset.loaded = "true";
    })
    .catch((err) => list.append(h("p", { class: "form-error" }, err.message)));
  return () => abort.abort();
}

export function renderFlow(root, name, query) {
  const abort = new AbortController();
  const path = `/v1/flows/${encodeURIComponent(name)}`;
  api(path, { query: { version: query.get("version") }, signal: abort.signal })
    .then((flow) => {
      const versions = h(
        "select",
        { onchange: (e) => (location.hash = `#/flows/${encodeURIComponent(name)}?version=${encodeURIComponent(e.target.value)}`) },
        flow.versions.map((v) => h("option", { value: v.version, selected: v.version === flow.version }, `v${v.version}`)),
      );
      root.append(
        h("div", { class: "page-head" }, h("h1", null, flow.name), versions, h("a", { href: `#/runs?flow=${encodeURIComponent(flow.name)}`, class: "button" }, "Runs of this flow")),
        h("p", { class: "muted" }, flow.description || ""),
      );
      const grid = h("div", { class: "run-grid" });
      const graphCard = h("section", { class: "card" }, h("h2", null, "Graph"));
      if (flow.graph) graphCard.append(h("div", { class: "graph-box", id: "flow-graph" }, drawGraph(flow.graph).svg));
      else graphCard.append(h("p", { class: "muted" }, "The node graph is shown to engineers and admins."));
      grid.append(graphCard);
      if (can("runs:start")) grid.append(startForm(flow));
      root.append(grid);
      root.dataset.ready = "true";
    })
    .catch((err) => root.append(h("p", { class: "form-error" }, err.status === 404 ? "No such flow." : err.message)));
  return () => abort.abort();
}

function startForm(flow) {
  const form = schemaForm(flow.input_schema);
  const submit = h("button", { type: "submit", class: "primary", "data-action": "start" }, "Start run");
  return h(
    "section",
    { class: "card" },
    h("h2", null, "Start a run"),
    h(
      "form",
      {
        id: "start-form",
        onsubmit: async (event) => {
          event.preventDefault();
          form.clearErrors();
          let input;
          try {
            input = form.value();
          } catch {
            return;
          }
          submit.disabled = true;
          try {
            const run = await api(`/v1/flows/${encodeURIComponent(flow.name)}/runs`, {
              method: "POST",
              body: { input, version: flow.version },
            });
            location.hash = `#/runs/${run.id}`;
          } catch (err) {
            form.showErrors(err.problem, ["body", "input"]);
          } finally {
            submit.disabled = false;
          }
        },
      },
      form.element,
      submit,
    ),
  );
}
