"""Top-k circuit paths: chains of composition edges into a target, ranked exactly.

A path ``u -V-> v -K-> t`` says: ``u``'s write is moved by ``v`` (V-composition, a virtual
attention head), and ``v``'s write is what ``t``'s keys read. Its strength is the product
of its edge weights: the raw ``score`` (``weight="score"``), the score over its Gaussian
null (``weight="ratio"``, "times the random baseline"), or the edge's structural z
floored at 0 (``weight="z"``, how far above what the model's structure explains; an edge
at or below its null, or without a z, cannot be on a path). Scores are <= 1, so their
products favour short paths; z-values above 1 multiply up, so their products favour
long paths: with ``weight="z"`` rank ``per_hop`` (the geometric mean of the hops' z) to
compare lengths fairly.

Algorithm (exact, no enumeration of all simple paths). The residual stream orders every
edge forward, so the graph is a DAG and every path is simple. For each length ``l`` up to
``max_length``:

1. a backward dynamic programme over the edge arrays gives ``h_j[v]``, the best product
   of a path of exactly ``j`` edges from ``v`` to the target (``h_0 = 1`` at the target);
2. a best-first search from the source (or from every node) expands partial paths in
   order of ``g · h_r[v]`` — the product so far times the best possible completion. Since
   ``h`` is exact, complete paths leave the queue in exact order, and a node needs at most
   ``top`` children pushed.

Per-length lists are merged by the ranking value: the product itself
(``rank_by="product"``, which favours short paths since weights are <= 1 for scores), or
its geometric mean per hop (``rank_by="per_hop"``, which compares lengths fairly).
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass

import numpy as np

from headgraph.errors import BadInputError, LimitExceededError, NodeNotFoundError
from headgraph.graph.view import GraphView
from headgraph.queries.nodes import EDGE_KINDS, check_kind
from headgraph.queries.structural import no_structural_z

MAX_LENGTH = 6
MAX_TOP = 100


@dataclass(frozen=True)
class Path:
    """A chain of edges: ``nodes[i] -kinds[i]-> nodes[i+1]``."""

    nodes: tuple[str, ...]
    kinds: tuple[str, ...]
    scores: tuple[float, ...]  # each edge's stored score
    value: float  # the ranking value (product, or per-hop geometric mean)
    product: float  # product of the edge weights
    weights: tuple[float, ...] = ()  # each edge's weight (score, ratio or z floored at 0)

    @property
    def length(self) -> int:
        return len(self.kinds)


WEIGHTS = ("score", "ratio", "z")


def _weights(view: GraphView, weight: str) -> np.ndarray:
    if weight == "score":
        return view.score
    if weight == "ratio":
        return np.divide(view.score, view.baseline, out=np.zeros_like(view.score),
                         where=view.baseline > 0)
    if weight == "z":
        if not view.model.structural_z:
            raise BadInputError(f"paths weighted by z: {no_structural_z(view.model)}")
        return np.where(np.isnan(view.z), 0.0, np.maximum(view.z, 0.0))
    raise BadInputError(f"unknown path weight {weight!r}; use 'score', 'ratio' or 'z'.")


def _node(view: GraphView, name: str) -> int:
    if name not in view.index:
        raise NodeNotFoundError(f"model {view.model.name!r} has no node {name!r}.")
    return view.index[name]


def _position(view: GraphView, node: int) -> float:
    attrs = view.node_attrs.get(view.names[node], {})
    kind, layer = attrs.get("kind"), attrs.get("layer")
    if kind in ("embed", "pos_embed"):
        return -1
    if kind == "unembed":
        return float("inf")
    if kind == "mlp":
        return 2 * layer + (0 if view.model.parallel_blocks else 1)
    return 2 * layer


def _best_completions(view: GraphView, target: int, hop_masks: list[np.ndarray],
                      w: np.ndarray) -> list[np.ndarray]:
    """``h[j][v]``: best product of a ``j``-edge path ``v -> target`` whose hop ``-j``
    (counted from the end) uses an edge allowed by ``hop_masks[j-1]``."""
    n = len(view.names)
    h = [np.zeros(n)]
    h[0][target] = 1.0
    order, ptr = view.out_order, view.out_ptr
    starts = ptr[:-1]
    nonempty = ptr[1:] > starts
    for j in range(1, len(hop_masks) + 1):
        cand = np.where(hop_masks[j - 1], w * h[j - 1][view.dst], 0.0)[order]
        best = np.zeros(n)
        if len(cand):
            best[nonempty] = np.maximum.reduceat(cand, starts[nonempty])
        h.append(best)
    return h


def _search(view: GraphView, source: int | None, length: int, top: int, h: list[np.ndarray],
            hop_masks: list[np.ndarray], w: np.ndarray) -> list[tuple[float, list[int]]]:
    """Best-first search for the ``top`` best paths of exactly ``length`` edges."""
    counter = itertools.count()
    heap: list[tuple[float, int, int, int, float, tuple[int, ...]]] = []
    starts = [source] if source is not None else np.argsort(-h[length])[:top].tolist()
    for s in starts:
        if h[length][s] > 0:
            heapq.heappush(heap, (-h[length][s], next(counter), s, length, 1.0, ()))
    found: list[tuple[float, list[int]]] = []
    while heap and len(found) < top:
        _, _, node, remaining, g, edge_path = heapq.heappop(heap)
        if remaining == 0:
            found.append((g, list(edge_path)))
            continue
        out = view.out_edges(node)
        out = out[hop_masks[remaining - 1][out]]
        prio = g * w[out] * h[remaining - 1][view.dst[out]]
        keep = np.flatnonzero(prio > 0)
        if len(keep) > top:
            keep = keep[np.argpartition(-prio[keep], top - 1)[:top]]
        for i in keep.tolist():
            e = int(out[i])
            heapq.heappush(heap, (-float(prio[i]), next(counter), int(view.dst[e]),
                                  remaining - 1, g * float(w[e]), (*edge_path, e)))
    return found


def top_paths(
    view: GraphView,
    target: str,
    source: str | None = None,
    *,
    kinds: tuple[str, ...] | None = None,
    pattern: tuple[str, ...] | None = None,
    max_length: int = 3,
    top: int = 10,
    weight: str = "score",
    rank_by: str = "product",
) -> list[Path]:
    """The ``top`` strongest paths into ``target`` (from ``source``, or from any node).

    Parameters
    ----------
    view : the model's edges (filtered by kinds and minimum score when it was loaded).
    kinds : edge kinds allowed at every hop (default: all in the view).
    pattern : an exact sequence of kinds, source to target (e.g. ``("V", "K")``); fixes
        the length.
    max_length : longest path, in edges (at most 6).
    top : how many paths (at most 100).
    weight : ``"score"``, ``"ratio"`` (score / baseline) or ``"z"`` (structural z,
        floored at 0; rank it ``per_hop``).
    rank_by : ``"product"`` or ``"per_hop"`` (geometric mean of the weights).

    Examples
    --------
    The route by which the previous-token head feeds an induction head's keys is
    ``top_paths(view, "L1H2", kinds=("K",), max_length=1)[0]``.
    """
    if not 1 <= max_length <= MAX_LENGTH:
        raise LimitExceededError(f"maxLength must be 1..{MAX_LENGTH}, got {max_length}.")
    if not 1 <= top <= MAX_TOP:
        raise LimitExceededError(f"top must be 1..{MAX_TOP}, got {top}.")
    if rank_by not in ("product", "per_hop"):
        raise BadInputError(f"unknown rank_by {rank_by!r}; use 'product' or 'per_hop'.")
    t = _node(view, target)
    s = _node(view, source) if source is not None else None
    if s is not None and _position(view, s) >= _position(view, t):
        raise BadInputError(
            f"no path can run from {source} to {target}: {source} does not write before "
            f"{target} reads (composition only flows forward through the layers)."
        )
    w = _weights(view, weight)
    allowed = tuple(check_kind(k) for k in (kinds or EDGE_KINDS))
    any_kind = np.isin(view.kind, [EDGE_KINDS.index(k) for k in allowed])
    if pattern is not None:
        if not 1 <= len(pattern) <= MAX_LENGTH:
            raise LimitExceededError(f"pattern must have 1..{MAX_LENGTH} kinds.")
        lengths = [len(pattern)]
        hop_masks = [view.kind == EDGE_KINDS.index(check_kind(k)) for k in reversed(pattern)]
    else:
        lengths = list(range(1, max_length + 1))
        hop_masks = [any_kind] * max_length
    h = _best_completions(view, t, hop_masks, w)
    results: list[Path] = []
    for length in lengths:
        for product, edge_ids in _search(view, s, length, top, h, hop_masks, w):
            value = product if rank_by == "product" else product ** (1.0 / length)
            nodes = [view.names[view.src[edge_ids[0]]]] + [view.names[view.dst[e]]
                                                          for e in edge_ids]
            results.append(Path(
                nodes=tuple(nodes),
                kinds=tuple(EDGE_KINDS[view.kind[e]] for e in edge_ids),
                scores=tuple(float(view.score[e]) for e in edge_ids),
                value=value,
                product=product,
                weights=tuple(float(w[e]) for e in edge_ids),
            ))
    results.sort(key=lambda p: (-p.value, p.nodes, p.kinds))
    return results[:top]
