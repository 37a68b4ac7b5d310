// headgraph viewer: the model list, a layered drawing of one model's head graph and a side
// panel for the selected node. Talks only to POST /graphql (viewer-api.js); draws with the
// vendored Cytoscape.js (the global `cytoscape`). Scales to models of 30+ layers x 30+ heads:
// a layer range (only its layers' edges are fetched), kind toggles, top-k feeders per node
// and a z floor keep the drawing legible, labels follow the zoom (viewer-labels.js), fills
// show roles, and the search box finds any node or role. State lives in `state` and in the
// URL hash (#model=toy&kinds=K&top=2&min=&z=&layers=0-1&extras=0&node=L1H1), so a view can
// be linked.

import { EdgeCache, HEAD_KINDS, listModels, loadNode, loadSkeleton } from "./viewer-api.js";
import { fullZoom, ZoomLabels } from "./viewer-labels.js";
import {
  clampRange, fitColumns, geometry, isDrawn, KIND_COLOURS, nodeElement, ROLES, roleInfo, styleSheet,
} from "./viewer-layout.js";
import { el, fmt, hint, panelContent, PANEL_TOP, roleChip } from "./viewer-panel.js";
import { SearchBox } from "./viewer-search.js";
import * as controls from "./viewer-state.js";

const HOVER_HINT = "edge width ∝ score · hover an edge or a node for its numbers · click a node for details";
const FIT_PADDING = 48; // leaves room for the axes along the top and left edges
const MANY_EDGES = 600; // from this many edges they are drawn fainter, so that fills show
const $ = (sel) => document.querySelector(sel);

const state = {
  models: [], model: null, kinds: new Set(["K"]), top: 2, minScore: null, minZ: null,
  extras: false, range: null, selected: null, drawSeq: 0, panelSeq: 0,
};
const readControls = () => controls.read(state);
const writeControls = () => controls.write(state, currentModel());
const writeHash = () => controls.writeHash(state);
const readHash = () => controls.readHash(state);
let cy = null;
let labels = null;
let search = null;
let skeleton = null; // { model, nodes, byName } of the current model
let cache = null; // EdgeCache of the current model
let drawn = null; // { model, geo, range, names } of the drawing on screen
let matches = new Set();

const currentModel = () => state.models.find((m) => m.name === state.model);

function status(text, isError = false) {
  const line = $("#status");
  line.textContent = text;
  line.classList.toggle("error", isError);
}

/** aria-busy on #graph is true from a control change until the drawing it asks for is done. */
function busy(on) {
  $("#graph").setAttribute("aria-busy", String(on));
}

// --- models ---------------------------------------------------------------------------

async function loadModels() {
  status("loading models…");
  state.models = await listModels();
  const list = $("#models ul");
  list.replaceChildren(...state.models.map((m) => {
    const origin = m.family && m.step != null ? `${m.family} @ step ${m.step}` : m.architecture;
    const kv = m.nKvHeads < m.nHeads ? ` (${m.nKvHeads} KV)` : "";
    const shape = `${m.nLayers} × ${m.nHeads} heads${kv} · ${m.nEdges} edges`;
    const button = el("button", { type: "button", "data-model": m.name }, m.name,
      el("small", {}, origin), el("small", {}, shape));
    button.addEventListener("click", () => selectModel(m.name));
    return el("li", {}, button);
  }));
  if (!state.models.length) {
    list.replaceChildren(el("li", { class: "none" },
      "No models in this database. Add one with: headgraph ingest toy"));
    status("");
  }
}

async function selectModel(name, keep = false) {
  if (state.model !== name && !keep) {
    state.selected = null;
    state.range = null;
  }
  state.model = name;
  for (const b of document.querySelectorAll("#models button")) {
    b.setAttribute("aria-current", String(b.dataset.model === name));
  }
  await draw();
  await showPanel();
}

async function ensureSkeleton(model) {
  if (skeleton && skeleton.model === model.name) return;
  const loaded = await loadSkeleton(model.name, ROLES.map((r) => r.role));
  skeleton = { model: model.name, ...loaded };
  cache = new EdgeCache(model.name);
  renderRoles();
  search.search();
}

