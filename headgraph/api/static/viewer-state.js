// headgraph viewer: the controls' values and the URL hash, both to and from the viewer's
// state, so that a view can be linked:
// #model=toy&kinds=K&top=2&min=&z=&layers=0-1&extras=0&node=L1H1

import { HEAD_KINDS } from "./viewer-api.js";

const $ = (sel) => document.querySelector(sel);

function number(sel, parse = Number.parseFloat) {
  const x = parse($(sel).value, 10);
  return Number.isFinite(x) ? x : null;
}

/** The controls' values into `state`. */
export function read(state) {
  state.kinds = new Set([...document.querySelectorAll("#kinds input:checked")].map((i) => i.value));
  const top = number("#top", Number.parseInt);
  state.top = top != null && top >= 1 ? Math.min(top, 100) : 2;
  state.minScore = number("#min-score");
  state.minZ = number("#min-z");
  state.extras = $("#extras").checked;
  const from = number("#layer-from", Number.parseInt);
  const to = number("#layer-to", Number.parseInt);
  if (from != null && to != null) state.range = { from: Math.min(from, to), to: Math.max(from, to) };
}

/** `state` into the controls (the layer inputs for `model`). */
export function write(state, model) {
  for (const i of document.querySelectorAll("#kinds input")) i.checked = state.kinds.has(i.value);
  $("#top").value = state.top;
  $("#min-score").value = state.minScore ?? "";
  $("#min-z").value = state.minZ ?? "";
  $("#extras").checked = state.extras;
  if (model && state.range) {
    for (const sel of ["#layer-from", "#layer-to"]) $(sel).max = model.nLayers - 1;
    $("#layer-from").value = state.range.from;
    $("#layer-to").value = state.range.to;
    $("#layer-count").textContent = `of ${model.nLayers}`;
  }
}

/** `state` into the URL hash (replacing the entry: no history step per change). */
export function writeHash(state) {
  const p = new URLSearchParams({
    model: state.model || "", kinds: [...state.kinds].join(","), top: state.top,
    min: state.minScore ?? "", z: state.minZ ?? "",
    layers: state.range ? `${state.range.from}-${state.range.to}` : "",
    extras: state.extras ? 1 : 0, node: state.selected || "",
  });
  history.replaceState(null, "", `#${p}`);
}

/** The URL hash into `state`; the model and node it names. */
export function readHash(state) {
  const p = new URLSearchParams(location.hash.slice(1));
  if (p.has("kinds")) state.kinds = new Set(p.get("kinds").split(",").filter((k) => HEAD_KINDS.includes(k)));
  if (p.get("top")) state.top = Math.max(1, Math.min(100, Number.parseInt(p.get("top"), 10) || 2));
  const float = (key) => {
    const x = Number.parseFloat(p.get(key) ?? "");
    return Number.isFinite(x) ? x : null;
  };
  state.minScore = float("min");
  state.minZ = float("z");
  state.extras = p.get("extras") === "1";
  const layers = /^(\d+)-(\d+)$/.exec(p.get("layers") || "");
  state.range = layers ? { from: Number(layers[1]), to: Number(layers[2]) } : null;
  return { model: p.get("model"), node: p.get("node") };
}

