"""The view of an attribution graph a user asks for, under the name other tools give it.

Two rules choose the nodes (``prune``):

``influence``  Neuronpedia's threshold slider, on the ``influence`` the file stores
               (``apps/webapp/app/[modelId]/graph/utils.ts``,
               ``shouldShowNodeForInfluenceThreshold`` and ``filterNodes``). A node is
               shown when it is an embedding or a logit (by ``feature_type``), pinned, the
               clicked node, has no influence, or has ``influence <= node_threshold``.
               ``node_threshold`` defaults to the file's ``metadata.node_threshold``
               (where the slider starts, ``graph-controls.tsx``); Neuronpedia runs this
               filter only when that is positive, so without one every node is shown
               unless a threshold is asked for. The links are every link of the file
               between two shown nodes: the file already holds circuit-tracer's pruned
               links, and Neuronpedia draws no others. Default for files that hold
               influence (every circuit-tracer and Neuronpedia file: they are
               ``prune_graph`` output, each node's ``influence`` its cumulative share of
               the influence on the whole, unpruned graph, which the file cannot give back).
``recompute``  circuit-tracer's ``prune_graph`` run again on the stored links
               (:mod:`headgraph.attribution.pruned`: ``node_threshold`` 0.8 and
               ``edge_threshold`` 0.98 unless given). Default for files without influence.
               On a file that is already pruned this prunes a second time, on the pruned
               graph (measured on 7 real files at 0.8: a median 27 % of the nodes kept,
               where Neuronpedia shows over 99 %).

In both, pinned nodes (``qParams.pinnedIds`` and those asked for) and the clicked node
are kept: in a recomputed view they are added with the file's links between them and the
view's nodes (those links carry no edge score).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from sqlalchemy import and_, select

from headgraph.attribution import pruning
from headgraph.attribution.graphs import (
    GraphNodes,
    GraphRow,
    GraphSlice,
    get_graph,
    graph_nodes,
    in_file_order,
)
from headgraph.attribution.pruned import (
    cached_view,
    pruned_view_of,
    view_key,
    with_extras,
)
from headgraph.errors import BadInputError
from headgraph.queries.arrow import fetch_arrow
from headgraph.queries.session import GraphDB
from headgraph.schema import tables as t

PRUNE_RULES = ("influence", "recompute")
MAX_PINNED = 1000


@dataclass(frozen=True)
class ViewAsk:
    """What a view request asks for; None means the graph's default (module doc)."""

    prune: str | None = None
    node_threshold: float | None = None
    edge_threshold: float | None = None
    pinned: tuple[str, ...] = ()
    clicked: str | None = None

    def check(self) -> ViewAsk:
        """This ask, if its values can be used; :class:`BadInputError` otherwise."""
        if self.prune is not None and self.prune not in PRUNE_RULES:
            raise BadInputError(f"prune must be one of {', '.join(PRUNE_RULES)}, not "
                                f"{str(self.prune)[:40]!r}.")
        pruning.check_thresholds(0.0 if self.node_threshold is None else self.node_threshold,
                                 0.0 if self.edge_threshold is None else self.edge_threshold)
        if self.prune == "influence" and self.edge_threshold is not None:
            raise BadInputError("edge_threshold goes with prune=recompute: Neuronpedia's "
                                "influence rule keeps every link the file has between the "
                                "nodes it shows.")
        if len(self.pinned) > MAX_PINNED:
            raise BadInputError(f"at most {MAX_PINNED} pinned nodes, not {len(self.pinned)}.")
        return self


def default_rule(nodes: GraphNodes) -> str:
    """``influence`` for a file that holds it, else ``recompute``."""
    return "influence" if nodes.holds_influence else "recompute"


def graph_view(db: GraphDB, slug: str, ask: ViewAsk = ViewAsk(), *, model: str | None = None,
               max_links: int | None = None, cache: bool = True) -> GraphSlice:
    """The view ``ask`` describes of graph ``slug`` (of ``model``, or of any model while the
    slug is unique); at most ``max_links`` links, the strongest (``truncated`` then).

    Examples
    --------
    >>> v = graph_view(db, "gemma-dollar", ViewAsk(node_threshold=0.5))  # doctest: +SKIP
    >>> v.params["prune"], len(v.nodes)  # doctest: +SKIP
    ('influence', 329)
    """
    ask.check()
    graph = get_graph(db, slug, model)
    nodes = graph_nodes(db, graph)
    rule = ask.prune or default_rule(nodes)
    if ask.prune is None and ask.edge_threshold is not None:
        dataclasses.replace(ask, prune=rule).check()  # a default rule that takes none
    pins = [nodes.nid_of(x, graph) for x in ask.pinned]
    clicked = None if not ask.clicked else nodes.nid_of(ask.clicked, graph)
    kept = sorted(set(nodes.nids_of(graph.pinned_ids)) | set(pins)
                  | (set() if clicked is None else {clicked}))
    params: dict = {"prune": rule, "pinned": [nodes.nodes[i].node_id for i in pins],
                    "clicked": None if clicked is None else nodes.nodes[clicked].node_id}
    if rule == "influence":
        threshold = ask.node_threshold if ask.node_threshold is not None else graph.node_threshold
        key = view_key(db, graph, rule, threshold, tuple(kept), max_links)
        view = cached_view(key, lambda: influence_view(db, graph, nodes, threshold, kept,
                                                       max_links), cache)
        params["node_threshold"] = threshold
    else:
        nt = pruning.NODE_THRESHOLD if ask.node_threshold is None else ask.node_threshold
        et = pruning.EDGE_THRESHOLD if ask.edge_threshold is None else ask.edge_threshold
        view = with_nodes(db, graph, nodes, pruned_view_of(db, graph, nt, et,
                                                           max_links=max_links, cache=cache),
                          kept)
        params.update(node_threshold=nt, edge_threshold=et)
    return dataclasses.replace(view, params=params)


