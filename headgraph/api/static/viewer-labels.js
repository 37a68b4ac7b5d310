// headgraph viewer: labels that follow the zoom, and axes that stay in view.
//
// A node's label has three levels, chosen from the size its text would have on screen:
// none (under MIN_SHORT_PX: the fill colours carry the roles), the head index alone ("H7",
// its layer is the column's; drawn 1.3x larger) and the full name ("L12H7") from
// MIN_FULL_PX on. Every level fits inside the node's box, so labels never overlap.
// The layer of each column and the head of each row are written on two strips along the top
// and left edges of the drawing, thinned out (every 2nd, 4th... label) when they would
// collide, and moved with every pan and zoom.

import { columnX, MIN_FULL_PX, MIN_SHORT_PX, rowY, SHORT_SCALE } from "./viewer-layout.js";
const LEVELS = ["lbl-none", "lbl-short", "lbl-full"];
const COLUMN_LABEL_PX = 46; // room one column label needs on screen ("layer 12" or "L12")
const ROW_LABEL_PX = 14;

/** The label level for zoom `zoom` on geometry `geo`. */
export function labelLevel(zoom, geo) {
  if (geo.font * zoom >= MIN_FULL_PX) return "lbl-full";
  if (geo.font * SHORT_SCALE * zoom >= MIN_SHORT_PX) return "lbl-short";
  return "lbl-none";
}

/** The zoom from which full names show. */
export function fullZoom(geo) {
  return MIN_FULL_PX / geo.font;
}

export class ZoomLabels {
  /** Keeps node labels and the axes of `axes` (an element) in step with `cy`'s viewport. */
  constructor(cy, axes, onLevel = () => {}) {
    this.cy = cy;
    this.axes = axes;
    this.onLevel = onLevel;
    this.level = null;
    this.frame = 0;
    this.layout = null;
    cy.on("viewport resize", () => this.schedule());
  }

  /** What is drawn now: model, geometry, layer range, whether the unembedding is. */
  setLayout(layout) {
    this.layout = layout;
    this.level = null;
    this.update();
  }

  schedule() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.update();
    });
  }

  update() {
    if (!this.layout) return;
    const level = labelLevel(this.cy.zoom(), this.layout.geo);
    if (level !== this.level) {
      this.cy.batch(() => this.cy.nodes().removeClass(LEVELS.join(" ")).addClass(level));
      this.level = level;
      this.onLevel(level);
    }
    this.drawAxes();
  }

  drawAxes() {
    const { model, geo, range, extras } = this.layout;
    const zoom = this.cy.zoom();
    const pan = this.cy.pan();
    const width = this.cy.width();
    const height = this.cy.height();

    const colStep = geo.column * zoom;
    const columns = colStep >= COLUMN_LABEL_PX ? [{ text: "embed", col: 0 }] : [];
    for (let l = range.from; l <= range.to; l++) columns.push({ text: `L${l}`, long: `layer ${l}`, col: l - range.from + 1 });
    if (extras && colStep >= COLUMN_LABEL_PX) columns.push({ text: "unembed", col: range.to - range.from + 2.5 });
    const everyCol = thinning(colStep, COLUMN_LABEL_PX);
    const colSpans = columns
      .filter((c) => c.text === "embed" || c.text === "unembed" || (c.col - 1) % everyCol === 0)
      .map((c) => ({ x: pan.x + columnX(c.col, geo) * zoom, text: colStep >= 70 && c.long ? c.long : c.text }))
      .filter((c) => c.x > -40 && c.x < width + 40)
      .map((c) => span("axis-col", c.text, { left: `${c.x}px` }));

    const rowStep = geo.row * zoom;
    const everyRow = thinning(rowStep, ROW_LABEL_PX);
    const rowSpans = [];
    for (let h = 0; h < model.nHeads; h += everyRow) {
      const y = pan.y + rowY(h, model, geo) * zoom;
      if (y > -20 && y < height + 20) rowSpans.push(span("axis-row", `H${h}`, { top: `${y}px` }));
    }
    if (geo.kvGroup && rowStep * geo.kvGroup >= ROW_LABEL_PX * 1.5) {
      for (let g = 0; g < model.nHeads / geo.kvGroup; g++) {
        const first = rowY(g * geo.kvGroup, model, geo);
        const last = rowY((g + 1) * geo.kvGroup - 1, model, geo);
        const top = pan.y + first * zoom - rowStep / 2;
        const size = (last - first) * zoom + rowStep;
        if (top + size > 0 && top < height) {
          rowSpans.push(span("axis-kv", `kv${g}`, { top: `${top}px`, height: `${size}px` }));
        }
      }
    }
    this.axes.querySelector(".axis-cols").replaceChildren(...colSpans);
    this.axes.querySelector(".axis-rows").replaceChildren(...rowSpans);
    this.axes.dataset.columns = String(colSpans.length);
    this.axes.dataset.rows = String(rowSpans.length);
  }
}

/** Show every n-th label (a power of 2) so that labels `step` px apart get `need` px. */
function thinning(step, need) {
  let every = 1;
  while (step * every < need && every < 1024) every *= 2;
  return every;
}

function span(cls, text, place) {
  const el = document.createElement("span");
  el.className = cls;
  el.textContent = text;
  Object.assign(el.style, place); // CSSOM, not a style attribute: the page's CSP allows it
  return el;
}
