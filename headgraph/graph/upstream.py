"""The upstream circuit of a node: everything that reaches it within a few hops.

``upstream(view, "L1H2", depth=2, kinds=("K", "V"))`` walks in-edges backwards from the
node, breadth first, through the allowed kinds (the view's minimum score already applied),
and returns the nodes and edges it met as a :class:`Subgraph` a client can draw. A cap on
edges keeps a dense model from returning millions of them; ``truncated`` says when it hit.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import numpy as np

from headgraph.errors import LimitExceededError, NodeNotFoundError
from headgraph.graph.view import GraphView
from headgraph.queries.nodes import EDGE_KINDS, check_kind

MAX_DEPTH = 6


@dataclass(frozen=True)
class SubgraphEdge:
    source: str
    target: str
    kind: str
    score: float
    baseline: float


@dataclass(frozen=True)
class Subgraph:
    nodes: tuple[str, ...]
    edges: tuple[SubgraphEdge, ...]
    truncated: bool

    def to_networkx(self) -> nx.MultiDiGraph:
        g = nx.MultiDiGraph()
        g.add_nodes_from(self.nodes)
        for e in self.edges:
            g.add_edge(e.source, e.target, key=e.kind, kind=e.kind, score=e.score,
                       baseline=e.baseline)
        return g


def upstream(view: GraphView, node: str, *, depth: int = 2,
             kinds: tuple[str, ...] | None = None, max_edges: int = 5000) -> Subgraph:
    """Nodes and edges that reach ``node`` within ``depth`` hops, strongest edges first
    when ``max_edges`` cuts the result."""
    if not 1 <= depth <= MAX_DEPTH:
        raise LimitExceededError(f"depth must be 1..{MAX_DEPTH}, got {depth}.")
    if node not in view.index:
        raise NodeNotFoundError(f"model {view.model.name!r} has no node {node!r}.")
    allowed = np.isin(view.kind, [EDGE_KINDS.index(check_kind(k))
                                  for k in (kinds or EDGE_KINDS)])
    frontier = {view.index[node]}
    seen_nodes = set(frontier)
    chosen: list[np.ndarray] = []
    total = 0
    truncated = False
    for _ in range(depth):
        if not frontier:
            break
        ids = np.concatenate([view.in_edges(v) for v in frontier])
        ids = ids[allowed[ids]]
        if total + len(ids) > max_edges:
            ids = ids[np.argsort(-view.score[ids], kind="stable")[: max_edges - total]]
            truncated = True
        chosen.append(ids)
        total += len(ids)
        new = set(view.src[ids].tolist()) - seen_nodes
        seen_nodes |= new
        frontier = new
        if truncated:
            break
    ids = np.unique(np.concatenate(chosen)) if chosen else np.empty(0, np.int64)
    ids = ids[np.argsort(-view.score[ids], kind="stable")]
    edges = tuple(
        SubgraphEdge(view.names[view.src[e]], view.names[view.dst[e]],
                     EDGE_KINDS[view.kind[e]], float(view.score[e]), float(view.baseline[e]))
        for e in ids.tolist()
    )
    return Subgraph(nodes=tuple(view.names[i] for i in sorted(seen_nodes)), edges=edges,
                    truncated=truncated)
