"""A pruned view of a stored attribution graph (circuit-tracer's pruning,
:mod:`headgraph.attribution.pruning`): :func:`pruned_view`, which caches what
:func:`compute_pruned` returns.

The node step needs no links: the nodes kept at a node threshold are the first ``K``
nids (:func:`~headgraph.attribution.pruning.keep_count` on the node columns stored at import,
read once per process). The edge step runs on the graph pruned to those nodes, so it
depends on ``K``:

* at the ``K`` of the default node threshold, import stored the links between the kept
  nodes with their edge scores, largest first, and the share of the total before each
  (:mod:`headgraph.attribution.default_view`): circuit-tracer's ``find_threshold`` keeps
  the links whose share before them is below the edge threshold ``q`` and the later ones
  that tie with the last of those, a prefix of ``attribution_pruned_links`` read alone
  (two statements); then the clean-up;
* at any other ``K`` the database filters the links between the first ``K`` nids
  (``target < K and source < K``, stored grouped by target height), and the edge step
  runs on them height by height (:mod:`headgraph.attribution.pruning_height`);
* graphs stored before heights were (``levels`` NULL) take
  :func:`~headgraph.attribution.pruning.prune_links`: slower, the same answer.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
from sqlalchemy import and_, func, select

from headgraph.attribution import pruning
from headgraph.attribution.graphs import (
    CACHE_LOCK,
    GraphNodes,
    GraphRow,
    GraphSlice,
    get_graph,
    graph_nodes,
)
from headgraph.attribution.pruning_height import clean_up, prune_by_height
from headgraph.queries.arrow import fetch_arrow
from headgraph.queries.session import GraphDB
from headgraph.schema import tables as t


def compute_pruned(db: GraphDB, graph: GraphRow, node_threshold: float,
                   edge_threshold: float, max_links: int | None, *,
                   stored: bool = True) -> GraphSlice:
    """The view at these thresholds, from the stored edge scores when ``stored`` and they
    are for this ``K`` (module doc), else computed."""
    nodes = graph_nodes(db, graph)
    k = nodes.keep_count(node_threshold)
    if stored and graph.pruned_k is not None and graph.pruned_k == k:
        links, kept = _from_stored(db, graph, nodes, k, edge_threshold)
    else:
        links, kept = _computed(db, graph, nodes, k, edge_threshold)
    truncated = max_links is not None and links.num_rows > max_links
    if truncated:
        scores = links.column("edge_score").to_numpy()
        links = links.take(pa.array(np.sort(np.argsort(-scores, kind="stable")[:max_links])))
    if graph.n_link_extras:
        links = with_extras(db, graph, links)
    in_file_order = [nodes.nodes[i] for i in kept[np.argsort(nodes.idx[kept])].tolist()]
    return GraphSlice(graph, in_file_order, links, bool(truncated),
                      {"prune": "recompute", "node_threshold": node_threshold,
                       "edge_threshold": edge_threshold})


def _computed(db: GraphDB, graph: GraphRow, nodes: GraphNodes, k: int,
              edge_threshold: float) -> tuple[pa.Table, np.ndarray]:
    """The links of the view and the nids kept, computed from the links between the first
    ``k`` nids."""
    c = t.attribution_links.c
    links = fetch_arrow(db, select(c.idx, c.source, c.target, c.weight).where(and_(
        c.graph_id == graph.graph_id, c.target < k, c.source < k)))
    src, tgt = _flat(links, "source", np.intp), _flat(links, "target", np.intp)
    weight = _flat(links, "weight", np.float64)
    roles, lw = nodes.roles[:k], pruning.logit_weights(nodes.roles[:k], nodes.token_prob[:k])
    if nodes.heights is None:  # stored before heights: any order will do
        pr = pruning.prune_links(k, src, tgt, weight, roles, lw, np.ones(k, bool),
                                 edge_threshold)
    else:  # DuckDB gives a filtered scan in stored order (preserve_insertion_order);
        # other databases in any order, which prune_by_height finds and sorts
        pr = prune_by_height(k, src, tgt, weight, nodes.heights[:k], roles, lw,
                             edge_threshold)
    keep = pr.links
    return pa.table({
        "idx": np.take(_flat(links, "idx", np.int32), keep),
        "source": np.take(src, keep).astype(np.int32),
        "target": np.take(tgt, keep).astype(np.int32), "weight": np.take(weight, keep),
        "extra": pa.nulls(keep.size, pa.string()), "edge_score": pr.edge_scores}
    ), np.flatnonzero(pr.nodes)


def _from_stored(db: GraphDB, graph: GraphRow, nodes: GraphNodes, k: int,
                 edge_threshold: float) -> tuple[pa.Table, np.ndarray]:
    """The links of the view and the nids kept, from ``attribution_pruned_links``:
    circuit-tracer's ``find_threshold`` keeps the links whose share before them is below
    the edge threshold, and the later ones that tie with the last of those (at a
    threshold of 1: every link with a positive score, :func:`pruning.edge_cut`); all are
    a prefix of the table, strongest first."""
    c = t.attribution_pruned_links.c
    mine = c.graph_id == graph.graph_id

    def read(*where: Any) -> pa.Table:
        return fetch_arrow(db, select(c.idx, c.source, c.target, c.weight, c.edge_score)
                           .where(and_(mine, *where)))

    if edge_threshold >= 1.0:
        links = read(c.edge_score > 0)
        if links.num_rows == 0:  # no link carries influence: all stay
            links = read()
    else:
        links = read(c.share < edge_threshold)
        if links.num_rows == 0:  # a threshold of 0: the strongest (and its ties)
            top = db.rows(select(func.max(c.edge_score).label("e")).where(mine))[0]["e"]
            links = read(c.edge_score >= top) if top is not None else links
        else:
            last = min(float(x.to_numpy().min()) for x in links.column("edge_score").chunks
                       if len(x))
            ties = read(c.share >= edge_threshold, c.edge_score >= last)
            links = pa.concat_tables([links, ties]) if ties.num_rows else links
    src, tgt = _flat(links, "source", np.intp), _flat(links, "target", np.intp)
    kept_nodes, alive = clean_up(k, src, tgt, nodes.roles[:k])
    if alive is not None:
        links = links.filter(pa.array(alive))
    view = links.select(["idx", "source", "target", "weight"])
    view = view.append_column("extra", pa.nulls(view.num_rows, pa.string()))
    return view.append_column("edge_score", links.column("edge_score")), np.flatnonzero(
        kept_nodes)


def _flat(table: pa.Table, name: str, dtype: Any) -> np.ndarray:
    """A non-null column as one numpy array of ``dtype``, chunk by chunk (one pass: no
    concatenation, then a cast)."""
    out = np.empty(table.num_rows, dtype)
    at = 0
    for chunk in table.column(name).chunks:
        out[at:at + len(chunk)] = chunk.to_numpy(zero_copy_only=False)
        at += len(chunk)
    return out


def with_extras(db: GraphDB, graph: GraphRow, links: pa.Table) -> pa.Table:
    """``links`` with the ``extra`` fields of those that have some (rare: read apart)."""
    c = t.attribution_links.c
    found = fetch_arrow(db, select(c.idx, c.extra).where(and_(
        c.graph_id == graph.graph_id, c.extra.is_not(None))))
    extras = dict(zip(found.column("idx").to_pylist(), found.column("extra").to_pylist(),
                      strict=True))
    column = pa.array([extras.get(i) for i in links.column("idx").to_pylist()], pa.string())
    return links.set_column(links.column_names.index("extra"), "extra", column)


_VIEWS: OrderedDict[tuple, GraphSlice] = OrderedDict()
CACHED_LINKS = 4_000_000  # links held by the view cache of one process, all views together


def cached_view(key: tuple, compute: Callable[[], GraphSlice], cache: bool = True
                ) -> GraphSlice:
    """The view of ``key`` from this process's cache, else ``compute()`` (kept when
    ``cache``; least recently used first out, at most :data:`CACHED_LINKS` links in all).
    Keys name the database, the graph's id and import time, so a graph imported again
    (a new id) is never answered from an old view."""
    with CACHE_LOCK:
        if cache and key in _VIEWS:
            _VIEWS.move_to_end(key)
            return _VIEWS[key]
    view = compute()
    if cache and view.links.num_rows <= CACHED_LINKS:
        with CACHE_LOCK:
            _VIEWS[key] = view
            while sum(v.links.num_rows for v in _VIEWS.values()) > CACHED_LINKS:
                _VIEWS.popitem(last=False)
    return view


def view_key(db: GraphDB, graph: GraphRow, *params: Any) -> tuple:
    """A cache key for a view of ``graph`` with ``params``."""
    return (str(db.target), graph.graph_id, graph.imported_at, *params)


def pruned_view(db: GraphDB, slug: str, node_threshold: float = pruning.NODE_THRESHOLD,
                edge_threshold: float = pruning.EDGE_THRESHOLD, *, max_links: int | None = None,
                cache: bool = True, model: str | None = None) -> GraphSlice:
    """circuit-tracer's pruned graph at these thresholds, recomputed on the stored links
    (see the module doc and :mod:`headgraph.attribution.pruning` for the formulas), of the
    graph ``slug`` (of ``model``, or of any model while the slug is unique).

    With ``cache``, views are kept in this process (:func:`cached_view`).

    Examples
    --------
    >>> view = pruned_view(db, "my-graph", 0.8, 0.98)  # doctest: +SKIP
    >>> len(view.nodes), view.links.num_rows  # doctest: +SKIP
    (312, 4410)
    """
    pruning.check_thresholds(node_threshold, edge_threshold)
    return pruned_view_of(db, get_graph(db, slug, model), node_threshold, edge_threshold,
                          max_links=max_links, cache=cache)


def pruned_view_of(db: GraphDB, graph: GraphRow, node_threshold: float, edge_threshold: float,
                   *, max_links: int | None = None, cache: bool = True) -> GraphSlice:
    """:func:`pruned_view` of a graph already found."""
    key = view_key(db, graph, "recompute", float(node_threshold), float(edge_threshold),
                   max_links)
    return cached_view(key, lambda: compute_pruned(db, graph, node_threshold, edge_threshold,
                                                   max_links), cache)
