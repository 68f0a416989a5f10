// Sign in with an API key: checked against GET /v1/me, kept in this tab's session only.

import { signIn } from "../app.js";
import { h } from "../dom.js";

export function renderSignin(root) {
  const input = h("input", {
    id: "api-key",
    name: "key",
    type: "password",
    autocomplete: "off",
    placeholder: "prk_…",
    required: true,
  });
  const error = h("div", { class: "form-error", role: "alert" });
  const form = h(
    "form",
    {
      class: "card signin",
      onsubmit: async (event) => {
        event.preventDefault();
        error.textContent = "";
        try {
          await signIn(input.value.trim());
          const target = sessionStorage.getItem("pocketrun.after") || "#/runs";
          sessionStorage.removeItem("pocketrun.after");
          location.hash = target;
        } catch (err) {
          error.textContent = err.status === 401 ? "That key is not valid." : err.message;
        }
      },
    },
    h("h1", null, "Sign in"),
    h("p", { class: "muted" }, "Paste an API key (pocketrun keys create). It stays in this browser tab only."),
    h("label", { for: "api-key" }, "API key"),
    input,
    error,
    h("button", { type: "submit", class: "primary" }, "Sign in"),
  );
  root.append(form);
  if (location.hash && !location.hash.startsWith("#/signin")) {
    sessionStorage.setItem("pocketrun.after", location.hash);
  }
  input.focus();
  return () => {};
}
