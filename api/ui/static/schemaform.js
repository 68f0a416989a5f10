// A form from a JSON Schema (an object's properties), and the server's 422 field errors
// shown at the fields they name. The server stays the judge: values go as typed, and
// what it refuses comes back at the field.

import { h } from "./dom.js";

function resolve(schema, root) {
  let current = schema || {};
  for (let i = 0; i < 10 && current.$ref; i++) {
    const name = current.$ref.replace(/^#\/(\$defs|definitions)\//, "");
    current = (root.$defs || root.definitions || {})[name] || {};
  }
  const variants = current.anyOf || current.oneOf;
  if (variants) {
    const real = variants.filter((v) => v.type !== "null");
    if (real.length === 1) return { ...current, ...resolve(real[0], root), anyOf: undefined, oneOf: undefined };
  }
  return current;
}

function kind(schema) {
  if (schema.enum) return "enum";
  const type = Array.isArray(schema.type) ? schema.type.find((t) => t !== "null") : schema.type;
  return type || "json";
}

function field(name, schema, required) {
  const id = `f-${name.replace(/[^A-Za-z0-9_-]/g, "_")}`;
  const k = kind(schema);
  let input;
  if (k === "enum") {
    input = h("select", { id, name }, required ? null : h("option", { value: "" }, ""));
    for (const v of schema.enum) input.append(h("option", { value: JSON.stringify(v) }, String(v)));
    if (schema.default !== undefined) input.value = JSON.stringify(schema.default);
  } else if (k === "boolean") {
    input = h("input", { id, name, type: "checkbox", checked: schema.default === true });
  } else if (k === "object" || k === "array" || k === "json") {
    const value = schema.default !== undefined ? JSON.stringify(schema.default, null, 2) : "";
    input = h("textarea", { id, name, rows: 3, placeholder: k === "array" ? "[ ]" : "JSON", value });
  } else {
    const numeric = k === "integer" || k === "number";
    input = h("input", {
      id,
      name,
      type: "text",
      inputmode: numeric ? "decimal" : null,
      value: schema.default !== undefined ? String(schema.default) : "",
    });
  }
  const error = h("div", { class: "field-error", "data-error-for": name });
  const label = h("label", { for: id }, schema.title || name, required ? h("span", { class: "req" }, " *") : null);
  const help = schema.description ? h("div", { class: "help" }, schema.description) : null;
  return {
    name,
    kind: k,
    required,
    row: h("div", { class: "field", "data-field": name }, label, input, help, error),
    input,
    error,
  };
}

function read(f) {
  const { input, kind: k } = f;
  if (k === "boolean") return { set: true, value: input.checked };
  const raw = input.value;
  if (raw === "") return { set: false };
  if (k === "enum") return { set: true, value: JSON.parse(raw) };
  if (k === "integer" || k === "number") {
    const n = Number(raw);
    return { set: true, value: raw.trim() !== "" && Number.isFinite(n) ? n : raw };
  }
  if (k === "object" || k === "array" || k === "json") {
    try {
      return { set: true, value: JSON.parse(raw) };
    } catch {
      return { set: true, value: raw, invalid: "not valid JSON" };
    }
  }
  return { set: true, value: raw };
}

// {element, value(), showErrors(problem, prefix), clearErrors()}. A schema with no
// properties (or none) gets one JSON box for the whole value.
export function schemaForm(schema) {
  const root = resolve(schema || {}, schema || {});
  const props = root.properties;
  const general = h("div", { class: "form-error", role: "alert" });
  if (!props || !Object.keys(props).length) {
    const whole = field("value", { type: "json", default: root.type === "object" ? {} : undefined }, false);
    whole.row.querySelector("label").textContent = "JSON";
    return {
      element: h("div", { class: "schema-form" }, whole.row, general),
      value: () => {
        const got = read(whole);
        if (got.invalid) throw new Error(got.invalid);
        return got.set ? got.value : {};
      },
      showErrors: (problem, prefix) => show([whole], general, problem, prefix, true),
      clearErrors: () => reset([whole], general),
    };
  }
  const required = new Set(root.required || []);
  const fields = Object.entries(props).map(([name, sub]) => field(name, resolve(sub, schema), required.has(name)));
  return {
    element: h("div", { class: "schema-form" }, fields.map((f) => f.row), general),
    value: () => {
      const out = {};
      for (const f of fields) {
        const got = read(f);
        if (got.invalid) {
          f.error.textContent = got.invalid;
          throw new Error(`${f.name}: ${got.invalid}`);
        }
        if (got.set) out[f.name] = got.value;
      }
      return out;
    },
    showErrors: (problem, prefix) => show(fields, general, problem, prefix, false),
    clearErrors: () => reset(fields, general),
  };
}

function reset(fields, general) {
  for (const f of fields) {
    f.error.textContent = "";
    f.row.classList.remove("invalid");
  }
  general.textContent = "";
}

// Each error whose loc starts with `prefix` (e.g. ["body", "input"]) goes to the field its
// next part names; the rest go to the form's own error line.
function show(fields, general, problem, prefix, whole) {
  reset(fields, general);
  const byName = new Map(fields.map((f) => [f.name, f]));
  const loose = [];
  for (const err of (problem && problem.errors) || []) {
    const loc = err.loc || [];
    const under = prefix.every((p, i) => loc[i] === p);
    const rest = under ? loc.slice(prefix.length) : null;
    let target = null;
    if (whole && rest) target = fields[0];
    else if (rest && rest.length) target = byName.get(String(rest[0]));
    if (target) {
      const where = rest.slice(whole ? 0 : 1).join(".");
      const line = where ? `${where}: ${err.msg}` : err.msg;
      target.error.textContent = target.error.textContent ? `${target.error.textContent}; ${line}` : line;
      target.row.classList.add("invalid");
    } else if (under && rest && rest.length === 0) {
      loose.push(err.msg);
    } else {
      loose.push(`${(err.path || loc.join("."))}: ${err.msg}`);
    }
  }
  if (loose.length || !((problem && problem.errors) || []).length) {
    general.textContent = loose.length ? loose.join("; ") : (problem && (problem.detail || problem.title)) || "refused";
  }
}
