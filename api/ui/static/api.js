// The /v1 API with the signed-in key; the key lives in this tab's sessionStorage only.

const KEY = "pocketrun.key";

export class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
}

export function key() {
  return sessionStorage.getItem(KEY);
}

export function setKey(value) {
  if (value) sessionStorage.setItem(KEY, value);
  else sessionStorage.removeItem(KEY);
}

function headers(extra) {
  const out = { Accept: "application/json", ...extra };
  const k = key();
  if (k) out.Authorization = `Bearer ${k}`;
  return out;
}

export async function api(path, { method = "GET", body, signal, query } = {}) {
  let url = path;
  if (query) {
    const params = new URLSearchParams();
    for (const [name, value] of Object.entries(query)) {
      for (const v of Array.isArray(value) ? value : [value]) {
        if (v !== undefined && v !== null && v !== "") params.append(name, v);
      }
    }
    const text = params.toString();
    if (text) url += `?${text}`;
  }
  const init = { method, headers: headers(), signal };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(url, init);
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = { detail: text };
    }
  }
  if (!response.ok) {
    if (response.status === 401) window.dispatchEvent(new CustomEvent("pocketrun:unauthorized"));
    throw new ApiError(response.status, data);
  }
  return data;
}

// A run's Server-Sent Events, read with fetch (EventSource can't send the key). Calls
// onEvent({id, event, data}) for each; reconnects after a drop with ?after= the last id;
// resolves when the stream ends after run.finished or `signal` aborts.
export async function streamEvents(path, { after = 0, signal, onEvent, onState }) {
  let last = after;
  let delay = 500;
  while (!signal.aborted) {
    let finished = false;
    try {
      const response = await fetch(`${path}?after=${last}`, {
        headers: headers({ Accept: "text/event-stream" }),
        signal,
      });
      if (!response.ok) throw new ApiError(response.status, null);
      onState && onState("live");
      delay = 500;
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      let message = { data: [] };
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let cut;
        while ((cut = buffer.search(/\r?\n/)) >= 0) {
          const line = buffer.slice(0, cut);
          buffer = buffer.slice(cut + (buffer[cut] === "\r" ? 2 : 1));
          if (line === "") {
            if (message.data.length) {
              const event = {
                id: message.id,
                event: message.event || "message",
                data: JSON.parse(message.data.join("\n")),
              };
              if (event.id !== undefined) last = Number(event.id);
              onEvent(event);
              if (event.event === "run.finished") finished = true;
            }
            message = { data: [] };
          } else if (!line.startsWith(":")) {
            const colon = line.indexOf(":");
            const field = colon < 0 ? line : line.slice(0, colon);
            let text = colon < 0 ? "" : line.slice(colon + 1);
            if (text.startsWith(" ")) text = text.slice(1);
            if (field === "data") message.data.push(text);
            else if (field === "id") message.id = text;
            else if (field === "event") message.event = text;
          }
        }
      }
    } catch (err) {
      if (signal.aborted) return;
      if (err instanceof ApiError && (err.status === 401 || err.status === 404)) {
        onState && onState("closed");
        return;
      }
    }
    if (finished) {
      onState && onState("ended");
      return;
    }
    onState && onState("reconnecting");
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 2, 5000);
  }
}
