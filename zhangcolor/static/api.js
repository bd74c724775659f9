// The API docs page: renders this server's /openapi.json as plain HTML (no CDN, no framework).
"use strict";

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  for (const child of children) node.append(child);
  return node;
}

// A JSON-schema fragment in a line: its type (or enum), and its bounds and default. An optional
// parameter's schema is "anyOf: [its type, null]": its type is described.
function describeSchema(schema = {}) {
  const options = (schema.anyOf || []).filter((s) => s.type !== "null");
  if (options.length === 1) {
    return describeSchema({ default: schema.default, ...options[0] });
  }
  const type = schema.enum ? schema.enum.join(" | ") : schema.format || schema.type || "any";
  const notes = [];
  if (schema.exclusiveMinimum !== undefined) notes.push(`> ${schema.exclusiveMinimum}`);
  if (schema.minimum !== undefined) notes.push(`≥ ${schema.minimum}`);
  if (schema.maximum !== undefined) notes.push(`≤ ${schema.maximum}`);
  if (schema.default !== undefined) notes.push(`default ${schema.default}`);
  return notes.length ? `${type} (${notes.join(", ")})` : type;
}

function fieldTable(rows) {
  const table = el("table", { class: "fields" });
  table.append(el("tr", {}, el("th", {}, "name"), el("th", {}, "in"), el("th", {}, "type"),
    el("th", {}, "what")));
  for (const row of rows) {
    table.append(el("tr", {}, el("td", {}, el("code", {}, row.name + (row.required ? " *" : ""))),
      el("td", {}, row.where), el("td", {}, row.type), el("td", {}, row.description || "")));
  }
  return table;
}

function operation(path, method, op) {
  const section = el("section", { class: "operation", id: op.operationId || `${method}-${path}` });
  section.append(el("h2", {}, el("code", {}, `${method.toUpperCase()} ${path}`)));
  if (op.summary) section.append(el("p", { class: "summary" }, op.summary));
  if (op.description) section.append(el("p", {}, op.description));
  const rows = (op.parameters || []).map((p) => ({
    name: p.name, where: p.in, required: p.required,
    type: describeSchema(p.schema), description: p.description || (p.schema || {}).description,
  }));
  const body = ((op.requestBody || {}).content || {});
  for (const [mediaType, content] of Object.entries(body)) {
    const schema = content.schema || {};
    for (const [name, field] of Object.entries(schema.properties || {})) {
      rows.push({ name, where: mediaType, required: (schema.required || []).includes(name),
        type: describeSchema(field), description: field.description });
    }
  }
  if (rows.length) section.append(fieldTable(rows));
  const responses = el("ul", { class: "responses" });
  for (const [status, response] of Object.entries(op.responses || {})) {
    const types = Object.keys(response.content || {}).join(", ");
    responses.append(el("li", {}, el("strong", {}, status), ` ${response.description || ""}`,
      types ? ` (${types})` : ""));
  }
  section.append(responses);
  return section;
}

async function main() {
  const main = document.getElementById("api");
  try {
    const response = await fetch("/openapi.json");
    if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
    const spec = await response.json();
    main.replaceChildren(el("p", {}, `${spec.info.title} ${spec.info.version}: ${spec.info.description}`));
    for (const [path, methods] of Object.entries(spec.paths)) {
      for (const [method, op] of Object.entries(methods)) main.append(operation(path, method, op));
    }
    main.append(el("p", {}, "Every refusal is JSON: ", el("code", {}, '{"error": code, "detail": message}'),
      ", with a 4xx status (503 when the server is busy)."));
  } catch (error) {
    document.getElementById("api-status").textContent = `Could not load /openapi.json: ${error.message}`;
  }
}

main();