/** The roles legend: each role played in this model, with its count; a click searches it. */
function renderRoles() {
  const counts = new Map();
  for (const n of skeleton.nodes) for (const r of n.roles) counts.set(r, (counts.get(r) || 0) + 1);
  const known = ROLES.map((r) => r.role).filter((r) => counts.has(r));
  const others = [...counts.keys()].filter((r) => !known.includes(r)).sort();
  const items = [...known, ...others].map((role) => {
    const b = el("button", { type: "button", title: `find the heads that play ${role}` },
      roleChip(role, "span"), el("small", {}, String(counts.get(role))));
    b.addEventListener("click", () => search.set(role));
    return el("li", {}, b);
  });
  $("#roles ul").replaceChildren(...(items.length ? items
    : [el("li", { class: "none" }, "No roles stored for this model.")]));
}

// --- the drawing ----------------------------------------------------------------------

function drawnKinds() {
  const kinds = HEAD_KINDS.filter((k) => state.kinds.has(k));
  return state.extras ? [...kinds, "MLP", "UNEMBED"] : kinds;
}

async function draw() {
  const seq = ++state.drawSeq;
  const model = currentModel();
  if (!model) return;
  busy(true);
  try {
    status(`loading ${model.name}…`);
    await ensureSkeleton(model);
    const range = clampRange(state.range, model, cy.width());
    state.range = range;
    writeControls();
    writeHash();
    const geo = fitColumns(geometry(model), model, range, cy.width() / Math.max(1, cy.height()));
    const shown = skeleton.nodes.filter((n) => isDrawn(n, range, state.extras));
    const names = new Set(shown.map((n) => n.name));
    const layers = [];
    for (let l = range.from; l <= range.to; l++) layers.push(l);
    if (state.extras) layers.push("U");
    const fetched = await cache.edges(layers, drawnKinds(), state.top, state.minScore, status,
      (done, total) => seq === state.drawSeq && status(`loading ${model.name}'s edges: ${done} of ${total}…`));
    if (seq !== state.drawSeq) return; // a newer draw started meanwhile
    const inside = fetched.filter((e) => names.has(e.source.name) && names.has(e.target));
    const edges = state.minZ == null ? inside : inside.filter((e) => e.z != null && e.z >= state.minZ);
    render(model, geo, range, shown, edges);
    const what = drawnKinds().join("/") || "no kind";
    const floors = [state.minScore != null ? `score ≥ ${state.minScore}` : "",
      state.minZ != null ? `z ≥ ${state.minZ}` : ""].filter(Boolean).join(", ");
    const outside = fetched.length - inside.length;
    status(`${model.name}: layers ${range.from}–${range.to} of ${model.nLayers} · ${edges.length} ${what} ` +
      `edges (top ${state.top} per node${floors ? `, ${floors}` : ""})` +
      (outside ? ` · ${outside} from layers not drawn` : ""));
    Object.assign($("#graph").dataset, {
      model: model.name, edges: String(edges.length), layers: `${range.from}-${range.to}`,
    });
  } catch (err) {
    if (seq === state.drawSeq) status(`could not load the graph: ${err.message}`, true);
  } finally {
    if (seq === state.drawSeq) busy(false);
  }
}

function render(model, geo, range, shown, edges) {
  const maxScore = Math.max(1e-9, ...edges.map((e) => e.score));
  const elements = [
    ...shown.map((n) => nodeElement(n, model, geo, range)),
    ...edges.map((e) => ({
      group: "edges",
      data: {
        id: `${e.kind}:${e.source.name}>${e.target}`, source: e.source.name, target: e.target,
        kind: e.kind, score: e.score, baseline: e.baseline, z: e.z, rank: e.rank,
        zText: `z ${fmt(e.z, 1)}`, colour: KIND_COLOURS[e.kind], width: 1 + 5 * (e.score / maxScore),
      },
      classes: edges.length > MANY_EDGES ? "many" : "",
    })),
  ];
  if (!drawn || drawn.geo.compact !== geo.compact) cy.style(styleSheet(geo));
  cy.batch(() => {
    cy.elements().remove();
    cy.add(elements);
  });
  drawn = { model, geo, range, names: new Set(shown.map((n) => n.name)) };
  cy.fit(undefined, FIT_PADDING);
  labels.setLayout({ model, geo, range, extras: state.extras });
  highlight();
  markMatches();
}

