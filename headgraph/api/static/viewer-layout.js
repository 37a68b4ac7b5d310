// headgraph viewer: where each node goes and how it looks. Layers are columns (the embeddings
// one column left of the first drawn layer, each MLP half a column right of its layer, the
// unembedding last), heads are rows; under grouped-query attention the heads that share a
// KV head are set apart by a gap. A head's fill shows its roles (one stripe per role).

export const KIND_COLOURS = { Q: "#1c7ed6", K: "#e8590c", V: "#2f9e44", MLP: "#7048e8", UNEMBED: "#495057" };
const FILLS = { HEAD: "#f1f3f5", EMBED: "#d3f9d8", POS_EMBED: "#d3f9d8", MLP: "#e5dbff", UNEMBED: "#fff3bf" };

/** Every role (headgraph.queries.roles.ROLE_RULES: a test keeps them in step), in the
    order a fill shows them, with fill and outline colours. */
export const ROLES = [
  { role: "previous_token", fill: "#a5d8ff", line: "#1864ab" },
  { role: "induction", fill: "#ffc9c9", line: "#c92a2a" },
  { role: "duplicate_token", fill: "#d0bfff", line: "#5f3dc4" },
  { role: "first_token", fill: "#ffec99", line: "#e67700" },
  { role: "copying", fill: "#b2f2bb", line: "#2b8a3e" },
  { role: "suppression", fill: "#ffd8a8", line: "#d9480f" },
];
const ROLE_INFO = new Map(ROLES.map((r, i) => [r.role, { ...r, order: i }]));
const OTHER_ROLE = { fill: "#e9ecef", line: "#495057", order: ROLES.length };

export function roleInfo(role) {
  return ROLE_INFO.get(role) || { ...OTHER_ROLE, role };
}

/** Heads drawn by default: every layer up to this many heads, else the first layers. */
export const DEFAULT_HEADS = 256;

/** Sizes in model units: roomy boxes for small models, a compact grid from 9 heads on. */
export function geometry(model) {
  const compact = model.nHeads > 8;
  const group = model.nKvHeads && model.nKvHeads < model.nHeads ? model.nHeads / model.nKvHeads : 0;
  return {
    compact,
    width: compact ? 64 : 84, height: compact ? 22 : 30,
    row: compact ? 30 : 58, column: compact ? 120 : 190,
    font: compact ? 11 : 12,
    kvGroup: Number.isInteger(group) ? group : 0, // heads per KV head under GQA, else 0
    kvGap: compact ? 12 : 20,
  };
}

/**
 * `geo` with its column spacing narrowed (never under a node's width plus a gap) so that
 * `range`'s columns and the model's rows roughly keep the drawing area's `aspect` (width /
 * height): many layers of few heads would otherwise be a thin strip, far zoomed out.
 */
export function fitColumns(geo, model, range, aspect) {
  if (!geo.compact) return geo;
  const height = rowY(model.nHeads - 1, model, geo) - rowY(0, model, geo) + 2 * geo.row;
  const columns = range.to - range.from + 2;
  const wanted = (height * aspect) / columns;
  return { ...geo, column: Math.round(Math.max(geo.width + 20, Math.min(geo.column, wanted))) };
}

/** On-screen font sizes (px) from which a head's index, then its full name, is shown. */
export const MIN_SHORT_PX = 6.5;
export const MIN_FULL_PX = 8;
export const SHORT_SCALE = 1.3; // the index alone is drawn this much larger

/**
 * The layers a model opens on: all of them up to DEFAULT_HEADS heads, else the first
 * layers that hold that many; and no more columns than fit a drawing `width` px wide
 * (0: any) at the zoom where head indices can be read.
 */
export function defaultRange(model, width = 0) {
  const geo = geometry(model);
  let layers = Math.floor(DEFAULT_HEADS / Math.max(1, model.nHeads));
  if (width > 0) {
    const column = (geo.compact ? geo.width + 20 : geo.column) * (MIN_SHORT_PX / (geo.font * SHORT_SCALE));
    layers = Math.min(layers, Math.floor(width / column) - 1);
  }
  return { from: 0, to: Math.max(1, Math.min(model.nLayers, layers)) - 1 };
}

/** `range` within the model's layers (null: the default for a drawing `width` px wide). */
export function clampRange(range, model, width = 0) {
  if (!range) return defaultRange(model, width);
  const last = model.nLayers - 1;
  const from = Math.max(0, Math.min(last, range.from));
  const to = Math.max(from, Math.min(last, range.to));
  return { from, to };
}

/** The y of head `h` (its row, plus a gap per KV group above it). */
export function rowY(h, model, geo) {
  const groups = geo.kvGroup ? Math.floor(h / geo.kvGroup) : 0;
  const total = (model.nHeads - 1) * geo.row + (geo.kvGroup ? (model.nHeads / geo.kvGroup - 1) * geo.kvGap : 0);
  return h * geo.row + groups * geo.kvGap - total / 2;
}

/** The x of column `col`, where column 0 holds the embeddings and layer l is l - from + 1. */
export function columnX(col, geo) {
  return col * geo.column;
}

