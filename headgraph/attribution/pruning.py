"""circuit-tracer's influence and pruning of an attribution graph, on sparse links (numpy).

The definitions are those of circuit-tracer's ``graph.py`` (``compute_influence``,
``find_threshold``, ``prune_graph``), written for a list of links instead of a dense
adjacency matrix, so a graph of millions of links never becomes an ``n x n`` array.

A graph has ``n`` nodes and links ``s -> t`` of weight ``W[t, s]`` (rows are targets, as
in circuit-tracer's ``adjacency_matrix[target, source]``).

==========================  ==========================================================
quantity                    definition
==========================  ==========================================================
normalised adjacency        ``A[t, s] = |W[t, s]| / max(sum_s' |W[t, s']|, 1e-10)``
                            (each target's incoming weights sum to 1)
logit weights ``w``         ``w[t]`` = the ``token_prob`` of logit node ``t``, 0 elsewhere
                            (:func:`logit_weights`)
node influence ``I``        ``I = w^T (A + A^2 + A^3 + ...)``: ``I[s]`` sums the share of
                            every path from ``s`` to the logits, weighted by ``w``. In a
                            DAG ``A`` is nilpotent and ``I = y - w`` where
                            ``(Id - A^T) y = w``; :func:`influence` solves it in one pass
                            over the links, sinks first (a cycle is refused)
``find_threshold(x, q)``    sort ``x`` descending; ``c_i = (x_0 + ... + x_i) / sum(x)``;
                            ``i* =`` the first ``i`` with ``c_i >= q`` (the last index if
                            none); the threshold is ``x_{i*}``: the fewest largest values
                            that hold a share ``q`` of the total
node mask                   ``I >= find_threshold(I, node_threshold)``; tokens and logits
                            are always kept
pruned adjacency ``A'``     ``A`` recomputed on the links between kept nodes only
edge score ``E``            ``E[t, s] = A'[t, s] * (w + I')[t]`` with ``I'`` the influence
                            on ``A'``
link mask                   ``E >= find_threshold(E, edge_threshold)`` over the links
clean-up                    repeat until nothing changes: a feature or error node without
                            a kept outgoing link leaves; a feature without a kept incoming
                            link leaves; links of nodes that left leave
==========================  ==========================================================

Differences from the dense original, in degenerate cases only: ``find_threshold`` of
edges runs over the links, not over all ``n^2`` entries of the matrix (whose zeros are
not links); a graph in which no link reaches the logits (all edge scores 0, shares 0/0)
keeps every link, where the dense version keeps every *pair* of nodes; and an
``edge_threshold`` of exactly 1 keeps every link with a positive score (:func:`edge_cut`),
the exact answer, where the original's depends on rounding (the running share may end
just under 1, and then it keeps every pair).

This module is the definition, written plainly; :mod:`headgraph.attribution.pruning_height`
computes the same edge step fast, on links stored grouped by the height of their target.

Examples
--------
>>> import numpy as np
>>> roles = np.array([TOKEN, FEATURE, LOGIT])
>>> src, tgt, wt = np.array([0, 1, 0]), np.array([1, 2, 2]), np.array([2.0, 1.0, 1.0])
>>> [round(x, 3) for x in influence(3, src, tgt, wt, np.array([0.0, 0.0, 1.0]))]
[1.0, 0.5, 0.0]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from headgraph.errors import BadInputError

FEATURE, ERROR, TOKEN, LOGIT = 0, 1, 2, 3
ROLE_NAMES = {FEATURE: "feature", ERROR: "error", TOKEN: "token", LOGIT: "logit"}
EPS = 1e-10  # circuit-tracer's clamp of a row sum
NODE_THRESHOLD, EDGE_THRESHOLD = 0.8, 0.98  # circuit-tracer's defaults


def logit_weights(roles: np.ndarray, token_prob: np.ndarray) -> np.ndarray:
    """``w``: each logit node's ``token_prob`` (missing counts 0); if no logit node has a
    positive one, ``1 / n_logits`` each."""
    is_logit = roles == LOGIT
    w = np.where(is_logit, np.nan_to_num(token_prob.astype(np.float64), nan=0.0), 0.0)
    if is_logit.any() and not (w > 0).any():
        w = is_logit / is_logit.sum()
    return w


def normalised(n: int, target: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``A[t, s]`` of each link: ``|w| / max(sum of |w| into t, 1e-10)``."""
    absw = np.abs(weight)
    rowsum = np.bincount(target, weights=absw, minlength=n)
    return absw / np.maximum(rowsum, EPS)[target]