/** Fade everything but the selected node, its drawn edges (labelled with z) and KV siblings. */
function highlight() {
  cy.batch(() => {
    cy.elements().removeClass("faded focus kv-sibling zlabel near");
    const node = state.selected && cy.getElementById(state.selected);
    if (!node || node.empty()) return;
    const near = node.closedNeighborhood();
    const siblings = kvSiblings(state.selected);
    cy.elements().not(near).not(siblings).addClass("faded");
    node.addClass("focus");
    node.connectedEdges().addClass("near");
    node.incomers("edge").addClass("zlabel");
    siblings.addClass("kv-sibling");
  });
}

/** The drawn heads that read the same KV head as `name` (grouped-query attention). */
function kvSiblings(name) {
  const model = currentModel();
  const node = skeleton && skeleton.byName.get(name);
  if (!node || node.kind !== "HEAD" || !(model.nKvHeads < model.nHeads)) return cy.collection();
  return cy.nodes(".head").filter((n) => {
    const other = skeleton.byName.get(n.id());
    return other.name !== name && other.layer === node.layer && other.kvHead === node.kvHead;
  });
}

function markMatches() {
  cy.batch(() => {
    cy.nodes().removeClass("match");
    for (const name of matches) cy.getElementById(name).addClass("match");
  });
  $("#graph").dataset.matches = String(cy.nodes(".match").length);
}

function describeNode(name) {
  const node = skeleton.byName.get(name);
  const model = currentModel();
  const parts = [name];
  if (node.kind === "HEAD" && model.nKvHeads < model.nHeads) parts.push(`KV head ${node.kvHead}`);
  parts.push(node.roles.length ? node.roles.join(", ").replace(/_/g, " ") : "no role");
  return parts.join(" · ");
}

function initCytoscape() {
  cy = cytoscape({ // global from vendor/cytoscape.min.js
    container: $("#graph"),
    layout: { name: "preset" },
    minZoom: 0.02,
    maxZoom: 2.5,
    boxSelectionEnabled: false,
    autoungrabify: true,
  });
  labels = new ZoomLabels(cy, $("#axes"), (level) => { $("#graph").dataset.labels = level; });
  cy.on("tap", "node", (evt) => selectNode(evt.target.id()));
  cy.on("tap", (evt) => {
    if (evt.target === cy) selectNode(null);
  });
  cy.on("mouseover", "edge", (evt) => {
    const d = evt.target.data();
    evt.target.addClass("hover");
    $("#hover").textContent = `${d.kind}  ${d.source} → ${d.target}   z ${fmt(d.z, 1)}   ` +
      `score ${fmt(d.score)}   baseline ${fmt(d.baseline)}   rank ${d.rank}`;
  });
  cy.on("mouseover", "node", (evt) => { $("#hover").textContent = describeNode(evt.target.id()); });
  cy.on("mouseout", "edge", (evt) => evt.target.removeClass("hover"));
  cy.on("mouseout", "edge node", () => { $("#hover").textContent = HOVER_HINT; });
  $("#hover").textContent = HOVER_HINT;
}

function selectNode(name) {
  state.selected = name;
  highlight();
  writeHash();
  showPanel();
}

/**
 * Select `name` and bring it into view: the layer range moves to hold its layer (MLPs and
 * the unembedding switch "MLPs & unembed" on), and with `zoom` the view zooms in to where
 * names are readable, centred on it.
 */
async function focusNode(name, zoom = true) {
  const model = currentModel();
  const node = skeleton && skeleton.byName.get(name);
  if (!node) return;
  let redraw = false;
  if ((node.kind === "MLP" || node.kind === "UNEMBED") && !state.extras) {
    state.extras = true;
    redraw = true;
  }
  const range = clampRange(state.range, model);
  if (node.layer != null && (node.layer < range.from || node.layer > range.to)) {
    const width = range.to - range.from; // keep the range's width, centred on the node's layer
    const from = Math.max(0, Math.min(model.nLayers - 1 - width, node.layer - Math.floor(width / 2)));
    state.range = clampRange({ from, to: from + width }, model);
    redraw = true;
  }
  state.selected = name;
  if (redraw) await draw();
  else {
    highlight();
    writeHash();
  }
  const target = cy.getElementById(name);
  if (target.nonempty()) {
    const level = zoom ? Math.min(cy.maxZoom(), Math.max(cy.zoom(), fullZoom(drawn.geo) * 1.2)) : cy.zoom();
    const p = target.position();
    const box = target.renderedBoundingBox();
    const inView = box.x1 >= 0 && box.y1 >= 0 && box.x2 <= cy.width() && box.y2 <= cy.height();
    if (zoom || !inView) {
      cy.viewport({ zoom: level, pan: { x: cy.width() / 2 - p.x * level, y: cy.height() / 2 - p.y * level } });
    }
  }
  await showPanel();
}

