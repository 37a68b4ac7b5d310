"""Plots of a stored model: composition heatmaps, copying scores, checkpoint series.

Each ``*_figure`` function returns a matplotlib :class:`~matplotlib.figure.Figure` (a
notebook shows it; ``fig.savefig(path)`` writes it); :func:`png` renders one to PNG bytes
for the HTTP routes and the CLI's ``-o``. Figures are built without pyplot (no global state,
no display needed), and matplotlib is imported inside each function, so a server starts
without it.

Reading rules, so that a plot cannot be misread:

* heatmaps colour each head pair by its ``z`` (the structural z: how far the pair stands
  above what the model's own residual-stream structure explains), on a diverging scale
  centred on 0: red above the null, blue below it, white at it. A model ingested before
  headgraph stored that z is coloured by its Gaussian z instead, and the title says so. A
  raw score means little across shapes, so it is printed in the cell where the grid is
  small enough to read;
* every plot's title says what is plotted and on which model (or family);
* colours that encode something have a legend or a colour bar.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import and_, select

from headgraph.errors import BadInputError
from headgraph.queries.models import get_model
from headgraph.queries.nodes import check_kind
from headgraph.queries.series import SeriesPoint
from headgraph.queries.session import GraphDB
from headgraph.queries.structural import z_column
from headgraph.schema.tables import edges, nodes

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 100
ANNOTATE_UP_TO = 16
"""Heatmaps of at most this many heads print each cell's raw score."""
KIND_NAMES = {"Q": "Q-composition (source's write read by the target's queries)",
              "K": "K-composition (source's write read by the target's keys)",
              "V": "V-composition (source's write moved on by the target's values)"}


def _figure(size: tuple[float, float]) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=size, dpi=DPI)


def png(fig: Figure) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def composition_figure(db: GraphDB, model_name: str, kind: str = "K", *,
                       size: tuple[float, float] = (8.0, 7.0)) -> Figure:
    """Head x head matrix of ``kind``-composition (rows: sources, columns: targets), each
    cell coloured by its z on a diverging scale around 0 (raw score printed in the cell on
    small models), layer boundaries marked; empty where composition cannot flow."""
    check_kind(kind)
    if kind not in ("Q", "K", "V"):
        raise BadInputError("the head x head heatmap needs kind Q, K or V.")
    model = get_model(db, model_name)
    H, L = model.n_heads, model.n_layers
    structural = model.structural_z
    rows = db.rows(select(edges.c.source, edges.c.target, edges.c.score, edges.c.baseline,
                          edges.c.null_std, z_column(structural)).where(and_(
        edges.c.model_id == model.model_id, edges.c.kind == kind,
        edges.c.source.like("L%"), edges.c.target.like("L%"))))
    z = np.full((L * H, L * H), np.nan)
    score = np.full((L * H, L * H), np.nan)

    def index(name: str) -> int:
        layer, head = name[1:].split("H")
        return int(layer) * H + int(head)

    for r in rows:
        i, j = index(r["source"]), index(r["target"])
        score[i, j] = r["score"]
        if structural:
            z[i, j] = np.nan if r["z"] is None else r["z"]
        elif r["null_std"]:
            z[i, j] = (r["score"] - r["baseline"]) / r["null_std"]
    fig = _figure(size)
    ax = fig.subplots()
    top = float(np.nanmax(np.abs(z))) if np.isfinite(z).any() else 1.0
    im = ax.imshow(z, cmap="RdBu_r", vmin=-top, vmax=top, interpolation="nearest")
    for b in range(1, L):
        ax.axhline(b * H - 0.5, color="0.5", lw=0.6)
        ax.axvline(b * H - 0.5, color="0.5", lw=0.6)
    if L * H <= 48:
        labels = [f"L{i // H}H{i % H}" for i in range(L * H)]
        ax.set_xticks(range(L * H), labels, rotation=90, fontsize=7)
        ax.set_yticks(range(L * H), labels, fontsize=7)
    else:
        ticks = [layer * H for layer in range(L)]
        ax.set_xticks(ticks, [f"L{layer}" for layer in range(L)], fontsize=6)
        ax.set_yticks(ticks, [f"L{layer}" for layer in range(L)], fontsize=6)
    if L * H <= ANNOTATE_UP_TO:
        for i, j in zip(*np.nonzero(np.isfinite(score)), strict=True):
            strong = abs(z[i, j]) > 0.6 * top if np.isfinite(z[i, j]) else False
            ax.text(j, i, f"{score[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if strong else "black")
    ax.set_xlabel("target head (reads)")
    ax.set_ylabel("source head (writes)")
    note = ", raw score in each cell" if L * H <= ANNOTATE_UP_TO else ""
    what = ("z above what the model's structure explains" if structural else
            "Gaussian z (ingested before the structural null was stored)")
    ax.set_title(f"{model.name}: {KIND_NAMES[kind]}\ncolour: {what}{note}", fontsize=9)
    fig.colorbar(im, ax=ax, label="structural z" if structural else
                 "Gaussian z = (score - baseline) / null std")
    fig.tight_layout()
    return fig


def copying_figure(db: GraphDB, model_name: str, *,
                   size: tuple[float, float] = (8.0, 4.0)) -> Figure:
    """Every head's OV copying ratio (Σλ/Σ|λ| of the full OV circuit), one bar per head in
    residual-stream order, coloured by layer (a legend, or a colour bar past 10 layers)."""
    model = get_model(db, model_name)
    rows = db.rows(select(nodes.c.node, nodes.c.layer, nodes.c.copying_ratio).where(and_(
        nodes.c.model_id == model.model_id, nodes.c.kind == "head"))
        .order_by(nodes.c.layer, nodes.c.head))
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.patches import Patch

    fig = _figure(size)
    ax = fig.subplots()
    L = model.n_layers
    few = L <= 10
    cmap = colormaps["tab10"] if few else colormaps["viridis"]
    norm = Normalize(0, max(L - 1, 1))

    def colour(layer: int):
        return cmap(layer % 10) if few else cmap(norm(layer))

    values = [r["copying_ratio"] if r["copying_ratio"] is not None else np.nan for r in rows]
    ax.bar(range(len(rows)), values, color=[colour(r["layer"]) for r in rows])
    if len(rows) <= 64:
        ax.set_xticks(range(len(rows)), [r["node"] for r in rows], rotation=90, fontsize=7)
    else:
        ax.set_xticks([])
        ax.set_xlabel("heads in residual-stream order")
    ax.axhline(0, color="black", lw=0.5)
    ax.axhline(0.7, color="0.6", lw=0.5, ls="--")
    ax.axhline(-0.7, color="0.6", lw=0.5, ls="--")
    ax.set_ylim(-1.05, 1.05)
    ax.set_ylabel("copying ratio  Σλ/Σ|λ|")
    ax.set_title(f"{model.name}: OV copying ratio per head (+1 copies, -1 suppresses; "
                 "dashed: the copying / suppression role thresholds)", fontsize=9)
    if few:
        ax.legend(handles=[Patch(color=colour(layer), label=f"layer {layer}")
                           for layer in range(L)], fontsize=7, ncols=min(L, 5),
                  loc="lower left")
    else:
        fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="layer")
    fig.tight_layout()
    return fig


