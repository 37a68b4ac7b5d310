"""The read side of attribution graphs: list them, and serve views of a big graph piece
by piece, from the database alone (no torch, no JSON file).

Views
-----
``pruned_view``   circuit-tracer's pruning (:mod:`headgraph.attribution.pruning`), computed
                  by :mod:`headgraph.attribution.pruned` from numbers stored at
                  import: the node step needs no links (the kept nodes are the first
                  ``K`` nids, ``K`` from each node's influence and its cumulative share);
                  the edge step, which depends on ``K`` (it runs on the *pruned*
                  adjacency), reads the stored edge scores at the default node threshold
                  and otherwise computes on the links between the first ``K`` nids,
                  stored grouped by target height. Views are cached per process.
``neighbourhood`` around one node (:mod:`headgraph.attribution.neighbourhood`).

Views are returned as :class:`GraphSlice` records; :mod:`headgraph.attribution.export`
writes them (and whole graphs) as Neuronpedia JSON.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from sqlalchemy import func, literal_column, select

from headgraph.attribution import pruning
from headgraph.attribution.format import decode_node
from headgraph.errors import (
    DatabaseError,
    HeadgraphError,
    NodeNotFoundError,
)
from headgraph.queries.arrow import fetch_arrow, has_table
from headgraph.queries.session import GraphDB
from headgraph.schema import tables as t

CACHE_LOCK = threading.Lock()


class GraphNotFoundError(HeadgraphError):
    """An attribution graph slug that is not in the database."""

    code = "GRAPH_NOT_FOUND"
    exit_status = 3


@dataclass(frozen=True)
class GraphRow:
    """One stored attribution graph (``attribution_graphs``)."""

    graph_id: int
    slug: str
    model: str
    prompt: str | None
    n_nodes: int
    n_links: int
    n_pinned: int
    n_link_extras: int
    source: str
    imported_at: dt.datetime
    document: str  # JSON: the file's fields but nodes and links
    levels: int | None = None  # links grouped by target height; None: stored before
    pruned_k: int | None = None  # K of the stored default view (attribution_pruned_links)

    @classmethod
    def from_row(cls, row: Any) -> GraphRow:
        """From a row of ``attribution_graphs``, with or without the later columns."""
        return cls(**{f: row.get(f) for f in cls.__dataclass_fields__})

    @property
    def header(self) -> dict[str, Any]:
        return json.loads(self.document)


@dataclass(frozen=True)
class ViewNode:
    """A node of a view: its place (``nid`` keep order, ``idx`` file order), role,
    computed influence ``score`` and cumulative share ``cum``, and its fields as in the
    file (``fields``)."""

    nid: int
    idx: int
    node_id: str
    role: int
    score: float
    cum: float
    fields: dict[str, Any]


@dataclass(frozen=True)
class ViewLink:
    """A link of a view, by node id; ``edge_score`` is ``E`` of a pruned view (None in a
    neighbourhood); ``extra`` the link's other file fields as JSON."""

    idx: int
    source: str
    target: str
    weight: float
    edge_score: float | None
    extra: str | None


@dataclass(frozen=True)
class GraphSlice:
    """Part of a graph: nodes in file order, and links as an Arrow table (``idx``,
    ``source`` and ``target`` nids, ``weight``, ``extra``, ``edge_score``; a big view never
    becomes one Python object per link): a pruned view's strongest first when read from
    the stored default view, else grouped by target (targets nearest the logits first);
    a neighbourhood's in file order. ``truncated`` when ``max_links`` cut links (the
    strongest were kept)."""

    graph: GraphRow
    nodes: list[ViewNode]
    links: pa.Table
    truncated: bool
    params: dict[str, Any]

    def node_ids(self) -> pa.Array:
        """``node_id`` by nid (null for nids not in the view), for ``pc.take``."""
        size = 1 + max((n.nid for n in self.nodes), default=-1)
        ids: list[str | None] = [None] * size
        for n in self.nodes:
            ids[n.nid] = n.node_id
        return pa.array(ids, pa.string())

    def link_records(self, limit: int | None = None) -> list[ViewLink]:
        """The first ``limit`` links (all if None) as records with node ids."""
        table = self.links if limit is None else self.links.slice(0, limit)
        ids = self.node_ids().to_pylist()
        cols = [table.column(c).to_pylist() for c in
                ("idx", "source", "target", "weight", "edge_score", "extra")]
        return [ViewLink(i, ids[s], ids[d], w, e, x)
                for i, s, d, w, e, x in zip(*cols, strict=True)]


