"""PNG plots of a stored model: composition heatmaps, copying scores, checkpoint series.

matplotlib is imported inside each function (Agg backend), so the server starts without it.
"""

from __future__ import annotations

import io

import numpy as np
from sqlalchemy import and_, select

from headgraph.errors import BadInputError
from headgraph.queries.models import get_model
from headgraph.queries.nodes import check_kind
from headgraph.queries.series import SeriesPoint
from headgraph.queries.session import GraphDB
from headgraph.schema.tables import edges, nodes

DPI = 100


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    _pyplot().close(fig)
    return buf.getvalue()


def composition_heatmap(db: GraphDB, model_name: str, kind: str = "K", *,
                        size: tuple[float, float] = (8.0, 7.0)) -> bytes:
    """Head x head matrix of ``kind``-composition scores (rows: sources, columns: targets),
    with layer boundaries marked; empty where composition cannot flow."""
    check_kind(kind)
    if kind not in ("Q", "K", "V"):
        raise BadInputError("the head x head heatmap needs kind Q, K or V.")
    model = get_model(db, model_name)
    H, L = model.n_heads, model.n_layers
    rows = db.rows(select(edges.c.source, edges.c.target, edges.c.score).where(and_(
        edges.c.model_id == model.model_id, edges.c.kind == kind,
        edges.c.source.like("L%"), edges.c.target.like("L%"))))
    grid = np.full((L * H, L * H), np.nan)

    def index(name: str) -> int:
        layer, head = name[1:].split("H")
        return int(layer) * H + int(head)

    for r in rows:
        grid[index(r["source"]), index(r["target"])] = r["score"]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=size)
    im = ax.imshow(grid, cmap="viridis", interpolation="nearest")
    for b in range(1, L):
        ax.axhline(b * H - 0.5, color="white", lw=0.6)
        ax.axvline(b * H - 0.5, color="white", lw=0.6)
    if L * H <= 48:
        labels = [f"L{i // H}H{i % H}" for i in range(L * H)]
        ax.set_xticks(range(L * H), labels, rotation=90, fontsize=7)
        ax.set_yticks(range(L * H), labels, fontsize=7)
    else:
        ax.set_xticks([layer * H for layer in range(L)], [f"L{layer}" for layer in range(L)],
                      fontsize=6)
        ax.set_yticks([layer * H for layer in range(L)], [f"L{layer}" for layer in range(L)],
                      fontsize=6)
    ax.set_xlabel("target head (reads)")
    ax.set_ylabel("source head (writes)")
    ax.set_title(f"{model.name}: {kind}-composition")
    fig.colorbar(im, ax=ax, label="score")
    fig.tight_layout()
    return _png(fig)


def copying_chart(db: GraphDB, model_name: str, *, size: tuple[float, float] = (8.0, 4.0)
                  ) -> bytes:
    """Bar chart of every head's OV copying ratio (Σλ/Σ|λ|), layers in colour."""
    model = get_model(db, model_name)
    rows = db.rows(select(nodes.c.node, nodes.c.layer, nodes.c.copying_ratio).where(and_(
        nodes.c.model_id == model.model_id, nodes.c.kind == "head"))
        .order_by(nodes.c.layer, nodes.c.head))
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=size)
    colours = plt.get_cmap("tab10")
    ax.bar(range(len(rows)), [r["copying_ratio"] for r in rows],
           color=[colours(r["layer"] % 10) for r in rows])
    if len(rows) <= 64:
        ax.set_xticks(range(len(rows)), [r["node"] for r in rows], rotation=90, fontsize=7)
    ax.axhline(0, color="black", lw=0.5)
    ax.set_ylim(-1.05, 1.05)
    ax.set_ylabel("copying ratio  Σλ/Σ|λ|")
    ax.set_title(f"{model.name}: OV copying per head")
    fig.tight_layout()
    return _png(fig)


def series_chart(points: list[SeriesPoint], title: str, *,
                 size: tuple[float, float] = (7.0, 4.0)) -> bytes:
    """A metric over training steps."""
    if not points:
        raise BadInputError("the series is empty: no checkpoint of that family has the metric.")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=size)
    ax.plot([p.step for p in points], [p.value for p in points], marker="o")
    ax.set_xlabel("training step")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)
