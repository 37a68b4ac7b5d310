// headgraph viewer: the model list, a layered drawing of one model's head graph and a
// side panel for the clicked node. Talks only to POST /graphql (JSON); draws with the
// vendored Cytoscape.js. State lives in `state` and in the URL hash
// (#model=toy&kinds=K&top=2&min=&extras=0&node=L1H1), so a view can be linked.
"use strict";

(() => {
  const HEAD_KINDS = ["Q", "K", "V"];
  const ALL_KINDS = ["Q", "K", "V", "MLP", "UNEMBED"];
  const COLOURS = { Q: "#1c7ed6", K: "#e8590c", V: "#2f9e44", MLP: "#7048e8", UNEMBED: "#495057" };
  const FILLS = { HEAD: "#f1f3f5", EMBED: "#d3f9d8", POS_EMBED: "#d3f9d8", MLP: "#e5dbff", UNEMBED: "#fff3bf" };
  const PANEL_TOP = 8; // rows per feeders/readers table in the side panel
  const colWidth = (model) => (model.nHeads > 8 ? 120 : 190); // layout: between layer columns
  const ROW_H = 58; // layout: distance between heads in a column
  const HOVER_HINT = "edge width ∝ score · hover an edge for its numbers · click a node for details";
  const EDGE = "fragment E on Edge { kind score baseline nullStd z rank source { name } target { name } }";

  const $ = (sel) => document.querySelector(sel);
  const state = {
    models: [], model: null, kinds: new Set(["K"]), top: 2, minScore: null, extras: false,
    selected: null, graph: null, rolesSelection: undefined, drawSeq: 0, panelSeq: 0,
  };
  let cy = null;

  // --- GraphQL --------------------------------------------------------------------

  class ApiError extends Error {
    constructor(errors) {
      super(errors.map((e) => e.message).join("; "));
      this.codes = errors.map((e) => (e.extensions || {}).code);
    }
  }

  /** POST one query to /graphql; retries DATABASE_LOCKED (503) a few times. */
  async function gql(query, variables = {}, tries = 5) {
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
      status(`the database is locked by an ingest; retrying in ${wait} s`);
      await new Promise((resolve) => setTimeout(resolve, wait * 1000));
      return gql(query, variables, tries - 1);
    }
    if (body.errors && body.errors.length) throw new ApiError(body.errors);
    return body.data;
  }

  function status(text, isError = false) {
    const el = $("#status");
    el.textContent = text;
    el.classList.toggle("error", isError);
  }

  /** The selection for Node.roles if this server's schema has it, else "" (checked once). */
  async function rolesSelection() {
    if (state.rolesSelection !== undefined) return state.rolesSelection;
    const typeRef = "kind name ofType { kind name ofType { kind name ofType { kind name } } }";
    const named = (t) => (t.ofType ? named(t.ofType) : t);
    let selection = "";
    try {
      const data = await gql(`{ __type(name: "Node") { fields { name
        args { type { kind } defaultValue } type { ${typeRef} } } } }`);
      const field = (data.__type?.fields || []).find((f) => f.name === "roles");
      const needsArgs = field && field.args.some((a) => a.type.kind === "NON_NULL" && a.defaultValue == null);
      if (field && !needsArgs) {
        const type = named(field.type);
        if (type.kind === "SCALAR" || type.kind === "ENUM") {
          selection = "roles";
        } else if (type.kind === "OBJECT") {
          const inner = await gql(`query($n: String!) { __type(name: $n) { fields { name
            args { type { kind } } type { ${typeRef} } } } }`, { n: type.name });
          const leaves = inner.__type.fields
            .filter((f) => !f.args.some((a) => a.type.kind === "NON_NULL"))
            .filter((f) => ["SCALAR", "ENUM"].includes(named(f.type).kind))
            .map((f) => f.name);
          if (leaves.length) selection = `roles { ${leaves.join(" ")} }`;
        }
      }
    } catch (err) {
      console.warn("could not introspect Node.roles:", err);
    }
    state.rolesSelection = selection;
    return selection;
  }

  // --- models ---------------------------------------------------------------------

  async function loadModels() {
    status("loading models…");
    const data = await gql(`{ models { name family step architecture nLayers nHeads
      nNodes nEdges } }`);
    state.models = data.models;
    const list = $("#models ul");
    list.replaceChildren(...state.models.map((m) => {
      const origin = m.family && m.step != null ? `${m.family} @ step ${m.step}` : m.architecture;
      const shape = `${m.nLayers} × ${m.nHeads} heads · ${m.nEdges} edges`;
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

  async function selectModel(name) {
    if (state.model !== name) state.selected = null;
    state.model = name;
    for (const b of document.querySelectorAll("#models button")) {
      b.setAttribute("aria-current", String(b.dataset.model === name));
    }
    await draw();
    await showPanel();
  }

  // --- the drawing ----------------------------------------------------------------

  /** Columns: EMBED/POS_EMBED, then one per layer (MLP half a column to its right), UNEMBED. */
  function position(node, model) {
    const nLayers = model.nLayers;
    const heads = model.nHeads;
    const x = (col) => col * colWidth(model);
    switch (node.kind) {
      case "EMBED": return { x: x(0), y: -ROW_H / 2 };
      case "POS_EMBED": return { x: x(0), y: ROW_H / 2 };
      case "HEAD": return { x: x(node.layer + 1), y: (node.head - (heads - 1) / 2) * ROW_H };
      case "MLP": return { x: x(node.layer + 1.5), y: ((heads + 1) / 2) * ROW_H };
      case "UNEMBED": return { x: x(nLayers + 1.5), y: 0 };
      default: return { x: 0, y: 0 };
    }
  }

  function drawnKinds() {
    const kinds = HEAD_KINDS.filter((k) => state.kinds.has(k));
    return state.extras ? [...kinds, "MLP", "UNEMBED"] : kinds;
  }

  /** aria-busy on #graph is true from a control change until the drawing it asks for is done. */
  function busy(on) {
    $("#graph").setAttribute("aria-busy", String(on));
  }

  async function draw() {
    const seq = ++state.drawSeq;
    const kinds = drawnKinds();
    const model = state.models.find((m) => m.name === state.model);
    if (!model) return;
    busy(true);
    writeHash();
    status(`loading ${model.name}…`);
    const feeders = kinds.map((k) =>
      `${k}: feeders(kind: ${k}, top: $top, minScore: $min) { score baseline z rank source { name } }`);
    let data;
    try {
      data = await gql(`query Graph($model: String!, $top: Int!, $min: Float) {
        model(name: $model) { nodes { name kind layer head ${feeders.join(" ")} } } }`,
      { model: model.name, top: state.top, min: state.minScore });
    } catch (err) {
      if (seq === state.drawSeq) {
        status(`could not load the graph: ${err.message}`, true);
        busy(false);
      }
      return;
    }
    if (seq !== state.drawSeq) return; // a newer draw started meanwhile
    const shown = data.model.nodes.filter((n) => state.extras || !["MLP", "UNEMBED"].includes(n.kind));
    const names = new Set(shown.map((n) => n.name));
    const edges = [];
    for (const node of shown) {
      for (const kind of kinds) {
        for (const e of node[kind] || []) {
          if (names.has(e.source.name)) edges.push({ ...e, kind, target: node.name });
        }
      }
    }
    const maxScore = Math.max(1e-9, ...edges.map((e) => e.score));
    const elements = [
      ...columnLabels(model),
      ...shown.map((n) => ({
        group: "nodes",
        data: { id: n.name, label: n.name, kind: n.kind, fill: FILLS[n.kind] || "#fff" },
        position: position(n, model),
      })),
      ...edges.map((e) => ({
        group: "edges",
        data: {
          id: `${e.kind}:${e.source.name}>${e.target}`, source: e.source.name, target: e.target,
          kind: e.kind, score: e.score, baseline: e.baseline, z: e.z, rank: e.rank,
          colour: COLOURS[e.kind], width: 1 + 5 * (e.score / maxScore),
        },
      })),
    ];
    cy.elements().remove();
    cy.add(elements);
    cy.fit(undefined, 40);
    highlight();
    const what = kinds.join("/") || "no kind";
    const filter = `top ${state.top}${state.minScore != null ? `, score ≥ ${state.minScore}` : ""}`;
    status(`${model.name}: ${edges.length} ${what} edges (${filter} per node)`);
    state.graph = { model, names };
    Object.assign($("#graph").dataset, { model: model.name, edges: String(edges.length) });
    busy(false);
  }

  function columnLabels(model) {
    const labels = [{ text: "embed", col: 0 }];
    for (let l = 0; l < model.nLayers; l++) labels.push({ text: `layer ${l}`, col: l + 1 });
    if (state.extras) labels.push({ text: "unembed", col: model.nLayers + 1.5 });
    const top = -((Math.max(model.nHeads, 2) - 1) / 2) * ROW_H - ROW_H;
    return labels.map((c) => ({
      group: "nodes", classes: "column", selectable: false, grabbable: false,
      data: { id: `column:${c.text}`, label: c.text, fill: "#fff" }, position: { x: c.col * colWidth(model), y: top },
    }));
  }

  /** Fade everything but the selected node and its drawn edges. */
  function highlight() {
    cy.elements().removeClass("faded focus");
    const node = state.selected && cy.getElementById(state.selected);
    if (!node || node.empty()) return;
    const near = node.closedNeighborhood();
    cy.elements().not(near).not(".column").addClass("faded");
    node.addClass("focus");
  }

  function initCytoscape() {
    cy = cytoscape({ // global from vendor/cytoscape.min.js
      container: $("#graph"),
      layout: { name: "preset" },
      minZoom: 0.1,
      maxZoom: 1.6,
      boxSelectionEnabled: false,
      autoungrabify: true,
      style: [
        { selector: "node", style: {
          shape: "round-rectangle", width: 84, height: 30, "background-color": "data(fill)",
          "border-width": 1, "border-color": "#adb5bd", label: "data(label)",
          "text-valign": "center", "text-halign": "center", "font-size": 12, color: "#212529",
          "min-zoomed-font-size": 6 } },
        { selector: "node.column", style: {
          "background-opacity": 0, "border-width": 0, color: "#868e96", "font-size": 13,
          "text-transform": "uppercase", events: "no" } },
        { selector: "node.focus", style: { "border-width": 3, "border-color": "#212529" } },
        { selector: "edge", style: {
          width: "data(width)", "line-color": "data(colour)", "target-arrow-color": "data(colour)",
          "target-arrow-shape": "triangle", "arrow-scale": 0.8, "curve-style": "bezier",
          "control-point-step-size": 18, opacity: 0.75 } },
        { selector: "node.faded", style: { opacity: 0.35 } },
        { selector: "edge.faded", style: { opacity: 0.1 } },
        { selector: "edge:active, edge.hover", style: { opacity: 1, "z-index": 10 } },
      ],
    });
    cy.on("tap", "node", (evt) => {
      if (evt.target.hasClass("column")) return;
      selectNode(evt.target.id());
    });
    cy.on("tap", (evt) => {
      if (evt.target === cy) selectNode(null);
    });
    cy.on("mouseover", "edge", (evt) => {
      const d = evt.target.data();
      evt.target.addClass("hover");
      $("#hover").textContent = `${d.kind}  ${d.source} → ${d.target}   score ${fmt(d.score)}` +
        `   baseline ${fmt(d.baseline)}   z ${fmt(d.z, 1)}   rank ${d.rank}`;
    });
    cy.on("mouseout", "edge", (evt) => {
      evt.target.removeClass("hover");
      $("#hover").textContent = HOVER_HINT;
    });
    $("#hover").textContent = HOVER_HINT;
  }

  function selectNode(name) {
    state.selected = name;
    highlight();
    writeHash();
    showPanel();
  }

  // --- the side panel -------------------------------------------------------------

  /** Which kinds of feeders / readers a node of `kind` can have. */
  function panelKinds(kind) {
    const feeders = { HEAD: HEAD_KINDS, MLP: ["MLP"], UNEMBED: ["UNEMBED"] }[kind] || [];
    const readers = kind === "UNEMBED" ? [] : ALL_KINDS;
    return { feeders, readers };
  }

  const PANEL_EDGES = ALL_KINDS.flatMap((k) => [
    `f${k}: feeders(kind: ${k}, top: $n) { ...E }`, `r${k}: readers(kind: ${k}, top: $n) { ...E }`]);

  async function showPanel() {
    const panel = $("#panel");
    const seq = ++state.panelSeq;
    if (!state.selected || !state.model) {
      panel.replaceChildren(el("p", { class: "hint" }, "Click a head to see what it reads and who reads it."));
      delete panel.dataset.node;
      return;
    }
    const roles = await rolesSelection();
    let node;
    try {
      const data = await gql(`query Node($model: String!, $name: String!, $n: Int!) {
        node(model: $model, name: $name) { name kind layer head qkNorm ovNorm inNorm outNorm
          copying { ratio positiveFraction } scores { metric probe value } ${roles}
          ${PANEL_EDGES.join("\n")} } } ${EDGE}`, { model: state.model, name: state.selected, n: PANEL_TOP });
      node = data.node;
    } catch (err) {
      if (seq === state.panelSeq) {
        panel.replaceChildren(el("p", { class: "none" }, `Could not load ${state.selected}: ${err.message}`));
      }
      return;
    }
    if (seq !== state.panelSeq) return;
    const { feeders, readers } = panelKinds(node.kind);
    panel.replaceChildren(...panelContent(node, roles !== "", feeders, readers));
    panel.dataset.node = node.name;
  }

  function panelContent(node, hasRoles, feeders, readers) {
    const where = {
      HEAD: `head ${node.head} of layer ${node.layer}`, MLP: `MLP of layer ${node.layer}`,
      EMBED: "token embedding", POS_EMBED: "positional embedding", UNEMBED: "unembedding",
    }[node.kind] || node.kind;
    const out = [el("h2", {}, node.name), el("p", { class: "sub" }, where)];

    if (hasRoles) {
      const roles = node.roles || [];
      out.push(el("h3", {}, "Roles"));
      out.push(roles.length
        ? el("ul", { class: "roles" }, ...roles.map(roleItem))
        : el("p", { class: "none" }, "none stored"));
    }

    const facts = [];
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

    if (feeders.length) {
      out.push(el("h3", {}, "Feeders — what it reads"));
      out.push(...edgeTables(node, "feeders", "f", feeders, "source"));
    }
    if (readers.length) {
      out.push(el("h3", {}, "Readers — who reads its write"));
      out.push(...edgeTables(node, "readers", "r", readers, "target"));
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

  function roleItem(role) {
    if (typeof role !== "object" || role === null) return el("li", {}, String(role));
    const label = role.role ?? role.name ?? Object.values(role)[0];
    const detail = role.metric != null && role.value != null ? ` ${role.metric} ${fmt(role.value)}` : "";
    return el("li", { title: JSON.stringify(role) }, String(label), el("small", {}, detail));
  }

  function edgeTables(node, dir, prefix, kinds, other) {
    const tables = [];
    for (const kind of kinds) {
      const rows = node[prefix + kind] || [];
      if (!rows.length) continue;
      tables.push(el("table", { "data-dir": dir, "data-kind": kind },
        el("caption", { class: `kind-${kind}` }, `${kind} ${dir}`),
        el("thead", {}, el("tr", {}, ...[other, "score", "baseline", "z", "rank"].map((h) => el("th", {
          title: { score: "composition score", baseline: "mean score of random matrices",
            z: "(score − baseline) / null std; bold when ≥ 3", rank: `1 = strongest ${other} of this kind` }[h] || "",
        }, h)))),
        el("tbody", {}, ...rows.map((e) => el("tr", { "data-name": e[other].name },
          el("td", {}, nameLink(e[other].name)),
          el("td", {}, fmt(e.score)), el("td", {}, fmt(e.baseline)),
          el("td", { class: e.z != null && e.z >= 3 ? "z-high" : "" }, fmt(e.z, 1)),
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

  function nameLink(name) {
    if (!state.graph || !state.graph.names.has(name)) return name;
    const b = el("button", { type: "button", title: `show ${name}` }, name);
    b.addEventListener("click", () => selectNode(name));
    return b;
  }

  // --- controls, URL hash, helpers -------------------------------------------------

  function readControls() {
    state.kinds = new Set([...document.querySelectorAll("#kinds input:checked")].map((i) => i.value));
    const top = Number.parseInt($("#top").value, 10);
    state.top = Number.isFinite(top) && top >= 1 ? Math.min(top, 100) : 2;
    const min = Number.parseFloat($("#min-score").value);
    state.minScore = Number.isFinite(min) ? min : null;
    state.extras = $("#extras").checked;
  }

  function writeControls() {
    for (const i of document.querySelectorAll("#kinds input")) i.checked = state.kinds.has(i.value);
    $("#top").value = state.top;
    $("#min-score").value = state.minScore ?? "";
    $("#extras").checked = state.extras;
  }

  function writeHash() {
    const p = new URLSearchParams({
      model: state.model || "", kinds: [...state.kinds].join(","), top: state.top,
      min: state.minScore ?? "", extras: state.extras ? 1 : 0, node: state.selected || "",
    });
    history.replaceState(null, "", `#${p}`);
  }

  function readHash() {
    const p = new URLSearchParams(location.hash.slice(1));
    if (p.has("kinds")) state.kinds = new Set(p.get("kinds").split(",").filter((k) => HEAD_KINDS.includes(k)));
    if (p.get("top")) state.top = Math.max(1, Math.min(100, Number.parseInt(p.get("top"), 10) || 2));
    const min = Number.parseFloat(p.get("min") ?? "");
    state.minScore = Number.isFinite(min) ? min : null;
    state.extras = p.get("extras") === "1";
    return { model: p.get("model"), node: p.get("node") };
  }

  function fmt(x, digits = 3) {
    return x == null ? "—" : Number(x).toFixed(digits);
  }

  /** A DOM element with attributes and children (strings become text, never HTML). */
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    node.append(...children);
    return node;
  }

  async function main() {
    initCytoscape();
    const wanted = readHash();
    writeControls();
    let timer;
    $("#controls").addEventListener("input", () => {
      busy(true);
      clearTimeout(timer);
      timer = setTimeout(() => { readControls(); draw(); }, 250);
    });
    $("#controls").addEventListener("submit", (e) => e.preventDefault());
    $("#fit").addEventListener("click", () => cy.fit(undefined, 40));
    try {
      await loadModels();
    } catch (err) {
      status(`could not list models: ${err.message}`, true);
      return;
    }
    await applyHash(wanted);
    window.addEventListener("hashchange", () => applyHash(readHash()));
  }

  /** Show the model and node a hash names (else the first model). */
  async function applyHash(wanted) {
    writeControls();
    const first = state.models.find((m) => m.name === wanted.model) || state.models[0];
    if (first) {
      state.model = first.name; // keeps the hash's node through selectModel
      state.selected = first.name === wanted.model ? wanted.node || null : null;
      await selectModel(first.name);
    }
  }

  // For tests and the console: the Cytoscape instance and the state.
  window.headgraphViewer = { get cy() { return cy; }, state };
  main();
})();