def influence_view(db: GraphDB, graph: GraphRow, nodes: GraphNodes, threshold: float | None,
                   kept: list[int], max_links: int | None) -> GraphSlice:
    """Neuronpedia's influence filter at ``threshold`` (None: every node) with the nids
    ``kept`` shown whatever their influence, and the file's links between shown nodes."""
    if threshold is None:
        shown = np.ones(len(nodes.nodes), bool)
    else:
        shown = nodes.always | ~np.isfinite(nodes.influence) | (nodes.influence <= threshold)
        shown[kept] = True
    c = t.attribution_links.c
    links = fetch_arrow(db, select(c.idx, c.source, c.target, c.weight)
                        .where(c.graph_id == graph.graph_id))
    src = links.column("source").to_numpy()
    tgt = links.column("target").to_numpy()
    inside = np.flatnonzero(shown[src] & shown[tgt])
    weight = links.column("weight").to_numpy()[inside]
    truncated = max_links is not None and inside.size > max_links
    if truncated:  # the strongest |weight| (a partition: no sort of every link)
        strongest = np.argpartition(-np.abs(weight), max_links - 1)[:max_links] \
            if max_links else np.zeros(0, np.intp)
        inside = inside[np.sort(strongest)]
    idx = links.column("idx").to_numpy()[inside]
    order = np.argsort(idx, kind="stable")  # file order
    inside = inside[order]
    table = _unscored(idx[order], src[inside], tgt[inside],
                      links.column("weight").to_numpy()[inside])
    if graph.n_link_extras:
        table = with_extras(db, graph, table)
    view_nodes = [nodes.nodes[i] for i in np.flatnonzero(shown).tolist()]
    return GraphSlice(graph, sorted(view_nodes, key=lambda n: n.idx), table, bool(truncated),
                      {})


def with_nodes(db: GraphDB, graph: GraphRow, nodes: GraphNodes, view: GraphSlice,
               kept: list[int]) -> GraphSlice:
    """``view`` with the nids ``kept`` added where it lacks them, and the file's links
    between each added node and the view's nodes (no edge score: they were not kept by
    the pruning)."""
    have = {n.nid for n in view.nodes}
    added = sorted(set(kept) - have)
    if not added:
        return view
    inside = np.zeros(len(nodes.nodes), bool)
    inside[list(have)] = True
    inside[added] = True
    c, o = t.attribution_links.c, t.attribution_out_links.c
    into = fetch_arrow(db, select(c.idx, c.source, c.target, c.weight).where(and_(
        c.graph_id == graph.graph_id, c.target.in_(added))))
    out = fetch_arrow(db, select(o.idx, o.source, o.target, o.weight).where(and_(
        o.graph_id == graph.graph_id, o.source.in_(added))))
    both = pa.concat_tables([into, out])
    src, tgt = both.column("source").to_numpy(), both.column("target").to_numpy()
    idx = both.column("idx").to_numpy()
    keep = inside[src] & inside[tgt]
    _, first = np.unique(idx[keep], return_index=True)  # a link between two added: once
    at = np.flatnonzero(keep)[first]
    extra = _unscored(idx[at], src[at], tgt[at], both.column("weight").to_numpy()[at])
    links = pa.concat_tables([view.links.cast(extra.schema), extra])
    if graph.n_link_extras:
        links = with_extras(db, graph, links)
    records = {n.nid: n for n in view.nodes} | {i: nodes.nodes[i] for i in added}
    return dataclasses.replace(view, nodes=in_file_order(records), links=links)


def _unscored(idx: np.ndarray, source: np.ndarray, target: np.ndarray,
              weight: np.ndarray) -> pa.Table:
    """View links (as :class:`~headgraph.attribution.graphs.GraphSlice` holds them) that
    carry no edge score, their extra fields still to be read."""
    return pa.table({"idx": pa.array(idx.astype(np.int32)),
                     "source": pa.array(source.astype(np.int32)),
                     "target": pa.array(target.astype(np.int32)),
                     "weight": pa.array(weight), "extra": pa.nulls(idx.size, pa.string()),
                     "edge_score": pa.nulls(idx.size, pa.float64())})
