"""The read side of attribution graphs: list them, find one by model and slug, and serve
views of a big graph piece by piece, from the database alone (no torch, no JSON file).

Graphs are keyed by (model, slug), as Neuronpedia keys them; a slug alone finds a graph
while no other model has one of that slug (:class:`GraphAmbiguousError` otherwise).

Views
-----
``graph_view``    the view a user asks for (:mod:`headgraph.attribution.views`): by default
                  Neuronpedia's filter on the file's own ``influence`` for files that hold
                  it (circuit-tracer and Neuronpedia files are already pruned), else
                  circuit-tracer's pruning recomputed on the stored links; pinned nodes
                  are kept in both.
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
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
from sqlalchemy import func, literal_column, select

from headgraph.attribution import pruning
from headgraph.attribution.format import decode_node
from headgraph.attribution.shared_ids import node_key
from headgraph.errors import (
    BadInputError,
    DatabaseError,
    HeadgraphError,
    NodeNotFoundError,
)
from headgraph.queries.arrow import fetch_arrow, has_table
from headgraph.queries.session import GraphDB
from headgraph.schema import tables as t

CACHE_LOCK = threading.Lock()
ALWAYS_SHOWN = ("embedding", "logit")
"""``feature_type`` of the nodes Neuronpedia's influence filter always shows."""


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
    document: str = field(repr=False)  # JSON: the file's fields but nodes and links
    levels: int | None = None  # links grouped by target height; None: stored before
    pruned_k: int | None = None  # K of the stored default view (attribution_pruned_links)

    @classmethod
    def from_row(cls, row: Any) -> GraphRow:
        """From a row of ``attribution_graphs``, with or without the later columns."""
        return cls(**{f: row.get(f) for f in cls.__dataclass_fields__})

    @property
    def header(self) -> dict[str, Any]:
        """The file's fields but nodes and links (a fresh copy: callers may change it)."""
        return json.loads(self.document)

    @property
    def name(self) -> str:
        """``model/slug``: how messages name the graph."""
        return f"{self.model}/{self.slug}"

    @property
    def pinned_ids(self) -> tuple[str, ...]:
        """``qParams.pinnedIds``: node ids a user pinned in Neuronpedia (kept in every view)."""
        q = self.header.get("qParams")
        ids = q.get("pinnedIds") if isinstance(q, dict) else None
        return tuple(x for x in ids if isinstance(x, str)) if isinstance(ids, list) else ()

    @property
    def node_threshold(self) -> float | None:
        """``metadata.node_threshold``: the threshold circuit-tracer pruned the file at, where
        Neuronpedia's influence slider starts; None when absent or not a positive number
        (Neuronpedia then filters no node)."""
        meta = self.header.get("metadata")
        value = meta.get("node_threshold") if isinstance(meta, dict) else None
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            return None
        return float(value)


@dataclass(frozen=True)
class ViewNode:
    """A node of a view: its place (``nid`` keep order, ``idx`` file order), role,
    influence recomputed on the stored graph (``score``) and its cumulative share
    (``cum``), its fields as in the file (``fields``: the file's ``influence`` among
    them), and ``key``: ``node_id``, or ``node_id@idx`` when two nodes share the id
    (:mod:`headgraph.attribution.shared_ids`)."""

    nid: int
    idx: int
    node_id: str
    role: int
    score: float
    cum: float
    fields: dict[str, Any]
    key: str = ""

    @property
    def influence(self) -> float | None:
        """The file's ``influence`` (circuit-tracer: the node's cumulative share of the
        influence on the whole, unpruned graph); None when the file has none."""
        value = self.fields.get("influence")
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return float(value)


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

    def node_ids(self, keys: bool = False) -> pa.Array:
        """``node_id`` (``key`` with ``keys``) by nid, null for nids not in the view, for
        ``pc.take``."""
        size = 1 + max((n.nid for n in self.nodes), default=-1)
        ids: list[str | None] = [None] * size
        for n in self.nodes:
            ids[n.nid] = n.key if keys else n.node_id
        return pa.array(ids, pa.string())

    def link_records(self, limit: int | None = None, keys: bool = False) -> list[ViewLink]:
        """The first ``limit`` links (all if None) as records with node ids (node keys
        with ``keys``: unique where the file's ids repeat)."""
        table = self.links if limit is None else self.links.slice(0, limit)
        ids = self.node_ids(keys).to_pylist()
        cols = [table.column(c).to_pylist() for c in
                ("idx", "source", "target", "weight", "edge_score", "extra")]
        return [ViewLink(i, ids[s], ids[d], w, e, x)
                for i, s, d, w, e, x in zip(*cols, strict=True)]


