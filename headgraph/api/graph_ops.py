"""The graph side's work for the API: synchronous functions of one request's
:class:`~headgraph.queries.session.GraphDB`.

Path searches, circuits and comparisons are CPU-bound (numpy, pandas, scipy), so resolvers
run them in a worker thread with ``await info.context.db.run(fn, ...)``: the event loop keeps
answering other requests, and the request's one connection serves one thread at a time.
The HTTP routes (:mod:`headgraph.api.export_routes`) call the same functions from their own worker
thread.

The modules of :mod:`headgraph.graph` are imported inside the functions: comparison pulls in
pandas and scipy (about half a second), which a server should not pay at start.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import and_, select

from headgraph.errors import BadInputError
from headgraph.queries.records import EdgeRow, ModelRow
from headgraph.queries.series import SeriesPoint, series
from headgraph.queries.session import GraphDB
from headgraph.queries.structural import edge_columns
from headgraph.schema.tables import edges

if TYPE_CHECKING:
    from headgraph.graph.compare import Comparison, EdgeChange
    from headgraph.graph.paths import Path
    from headgraph.graph.view import GraphView

COMPOSITION_KINDS = ("Q", "K", "V")
STREAM_ORDER = {"embed": 0, "pos_embed": 1, "head": 2, "mlp": 2, "unembed": 3}


@dataclass(frozen=True)
class PathAsk:
    """The arguments of one path search (see :func:`headgraph.graph.paths.top_paths`)."""

    target: str
    source: str | None = None
    kinds: tuple[str, ...] | None = None
    pattern: tuple[str, ...] | None = None
    max_length: int = 3
    top: int = 10
    min_score: float | None = None
    weight: str = "score"
    rank_by: str = "product"

    def __post_init__(self) -> None:
        if self.max_length < 1:
            raise BadInputError(f"maxLength must be at least 1, not {self.max_length}.")
        if self.pattern is not None and not self.pattern:
            raise BadInputError("pattern must name at least one kind (or be left out).")
        if self.pattern and self.kinds:
            outside = sorted(set(self.pattern) - set(self.kinds))
            if outside:
                raise BadInputError(f"pattern uses {', '.join(outside)}, which kinds leaves "
                                    "out; give one of them, or kinds that include the "
                                    "pattern's.")


def find_paths(db: GraphDB, model: ModelRow, ask: PathAsk) -> list[Path]:
    """The exact top paths into ``ask.target`` (:func:`~headgraph.graph.paths.top_paths`)
    over the model's edges with score >= ``ask.min_score``."""
    from headgraph.graph.paths import top_paths
    from headgraph.graph.view import VIEWS, ViewFilter

    if ask.top == 0:
        return []
    view = VIEWS.get(db, model.name, ViewFilter(min_score=ask.min_score))
    return top_paths(view, ask.target, ask.source, kinds=ask.kinds, pattern=ask.pattern,
                     max_length=ask.max_length, top=ask.top, weight=ask.weight,
                     rank_by=ask.rank_by)


@dataclass(frozen=True)
class UpstreamCircuit:
    """A node's upstream circuit with its edges as stored rows (strongest first)."""

    model_id: int
    root: str
    nodes: tuple[str, ...]
    edges: tuple[EdgeRow, ...]
    truncated: bool


def circuit_of(db: GraphDB, model: ModelRow, node: str, *, depth: int = 2,
               kinds: tuple[str, ...] | None = None, min_score: float | None = None,
               top_per_target: int | None = None, max_edges: int = 5000) -> UpstreamCircuit:
    """``node``'s upstream circuit (:func:`~headgraph.graph.upstream.upstream`): every edge
    that reaches it within ``depth`` hops through ``kinds`` (score >= ``min_score``; only
    each target's ``top_per_target`` strongest feeders if given), at most ``max_edges`` of
    them (the strongest; ``truncated`` says when the cap cut)."""
    from headgraph.graph.upstream import upstream
    from headgraph.graph.view import VIEWS, ViewFilter

    if depth < 1:
        raise BadInputError(f"depth must be at least 1, not {depth}.")
    view = VIEWS.get(db, model.name, ViewFilter(min_score=min_score,
                                                top_per_target=top_per_target))
    sub = upstream(view, node, depth=depth, kinds=kinds, max_edges=max_edges)
    rows: dict[tuple[str, str, str], EdgeRow] = {}
    if sub.edges:
        keys = {(e.source, e.target, e.kind) for e in sub.edges}
        c = edges.c
        stmt = select(*edge_columns(model.structural_z)).where(and_(
            c.model_id == model.model_id,
            c.target.in_(sorted({k[1] for k in keys})),
            c.source.in_(sorted({k[0] for k in keys})),
            c.kind.in_(sorted({k[2] for k in keys}))))
        for r in db.rows(stmt):
            key = (r["source"], r["target"], r["kind"])
            if key in keys:
                rows[key] = EdgeRow.from_row(r)
    ordered = tuple(rows[k] for k in ((e.source, e.target, e.kind) for e in sub.edges)
                    if k in rows)
    return UpstreamCircuit(model_id=model.model_id, root=node,
                   nodes=tuple(sorted(sub.nodes, key=lambda n: _stream_position(view, n))),
                   edges=ordered, truncated=sub.truncated)


def _stream_position(view: GraphView, name: str) -> tuple[int, int, bool, int]:
    """Residual-stream order (embeddings, each layer's heads then MLP, unembedding)."""
    attrs = view.node_attrs.get(name, {})
    kind = attrs.get("kind", "head")
    return (STREAM_ORDER.get(kind, 2), attrs.get("layer", -1), kind == "mlp",
            attrs.get("head", -1))


def compare_models(db: GraphDB, a: str, b: str, min_similarity: float = 0.0,
                   by: str = "auto") -> Comparison:
    """Match the heads of models ``a`` and ``b`` by ``by`` (auto, names or signature;
    :func:`~headgraph.graph.compare.match_heads`)."""
    from headgraph.graph.compare import match_heads

    if not 0.0 <= min_similarity <= 1.0:
        raise BadInputError(f"minSimilarity must be in [0, 1] (similarities are), not "
                            f"{min_similarity}.")
    return match_heads(db, a, b, min_similarity=min_similarity, by=by)


def changed_edges(db: GraphDB, comparison: Comparison, *, top: int = 20,
                  kinds: tuple[str, ...] = COMPOSITION_KINDS, present_z: float = 3.0,
                  heads_only: bool = True) -> list[EdgeChange]:
    """The edges that changed most under a comparison's matching
    (:func:`~headgraph.graph.compare.diff_edges`); head-to-head edges only unless
    ``heads_only`` is false."""
    from headgraph.graph.compare import diff_edges

    if top == 0:
        return []
    return diff_edges(db, comparison, top=top, kinds=kinds, present_z=present_z,
                      heads_only=heads_only)


def family_series(db: GraphDB, family: str, *, node: str | None = None,
                  source: str | None = None, target: str | None = None,
                  kind: str | None = None, metric: str | None = None) -> list[SeriesPoint]:
    """:func:`~headgraph.queries.series.series` (``Query.series``)."""
    return series(db, family, node=node, source=source, target=target, kind=kind,
                  metric=metric)
