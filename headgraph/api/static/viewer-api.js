// headgraph viewer: what it asks the server, all through POST /graphql (JSON). A model's
// skeleton (every node with its roles and KV head) comes in one request; edges come only for
// the layers drawn, as (layer, kind) pairs batched a few dozen to a request, and are kept
// per (layer, kind, top, score floor), so moving the layer range or adding a kind fetches
// only what is new. A batch the server refuses as too big (LIMIT_EXCEEDED: its max_aliases,
// max_tokens or max_rows) is split in halves and asked again.

export const HEAD_KINDS = ["Q", "K", "V"];
export const ALL_KINDS = ["Q", "K", "V", "MLP", "UNEMBED"];
const PAIRS_PER_REQUEST = 24; // aliases in one request (the server's default max_aliases: 30)
const FETCHES_AT_ONCE = 2;

export class ApiError extends Error {
  constructor(errors) {
    super(errors.map((e) => e.message).join("; "));
    this.codes = errors.map((e) => (e.extensions || {}).code);
  }
}

/** The server's /graphql, found from this module's own place (/viewer/viewer-api.js), so
 * every page that imports it (the viewer at /, the attribution page under /viewer/) posts
 * to the same endpoint, under whatever prefix the server is mounted. */
const ENDPOINT = new URL("../graphql", import.meta.url);

/** POST one query to /graphql; retries DATABASE_LOCKED (503) a few times, telling `onWait`. */
export async function gql(query, variables = {}, onWait = () => {}, tries = 5) {
  const response = await fetch(ENDPOINT, {
    method: "POST",
    headers: { "content-type": "application/json", accept: "application/json" },
    body: JSON.stringify({ query, variables }),
  });
  let body;
  try {
    body = await response.json();
  } catch {
    throw new Error(`the server answered HTTP ${response.status} without JSON`);
  }
  if (response.status === 503 && tries > 1) {
    const wait = Number(response.headers.get("retry-after") || 1);
    onWait(`the database is locked by a writer (an ingest or import); retrying in ${wait} s`);
    await new Promise((resolve) => setTimeout(resolve, wait * 1000));
    return gql(query, variables, onWait, tries - 1);
  }
  if (body.errors && body.errors.length) throw new ApiError(body.errors);
  return body.data;
}

export async function listModels() {
  const data = await gql(`{ models { name family step architecture nLayers nHeads nKvHeads
    nNodes nEdges } }`);
  return data.models;
}

/**
 * Every node of a model, residual-stream order, with `byName` and `index` added, and each
 * node's `roles` (of `roleNames`, in that order). The roles come as one list of heads per
 * role (Model.heads(role:)), three times quicker than Node.roles on each of 1,000 nodes; a
 * server that refuses that many aliases (LIMIT_EXCEEDED) is asked for Node.roles instead.
 */
export async function loadSkeleton(model, roleNames) {
  const fields = "name kind layer head kvHead";
  let nodes;
  try {
    const byRole = roleNames.map((r, i) => `r${i}: heads(role: "${r}") { name }`).join(" ");
    const data = await gql(`query Skeleton($model: String!) { model(name: $model) {
      nodes { ${fields} } ${byRole} } }`, { model });
    const roles = new Map();
    roleNames.forEach((role, i) => {
      for (const { name } of data.model[`r${i}`]) roles.set(name, [...(roles.get(name) || []), role]);
    });
    nodes = data.model.nodes.map((n) => ({ ...n, roles: roles.get(n.name) || [] }));
  } catch (err) {
    if (!(err instanceof ApiError && err.codes.includes("LIMIT_EXCEEDED"))) throw err;
    const data = await gql(`query Skeleton($model: String!) { model(name: $model) {
      nodes { ${fields} roles } } }`, { model });
    nodes = data.model.nodes;
  }
  nodes = nodes.map((n, index) => ({ ...n, index }));
  return { nodes, byName: new Map(nodes.map((n) => [n.name, n])) };
}

/**
 * Feeders of drawn nodes, fetched lazily: for each layer (a number, or "U" for the
 * unembedding) and kind, each node's `top` strongest feeders with score >= `minScore`.
 */