def has_attribution_tables(db: GraphDB) -> bool:
    return has_table(db, "attribution_graphs")


class GraphAmbiguousError(BadInputError):
    """A slug that names graphs of more than one model, asked for without a model."""

    code = "GRAPH_AMBIGUOUS"


def list_graphs(db: GraphDB, model: str | None = None, prompt: str | None = None,
                first: int | None = None, slug: str | None = None) -> list[GraphRow]:
    """Stored graphs by model then slug; ``model`` and ``slug`` exact, ``prompt`` a
    case-insensitive substring of the prompt."""
    if not has_attribution_tables(db):
        return []
    g = t.attribution_graphs.c
    stmt = all_columns(t.attribution_graphs)
    if model is not None:
        stmt = stmt.where(g.model == model)
    if slug is not None:
        stmt = stmt.where(g.slug == slug)
    if prompt is not None:
        stmt = stmt.where(func.lower(g.prompt).contains(prompt.lower(), autoescape=True))
    stmt = stmt.order_by(g.model, g.slug)
    if first is not None:
        stmt = stmt.limit(first)
    return [GraphRow.from_row(r) for r in db.rows(stmt)]


def get_graph(db: GraphDB, slug: str, model: str | None = None) -> GraphRow:
    """The graph ``slug`` of ``model`` (of any model while the slug is unique);
    :class:`GraphNotFoundError`, or :class:`GraphAmbiguousError` for a slug of several
    models asked for without one."""
    return graph_and_node(db, slug, None, model)[0]


def graph_and_node(db: GraphDB, slug: str, node_id: str | None, model: str | None = None
                   ) -> tuple[GraphRow, int | None]:
    """The graph ``slug`` (of ``model`` if given) and the ``nid`` of its node ``node_id``
    (a node id or key, when given); :class:`GraphNotFoundError`, :class:`GraphAmbiguousError`,
    :class:`NodeNotFoundError`."""
    g = t.attribution_graphs.c
    stmt = all_columns(t.attribution_graphs).where(g.slug == slug)
    if model is not None:
        stmt = stmt.where(g.model == model)
    try:  # straight to Arrow: a third of the time of a SQLAlchemy row on DuckDB
        rows = fetch_arrow(db, stmt).to_pylist()
    except DatabaseError:
        if has_attribution_tables(db):
            raise
        rows = []  # a file older than the attribution tables
    if not rows:
        known = [x.name for x in list_graphs(db, first=20)]
        of = f" of model {model!r}" if model is not None else ""
        raise GraphNotFoundError(f"no attribution graph with slug {slug!r}{of} in {db.target}. "
                                 f"Stored (model/slug): {', '.join(known) or 'none'}.")
    if len(rows) > 1:
        models = sorted(r["model"] for r in rows)
        raise GraphAmbiguousError(
            f"slug {slug!r} names graphs of {len(rows)} models ({', '.join(models[:10])}): "
            "name the model (/graphs/{model}/{slug}.json, or model: in GraphQL).")
    graph = GraphRow.from_row(rows[0])
    remember_graph(db, graph, model)
    if node_id is None:
        return graph, None
    return graph, graph_nodes(db, graph).nid_of(node_id, graph)


_ROWS: OrderedDict[tuple[str, str | None, str], GraphRow] = OrderedDict()
CACHED_ROWS = 1024  # graph rows remembered by (database, model, slug), least recently read out


def remember_graph(db: GraphDB, graph: GraphRow, model: str | None) -> None:
    """Remember ``graph`` as the answer for (database, ``model``, slug): a lookup without a
    model is remembered apart, so one with a model never meets it."""
    key = (str(db.target), model, graph.slug)
    with CACHE_LOCK:
        _ROWS[key] = graph
        _ROWS.move_to_end(key)
        while len(_ROWS) > CACHED_ROWS:
            _ROWS.popitem(last=False)


def known_graph(db: GraphDB, slug: str, model: str | None = None) -> GraphRow | None:
    """The row last read for ``slug`` (and ``model``) in this process, if any. It may be
    stale (the graph replaced since, or, asked without a model, another model's graph of
    the slug stored since): a caller proves it in the statement that uses it
    (:func:`still_stored`) and reads afresh with :func:`graph_and_node` if not."""
    with CACHE_LOCK:
        return _ROWS.get((str(db.target), model, slug))


def forget_graph(db: GraphDB, slug: str, model: str | None = None) -> None:
    with CACHE_LOCK:
        _ROWS.pop((str(db.target), model, slug), None)