def has_attribution_tables(db: GraphDB) -> bool:
    return has_table(db, "attribution_graphs")


def list_graphs(db: GraphDB, model: str | None = None, prompt: str | None = None,
                first: int | None = None) -> list[GraphRow]:
    """Stored graphs by model then slug; ``model`` exact, ``prompt`` a case-insensitive
    substring of the prompt."""
    if not has_attribution_tables(db):
        return []
    g = t.attribution_graphs.c
    stmt = all_columns(t.attribution_graphs)
    if model is not None:
        stmt = stmt.where(g.model == model)
    if prompt is not None:
        stmt = stmt.where(func.lower(g.prompt).contains(prompt.lower(), autoescape=True))
    stmt = stmt.order_by(g.model, g.slug)
    if first is not None:
        stmt = stmt.limit(first)
    return [GraphRow.from_row(r) for r in db.rows(stmt)]


def get_graph(db: GraphDB, slug: str) -> GraphRow:
    """The graph ``slug``; :class:`GraphNotFoundError` if there is none."""
    return graph_and_node(db, slug, None)[0]


def graph_and_node(db: GraphDB, slug: str, node_id: str | None) -> tuple[GraphRow, int | None]:
    """The graph ``slug`` and the ``nid`` of its node ``node_id`` (when given);
    :class:`GraphNotFoundError` / :class:`NodeNotFoundError`."""
    g = t.attribution_graphs.c
    try:  # straight to Arrow: a third of the time of a SQLAlchemy row on DuckDB
        rows = fetch_arrow(db, all_columns(t.attribution_graphs).where(g.slug == slug)
                           ).to_pylist()
    except DatabaseError:
        if has_attribution_tables(db):
            raise
        rows = []  # a file older than the attribution tables
    if not rows:
        known = [x.slug for x in list_graphs(db, first=20)]
        raise GraphNotFoundError(f"no attribution graph with slug {slug!r} in {db.target}. "
                                 f"Stored: {', '.join(known) or 'none'}.")
    graph = GraphRow.from_row(rows[0])
    with CACHE_LOCK:
        _ROWS[(str(db.target), slug)] = graph
        _ROWS.move_to_end((str(db.target), slug))
        while len(_ROWS) > CACHED_ROWS:
            _ROWS.popitem(last=False)
    if node_id is None:
        return graph, None
    nid = graph_nodes(db, graph).by_id.get(node_id)
    if nid is None:
        raise NodeNotFoundError(f"graph {slug!r} has no node {node_id!r}.")
    return graph, nid


_ROWS: OrderedDict[tuple[str, str], GraphRow] = OrderedDict()
CACHED_ROWS = 1024  # graph rows remembered by (database, slug), least recently read out


def known_graph(db: GraphDB, slug: str) -> GraphRow | None:
    """The row last read for ``slug`` in this process, if any. It may be stale (the graph
    replaced since): a caller proves it in the statement that uses it
    (:func:`still_stored`) and reads afresh with :func:`graph_and_node` if not."""
    with CACHE_LOCK:
        return _ROWS.get((str(db.target), slug))


def forget_graph(db: GraphDB, slug: str) -> None:
    with CACHE_LOCK:
        _ROWS.pop((str(db.target), slug), None)