export class EdgeCache {
  constructor(model) {
    this.model = model;
    this.entries = new Map(); // "layer|kind|top|min" -> [{...edge, kind, target}]
  }

  key(layer, kind, top, minScore) {
    return `${layer}|${kind}|${top}|${minScore ?? ""}`;
  }

  /** The edges of `layers` x `kinds`; `onProgress(done, total)` as batches arrive. */
  async edges(layers, kinds, top, minScore, onWait, onProgress = () => {}) {
    const pairs = layers.flatMap((layer) => kinds.filter((kind) => kindFits(layer, kind))
      .map((kind) => ({ layer, kind })));
    const missing = pairs.filter((p) => !this.entries.has(this.key(p.layer, p.kind, top, minScore)));
    const queue = [];
    for (let i = 0; i < missing.length; i += PAIRS_PER_REQUEST) queue.push(missing.slice(i, i + PAIRS_PER_REQUEST));
    const total = queue.length;
    let done = 0;
    const worker = async () => {
      while (queue.length) {
        await this.fetch(queue.shift(), top, minScore, onWait);
        onProgress(++done, total);
      }
    };
    await Promise.all(Array.from({ length: Math.min(FETCHES_AT_ONCE, total) }, worker));
    return pairs.flatMap((p) => this.entries.get(this.key(p.layer, p.kind, top, minScore)));
  }

  /** One request for `pairs`: an aliased field per pair; halves again if refused as too big. */
  async fetch(pairs, top, minScore, onWait) {
    const select = (p) => `{ name feeders(kind: ${p.kind}, top: $top, minScore: $min) { ...E } }`;
    const inModel = pairs.map((p, i) => (p.layer === "U" ? "" : `p${i}: nodes(layer: ${p.layer}) ${select(p)}`));
    const unembed = pairs.map((p, i) => (p.layer === "U" ? `p${i}: node(model: $model, name: "UNEMBED") ${select(p)}` : ""));
    let data;
    try {
      data = await gql(`query Edges($model: String!, $top: Int!, $min: Float) {
        ${inModel.some(Boolean) ? `model(name: $model) { ${inModel.join(" ")} }` : ""} ${unembed.join(" ")} }
        fragment E on Edge { score baseline z rank source { name } }`,
      { model: this.model, top, min: minScore }, onWait);
    } catch (err) {
      if (pairs.length > 1 && err instanceof ApiError && err.codes.includes("LIMIT_EXCEEDED")) {
        const half = Math.ceil(pairs.length / 2);
        await this.fetch(pairs.slice(0, half), top, minScore, onWait);
        await this.fetch(pairs.slice(half), top, minScore, onWait);
        return;
      }
      throw err;
    }
    pairs.forEach((p, i) => {
      const got = p.layer === "U" ? data[`p${i}`] : data.model[`p${i}`];
      const nodes = Array.isArray(got) ? got : got ? [got] : [];
      const edges = nodes.flatMap((n) => n.feeders.map((e) => ({ ...e, kind: p.kind, target: n.name })));
      this.entries.set(this.key(p.layer, p.kind, top, minScore), edges);
    });
  }
}

/** Heads read through Q, K, V; MLPs through MLP; the unembedding through UNEMBED. */
function kindFits(layer, kind) {
  if (layer === "U") return kind === "UNEMBED";
  return kind !== "UNEMBED";
}

/** One node's details for the side panel: norms, copying, roles, evidence, top edges. */
export async function loadNode(model, name, top, onWait) {
  const edges = ALL_KINDS.flatMap((k) => [
    `f${k}: feeders(kind: ${k}, top: $n) { ...E }`, `r${k}: readers(kind: ${k}, top: $n) { ...E }`]);
  const data = await gql(`query Node($model: String!, $name: String!, $n: Int!) {
    node(model: $model, name: $name) { name kind layer head kvHead qkNorm ovNorm inNorm outNorm
      copying { ratio positiveFraction } scores { metric probe value } roles
      ${edges.join("\n")} } }
    fragment E on Edge { kind score baseline nullStd z rank source { name } target { name } }`,
  { model, name, n: top }, onWait);
  return data.node;
}
