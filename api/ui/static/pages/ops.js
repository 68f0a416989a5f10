// Operations: live workers and what they run, the queue depth, schedules (create,
// enable, disable, delete) and webhooks with their deliveries.

import { api } from "../api.js";
import { can } from "../app.js";
import { clear, fill, h, when } from "../dom.js";

const REFRESH_MS = 3000;

function items(data) {
  return Array.isArray(data) ? data : (data && data.items) || [];
}

export function renderOps(root) {
  const abort = new AbortController();
  const workers = h("section", { class: "card", id: "workers" }, h("h2", null, "Workers"));
  const schedules = h("section", { class: "card", id: "schedules" }, h("h2", null, "Schedules"));
  const webhooks = h("section", { class: "card", id: "webhooks" }, h("h2", null, "Webhooks"));
  root.append(h("div", { class: "page-head" }, h("h1", null, "Operations")), workers, schedules, webhooks);
  let timer = null;
  const workersBody = h("div");
  workers.append(workersBody);
  const loadWorkers = async () => {
    if (!can("workers:read")) {
      fill(workersBody, h("p", { class: "muted" }, "Your role does not see workers."));
      return;
    }
    try {
      const data = await api("/v1/workers", { signal: abort.signal });
      const queued = data.queued === null ? "unknown" : typeof data.queued === "number" ? String(data.queued) : Object.entries(data.queued).map(([q, n]) => `${q}: ${n}`).join(", ") || "0";
      fill(workersBody, 
        h("p", null, `Executor ${data.executor} · queued `, h("strong", { id: "queue-depth" }, queued), data.in_flight !== null ? ` · in flight here ${data.in_flight}` : ""),
        h(
          "table",
          null,
          h("thead", null, h("tr", null, ["Worker", "Host", "PID", "Queues", "Running", "Heartbeat"].map((t) => h("th", null, t)))),
          h(
            "tbody",
            null,
            data.items.length
              ? data.items.map((w) =>
                  h(
                    "tr",
                    { "data-worker": w.id },
                    h("td", null, w.name),
                    h("td", null, w.hostname),
                    h("td", { class: "num" }, w.pid),
                    h("td", null, w.queues.join(", ")),
                    h("td", null, `${w.running_total} `, w.running.map((id) => h("a", { href: `#/runs/${id}`, class: "mono small" }, `${id.slice(0, 8)}… `))),
                    h("td", null, when(w.heartbeat_at)),
                  ),
                )
              : h("tr", null, h("td", { colspan: 6, class: "muted" }, "No live workers.")),
          ),
        ),
      );
    } catch (err) {
      if (!abort.signal.aborted) fill(workersBody, h("p", { class: "form-error" }, err.message));
    }
  };
  const tick = async () => {
    await loadWorkers();
    if (!abort.signal.aborted) timer = setTimeout(tick, REFRESH_MS);
  };
  tick();
  renderSchedules(schedules, abort.signal);
  renderWebhooks(webhooks, abort.signal);
  return () => {
    abort.abort();
    clearTimeout(timer);
  };
}

async function renderSchedules(section, signal) {
  const body = h("div");
  section.append(body);
  if (!can("schedules:read")) {
    fill(body, h("p", { class: "muted" }, "Your role does not see schedules."));
    return;
  }
  const manage = can("schedules:manage");
  const load = async () => {
    let data;
    try {
      data = await api("/v1/schedules", { signal });
    } catch (err) {
      fill(body, h("p", { class: "muted", id: "schedules-unavailable" }, err.status === 404 ? "Schedules unavailable on this server." : err.message));
      return;
    }
    const toggle = (sch) => async () => {
      try {
        await api(`/v1/schedules/${sch.id}`, { method: "PATCH", body: { enabled: !sch.enabled } });
      } catch (err) {
        alertLine(body, err.message);
      }
      load();
    };
    const remove = (sch) => async () => {
      try {
        await api(`/v1/schedules/${sch.id}`, { method: "DELETE" });
      } catch (err) {
        alertLine(body, err.message);
      }
      load();
    };
    const list = items(data);
    fill(body, 
      h(
        "table",
        null,
        h("thead", null, h("tr", null, ["Flow", "When", "Timezone", "Next run", "Last run", "Enabled", ""].map((t) => h("th", null, t)))),
        h(
          "tbody",
          null,
          list.length
            ? list.map((sch) =>
                h(
                  "tr",
                  { "data-schedule": sch.id },
                  h("td", null, sch.flow),
                  h("td", { class: "mono" }, sch.cron || (sch.every ? `every ${sch.every} s` : "")),
                  h("td", null, sch.timezone || "UTC"),
                  h("td", null, when(sch.next_run_at)),
                  h("td", null, sch.last_run_id ? h("a", { href: `#/runs/${sch.last_run_id}` }, when(sch.last_tick_at)) : sch.last_error || "—"),
                  h("td", null, sch.enabled ? "yes" : "no"),
                  h(
                    "td",
                    null,
                    manage ? h("button", { type: "button", onclick: toggle(sch) }, sch.enabled ? "Disable" : "Enable") : null,
                    manage ? h("button", { type: "button", onclick: remove(sch) }, "Delete") : null,
                  ),
                ),
              )
            : h("tr", null, h("td", { colspan: 7, class: "muted" }, "No schedules.")),
        ),
      ),
      manage ? createSchedule(body, load) : null,
    );
  };
  load();
}

