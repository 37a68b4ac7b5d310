// headgraph viewer: what it asks the server, all through POST /graphql (JSON). A model's
// skeleton (every node with its roles and KV head) comes in one request; edges come a layer
// at a time, only for the layers drawn, and are kept per (layer, kind, top, score floor), so
// moving the layer range or toggling a kind fetches only what is new.

export const HEAD_KINDS = ["Q", "K", "V"];
export const ALL_KINDS = ["Q", "K", "V", "MLP", "UNEMBED"];
const FETCHES_AT_ONCE = 4;

export class ApiError extends Error {
  constructor(errors) {
    super(errors.map((e) => e.message).join("; "));
    this.codes = errors.map((e) => (e.extensions || {}).code);
  }
}

/** POST one query to /graphql; retries DATABASE_LOCKED (503) a few times, telling `onWait`. */
export async function gql(query, variables = {}, onWait = () => {}, tries = 5) {
  const response = await fetch(new URL("graphql", document.baseURI), {
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
    onWait(`the database is locked by an ingest; retrying in ${wait} s`);
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

/** Every node of a model, residual-stream order, with `byName` and `index` added. */
export async function loadSkeleton(model) {
  const data = await gql(`query Skeleton($model: String!) { model(name: $model) {
    nodes { name kind layer head kvHead roles } } }`, { model });
  const nodes = data.model.nodes.map((n, index) => ({ ...n, index }));
  return { nodes, byName: new Map(nodes.map((n) => [n.name, n])) };
}

const EDGE_FIELDS = "score baseline z rank source { name }";

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

  /** The edges of `layers` x `kinds`; `onProgress(done, total)` as layers arrive. */
  async edges(layers, kinds, top, minScore, onWait, onProgress = () => {}) {
    const wanted = layers.map((layer) => ({
      layer,
      missing: kinds.filter((k) => kindFits(layer, k) && !this.entries.has(this.key(layer, k, top, minScore))),
    }));
    const todo = wanted.filter((w) => w.missing.length);
    let done = 0;
    const queue = [...todo];
    const worker = async () => {
      while (queue.length) {
        const { layer, missing } = queue.shift();
        await this.fetchLayer(layer, missing, top, minScore, onWait);
        onProgress(++done, todo.length);
      }
    };
    await Promise.all(Array.from({ length: Math.min(FETCHES_AT_ONCE, todo.length) }, worker));
    return layers.flatMap((layer) => kinds.filter((k) => kindFits(layer, k))
      .flatMap((k) => this.entries.get(this.key(layer, k, top, minScore))));
  }

  async fetchLayer(layer, kinds, top, minScore, onWait) {
    const feeders = kinds.map((k) =>
      `${k}: feeders(kind: ${k}, top: $top, minScore: $min) { ${EDGE_FIELDS} }`).join(" ");
    const vars = { model: this.model, top, min: minScore };
    let nodes;
    if (layer === "U") {
      const data = await gql(`query Unembed($model: String!, $top: Int!, $min: Float) {
        node(model: $model, name: "UNEMBED") { name ${feeders} } }`, vars, onWait);
      nodes = [data.node];
    } else {
      const data = await gql(`query Layer($model: String!, $layer: Int!, $top: Int!, $min: Float) {
        model(name: $model) { nodes(layer: $layer) { name ${feeders} } } }`, { ...vars, layer }, onWait);
      nodes = data.model.nodes;
    }
    for (const kind of kinds) {
      const edges = nodes.flatMap((n) => (n[kind] || []).map((e) => ({ ...e, kind, target: n.name })));
      this.entries.set(this.key(layer, kind, top, minScore), edges);
    }
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