def still_stored(graph: GraphRow, alone: bool = False) -> str:
    """SQL for one marker link (``idx`` -1) while ``graph`` is stored: a stored graph never
    changes and a replaced one gets a new id, so its id alone proves a remembered row, in
    the same statement (same snapshot) as the links read with it. With ``alone`` (a row
    found without naming the model), also only while no other model's graph has its slug."""
    sql = ("SELECT -1 AS idx, -1 AS source, -1 AS target, CAST(0 AS DOUBLE PRECISION) "
           f"AS weight, FALSE AS inward FROM attribution_graphs WHERE graph_id = "
           f"{int(graph.graph_id)}")
    if alone:
        sql += (" AND NOT EXISTS (SELECT 1 FROM attribution_graphs o WHERE o.slug = "
                "attribution_graphs.slug AND o.graph_id <> attribution_graphs.graph_id)")
    return sql


def all_columns(table: t.Table) -> Any:
    """``SELECT *`` of ``table``: every column the database has, so a file written before
    the :data:`~headgraph.schema.tables.ADDED_COLUMNS` still reads."""
    return select(literal_column("*")).select_from(table)


@dataclass(frozen=True)
class GraphNodes:
    """Every node of a graph: ``nodes[nid]``, ``by_key`` node key -> nid, ``by_id`` node_id
    -> its nids (two where circuit-tracer's ids collide), and by nid the columns a view
    needs: the file's ``influence`` (NaN where it has none), whether Neuronpedia always
    shows the node (``always``: an embedding or a logit), and the recomputed columns
    (``heights`` None for a graph stored before them)."""

    nodes: tuple[ViewNode, ...]
    by_key: dict[str, int]
    by_id: dict[str, tuple[int, ...]]
    idx: np.ndarray  # file position by nid
    roles: np.ndarray
    token_prob: np.ndarray
    scores: np.ndarray
    cum: np.ndarray
    heights: np.ndarray | None
    influence: np.ndarray
    always: np.ndarray

    def keep_count(self, node_threshold: float) -> int:
        """``K``: the nodes kept at ``node_threshold`` are ``nid < K`` (module doc)."""
        return pruning.keep_count(self.scores, self.cum, self.roles, node_threshold)

    @property
    def holds_influence(self) -> bool:
        """Whether the file gave a feature or error node an ``influence`` (circuit-tracer
        and Neuronpedia files do: they are already pruned, with each node's share)."""
        inner = (self.roles == pruning.FEATURE) | (self.roles == pruning.ERROR)
        return bool(np.isfinite(self.influence[inner]).any())

    def nid_of(self, node: str, graph: GraphRow) -> int:
        """The nid of a node key, or of a node id held by one node;
        :class:`NodeNotFoundError` / :class:`BadInputError` (an id two nodes hold)."""
        nid = self.by_key.get(node)
        if nid is not None:
            return nid
        nids = self.by_id.get(node, ())
        if len(nids) == 1:
            return nids[0]
        if nids:
            keys = ", ".join(f"{self.nodes[i].key} ({self.nodes[i].fields.get('feature_type')})"
                             for i in sorted(nids, key=lambda i: self.nodes[i].idx))
            raise BadInputError(f"node id {node!r} of graph {graph.name!r} is held by "
                                f"{len(nids)} nodes: ask for one by key: {keys}.")
        raise NodeNotFoundError(f"graph {graph.name!r} has no node {node!r}.")

    def nids_of(self, ids: Iterable[str]) -> list[int]:
        """Every nid that a node id or key names (both nodes of a shared id); unknown
        ids are skipped (a pinned id need not be in the graph)."""
        out: list[int] = []
        for x in ids:
            if x in self.by_key:
                out.append(self.by_key[x])
            else:
                out.extend(self.by_id.get(x, ()))
        return out


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
    by_id: dict[str, list[int]] = {}
    for r in rows:
        by_id.setdefault(r["node_id"], []).append(r["nid"])
    nodes = tuple(ViewNode(r["nid"], r["idx"], r["node_id"], r["role"], r["score"], r["cum"],
                           decode_node(r), node_key(r["node_id"], r["idx"],
                                                    len(by_id[r["node_id"]]) > 1))
                  for r in rows)
    influence = np.array([np.nan if n.influence is None else n.influence for n in nodes],
                         np.float64)
    always = np.array([n.fields.get("feature_type") in ALWAYS_SHOWN for n in nodes], bool)
    found = GraphNodes(nodes, {n.key: n.nid for n in nodes},
                       {k: tuple(v) for k, v in by_id.items()}, _np(table, "idx", np.int64),
                       _np(table, "role", np.int16), _np(table, "token_prob", np.float64),
                       _np(table, "score", np.float64), _np(table, "cum", np.float64), heights,
                       influence, always)
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
