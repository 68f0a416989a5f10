// Runs, newest first: filters in the URL, keyset pages, refreshed every few seconds.

import { api } from "../api.js";
import { can, session } from "../app.js";
import { badge, clear, h, ms, when } from "../dom.js";

const STATUSES = ["queued", "running", "waiting", "paused", "sleeping", "succeeded", "failed", "cancelled", "timed_out"];
const REFRESH_MS = 2000;
const PAGE = 50;

function toIso(local) {
  return local ? new Date(local).toISOString() : "";
}

function toLocal(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

export function renderRuns(root, query) {
  const filters = {
    flow: query.get("flow") || "",
    status: query.getAll("status"),
    created_after: query.get("created_after") || "",
    created_before: query.get("created_before") || "",
    tenant: query.get("tenant") || "",
  };
  const cursors = [null];
  let current = 0;
  let next = null;
  let timer = null;
  let stopped = false;

  const flowSelect = h("select", { name: "flow", id: "filter-flow" }, h("option", { value: "" }, "any flow"));
  const statusSelect = h(
    "select",
    { name: "status", id: "filter-status", multiple: true, size: 3 },
    STATUSES.map((st) => h("option", { value: st, selected: filters.status.includes(st) }, st)),
  );
  const after = h("input", { type: "datetime-local", name: "created_after", value: toLocal(filters.created_after) });
  const before = h("input", { type: "datetime-local", name: "created_before", value: toLocal(filters.created_before) });
  const tenant = session().cross_tenant
    ? h("input", { type: "text", name: "tenant", id: "filter-tenant", placeholder: "any tenant", value: filters.tenant })
    : null;
  const apply = (event) => {
    event.preventDefault();
    const q = new URLSearchParams();
    if (flowSelect.value) q.set("flow", flowSelect.value);
    for (const o of statusSelect.selectedOptions) q.append("status", o.value);
    if (after.value) q.set("created_after", toIso(after.value));
    if (before.value) q.set("created_before", toIso(before.value));
    if (tenant && tenant.value) q.set("tenant", tenant.value.trim());
    location.hash = `#/runs${q.toString() ? `?${q}` : ""}`;
  };
  const form = h(
    "form",
    { class: "filters", onsubmit: apply },
    h("label", null, "Flow", flowSelect),
    h("label", null, "Status", statusSelect),
    h("label", null, "Created after", after),
    h("label", null, "Created before", before),
    tenant ? h("label", null, "Tenant", tenant) : null,
    h("button", { type: "submit" }, "Filter"),
    h("a", { href: "#/runs", class: "button" }, "Clear"),
  );
  const body = h("tbody");
  const table = h(
    "table",
    { class: "runs", id: "runs-table" },
    h(
      "thead",
      null,
      h(
        "tr",
        null,
        ["Run", "Flow", "Status", "Created", "Duration", "Steps", "Trigger"].map((t) => h("th", null, t)),
      ),
    ),
    body,
  );
  const prev = h("button", { type: "button", "data-page": "prev", onclick: () => go(current - 1) }, "← Newer");
  const more = h("button", { type: "button", "data-page": "next", onclick: () => go(current + 1) }, "Older →");
  const pageInfo = h("span", { class: "muted" });
  const error = h("div", { class: "form-error" });
  root.append(
    h("div", { class: "page-head" }, h("h1", null, "Runs"), can("runs:start") ? h("a", { href: "#/flows", class: "button primary" }, "Start a run") : null),
    form,
    error,
    table,
    h("div", { class: "pager" }, prev, pageInfo, more),
  );

  api("/v1/flows")
    .then((flows) => {
      const names = [...new Set(flows.items.map((f) => f.name))].sort();
      for (const name of names) flowSelect.append(h("option", { value: name, selected: name === filters.flow }, name));
    })
    .catch(() => {});

  const row = (run) => {
    const started = run.started_at ? new Date(run.started_at) : null;
    const ended = run.finished_at ? new Date(run.finished_at) : null;
    const duration = started ? ms((ended || new Date()) - started) : "";
    return h(
      "tr",
      { "data-run": run.id },
      h("td", null, h("a", { href: `#/runs/${run.id}`, class: "mono" }, run.id.slice(0, 8) + "…" + run.id.slice(-4))),
      h("td", null, `${run.flow} v${run.flow_version}`),
      h("td", null, badge(run.status)),
      h("td", null, when(run.created_at)),
      h("td", null, duration),
      h("td", { class: "num" }, run.steps),
      h("td", null, run.trigger ? run.trigger.type : ""),
    );
  };

  const load = async () => {
    try {
      const page = await api("/v1/runs", {
        query: {
          flow: filters.flow,
          status: filters.status,
          created_after: filters.created_after,
          created_before: filters.created_before,
          tenant: filters.tenant,
          limit: PAGE,
          cursor: cursors[current],
        },
      });
      if (stopped) return;
      error.textContent = "";
      clear(body);
      if (!page.items.length) body.append(h("tr", null, h("td", { colspan: 7, class: "muted" }, "No runs.")));
      for (const run of page.items) body.append(row(run));
      next = page.next_cursor;
      prev.disabled = current === 0;
      more.disabled = !next;
      pageInfo.textContent = `page ${current + 1}`;
      table.dataset.loaded = "true";
    } catch (err) {
      if (!stopped) error.textContent = err.message;
    }
  };
  const go = async (index) => {
    if (index < 0) return;
    if (index > current) {
      if (!next) return;
      cursors[index] = next;
    }
    current = index;
    await load();
  };
  const tick = async () => {
    if (stopped) return;
    if (!document.hidden) await load();
    timer = setTimeout(tick, REFRESH_MS);
  };
  tick();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