export function position(node, model, geo, range) {
  const col = (layer) => layer - range.from + 1;
  const below = rowY(model.nHeads - 1, model, geo) + geo.row * 1.2;
  switch (node.kind) {
    case "EMBED": return { x: 0, y: -geo.row / 2 };
    case "POS_EMBED": return { x: 0, y: geo.row / 2 };
    case "HEAD": return { x: columnX(col(node.layer), geo), y: rowY(node.head, model, geo) };
    case "MLP": return { x: columnX(col(node.layer) + 0.5, geo), y: below };
    case "UNEMBED": return { x: columnX(col(range.to) + 1.5, geo), y: 0 };
    default: return { x: 0, y: 0 };
  }
}

/** Whether `node` is drawn for `range` (MLPs and the unembedding only with `extras`). */
export function isDrawn(node, range, extras) {
  switch (node.kind) {
    case "HEAD": return node.layer >= range.from && node.layer <= range.to;
    case "MLP": return extras && node.layer >= range.from && node.layer <= range.to;
    case "UNEMBED": return extras;
    default: return true; // EMBED, POS_EMBED
  }
}

/** A Cytoscape node element for `node`, with the labels of every zoom level in its data. */
export function nodeElement(node, model, geo, range) {
  const roles = [...node.roles].sort((a, b) => roleInfo(a).order - roleInfo(b).order);
  const first = roles.length ? roleInfo(roles[0]) : null;
  const short = node.kind === "HEAD" ? `H${node.head}` : node.kind === "MLP" ? `M${node.layer}`
    : { EMBED: "emb", POS_EMBED: "pos", UNEMBED: "unemb" }[node.kind] || node.name;
  return {
    group: "nodes",
    classes: [node.kind === "HEAD" ? "head" : "other", roles.length > 1 ? "striped" : ""].join(" "),
    data: {
      id: node.name, full: node.name, short, kind: node.kind, roles,
      fill: first ? first.fill : FILLS[node.kind] || "#fff",
      line: first ? first.line : "#adb5bd",
      stripes: roles.length > 1 ? stripes(roles) : "none",
    },
    position: position(node, model, geo, range),
  };
}

const stripeCache = new Map();

/** An SVG (data: URL, allowed by the page's img-src) of one vertical stripe per role. */
export function stripes(roles) {
  const key = roles.join(",");
  if (!stripeCache.has(key)) {
    const w = 100 / roles.length;
    const rects = roles.map((r, i) =>
      `<rect x='${i * w}' y='0' width='${w}' height='100' fill='${roleInfo(r).fill}'/>`).join("");
    const svg = `<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 100 100' preserveAspectRatio='none'>${rects}</svg>`;
    stripeCache.set(key, `data:image/svg+xml;utf8,${encodeURIComponent(svg)}`);
  }
  return stripeCache.get(key);
}

/** Cytoscape's style sheet for a model of geometry `geo`. */
export function styleSheet(geo) {
  return [
    { selector: "node", style: {
      shape: "round-rectangle", width: geo.width, height: geo.height, "background-color": "data(fill)",
      "border-width": 1, "border-color": "data(line)", label: "data(full)", "text-valign": "center",
      "text-halign": "center", "font-size": geo.font, color: "#212529", "min-zoomed-font-size": 0 } },
    { selector: "node.other", style: { width: Math.round(geo.width * 1.3) } }, // "POS_EMBED" fits
    { selector: "node.striped", style: {
      "background-image": "data(stripes)", "background-fit": "cover", "background-clip": "node" } },
    // label levels (viewer-labels.js): none when tiny, the head index alone, then the full name
    { selector: "node.lbl-none", style: { label: "" } },
    { selector: "node.lbl-short", style: { label: "data(short)", "font-size": geo.font * SHORT_SCALE } },
    { selector: "node.focus", style: { "border-width": 3, "border-color": "#212529" } },
    { selector: "node.kv-sibling", style: { "border-width": 2, "border-style": "dashed", "border-color": "#212529" } },
    { selector: "node.match", style: {
      "underlay-color": "#fab005", "underlay-opacity": 0.85, "underlay-padding": Math.round(geo.height / 3),
      "underlay-shape": "round-rectangle" } },
    { selector: "edge", style: {
      width: "data(width)", "line-color": "data(colour)", "target-arrow-color": "data(colour)",
      "target-arrow-shape": "triangle", "arrow-scale": 0.8, "curve-style": "bezier",
      "control-point-step-size": 18, opacity: 0.75 } },
    { selector: "edge.zlabel", style: {
      label: "data(zText)", "font-size": Math.max(9, geo.font - 2), color: "#212529",
      "text-background-color": "#fff", "text-background-opacity": 0.85, "text-background-padding": 1,
      "text-rotation": "autorotate", "min-zoomed-font-size": 6 } },
    // many edges: straight lines without arrows (they all run left to right), faint, so
    // that the fills show and a pan or zoom redraws fast; a selected node's own are full
    { selector: "edge.many", style: { "curve-style": "haystack", "haystack-radius": 0, opacity: 0.35 } },
    { selector: "edge.near", style: { "curve-style": "bezier", opacity: 0.95 } },
    { selector: "node.faded", style: { opacity: 0.3 } },
    { selector: "edge.faded", style: { opacity: 0.08 } },
    { selector: "edge:active, edge.hover", style: { opacity: 1, "z-index": 10 } },
  ];
}