def still_stored(graph: GraphRow) -> str:
    """SQL for one marker link (``idx`` -1) while ``graph`` is stored: a stored graph never
    changes and a replaced one gets a new id, so its id alone proves a remembered row, in
    the same statement (same snapshot) as the links read with it."""
    return ("SELECT -1 AS idx, -1 AS source, -1 AS target, CAST(0 AS DOUBLE PRECISION) "
            f"AS weight, FALSE AS inward FROM attribution_graphs WHERE graph_id = "
            f"{int(graph.graph_id)}")


def all_columns(table: t.Table) -> Any:
    """``SELECT *`` of ``table``: every column the database has, so a file written before
    the :data:`~headgraph.schema.tables.ADDED_COLUMNS` still reads."""
    return select(literal_column("*")).select_from(table)


@dataclass(frozen=True)
class GraphNodes:
    """Every node of a graph: ``nodes[nid]``, ``by_id`` node_id -> nid, and by nid the
    columns a pruned view needs (``heights`` None for a graph stored before them)."""

    nodes: tuple[ViewNode, ...]
    by_id: dict[str, int]
    idx: np.ndarray  # file position by nid
    roles: np.ndarray
    token_prob: np.ndarray
    scores: np.ndarray
    cum: np.ndarray
    heights: np.ndarray | None

    def keep_count(self, node_threshold: float) -> int:
        """``K``: the nodes kept at ``node_threshold`` are ``nid < K`` (module doc)."""
        return pruning.keep_count(self.scores, self.cum, self.roles, node_threshold)


_NODES: OrderedDict[tuple, GraphNodes] = OrderedDict()
CACHED_NODES = 400_000  # nodes held by the node cache of one process, all graphs together


def graph_nodes(db: GraphDB, graph: GraphRow) -> GraphNodes:
    """The graph's nodes, read once per process (least recently used graph first out,
    at most :data:`CACHED_NODES` nodes in all; keyed by database, graph id and import
    time: a stored graph never changes, a re-imported one has a new id)."""
    key = (str(db.target), graph.graph_id, graph.imported_at)
    with CACHE_LOCK:
        if key in _NODES:
            _NODES.move_to_end(key)
            return _NODES[key]
    n = t.attribution_nodes.c
    table = fetch_arrow(db, all_columns(t.attribution_nodes)
                        .where(n.graph_id == graph.graph_id).order_by(n.nid))
    rows = table.to_pylist()
    heights = (_np(table, "height", np.int16)
               if graph.levels is not None and "height" in table.column_names else None)
    found = GraphNodes(tuple(ViewNode(r["nid"], r["idx"], r["node_id"], r["role"], r["score"],
                                      r["cum"], decode_node(r)) for r in rows),
                       {r["node_id"]: r["nid"] for r in rows}, _np(table, "idx", np.int64),
                       _np(table, "role", np.int16), _np(table, "token_prob", np.float64),
                       _np(table, "score", np.float64), _np(table, "cum", np.float64), heights)
    with CACHE_LOCK:
        _NODES[key] = found
        while len(_NODES) > 1 and sum(len(x.nodes) for x in _NODES.values()) > CACHED_NODES:
            _NODES.popitem(last=False)
    return found


def _np(table: pa.Table, name: str, dtype: Any) -> np.ndarray:
    col = table.column(name)
    if col.null_count:
        col = col.fill_null(np.nan if np.dtype(dtype).kind == "f" else 0)
    return np.asarray(col.to_numpy(), dtype)


def node_records(db: GraphDB, graph: GraphRow, nids: np.ndarray) -> dict[int, ViewNode]:
    nodes = graph_nodes(db, graph).nodes
    return {int(i): nodes[int(i)] for i in nids}


def in_file_order(nodes: dict[int, ViewNode]) -> list[ViewNode]:
    return sorted(nodes.values(), key=lambda x: x.idx)