// --- the side panel -------------------------------------------------------------------

async function showPanel() {
  const panel = $("#panel");
  const seq = ++state.panelSeq;
  if (!state.selected || !state.model) {
    panel.replaceChildren(...hint());
    delete panel.dataset.node;
    return;
  }
  let node;
  try {
    node = await loadNode(state.model, state.selected, PANEL_TOP, status);
  } catch (err) {
    if (seq === state.panelSeq) {
      panel.replaceChildren(el("p", { class: "none" }, `Could not load ${state.selected}: ${err.message}`));
    }
    return;
  }
  if (seq !== state.panelSeq) return;
  panel.replaceChildren(...panelContent(node, currentModel(), skeleton, nameLink));
  panel.dataset.node = node.name;
}

function nameLink(name) {
  if (!skeleton || !skeleton.byName.has(name)) return name;
  const b = el("button", { type: "button", title: `show ${name}` }, name);
  const roles = skeleton.byName.get(name).roles;
  if (roles.length) b.classList.add("has-role");
  if (roles.length) b.style.borderBottomColor = roleInfo(roles[0]).line;
  b.addEventListener("click", () => focusNode(name, false));
  return b;
}

// --- controls ---------------------------------------------------------------------------

/** Move the layer range by its own width (`step` -1 or +1), or show every layer. */
function moveLayers(step) {
  const model = currentModel();
  if (!model) return;
  const range = clampRange(state.range, model);
  if (step === 0) {
    state.range = { from: 0, to: model.nLayers - 1 };
  } else {
    const width = range.to - range.from + 1;
    const from = Math.max(0, Math.min(model.nLayers - width, range.from + step * width));
    state.range = { from, to: from + width - 1 };
  }
  busy(true);
  draw();
}

async function main() {
  initCytoscape();
  search = new SearchBox($("#search"), $("#search-results"), {
    nodes: () => (skeleton ? skeleton.nodes : []),
    onMatches: (names) => {
      matches = names;
      if (cy) markMatches();
    },
    onPick: (name) => focusNode(name, true),
    describe: (node) => [
      el("small", {}, node.layer != null ? ` layer ${node.layer}` : ""),
      ...node.roles.map((r) => roleChip(r, "span")),
    ],
  });
  const wanted = readHash();
  writeControls();
  let timer;
  $("#controls").addEventListener("input", () => {
    busy(true);
    clearTimeout(timer);
    timer = setTimeout(() => { readControls(); draw(); }, 250);
  });
  $("#controls").addEventListener("submit", (e) => e.preventDefault());
  $("#fit").addEventListener("click", () => cy.fit(undefined, FIT_PADDING));
  $("#layers-prev").addEventListener("click", () => moveLayers(-1));
  $("#layers-next").addEventListener("click", () => moveLayers(1));
  $("#layers-all").addEventListener("click", () => moveLayers(0));
  try {
    await loadModels();
  } catch (err) {
    status(`could not list models: ${err.message}`, true);
    return;
  }
  await applyHash(wanted);
  window.addEventListener("hashchange", () => applyHash(readHash()));
}

/** Show the model, layers and node a hash names (else the first model). */
async function applyHash(wanted) {
  writeControls();
  const first = state.models.find((m) => m.name === wanted.model) || state.models[0];
  if (first) {
    const same = first.name === wanted.model;
    state.selected = same ? wanted.node || null : null;
    if (!same) state.range = null;
    await selectModel(first.name, true);
  }
}

// For tests and the console: the Cytoscape instance, the state, and focusing a node.
window.headgraphViewer = {
  get cy() { return cy; }, state, focus: focusNode,
  get geometry() { return drawn && drawn.geo; },
  get labelLevel() { return labels && labels.level; },
};
main();
