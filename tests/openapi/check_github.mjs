// Checks keyward's GitHub requests against GitHub's published OpenAPI description
// (@octokit/openapi, api.github.com.deref.json). Run through tests/openapi/run.sh.
//
// Two checks, so that neither a fixture nor a manifest can drift from the real API:
// 1. Every GitHub fixture's request (tests/fixtures/github_*.json: the exact request keyward
//    sends, proven by tests/it/exec.rs) is an operation of the API: method and path match a
//    path template, each path parameter fits its schema, each query parameter is declared and
//    fits its schema, the JSON body validates against the operation's request body schema, and
//    a custom Accept media type is one the operation documents.
// 2. Every GitHub tool in tools/github.toml maps onto an operation whose declared parameters
//    cover each query and body key of the tool's template, and each enum a tool parameter
//    offers is within the enum GitHub accepts for the key it fills.
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { createRequire } from "node:module";

const [root, modules] = process.argv.slice(2);
const require = createRequire(join(modules, "x.js"));
const Ajv = require("ajv");
const { parse: parseToml } = require("smol-toml");
const spec = JSON.parse(
  readFileSync(join(modules, "@octokit/openapi/generated/api.github.com.deref.json"), "utf8"),
);
const ajv = new Ajv({ strict: false, allErrors: true, validateFormats: false });

const failures = [];
const fail = (what, message) => failures.push(`${what}: ${message}`);

// The operation for METHOD PATH (a concrete path or a keyward path template), with the
// parameters its template captured.
function operation(method, path) {
  const segs = path.split("/").slice(1);
  for (const [template, item] of Object.entries(spec.paths)) {
    const tsegs = template.split("/").slice(1);
    // A trailing `{path}` (repository contents) takes the rest of the path, slashes and all.
    const rest = tsegs.at(-1) === "{path}" && segs.length > tsegs.length;
    if (tsegs.length !== segs.length && !rest) continue;
    const params = {};
    const matches = tsegs.every((t, i) => {
      if (rest && i === tsegs.length - 1) {
        params.path = segs.slice(i).map(decodeURIComponent).join("/");
        return true;
      }
      if (t.startsWith("{") && t.endsWith("}")) {
        params[t.slice(1, -1)] = decodeURIComponent(segs[i]);
        return true;
      }
      return t === segs[i];
    });
    const op = item[method.toLowerCase()];
    if (matches && op) return { template, op, params };
  }
  return null;
}

// OpenAPI 3.0's `nullable` is not JSON Schema: spell it as a type that admits null.
function jsonSchema(schema) {
  if (Array.isArray(schema)) return schema.map(jsonSchema);
  if (schema === null || typeof schema !== "object") return schema;
  const out = {};
  for (const [k, v] of Object.entries(schema)) if (k !== "nullable") out[k] = jsonSchema(v);
  if (schema.nullable === true && typeof schema.type === "string") out.type = [schema.type, "null"];
  return out;
}

function checkValue(what, openapiSchema, value) {
  if (!openapiSchema) return;
  const schema = jsonSchema(openapiSchema);
  // Query values travel as text; coerce them the way the server does before validating.
  let v = value;
  if (typeof v === "string" && ["integer", "number"].includes(schema.type)) v = Number(v);
  if (typeof v === "string" && schema.type === "boolean") v = v === "true" ? true : v === "false" ? false : v;
  if (!ajv.validate(schema, v)) fail(what, `${JSON.stringify(value)}: ${ajv.errorsText()}`);
}

// 1. The fixtures' requests.
const fixtures = join(root, "tests/fixtures");
let requests = 0;
for (const file of readdirSync(fixtures).filter((f) => /^github_.*\.json$/.test(f)).sort()) {
  const tool = file.replace(/\.json$/, "");
  const { request } = JSON.parse(readFileSync(join(fixtures, file), "utf8"));
  const found = operation(request.method, request.path);
  if (!found) {
    fail(tool, `${request.method} ${request.path} is no operation of the API`);
    continue;
  }
  requests += 1;
  const { op, params } = found;
  const declared = Object.fromEntries((op.parameters ?? []).map((p) => [`${p.in}:${p.name}`, p]));
  for (const [name, value] of Object.entries(params)) {
    checkValue(`${tool}: path parameter ${name}`, declared[`path:${name}`]?.schema, value);
  }
  for (const [name, value] of Object.entries(request.query ?? {})) {
    const p = declared[`query:${name}`];
    if (!p) fail(tool, `query parameter ${name} is not declared by ${op.operationId}`);
    else checkValue(`${tool}: query ${name}`, p.schema, value);
  }
  for (const p of Object.values(declared)) {
    if (p.required && p.in === "query" && !(p.name in (request.query ?? {})))
      fail(tool, `required query parameter ${p.name} is missing`);
  }
  const bodySchema = op.requestBody?.content?.["application/json"]?.schema;
  if (request.body !== undefined) {
    if (!bodySchema) fail(tool, `${op.operationId} takes no JSON body`);
    else checkValue(`${tool}: body`, bodySchema, request.body);
  } else if (op.requestBody?.required) {
    fail(tool, `${op.operationId} needs a body`);
  }
  const accept = request.headers?.accept;
  if (accept && accept !== "application/vnd.github+json") {
    const documented =
      Object.values(op.responses ?? {}).some((r) => accept in (r.content ?? {})) ||
      (op.description ?? "").includes(accept);
    if (!documented) fail(tool, `${op.operationId} documents no media type ${accept}`);
  }
}

// 2. Every GitHub tool's template against its operation.
const manifest = parseToml(readFileSync(join(root, "tools/github.toml"), "utf8"));
let tools = 0;
for (const tool of manifest.tools) {
  const { method, path, query = {}, body } = tool.request;
  const found = operation(method, path.replace(/\{(\w+)\}/g, "{$1}"));
  if (!found) {
    fail(tool.name, `${method} ${path} is no operation of the API`);
    continue;
  }
  tools += 1;
  const { op } = found;
  const declared = Object.fromEntries((op.parameters ?? []).map((p) => [`${p.in}:${p.name}`, p]));
  const bodyProps = op.requestBody?.content?.["application/json"]?.schema?.properties ?? {};
  const param = (template) => {
    const m = typeof template === "string" && template.match(/^\{(\w+)\}$/);
    return m ? tool.params.find((p) => p.name === m[1]) : undefined;
  };
  const checkEnum = (what, template, schema) => {
    const p = param(template);
    const allowed = schema?.enum ?? schema?.items?.enum;
    if (p?.enum && allowed) {
      for (const value of p.enum)
        if (!allowed.includes(value)) fail(tool.name, `${what}: ${value} is not one of ${allowed}`);
    }
  };
  for (const [name, template] of Object.entries(query)) {
    const p = declared[`query:${name}`];
    if (!p) fail(tool.name, `query parameter ${name} is not declared by ${op.operationId}`);
    else checkEnum(`query ${name}`, template, p.schema);
  }
  for (const [name, template] of Object.entries(body ?? {})) {
    if (!(name in bodyProps)) fail(tool.name, `body field ${name} is not declared by ${op.operationId}`);
    else checkEnum(`body ${name}`, template, bodyProps[name]);
  }
}

if (failures.length) {
  console.error(`GitHub requests that the OpenAPI description refuses:\n${failures.join("\n")}`);
  process.exit(1);
}
console.log(`${requests} fixture requests and ${tools} tools match GitHub's OpenAPI description`);
