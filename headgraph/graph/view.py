"""A stored model's edges as arrays (and networkx graphs) for graph questions.

Path searches touch every edge into a target's ancestry, which for a GPT-2-XL-sized model
is millions of edges: far too many for networkx's ~300 bytes per edge, and too slow to
rebuild per question. A :class:`GraphView` holds one filtered edge set as numpy arrays
(about 20 bytes per edge), indexed by source and by target, and builds networkx graphs
only for the small subgraphs a client draws. Views are cached per (model, filter) for the
life of the process.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import networkx as nx
import numpy as np
from sqlalchemy import case, func, select

from headgraph.queries.arrow import edge_filter, fetch_arrow
from headgraph.queries.models import get_model
from headgraph.queries.nodes import EDGE_KINDS, check_kind
from headgraph.queries.records import ModelRow
from headgraph.queries.session import GraphDB
from headgraph.queries.structural import z_column
from headgraph.schema.tables import edges, nodes


@dataclass(frozen=True)
class ViewFilter:
    """Which edges a view holds: kinds, a minimum score, and optionally only each
    target's ``top_per_target`` strongest feeders per kind (an approximation knob)."""

    kinds: tuple[str, ...] = EDGE_KINDS
    min_score: float | None = None
    top_per_target: int | None = None

    def __post_init__(self) -> None:
        for k in self.kinds:
            check_kind(k)


class GraphView:
    """Edges of one model as arrays: ``src``, ``dst`` (node ids), ``kind`` (index into
    ``EDGE_KINDS``), ``score``, ``baseline``, ``z`` (the structural z; NaN where the edge
    has none, all NaN for a model ingested before it was stored); with CSR indexes by
    source and target."""

    def __init__(self, model: ModelRow, names: list[str], node_attrs: dict[str, dict],
                 src: np.ndarray, dst: np.ndarray, kind: np.ndarray, score: np.ndarray,
                 baseline: np.ndarray, z: np.ndarray | None = None) -> None:
        self.model = model
        self.names = names
        self.index = {n: i for i, n in enumerate(names)}
        self.node_attrs = node_attrs
        self.src, self.dst, self.kind = src, dst, kind
        self.score, self.baseline = score, baseline
        self.z = np.full(len(score), np.nan) if z is None else z
        n = len(names)
        self.out_order = np.argsort(src, kind="stable")
        self.out_ptr = np.searchsorted(src[self.out_order], np.arange(n + 1))
        self.in_order = np.argsort(dst, kind="stable")
        self.in_ptr = np.searchsorted(dst[self.in_order], np.arange(n + 1))

    def __len__(self) -> int:
        return len(self.score)

    def out_edges(self, node: int) -> np.ndarray:
        return self.out_order[self.out_ptr[node] : self.out_ptr[node + 1]]

    def in_edges(self, node: int) -> np.ndarray:
        return self.in_order[self.in_ptr[node] : self.in_ptr[node + 1]]

    def to_networkx(self, edge_ids: np.ndarray | None = None) -> nx.MultiDiGraph:
        """A networkx multigraph (one edge per kind) of all or some edges, with node
        metrics and edge ``kind``, ``score``, ``baseline``, ``z`` (None where absent)
        attributes."""
        ids = np.arange(len(self)) if edge_ids is None else np.asarray(edge_ids)
        g = nx.MultiDiGraph(model=self.model.name)
        used = set(self.src[ids].tolist()) | set(self.dst[ids].tolist())
        for i in sorted(used):
            g.add_node(self.names[i], **self.node_attrs.get(self.names[i], {}))
        for e in ids.tolist():
            g.add_edge(self.names[self.src[e]], self.names[self.dst[e]],
                       key=EDGE_KINDS[self.kind[e]], kind=EDGE_KINDS[self.kind[e]],
                       score=float(self.score[e]), baseline=float(self.baseline[e]),
                       z=None if np.isnan(self.z[e]) else float(self.z[e]))
        return g


def _node_attrs(db: GraphDB, model: ModelRow) -> tuple[list[str], dict[str, dict]]:
    """Node names in id order (the order the edge query numbers them) and their metrics."""
    rows = db.rows(select(nodes).where(nodes.c.model_id == model.model_id))
    ids = db.rows(select(_node_ids(model.model_id)))
    names = [r["node"] for r in sorted(ids, key=lambda r: r["id"])]
    attrs = {}
    for r in rows:
        attrs[r["node"]] = {k: v for k, v in r.items()
                            if k not in ("model_id", "node") and v is not None
                            and not (isinstance(v, float) and np.isnan(v))}
    return names, attrs


def _node_ids(model_id: int):
    """Node name -> dense id (0..n-1 in the database's order of names)."""
    return select(nodes.c.node, (func.row_number().over(order_by=nodes.c.node) - 1).label("id")
                  ).where(nodes.c.model_id == model_id).subquery()


def load_view(db: GraphDB, model: ModelRow, flt: ViewFilter) -> GraphView:
    """Read the filtered edges of ``model`` in one query, numbered in the database
    (joins on node names give integer ids, so no string crosses into Python)."""
    names, attrs = _node_attrs(db, model)
    ids = _node_ids(model.model_id)
    s_ids, t_ids = ids.alias("s_ids"), ids.alias("t_ids")
    kind = case({k: i for i, k in enumerate(EDGE_KINDS)}, value=edges.c.kind)
    stmt = (
        select(s_ids.c.id.label("src"), t_ids.c.id.label("dst"), kind.label("kind"),
               edges.c.score, edges.c.baseline, z_column(model.structural_z))
        .join(s_ids, s_ids.c.node == edges.c.source)
        .join(t_ids, t_ids.c.node == edges.c.target)
        .where(edge_filter(model.model_id, flt.kinds, flt.min_score, flt.top_per_target))
    )
    table = fetch_arrow(db, stmt)

    def col(name: str, dtype) -> np.ndarray:
        column = table.column(name)
        if column.null_count:
            column = column.fill_null(np.nan)
        return np.asarray(column.to_numpy(), dtype=dtype)

    return GraphView(model, names, attrs, col("src", np.int32), col("dst", np.int32),
                     col("kind", np.int8), col("score", np.float64), col("baseline", np.float64),
                     col("z", np.float64))


class ViewCache:
    """Views per (database, model, filter), least recently used first out."""

    def __init__(self, size: int = 16) -> None:
        self._size = size
        self._views: OrderedDict[tuple, GraphView] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, db: GraphDB, model_name: str, flt: ViewFilter) -> GraphView:
        model = get_model(db, model_name)
        key = (str(db.target), model.model_id, model.ingested_at, flt)
        with self._lock:
            if key in self._views:
                self._views.move_to_end(key)
                return self._views[key]
        view = load_view(db, model, flt)
        with self._lock:
            self._views[key] = view
            while len(self._views) > self._size:
                self._views.popitem(last=False)
        return view


VIEWS = ViewCache()