def group_order(keys: np.ndarray, n: int) -> np.ndarray:
    """A permutation that groups equal ``keys`` (node ids < ``n``) together, ascending."""
    if n <= 1 << 16:
        return np.argsort(keys.astype(np.uint16, copy=False), kind="stable")  # radix sort
    return np.argsort(keys)


def _ranges(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """``concat(arange(starts[i], ends[i]))`` without a Python loop."""
    lens = ends - starts
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    return np.repeat(starts - (np.cumsum(lens) - lens), lens) + np.arange(total)


def influence(n: int, source: np.ndarray, target: np.ndarray, weight: np.ndarray,
              weights: np.ndarray, *, a: np.ndarray | None = None) -> np.ndarray:
    """Node influence ``I = w^T (A + A^2 + ...)`` of ``n`` nodes (see the module table);
    :func:`influence_and_heights` without the heights."""
    return influence_and_heights(n, source, target, weight, weights, a=a)[0]


def influence_and_heights(n: int, source: np.ndarray, target: np.ndarray,
                          weight: np.ndarray, weights: np.ndarray, *,
                          a: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Node influence ``I`` and each node's height ``h`` (the most links on a path from it
    to a node without out-links: ``h = 0`` for sinks, else ``1 + max h`` of its targets).

    Solves ``y = w + A^T y`` exactly, one height at a time from the sinks: once every link
    out of a node is processed its ``y`` is final, so each link is used once; the nodes
    finished in pass ``j`` are exactly those of height ``j``. ``a`` may pass
    :func:`normalised` when the caller has it. A link of weight 0 carries no influence
    (its ``A`` is 0) and is no link for the heights either: files that list such links
    explicitly may close cycles with them (a real one does, self-loop included), and
    those are not cycles of the graph. Raises :class:`BadInputError` when the links of
    non-zero weight form a cycle (the series would not end).
    """
    source = np.asarray(source, np.int32 if n < 1 << 31 else np.int64)
    target = np.asarray(target, source.dtype)
    if a is None:
        a = normalised(n, target, weight)
    nonzero = np.asarray(weight) != 0
    if not nonzero.all():
        source, target, a = source[nonzero], target[nonzero], a[nonzero]
    order = group_order(target, n)
    src_by_tgt, a_by_tgt = source[order], a[order]
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(target, minlength=n), out=indptr[1:])
    outdeg = np.bincount(source, minlength=n)
    y = np.asarray(weights, np.float64).copy()
    heights = np.zeros(n, np.int64)
    frontier = np.flatnonzero(outdeg == 0)
    done, height = 0, 0
    while frontier.size:
        heights[frontier] = height
        height += 1
        done += frontier.size
        lens = indptr[frontier + 1] - indptr[frontier]
        at = _ranges(indptr[frontier], indptr[frontier + 1])
        if at.size == 0:
            break
        s = src_by_tgt[at]
        y += np.bincount(s, weights=a_by_tgt[at] * np.repeat(y[frontier], lens), minlength=n)
        dec = np.bincount(s, minlength=n)
        outdeg -= dec
        frontier = np.flatnonzero((dec > 0) & (outdeg == 0))
    if done < n and int(outdeg.sum()) > 0:
        raise BadInputError(f"the links of this graph form a cycle ({n - done} nodes on or "
                            "before it, links of weight 0 left out): influence is defined "
                            "for acyclic graphs only.")
    return y - weights, heights


def find_threshold(scores: np.ndarray, threshold: float) -> float:
    """The smallest score among the fewest largest ones that hold a share ``threshold``
    of the total (circuit-tracer's ``find_threshold``). All-zero scores give 0."""
    if scores.size == 0:
        return np.inf
    desc = np.sort(scores)[::-1]
    total = desc.sum()
    if not total > 0:
        return 0.0
    cum = np.cumsum(desc) / total
    i = min(int(np.searchsorted(cum, threshold)), desc.size - 1)
    return float(desc[i])


def cumulative_share(scores: np.ndarray) -> np.ndarray:
    """Per node, ``c_i`` of :func:`find_threshold` at its place in the descending order,
    so that ``find_threshold(scores, q) == max(scores[cum >= q])`` (or ``min(scores)``)."""
    order = np.argsort(-scores, kind="stable")
    total = scores.sum()
    cum = np.empty_like(scores, dtype=np.float64)
    cum[order] = np.cumsum(scores[order]) / total if total > 0 else 1.0
    return cum


def node_mask(scores: np.ndarray, roles: np.ndarray, node_threshold: float) -> np.ndarray:
    """Nodes kept at ``node_threshold``: influence at or above the threshold, plus every
    token and logit."""
    keep = scores >= find_threshold(scores, node_threshold)
    return keep | (roles == TOKEN) | (roles == LOGIT)


@dataclass(frozen=True)
class Pruned:
    """A pruned view: ``nodes`` mask (length n), ``links`` (indices into the input links)
    and their edge scores ``E`` (same order)."""

    nodes: np.ndarray
    links: np.ndarray
    edge_scores: np.ndarray


def prune_links(n: int, source: np.ndarray, target: np.ndarray, weight: np.ndarray,
                roles: np.ndarray, weights: np.ndarray, keep: np.ndarray,
                edge_threshold: float) -> Pruned:
    """The edge step and clean-up of the module table, given the node mask ``keep``."""
    if keep.all():  # the database already read only the kept nodes' links
        idx = np.arange(source.size)
        s, t, w = source, target, weight
    else:
        idx = np.flatnonzero(keep[source] & keep[target])
        s, t, w = source[idx], target[idx], weight[idx]
    a = normalised(n, t, w)
    total = influence(n, s, t, w, weights, a=a) + weights
    scores = a * total[t]
    links = scores >= edge_cut(scores, edge_threshold)
    nodes = keep.copy()
    feature_or_error = (roles == FEATURE) | (roles == ERROR)
    feature = roles == FEATURE

    def drop_unlinked() -> None:
        has_out = np.bincount(s[links], minlength=n) > 0
        has_in = np.bincount(t[links], minlength=n) > 0
        nodes[feature_or_error & ~has_out] = False
        nodes[feature & ~has_in] = False

    before = nodes.copy()
    drop_unlinked()
    while (nodes != before).any():
        before = nodes.copy()
        links &= nodes[s] & nodes[t]
        drop_unlinked()
    return Pruned(nodes=nodes, links=idx[links], edge_scores=scores[links])


def edge_cut(scores: np.ndarray, threshold: float,
             cut: Callable[[np.ndarray, float], float] | None = None) -> float:
    """The edge scores' threshold: ``cut`` (default :func:`find_threshold`), except at a
    share of 1, where it is the smallest positive score (every link that carries
    influence; all links if none does). That is the exact answer; the running share of a
    long sum often ends a rounding error short of 1 or reaches it early, so the sorted sum
    alone would make the answer depend on the order in which the scores were added."""
    if threshold >= 1.0 and scores.size:
        positive = scores[scores > 0]
        return float(positive.min()) if positive.size else 0.0
    return (cut or find_threshold)(scores, threshold)


def keep_count(scores: np.ndarray, cum: np.ndarray, roles: np.ndarray,
               node_threshold: float) -> int:
    """``K``, for nodes numbered in keep order (tokens and logits first, then by influence,
    largest first) with their influence ``scores`` and its cumulative share ``cum``
    (:func:`cumulative_share`): the nodes :func:`node_mask` keeps are exactly the first
    ``K``, ``K = #pinned + #{others with score >= max(score where cum >= threshold)}``
    (``min(score)`` if no share reaches it)."""
    if not scores.size:
        return 0
    above = scores[cum >= node_threshold]
    thr = above.max() if above.size else scores.min()
    return int(((roles >= TOKEN) | (scores >= thr)).sum())


def prune(n: int, source: np.ndarray, target: np.ndarray, weight: np.ndarray,
          roles: np.ndarray, weights: np.ndarray, node_threshold: float,
          edge_threshold: float) -> Pruned:
    """circuit-tracer's ``prune_graph`` on links (the module table, top to bottom)."""
    check_thresholds(node_threshold, edge_threshold)
    scores = influence(n, source, target, weight, weights)
    return prune_links(n, source, target, weight, roles, weights,
                       node_mask(scores, roles, node_threshold), edge_threshold)


def check_thresholds(node_threshold: float, edge_threshold: float) -> None:
    """Both thresholds are shares in [0, 1]; :class:`BadInputError` otherwise."""
    for name, value in (("node_threshold", node_threshold), ("edge_threshold", edge_threshold)):
        if not (isinstance(value, int | float) and 0.0 <= value <= 1.0):
            raise BadInputError(f"{name} must be a share between 0 and 1, not {value!r}.")


__all__ = ["ERROR", "FEATURE", "LOGIT", "TOKEN", "Pruned", "check_thresholds",
           "cumulative_share", "edge_cut", "find_threshold", "influence", "influence_and_heights",
           "EDGE_THRESHOLD", "NODE_THRESHOLD", "keep_count", "logit_weights", "node_mask", "normalised", "prune", "prune_links"]
