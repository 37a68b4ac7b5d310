"""The Python API for notebooks: ``headgraph.open(db)``, sharing the queries layer.

>>> g = headgraph.open("headgraph.duckdb")                           # doctest: +SKIP
>>> for e in g.node("toy", "L1H2").feeders("K", top=3):            # doctest: +SKIP
...     print(e.source, round(e.score, 3), round(e.z, 1))
L0H2 0.248 18.7
L0H3 0.146 3.2
POS_EMBED 0.142 4.9

Results are the frozen records of :mod:`headgraph.queries.records` (``EdgeRow`` has
``source``, ``target``, ``kind``, ``score``, ``baseline``, ``null_std``, ``rank``, ``z``).
Each call holds the DuckDB file only while it runs, so an ingest can write between
calls (a call during an ingest raises :class:`~headgraph.errors.DatabaseLockedError`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from headgraph.queries.edges import EdgeKey, EdgePage, edge_page
from headgraph.queries.models import get_model, list_models
from headgraph.queries.nodes import feeders, get_node, list_nodes, readers, top_heads
from headgraph.queries.records import EdgeRow, ModelRow, NodeRow, ScoreRow
from headgraph.queries.scores import node_scores_of
from headgraph.queries.session import GraphDB, open_reader


@dataclass(frozen=True)
class NodeView:
    """One node of a stored model; ``row`` holds its stored metrics."""

    graph: Graph
    model: ModelRow
    row: NodeRow

    @property
    def name(self) -> str:
        return self.row.node

    def feeders(self, kind: str, top: int = 10, min_score: float | None = None) -> list[EdgeRow]:
        """The strongest sources this node reads through ``kind`` (Q, K, V, MLP, UNEMBED)."""
        with self.graph.db.session() as db:
            return feeders(db, self.model, self.row.node, kind, top, min_score)

    def readers(self, kind: str, top: int = 10, min_score: float | None = None) -> list[EdgeRow]:
        """The components that read this node's write most strongly through ``kind``."""
        with self.graph.db.session() as db:
            return readers(db, self.model, self.row.node, kind, top, min_score)

    def scores(self, probe: str | None = None) -> list[ScoreRow]:
        """Evidence rows about this node (of one probe if given)."""
        with self.graph.db.session() as db:
            return node_scores_of(db, self.model.model_id, [self.row.node], probe)[self.row.node]


@dataclass(frozen=True)
class ModelView:
    """One stored model; ``row`` holds its shape and provenance."""

    graph: Graph
    row: ModelRow

    def node(self, name: str) -> NodeView:
        with self.graph.db.session() as db:
            return NodeView(self.graph, self.row, get_node(db, self.row, name))

    def nodes(self, kind: str | None = None, layer: int | None = None) -> list[NodeRow]:
        with self.graph.db.session() as db:
            return list_nodes(db, self.row, kind, layer)

    def heads(self, order_by: str = "layer", descending: bool | None = None,
              first: int | None = None) -> list[NodeRow]:
        """Heads in residual-stream order, or by a metric (``"copying_ratio"``...,
        highest first unless ``descending=False``)."""
        down = (order_by != "layer") if descending is None else descending
        with self.graph.db.session() as db:
            return top_heads(db, self.row, order_by, down, first)

    def edges(self, kind: str | None = None, min_score: float | None = None, first: int = 100,
              after: EdgeKey | None = None) -> EdgePage:
        """A page of edges by score (pass ``page.end`` as ``after`` for the next one)."""
        with self.graph.db.session() as db:
            return edge_page(db, self.row.model_id, kind=kind, min_score=min_score, first=first,
                             after=after)


class Graph:
    """A headgraph database opened read-only (see :func:`open_graph`)."""

    def __init__(self, db: GraphDB) -> None:
        self.db = db

    def models(self, family: str | None = None) -> list[ModelRow]:
        with self.db.session() as db:
            return list_models(db, family)

    def model(self, name: str) -> ModelView:
        with self.db.session() as db:
            return ModelView(self, get_model(db, name))

    def node(self, model: str, name: str) -> NodeView:
        """``g.node("toy", "L1H2")``: one node of one model."""
        with self.db.session() as db:
            row = get_model(db, model)
            return NodeView(self, row, get_node(db, row, name))

    def graph(self, slug: str, model: str | None = None):
        """``g.graph("gemma-dollar")``: an imported attribution graph, with views as
        DataFrames and networkx (:mod:`headgraph.attribution.notebook`); ``model`` is
        needed only when graphs of several models share the slug."""
        from headgraph.attribution.notebook import open_graph

        return open_graph(self.db, slug, model)

    def graphs(self, model: str | None = None, prompt: str | None = None):
        """The imported attribution graphs (rows with slug, model, prompt, counts)."""
        from headgraph.attribution.notebook import graphs

        return graphs(self.db, model, prompt)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Graph:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"headgraph.Graph({str(self.db.target)!r})"


def open_graph(db: str | os.PathLike[str] | None = None) -> Graph:
    """Open a database (DuckDB path or URL; default ``$HEADGRAPH_DB``) for reading."""
    return Graph(open_reader(db, release=True))
