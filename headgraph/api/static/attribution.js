// headgraph attribution-graph page: the imported graphs, one graph's pruned view drawn as
// Neuronpedia lays it out (rows: layers, embeddings at the bottom and logits at the top;
// columns: token positions, each as wide as its fullest cell), a threshold slider, and a
// side panel with the clicked node's label and strongest links. Talks only to POST
// /graphql. Links are drawn for the clicked node (its neighbourhood), as Neuronpedia draws
// them; a view with more than MAX_NODES nodes is loaded by neighbourhood instead of whole:
// the logits' first, then each clicked node's. State lives in the URL hash
// (#model=..&slug=..&prune=INFLUENCE&t=0.8&e=0.98&node=KEY&pinned=A,B&max=1500).
import { gql as post } from "./viewer-api.js";

(() => {
  const MAX_NODES = 1500; // drawn whole up to this many nodes (the hash's max= changes it)
  const NEAR_TOP = 10; // links per direction in a neighbourhood
  const COL_W = 26; // px per node slot in a position's column
  const ROW_H = 44; // px between layers
  const FILLS = { feature: "#ffffff", error: "#dee2e6", token: "#d3f9d8", logit: "#fff3bf" };
  const NODE = `key nodeId layer ctxIdx feature featureType clerp activation influence
    recomputedInfluence role pinned`;

  const $ = (sel) => document.querySelector(sel);
  const state = {
    graphs: [], graph: null, prune: null, threshold: null, edge: 0.98, node: null,
    pinned: [], nodes: new Map(), partial: false, seq: 0, panelSeq: 0, maxNodes: MAX_NODES,
  };
  let cy = null;

  // --- GraphQL --------------------------------------------------------------------

  /** One query through the viewer's client (its retries of a locked database say so in
   * the status line). */
  const gql = (query, variables = {}) => post(query, variables, (text) => status(text));

  function status(text, isError = false) {
    $("#status").textContent = text;
    $("#status").classList.toggle("error", isError);
  }

  const GRAPH = `query G($slug: String!, $model: String) { attributionGraph(slug: $slug, model: $model) {`;

  // --- graphs list ----------------------------------------------------------------

  async function loadGraphs() {
    const data = await gql("{ attributionGraphs(first: 1000) { slug model prompt nodeCount linkCount } }");
    state.graphs = data.attributionGraphs;
    const list = $("#graphs ul");
    list.replaceChildren(...state.graphs.map((g) => {
      const b = el("button", { type: "button", "data-model": g.model, "data-slug": g.slug },
        g.slug, el("small", {}, g.model), el("small", {}, `${g.nodeCount} nodes · ${g.linkCount} links`),
        el("small", { class: "prompt" }, g.prompt || ""));
      b.addEventListener("click", () => selectGraph(g.model, g.slug));
      return el("li", {}, b);
    }));
    if (!state.graphs.length) {
      list.replaceChildren(el("li", { class: "none" }, "No attribution graphs here. Add one with: headgraph import FILE.json"));
    }
  }

  async function selectGraph(model, slug, keep = false) {
    const seq = ++state.seq;
    busy(true);
    status(`loading ${model}/${slug}…`);
    let g;
    try {
      g = (await gql(`${GRAPH} slug model prompt nodeCount linkCount nodeThreshold defaultPrune pinnedIds metadata } }`,
        { slug, model })).attributionGraph;
    } catch (err) {
      if (seq === state.seq) { status(`could not load ${slug}: ${err.message}`, true); busy(false); }
      return;
    }
    if (seq !== state.seq) return;
    const same = state.graph && state.graph.slug === slug && state.graph.model === model;
    if (!keep || !same) Object.assign(state, { prune: null, threshold: null, node: null, pinned: [] });
    state.prune = state.prune || g.defaultPrune;
    state.threshold = state.threshold ?? g.nodeThreshold ?? 0.8;
    state.graph = g;
    for (const b of document.querySelectorAll("#graphs button")) {
      b.setAttribute("aria-current", String(b.dataset.model === model && b.dataset.slug === slug));
    }
    writeControls();
    await draw();
  }

  // --- the view -------------------------------------------------------------------

  function viewArgs() {
    return {
      slug: state.graph.slug, model: state.graph.model, prune: state.prune, t: state.threshold,
      e: state.prune === "RECOMPUTE" ? state.edge : null, pinned: state.pinned,
    };
  }

  const VIEW = `query V($slug: String!, $model: String, $prune: PruneRule, $t: Float, $e: Float,
    $pinned: [String!]) { attributionGraph(slug: $slug, model: $model) {
    pruned(prune: $prune, nodeThreshold: $t, edgeThreshold: $e, pinned: $pinned, first: 0) {`;

  async function draw() {
    const seq = ++state.seq;
    busy(true);
    writeHash();
    const g = state.graph;
    let view;
    try {
      const count = (await gql(`${VIEW} nodeCount prune nodeThreshold } } }`, viewArgs())).attributionGraph.pruned;
      if (seq !== state.seq) return;
      state.partial = count.nodeCount > state.maxNodes;
      if (state.partial) {
        view = await neighbourhoodsOfLogits();
        view.nodeCount = count.nodeCount;
      } else {
        view = (await gql(`${VIEW} nodeCount prune nodeThreshold nodes { ${NODE} } } } }`, viewArgs())).attributionGraph.pruned;
      }
    } catch (err) {
      if (seq === state.seq) { status(`could not draw ${g.slug}: ${err.message}`, true); busy(false); }
      return;
    }
    if (seq !== state.seq) return;
    state.nodes = new Map(view.nodes.map((n) => [n.key, n]));
    layout();
    $("#drawing .notice")?.remove();
    if (state.partial) {
      $("#drawing").append(el("p", { class: "notice" },
        `${view.nodeCount} nodes in this view: showing the logits' neighbourhood; click a node to load its own`));
    }
    const rule = state.prune === "INFLUENCE" ? "stored influence" : "recomputed pruning";
    status(`${g.model}/${g.slug}: ${state.nodes.size} of ${g.nodeCount} nodes (${rule} ≤ ${fmt(state.threshold, 2)})`);
    Object.assign($("#graph").dataset, { model: g.model, slug: g.slug, nodes: String(state.nodes.size),
      partial: String(state.partial) });
    if (state.node && state.nodes.has(state.node)) {
      await selectNode(state.node);
    } else {
      state.node = null;
      showPanel(null);
    }
    busy(false);
  }

  /** A view too big to draw whole: the logits and their neighbourhood, two hops upstream. */
  async function neighbourhoodsOfLogits() {
    const data = await gql(`${GRAPH} nodes(role: LOGIT, first: 100) { ${NODE} } } }`,
      { slug: state.graph.slug, model: state.graph.model });
    const seeds = data.attributionGraph.nodes;
    const nodes = new Map(seeds.map((n) => [n.key, n]));
    for (const seed of seeds.slice(0, 10)) {
      const near = await neighbourhood(seed.key, 2, "IN");
      for (const n of near.nodes) nodes.set(n.key, n);
    }
    return { nodes: [...nodes.values()] };
  }

  async function neighbourhood(key, depth = 1, direction = "BOTH") {
    const data = await gql(`query N($slug: String!, $model: String, $node: String!, $top: Int!, $depth: Int!,
      $dir: LinkDirection!) { attributionGraph(slug: $slug, model: $model) {
      neighbourhood(node: $node, top: $top, depth: $depth, direction: $dir) {
        nodes { ${NODE} } links { sourceKey targetKey weight } } } }`,
    { slug: state.graph.slug, model: state.graph.model, node: key, top: NEAR_TOP, depth, dir: direction });
    return data.attributionGraph.neighbourhood;
  }

  /** Neuronpedia's layout: a row per layer, a column per token position as wide as its
   * fullest (position, layer) cell, nodes in a cell side by side, most influential first. */
  function layout() {
    const nodes = [...state.nodes.values()];
    const rowOf = (n) => (n.layer === "E" ? 0 : Number.isFinite(Number(n.layer)) ? Number(n.layer) + 1 : 0);
    const maxRow = Math.max(1, ...nodes.map(rowOf));
    const cells = new Map();
    for (const n of nodes) {
      const k = `${n.ctxIdx ?? 0}:${rowOf(n)}`;
      if (!cells.has(k)) cells.set(k, []);
      cells.get(k).push(n);
    }
    const width = new Map();
    for (const [k, members] of cells) {
      const ctx = Number(k.split(":")[0]);
      width.set(ctx, Math.max(width.get(ctx) || 1, members.length));
    }
    const ctxs = [...width.keys()].sort((a, b) => a - b);
    const start = new Map();
    let x = 0;
    for (const c of ctxs) { start.set(c, x); x += (width.get(c) + 1) * COL_W; }
    const rank = (n) => (n.influence ?? n.recomputedInfluence ?? 1);
    const elements = [];
    for (const [k, members] of cells) {
      const [ctx, row] = k.split(":").map(Number);
      members.sort((a, b) => rank(a) - rank(b));
      const offset = (width.get(ctx) - members.length) / 2;
      members.forEach((n, i) => elements.push({
        group: "nodes", classes: `role-${n.role.toLowerCase()}${n.pinned || state.pinned.includes(n.key) ? " pinned" : ""}`,
        data: { id: n.key, label: label(n), fill: FILLS[n.role.toLowerCase()] || "#fff" },
        position: { x: start.get(ctx) + (offset + i) * COL_W, y: (maxRow - row) * ROW_H },
      }));
    }
    const tokens = state.graph.metadata?.prompt_tokens || [];
    for (const c of ctxs) {
      elements.push({ group: "nodes", classes: "column", selectable: false, grabbable: false,
        data: { id: `column:${c}`, label: tokens[c] != null ? String(tokens[c]) : `pos ${c}` },
        position: { x: start.get(c) + ((width.get(c) - 1) * COL_W) / 2, y: (maxRow + 1) * ROW_H } });
    }
    cy.elements().remove();
    cy.add(elements);
    cy.fit(undefined, 30);
  }

  function label(n) {
    if (n.role === "TOKEN" || n.role === "LOGIT") return (n.clerp || n.nodeId).slice(0, 24);
    return "";
  }

  // --- a clicked node ------------------------------------------------------------

  async function selectNode(key) {
    state.node = key;
    writeHash();
    cy.edges().remove();
    cy.elements().removeClass("focus faded");
    if (!key) { showPanel(null); return; }
    const seq = ++state.panelSeq;
    let near;
    try {
      near = await neighbourhood(key);
    } catch (err) {
      if (seq === state.panelSeq) $("#panel").replaceChildren(el("p", { class: "none" }, `Could not load ${key}: ${err.message}`));
      return;
    }
    if (seq !== state.panelSeq) return;
    if (state.partial) { // load by neighbourhood: the clicked node's neighbours join the drawing
      let grew = false;
      for (const n of near.nodes) if (!state.nodes.has(n.key)) { state.nodes.set(n.key, n); grew = true; }
      if (grew) layout();
    }
    const maxW = Math.max(1e-9, ...near.links.map((l) => Math.abs(l.weight)));
    cy.add(near.links.filter((l) => cy.getElementById(l.sourceKey).nonempty() && cy.getElementById(l.targetKey).nonempty())
      .map((l) => ({ group: "edges", data: {
        id: `${l.sourceKey}>${l.targetKey}`, source: l.sourceKey, target: l.targetKey, weight: l.weight,
        colour: l.weight >= 0 ? "#1c7ed6" : "#e8590c", width: 0.5 + 5 * (Math.abs(l.weight) / maxW) } })));
    const node = cy.getElementById(key);
    cy.elements().not(node.closedNeighborhood()).not(".column").addClass("faded");
    node.addClass("focus");
    showPanel(state.nodes.get(key) || near.nodes.find((n) => n.key === key), near);
    $("#panel").dataset.node = key;
  }

  function showPanel(n, near) {
    const panel = $("#panel");
    if (!n) {
      panel.replaceChildren(el("p", { class: "hint" }, "Click a node for its label and its strongest links."));
      delete panel.dataset.node;
      return;
    }
    const pinned = n.pinned || state.pinned.includes(n.key);
    const pin = el("button", { type: "button", class: "pin", "aria-pressed": String(pinned),
      title: "Pinned nodes stay in the view whatever the threshold" }, pinned ? "◆ pinned" : "◇ pin");
    pin.addEventListener("click", () => togglePin(n));
    const facts = [["type", n.featureType], ["layer", n.layer], ["position", n.ctxIdx],
      ["feature", n.feature], ["influence (file)", fmt(n.influence)],
      ["influence (recomputed)", fmt(n.recomputedInfluence)], ["activation", fmt(n.activation)]];
    const out = [el("h2", {}, n.clerp || n.nodeId), el("p", { class: "key" }, n.key), pin,
      el("dl", {}, ...facts.filter(([, v]) => v != null && v !== "—").flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, String(v))]))];
    if (near) {
      const names = new Map(near.nodes.map((x) => [x.key, x]));
      for (const [title, dir, other] of [["Inputs — strongest links in", "targetKey", "sourceKey"],
        ["Outputs — strongest links out", "sourceKey", "targetKey"]]) {
        const rows = near.links.filter((l) => l[dir] === n.key).sort((a, b) => Math.abs(b.weight) - Math.abs(a.weight));
        out.push(el("h3", {}, title));
        if (!rows.length) { out.push(el("p", { class: "none" }, "none")); continue; }
        out.push(el("table", { "data-dir": dir === "targetKey" ? "in" : "out" },
          el("tbody", {}, ...rows.map((l) => {
            const m = names.get(l[other]);
            const b = el("button", { type: "button", title: l[other] }, (m && (m.clerp || m.nodeId)) || l[other]);
            b.addEventListener("click", () => selectNode(l[other]));
            return el("tr", { "data-key": l[other] }, el("td", {}, b),
              el("td", { class: l.weight >= 0 ? "w-pos" : "w-neg" }, fmt(l.weight)));
          }))));
      }
    }
    panel.replaceChildren(...out);
  }

  function togglePin(n) {
    state.pinned = state.pinned.includes(n.key) ? state.pinned.filter((k) => k !== n.key) : [...state.pinned, n.key];
    draw();
  }

  // --- controls, hash, helpers ----------------------------------------------------

  function busy(on) { $("#graph").setAttribute("aria-busy", String(on)); }

  function writeControls() {
    for (const r of document.querySelectorAll('#rule input')) r.checked = r.value === state.prune;
    $("#threshold").value = state.threshold;
    $("#threshold-value").textContent = fmt(state.threshold, 2);
    $("#edge-threshold").value = state.edge;
    $("#edge-label").hidden = state.prune !== "RECOMPUTE";
  }

  function readControls() {
    state.prune = document.querySelector('#rule input:checked')?.value || state.prune;
    state.threshold = Number($("#threshold").value);
    const e = Number.parseFloat($("#edge-threshold").value);
    state.edge = Number.isFinite(e) && e >= 0 && e <= 1 ? e : 0.98;
    writeControls();
  }

  function writeHash() {
    if (!state.graph) return;
    const p = new URLSearchParams({ model: state.graph.model, slug: state.graph.slug, prune: state.prune || "",
      t: state.threshold ?? "", e: state.edge, node: state.node || "", pinned: state.pinned.join(","),
      max: state.maxNodes });
    history.replaceState(null, "", `#${p}`);
  }

  function readHash() {
    const p = new URLSearchParams(location.hash.slice(1));
    const t = Number.parseFloat(p.get("t") ?? "");
    const e = Number.parseFloat(p.get("e") ?? "");
    return { model: p.get("model"), slug: p.get("slug"), prune: ["INFLUENCE", "RECOMPUTE"].includes(p.get("prune")) ? p.get("prune") : null,
      t: Number.isFinite(t) ? t : null, e: Number.isFinite(e) ? e : null, node: p.get("node") || null,
      pinned: (p.get("pinned") || "").split(",").filter(Boolean),
      max: Number.parseInt(p.get("max") ?? "", 10) || MAX_NODES };
  }

  function fmt(x, digits = 3) { return x == null ? "—" : Number(x).toFixed(digits); }

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    node.append(...children.map((c) => (c == null ? "" : c)));
    return node;
  }

  function initCytoscape() {
    cy = cytoscape({ // global from vendor/cytoscape.min.js
      container: $("#graph"), layout: { name: "preset" }, minZoom: 0.05, maxZoom: 3,
      boxSelectionEnabled: false, autoungrabify: true,
      style: [
        { selector: "node", style: { width: 16, height: 16, "background-color": "data(fill)", "border-width": 1,
          "border-color": "#868e96", label: "data(label)", "font-size": 9, "text-valign": "bottom", "text-margin-y": 3,
          color: "#495057", "min-zoomed-font-size": 7 } },
        { selector: "node.role-error", style: { shape: "round-rectangle" } },
        { selector: "node.role-token", style: { shape: "round-rectangle", width: 22 } },
        { selector: "node.role-logit", style: { shape: "round-rectangle", width: 22, "text-valign": "top", "text-margin-y": -3 } },
        { selector: "node.pinned", style: { "border-width": 3, "border-color": "#c2255c", shape: "diamond" } },
        { selector: "node.column", style: { "background-opacity": 0, "border-width": 0, color: "#868e96",
          "font-size": 11, "text-valign": "center", events: "no" } },
        { selector: "node.focus", style: { "border-width": 3, "border-color": "#212529" } },
        { selector: "node.faded", style: { opacity: 0.3 } },
        { selector: "edge", style: { width: "data(width)", "line-color": "data(colour)", "target-arrow-color": "data(colour)",
          "target-arrow-shape": "triangle", "arrow-scale": 0.6, "curve-style": "bezier", opacity: 0.8 } },
      ],
    });
    cy.on("tap", "node", (evt) => { if (!evt.target.hasClass("column")) selectNode(evt.target.id()); });
    cy.on("tap", (evt) => { if (evt.target === cy) selectNode(null); });
    cy.on("mouseover", "node", (evt) => {
      const n = state.nodes.get(evt.target.id());
      if (n) $("#hover").textContent = `${n.clerp || n.nodeId}   layer ${n.layer} · pos ${n.ctxIdx} · influence ${fmt(n.influence)}`;
    });
    cy.on("mouseout", "node", () => { $("#hover").textContent = ""; });
  }

  async function main() {
    initCytoscape();
    const wanted = readHash();
    state.maxNodes = wanted.max;
    let timer;
    $("#controls").addEventListener("input", (evt) => {
      if (!state.graph) return;
      busy(true);
      if (evt.target.id === "threshold") $("#threshold-value").textContent = fmt($("#threshold").value, 2);
      clearTimeout(timer);
      timer = setTimeout(() => { readControls(); draw(); }, 250);
    });
    $("#controls").addEventListener("submit", (e) => e.preventDefault());
    $("#fit").addEventListener("click", () => cy.fit(undefined, 30));
    try {
      await loadGraphs();
    } catch (err) {
      status(`could not list graphs: ${err.message}`, true);
      return;
    }
    const first = state.graphs.find((g) => g.model === wanted.model && g.slug === wanted.slug) || state.graphs[0];
    if (!first) return;
    if (first.slug === wanted.slug && first.model === wanted.model) {
      Object.assign(state, { prune: wanted.prune, threshold: wanted.t, edge: wanted.e ?? 0.98,
        node: wanted.node, pinned: wanted.pinned });
      state.graph = { slug: first.slug, model: first.model };
      await selectGraph(first.model, first.slug, true);
    } else {
      await selectGraph(first.model, first.slug);
    }
  }

  window.headgraphAttribution = { get cy() { return cy; }, state };
  main();
})();