function createSchedule(body, reload) {
  const flow = h("select", { name: "flow" });
  api("/v1/flows")
    .then((page) => {
      for (const name of [...new Set(page.items.map((f) => f.name))].sort()) flow.append(h("option", { value: name }, name));
    })
    .catch(() => {});
  const cron = h("input", { name: "cron", placeholder: "*/5 * * * *" });
  const every = h("input", { name: "every", placeholder: "seconds", inputmode: "numeric" });
  const tz = h("input", { name: "timezone", value: "UTC" });
  const input = h("textarea", { name: "input", rows: 2, value: "{}" });
  const enabled = h("input", { type: "checkbox", name: "enabled", checked: true });
  const error = h("div", { class: "form-error" });
  return h(
    "form",
    {
      class: "inline-form",
      onsubmit: async (event) => {
        event.preventDefault();
        error.textContent = "";
        const spec = { flow: flow.value, timezone: tz.value || "UTC", enabled: enabled.checked };
        if (cron.value) spec.cron = cron.value;
        if (every.value) spec.every = Number(every.value);
        try {
          spec.input = JSON.parse(input.value || "{}");
        } catch {
          error.textContent = "input: not valid JSON";
          return;
        }
        try {
          await api("/v1/schedules", { method: "POST", body: spec });
          reload();
        } catch (err) {
          const fields = ((err.problem && err.problem.errors) || []).map((e) => `${e.path || e.loc.join(".")}: ${e.msg}`);
          error.textContent = fields.length ? fields.join("; ") : err.message;
        }
      },
    },
    h("h3", null, "New schedule"),
    h("label", null, "Flow", flow),
    h("label", null, "Cron", cron),
    h("label", null, "or every", every),
    h("label", null, "Timezone", tz),
    h("label", null, "Input", input),
    h("label", null, enabled, " enabled"),
    h("button", { type: "submit" }, "Create"),
    error,
  );
}

function alertLine(body, text) {
  body.prepend(h("p", { class: "form-error" }, text));
}

async function renderWebhooks(section, signal) {
  const body = h("div");
  const deliveries = h("div", { id: "deliveries" });
  section.append(body, deliveries);
  if (!can("webhooks:read")) {
    body.append(h("p", { class: "muted" }, "Your role does not see webhooks."));
    return;
  }
  try {
    const data = await api("/v1/webhooks", { signal });
    const show = (hook) => async () => {
      fill(deliveries, h("h3", null, `Deliveries to ${hook.url}`));
      try {
        const log = await api(`/v1/webhooks/${hook.id}/deliveries`, { signal });
        deliveries.append(
          h(
            "table",
            null,
            h("thead", null, h("tr", null, ["At", "Event", "Status", "HTTP", "Error", "ms"].map((t) => h("th", null, t)))),
            h(
              "tbody",
              null,
              items(log).length
                ? items(log).map((a) =>
                    h("tr", null, h("td", null, when(a.at)), h("td", null, a.event), h("td", null, a.delivery_status), h("td", { class: "num" }, a.status_code ?? ""), h("td", null, a.error || ""), h("td", { class: "num" }, Math.round(a.duration_ms))),
                  )
                : h("tr", null, h("td", { colspan: 6, class: "muted" }, "No deliveries yet.")),
            ),
          ),
        );
      } catch (err) {
        deliveries.append(h("p", { class: "form-error" }, err.message));
      }
    };
    const list = items(data);
    body.append(
      h(
        "table",
        null,
        h("thead", null, h("tr", null, ["URL", "Events", "Flow", "Enabled", "Created", ""].map((t) => h("th", null, t)))),
        h(
          "tbody",
          null,
          list.length
            ? list.map((hook) =>
                h(
                  "tr",
                  { "data-webhook": hook.id },
                  h("td", { class: "mono small" }, hook.url),
                  h("td", null, hook.events.join(", ")),
                  h("td", null, hook.flow || "any"),
                  h("td", null, hook.enabled ? "yes" : "no"),
                  h("td", null, when(hook.created_at)),
                  h("td", null, h("button", { type: "button", onclick: show(hook) }, "Deliveries")),
                ),
              )
            : h("tr", null, h("td", { colspan: 6, class: "muted" }, "No webhooks.")),
        ),
      ),
    );
  } catch (err) {
    body.append(h("p", { class: "form-error" }, err.message));
  }
}
