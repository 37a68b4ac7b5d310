// headgraph viewer: the side panel for the selected node: where it is, its roles (coloured as
// in the drawing), the KV head it reads under grouped-query attention, its norms and copying
// score, its strongest feeders and readers of each kind with z, and its stored evidence.

import { ALL_KINDS, HEAD_KINDS } from "./viewer-api.js";
import { roleInfo } from "./viewer-layout.js";

export const PANEL_TOP = 8; // rows per feeders/readers table
const HINT = "Click a head (or find one above) to see what it reads and who reads it.";
const Z_STRONG = 3;

/** A DOM element with attributes and children (strings become text, never HTML). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  node.append(...children);
  return node;
}

export function fmt(x, digits = 3) {
  return x == null ? "—" : Number(x).toFixed(digits);
}

export function hint() {
  return [el("p", { class: "hint" }, HINT)];
}

/** A role as a coloured chip. */
export function roleChip(role, tag = "li") {
  const info = roleInfo(role);
  const chip = el(tag, { class: "role", "data-role": role }, role.replace(/_/g, " "));
  chip.style.backgroundColor = info.fill;
  chip.style.borderColor = info.line;
  return chip;
}

/** Which kinds of feeders / readers a node of `kind` can have. */
function panelKinds(kind) {
  const feeders = { HEAD: HEAD_KINDS, MLP: ["MLP"], UNEMBED: ["UNEMBED"] }[kind] || [];
  const readers = kind === "UNEMBED" ? [] : ALL_KINDS;
  return { feeders, readers };
}

/**
 * The panel's content for `node` (from loadNode) of `model`, with `skeleton` (for KV
 * siblings) and `link(name)`, which makes a node's name a button to select it.
 */
export function panelContent(node, model, skeleton, link) {
  const where = {
    HEAD: `head ${node.head} of layer ${node.layer}`, MLP: `MLP of layer ${node.layer}`,
    EMBED: "token embedding", POS_EMBED: "positional embedding", UNEMBED: "unembedding",
  }[node.kind] || node.kind;
  const out = [el("h2", {}, node.name), el("p", { class: "sub" }, where)];

  if (node.kind === "HEAD") {
    out.push(el("h3", {}, "Roles"));
    out.push(node.roles.length
      ? el("ul", { class: "roles" }, ...node.roles.map((r) => roleChip(r)))
      : el("p", { class: "none" }, "none (pattern roles need evidence: ingest with --probes)"));
  }

  const facts = [];
  if (node.kind === "HEAD" && node.kvHead != null && model.nKvHeads < model.nHeads) {
    const siblings = skeleton.nodes.filter((n) => n.kind === "HEAD" && n.layer === node.layer
      && n.kvHead === node.kvHead && n.name !== node.name);
    facts.push(["KV head", el("span", { class: "kv" }, `${node.kvHead} of ${model.nKvHeads}`,
      siblings.length ? el("small", {}, " shared with ", ...join(siblings.map((s) => link(s.name)))) : "")]);
  }
  if (node.copying) {
    facts.push(["copying ratio", fmt(node.copying.ratio)],
      ["positive eigenvalues", fmt(node.copying.positiveFraction)]);
  }
  for (const [key, label] of [["qkNorm", "‖W_Q W_Kᵀ‖"], ["ovNorm", "‖W_V W_O‖"],
    ["inNorm", "read norm"], ["outNorm", "write norm"]]) {
    if (node[key] != null) facts.push([label, fmt(node[key])]);
  }
  if (facts.length) {
    out.push(el("dl", {}, ...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])));
  }

  const { feeders, readers } = panelKinds(node.kind);
  if (feeders.length) {
    out.push(el("h3", {}, "Feeders — what it reads"));
    out.push(...edgeTables(node, "feeders", "f", feeders, "source", link));
  }
  if (readers.length) {
    out.push(el("h3", {}, "Readers — who reads its write"));
    out.push(...edgeTables(node, "readers", "r", readers, "target", link));
  }

  out.push(el("h3", {}, "Scores"));
  if (node.scores.length) {
    out.push(...scoresTables(node.scores));
  } else {
    out.push(el("p", { class: "none" }, node.kind === "HEAD"
      ? "No evidence stored (ingest with --probes to run the model)." : "none stored"));
  }
  return out;
}

function join(items) {
  return items.flatMap((item, i) => (i ? [", ", item] : [item]));
}

const HEADINGS = {
  score: "composition score", baseline: "mean score of random matrices",
  z: `(score − baseline) / null std: how far above chance; bold when ≥ ${Z_STRONG}`,
};

function edgeTables(node, dir, prefix, kinds, other, link) {
  const tables = [];
  for (const kind of kinds) {
    const rows = node[prefix + kind] || [];
    if (!rows.length) continue;
    tables.push(el("table", { "data-dir": dir, "data-kind": kind },
      el("caption", { class: `kind-${kind}` }, `${kind} ${dir}`),
      el("thead", {}, el("tr", {}, ...[other, "z", "score", "baseline", "rank"].map((h) => el("th", {
        title: HEADINGS[h] || (h === "rank" ? `1 = strongest ${other} of this kind` : ""),
      }, h)))),
      el("tbody", {}, ...rows.map((e) => el("tr", { "data-name": e[other].name },
        el("td", {}, link(e[other].name)),
        el("td", { class: e.z != null && e.z >= Z_STRONG ? "z z-high" : "z" }, fmt(e.z, 1)),
        el("td", {}, fmt(e.score)), el("td", {}, fmt(e.baseline)),
        el("td", {}, String(e.rank)))))));
  }
  if (!tables.length) tables.push(el("p", { class: "none" }, `no ${dir} stored`));
  return tables;
}

/** One table per probe: metric, value. */
function scoresTables(scores) {
  const byProbe = new Map();
  for (const s of scores) {
    if (!byProbe.has(s.probe)) byProbe.set(s.probe, []);
    byProbe.get(s.probe).push(s);
  }
  return [...byProbe].map(([probe, rows]) => el("table", { "data-dir": "scores", "data-probe": probe },
    el("caption", { class: "probe" }, probe),
    el("tbody", {}, ...rows.map((s) => el("tr", {}, el("td", {}, s.metric), el("td", {}, fmt(s.value)))))));
}