def series_figure(points: list[SeriesPoint], what: str, family: str, *,
                  size: tuple[float, float] = (7.0, 4.0)) -> Figure:
    """``what`` (e.g. ``"K score L0H2 -> L1H2"``) across the checkpoints of ``family``."""
    if not points:
        raise BadInputError("the series is empty: no checkpoint of that family has the metric.")
    fig = _figure(size)
    ax = fig.subplots()
    ax.plot([p.step for p in points], [p.value for p in points], marker="o")
    for p in points:
        ax.annotate(p.model, (p.step, p.value), fontsize=6, xytext=(3, 3),
                    textcoords="offset points")
    ax.set_xlabel("training step")
    ax.set_ylabel(what)
    ax.set_title(f"{family}: {what}, by training step", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def series_label(node: str | None, source: str | None, target: str | None,
                 kind: str | None, metric: str | None) -> str:
    """What a series plots, in words: ``"copying_ratio of L1H2"``, ``"K score L0H2 -> L1H2"``."""
    if node is not None:
        return f"{metric or 'copying_ratio'} of {node}"
    return f"{kind} {metric or 'score'} {source} -> {target}"


def composition_heatmap(db: GraphDB, model_name: str, kind: str = "K", **kw) -> bytes:
    """:func:`composition_figure` as PNG bytes."""
    return png(composition_figure(db, model_name, kind, **kw))


def copying_chart(db: GraphDB, model_name: str, **kw) -> bytes:
    """:func:`copying_figure` as PNG bytes."""
    return png(copying_figure(db, model_name, **kw))


def series_chart(points: list[SeriesPoint], what: str, family: str, **kw) -> bytes:
    """:func:`series_figure` as PNG bytes."""
    return png(series_figure(points, what, family, **kw))
