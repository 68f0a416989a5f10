// The dashboard's shell: who is signed in, the navigation, and one page at a time by the
// URL's fragment (#/runs, #/runs/<id>, #/flows, #/flows/<name>, #/ops, #/signin).

import { api, key, setKey } from "./api.js";
import { clear, h } from "./dom.js";
import { renderFlow, renderFlows } from "./pages/flows.js";
import { renderOps } from "./pages/ops.js";
import { renderRun } from "./pages/run.js";
import { renderRuns } from "./pages/runs.js";
import { renderSignin } from "./pages/signin.js";

const view = document.getElementById("view");
const nav = document.getElementById("nav");
const who = document.getElementById("who");
let me = null;
let cleanup = null;

export function can(permission) {
  return Boolean(me && me.permissions.includes(permission));
}

export function session() {
  return me;
}

export async function signIn(value) {
  setKey(value);
  try {
    me = await api("/v1/me");
  } catch (err) {
    setKey(null);
    me = null;
    throw err;
  }
  drawChrome();
}

function signOut() {
  setKey(null);
  me = null;
  drawChrome();
  location.hash = "#/signin";
}

function drawChrome() {
  clear(nav);
  clear(who);
  if (!me) return;
  const link = (href, label, name) => h("a", { href, "data-nav": name }, label);
  nav.append(link("#/runs", "Runs", "runs"), link("#/flows", "Flows", "flows"));
  if (can("workers:read") || can("webhooks:read")) nav.append(link("#/ops", "Operations", "ops"));
  nav.append(h("a", { href: "/docs", "data-nav": "docs" }, "API docs"));
  who.append(
    h("span", { class: "who", "data-role": me.role }, `${me.role} · tenant ${me.tenant}`),
    h("button", { type: "button", class: "link", onclick: signOut, "data-action": "sign-out" }, "Sign out"),
  );
}

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, query = ""] = raw.split("?");
  return { parts: path.split("/").filter(Boolean).map(decodeURIComponent), query: new URLSearchParams(query) };
}

async function route() {
  if (cleanup) {
    cleanup();
    cleanup = null;
  }
  const { parts, query } = parseHash();
  if (!me && key()) {
    try {
      me = await api("/v1/me");
      drawChrome();
    } catch {
      setKey(null);
    }
  }
  clear(view);
  if (!me || parts[0] === "signin") {
    if (me && parts[0] === "signin") {
      location.hash = "#/runs";
      return;
    }
    cleanup = renderSignin(view);
    return;
  }
  for (const a of nav.querySelectorAll("a")) a.classList.toggle("active", a.dataset.nav === parts[0]);
  const page = parts[0] || "runs";
  if (page === "runs" && parts[1]) cleanup = renderRun(view, parts[1]);
  else if (page === "flows" && parts[1]) cleanup = renderFlow(view, parts[1], query);
  else if (page === "flows") cleanup = renderFlows(view);
  else if (page === "ops") cleanup = renderOps(view);
  else cleanup = renderRuns(view, query);
}

window.addEventListener("hashchange", route);
window.addEventListener("pocketrun:unauthorized", () => {
  if (me) signOut();
});
route();
