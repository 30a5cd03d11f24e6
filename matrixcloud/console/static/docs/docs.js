"use strict";
// A small, dependency-free reader of this server's OpenAPI schema (no CDN needed), served
// as a file so the page's Content-Security-Policy allows no inline script.
// It asks /openapi.yaml for JSON (same document, another media type) and lists it.
const METHODS = ["get", "put", "post", "delete", "patch", "head", "options"];
let COMPONENTS = {};

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === "") continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function refName(ref) { return ref.split("/").pop(); }

function typeLabel(schema) {
  if (!schema) return "any";
  if (schema.$ref) return el("a", {href: "#schema-" + refName(schema.$ref)}, refName(schema.$ref));
  if (schema.allOf || schema.oneOf || schema.anyOf) {
    const parts = schema.allOf || schema.oneOf || schema.anyOf;
    const joiner = schema.allOf ? " & " : " | ";
    const out = el("span");
    parts.forEach((part, i) => { if (i) out.append(joiner); out.append(typeLabel(part)); });
    return out;
  }
  if (schema.type === "array") return el("span", {}, "array of ", typeLabel(schema.items));
  let label = schema.type || "any";
  if (schema.format) label += " (" + schema.format + ")";
  return label;
}

function schemaTree(schema, depth) {
  const line = el("span", {class: "type"}, typeLabel(schema));
  if (schema && schema.nullable) line.append(" | null");
  const node = el("div", {}, line);
  if (schema && schema.enum) node.append(" ", el("span", {class: "enum"}, "one of: " + schema.enum.join(", ")));
  if (schema && schema.description) node.append(el("div", {class: "desc"}, schema.description));
  if (schema && schema.properties && depth < 4) {
    const required = new Set(schema.required || []);
    const list = el("ul", {class: "schema"});
    for (const [name, prop] of Object.entries(schema.properties)) {
      const item = el("li", {}, el("code", {}, name), " ",
        required.has(name) ? el("span", {class: "req"}, "required") : "", " ");
      item.append(schemaTree(prop, depth + 1));
      list.append(item);
    }
    node.append(list);
  }
  if (schema && schema.type === "array" && schema.items && !schema.items.$ref && depth < 4) {
    node.append(el("ul", {class: "schema"}, el("li", {}, schemaTree(schema.items, depth + 1))));
  }
  return node;
}

function contentBlock(content) {
  // A body's own schema is shown expanded one level, so its fields read in place.
  const block = el("div");
  for (const [mediaType, media] of Object.entries(content || {})) {
    let schema = media.schema;
    block.append(el("div", {}, el("span", {class: "badge"}, mediaType)));
    if (schema && schema.$ref && COMPONENTS[refName(schema.$ref)]) {
      block.append(el("div", {class: "type"}, typeLabel(schema)));
      schema = COMPONENTS[refName(schema.$ref)];
    }
    block.append(schemaTree(schema, 0));
  }
  return block;
}

function securityLabel(operation, doc) {
  const security = operation.security !== undefined ? operation.security : (doc.security || []);
  if (!security.length) return "open: no credentials";
  const names = security.map(s => Object.keys(s).join(" + ") || "anonymous");
  return "credentials: " + names.join(" or ");
}

function operationSection(doc, path, method, operation, pathParams) {
  const id = "op-" + (operation.operationId || method + path);
  const section = el("section", {class: "op", id: id},
    el("h3", {}, el("span", {class: "method " + method}, method.toUpperCase()), path),
    el("p", {class: "summary"}, operation.summary || ""),
    operation.description ? el("p", {class: "desc"}, operation.description) : "",
    el("p", {}, el("span", {class: "badge"}, securityLabel(operation, doc))));
  const params = [...(pathParams || []), ...(operation.parameters || [])];
  if (params.length) {
    const table = el("table", {}, el("tr", {}, el("th", {}, "name"), el("th", {}, "in"),
      el("th", {}, "type"), el("th", {}, "description")));
    for (const p of params) {
      table.append(el("tr", {}, el("td", {}, el("code", {}, p.name), p.required ? el("span", {class: "req"}, " required") : ""),
        el("td", {}, p.in), el("td", {class: "type"}, typeLabel(p.schema)), el("td", {}, p.description || "")));
    }
    section.append(el("h4", {}, "Parameters"), table);
  }
  if (operation.requestBody) {
    section.append(el("h4", {}, "Request body" + (operation.requestBody.required ? " (required)" : "")),
      contentBlock(operation.requestBody.content));
  }
  section.append(el("h4", {}, "Responses"));
  const table = el("table");
  for (const [code, response] of Object.entries(operation.responses || {})) {
    table.append(el("tr", {}, el("td", {}, el("code", {}, code)),
      el("td", {}, response.description || "", contentBlock(response.content))));
  }
  section.append(table);
  return section;
}

function render(doc) {
  COMPONENTS = (doc.components || {}).schemas || {};
  document.title = doc.info.title + " " + doc.info.version;
  document.getElementById("title").textContent = doc.info.title + " " + doc.info.version;
  const subtitle = document.getElementById("subtitle");
  subtitle.textContent = (doc.info.description || "") + " ";
  subtitle.append(el("a", {href: "/openapi.yaml"}, "openapi.yaml"));
  const nav = document.getElementById("nav");
  const main = document.getElementById("main");
  const byTag = new Map();
  for (const [path, item] of Object.entries(doc.paths || {})) {
    for (const method of METHODS) {
      if (!item[method]) continue;
      const tag = (item[method].tags || ["other"])[0];
      if (!byTag.has(tag)) byTag.set(tag, []);
      byTag.get(tag).push([path, method, item[method], item.parameters]);
    }
  }
  for (const [tag, operations] of byTag) {
    nav.append(el("h2", {}, tag));
    main.append(el("h2", {id: "tag-" + tag}, tag));
    for (const [path, method, operation, pathParams] of operations) {
      const section = operationSection(doc, path, method, operation, pathParams);
      nav.append(el("a", {href: "#" + section.id, title: operation.summary || ""}, method.toUpperCase() + " " + path));
      main.append(section);
    }
  }
  const schemas = (doc.components || {}).schemas || {};
  nav.append(el("h2", {}, "schemas"));
  main.append(el("h2", {id: "schemas"}, "Schemas"));
  for (const [name, schema] of Object.entries(schemas)) {
    nav.append(el("a", {href: "#schema-" + name}, name));
    main.append(el("section", {class: "op", id: "schema-" + name}, el("h3", {}, name), schemaTree(schema, 0)));
  }
}

fetch("/openapi.yaml", {headers: {Accept: "application/vnd.oai.openapi+json"}})
  .then(response => {
    if (!response.ok) throw new Error("GET /openapi.yaml answered " + response.status);
    return response.json();
  })
  .then(render)
  .catch(error => {
    document.getElementById("main").append(el("p", {id: "error"}, "Could not load the schema: " + error.message));
  });
