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

Serving a view fast (:func:`prune_by_height`): a node's *height* is the most links on a
path from it to a sink. A target is always lower than its sources, in the whole graph and
in any subgraph, so links stored grouped by their target's height (as the database keeps
them) are processed one height at a time, a contiguous slice each, with no sort and no
index arrays; the edge threshold sorts one bucket of scores, not all of them
(:func:`threshold_by_buckets`).

Examples
--------
>>> import numpy as np
>>> roles = np.array([TOKEN, FEATURE, LOGIT])
>>> src, tgt, wt = np.array([0, 1, 0]), np.array([1, 2, 2]), np.array([2.0, 1.0, 1.0])
>>> [round(x, 3) for x in influence(3, src, tgt, wt, np.array([0.0, 0.0, 1.0]))]
[1.0, 0.5, 0.0]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from headgraph.errors import BadInputError

FEATURE, ERROR, TOKEN, LOGIT = 0, 1, 2, 3
ROLE_NAMES = {FEATURE: "feature", ERROR: "error", TOKEN: "token", LOGIT: "logit"}
EPS = 1e-10  # circuit-tracer's clamp of a row sum
BUCKETS = 1 << 19  # value buckets of threshold_by_buckets: every non-negative double's key


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
    :func:`normalised` when the caller has it. Raises :class:`BadInputError` when the
    links form a cycle (the series would not end).
    """
    source = np.asarray(source, np.int32 if n < 1 << 31 else np.int64)
    target = np.asarray(target, source.dtype)
    if a is None:
        a = normalised(n, target, weight)
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
                            "before it): influence is defined for acyclic graphs only.")
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


def prune_by_height(k: int, source: np.ndarray, target: np.ndarray, weight: np.ndarray,
                    heights: np.ndarray, roles: np.ndarray, weights: np.ndarray,
                    edge_threshold: float) -> Pruned:
    """:func:`prune_links` with every one of the ``k`` nodes kept, fastest for links
    grouped by target and ordered by the target's height (``heights``, per node, from
    :func:`influence_and_heights` on the whole graph), as the database stores them; links
    in another order are sorted so first.

    The same quantities in fewer passes over the links. With ``R[t] = max(sum of |w|
    into t, 1e-10)`` (one ``reduceat`` per run of a target's links) and ``y = w + I'``,
    the edge score is ``E = |w| * (y / R)[t]`` and ``y[s] = w[s] + sum of E over the
    links out of s``. Every target of a node is lower than the node, also in any
    subgraph, so once the links into the heights below ``h`` are done, ``y`` is final for
    the targets of height ``h``: one slice of the arrays per height gives their ``E``
    and adds it to their sources' ``y``. :func:`threshold_by_buckets` stands in for the
    sort of :func:`find_threshold`; the clean-up works on the links kept, not all. Equal
    to :func:`prune_links` up to the rounding of sums made in another order. Index
    arrays are best passed as ``intp`` (numpy converts anything else on every call).
    """
    m = source.size
    runs = _target_runs(target, heights)
    if runs is None:  # not in stored order: sort, prune, and give positions in the input
        order = np.lexsort((target, heights[target]))
        got = prune_by_height(k, source[order], target[order], weight[order], heights,
                              roles, weights, edge_threshold)
        return Pruned(got.nodes, order[got.links], got.edge_scores)
    starts, run_target = runs
    lens = np.diff(np.append(starts, m))
    run_bounds = np.searchsorted(heights[run_target], np.arange(int(heights.max(initial=0)) + 2))
    link_bounds = np.append(starts, m)[run_bounds]
    y = np.asarray(weights, np.float64).copy()
    scores = np.empty(m)
    sums = np.zeros(BUCKETS)  # per bucket of threshold_by_buckets, filled as scores come
    for h in range(run_bounds.size - 1):  # each slice small enough to stay in cache
        lo, hi, rlo, rhi = link_bounds[h], link_bounds[h + 1], run_bounds[h], run_bounds[h + 1]
        if lo == hi:
            continue
        absw = np.abs(weight[lo:hi])
        rowsum = np.maximum(np.add.reduceat(absw, starts[rlo:rhi] - lo), EPS)
        e = scores[lo:hi]
        np.multiply(absw, np.repeat(y[run_target[rlo:rhi]] / rowsum, lens[rlo:rhi]), out=e)
        np.add.at(y, source[lo:hi], e)
        np.add.at(sums, e.view(np.int64) >> 44, e)
    kept = scores >= edge_cut(scores, edge_threshold, sums=sums)
    nodes, at = _clean_up(k, source, target, kept, starts, run_target, roles)
    return Pruned(nodes=nodes, links=at, edge_scores=np.take(scores, at))


def _clean_up(k: int, source: np.ndarray, target: np.ndarray, kept: np.ndarray,
              starts: np.ndarray, run_target: np.ndarray, roles: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """The clean-up of the module table: the nodes that stay, and the positions of the
    links that stay. The first round needs no link ends: a target has a kept in-link if
    its run of links has one (``logical_or.reduceat``), a source a kept out-link if one of
    its links is kept (``maximum.at``). Only when a node leaves are the kept links' ends
    gathered, and the rounds go on on them alone until nothing changes."""
    has_in = np.zeros(k, bool)
    if kept.size:
        has_in[run_target] = np.logical_or.reduceat(kept, starts)
    has_out = np.zeros(k, np.int8)
    np.maximum.at(has_out, source, kept.view(np.int8))
    at = np.flatnonzero(kept)
    feature_or_error = (roles == FEATURE) | (roles == ERROR)
    feature = roles == FEATURE
    nodes = ~(feature_or_error & (has_out == 0)) & ~(feature & ~has_in)
    if nodes.all():
        return nodes, at
    s, t = np.take(source, at), np.take(target, at)
    while True:
        alive = nodes[s] & nodes[t]
        at, s, t = at[alive], s[alive], t[alive]
        before = int(nodes.sum())
        nodes &= ~(feature_or_error & (np.bincount(s, minlength=k) == 0))
        nodes &= ~(feature & (np.bincount(t, minlength=k) == 0))
        if int(nodes.sum()) == before:
            return nodes, at


def _target_runs(target: np.ndarray, heights: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray] | None:
    """Where each run of links into one target starts, and its target, if each target's
    links form one run and the runs go by non-decreasing height; else None. The check
    costs one comparison per link and a few per run."""
    first = np.empty(target.size, bool)
    if target.size:
        first[0] = True
        np.not_equal(target[1:], target[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    run_target = target[starts]
    run_height = heights[run_target]
    if (run_height[1:] < run_height[:-1]).any() or np.unique(run_target).size < starts.size:
        return None
    return starts, run_target


def edge_cut(scores: np.ndarray, threshold: float, *, buckets: bool = False,
             sums: np.ndarray | None = None) -> float:
    """The edge scores' threshold: :func:`find_threshold` (or :func:`threshold_by_buckets`
    when ``buckets`` or given its bucket ``sums``), except at a share of 1, where it is
    the smallest positive score (every link that carries influence; all links if none
    does). That is the exact
    answer; the running share of a long sum often ends a rounding error short of 1 or
    reaches it early, so the sorted sum alone would make the answer depend on the order
    in which the scores were added."""
    if threshold >= 1.0 and scores.size:
        positive = scores[scores > 0]
        return float(positive.min()) if positive.size else 0.0
    if buckets or sums is not None:
        return threshold_by_buckets(scores, threshold, sums=sums)
    return find_threshold(scores, threshold)


def threshold_by_buckets(scores: np.ndarray, threshold: float, *,
                         min_size: int = 1 << 15, sums: np.ndarray | None = None) -> float:
    """:func:`find_threshold` of non-negative ``scores`` without sorting them all.

    A non-negative double's bits, read as an integer, grow with its value, so the top 20
    bits (sign, exponent, 8 bits of mantissa; :data:`BUCKETS` of them) number buckets in
    value order. Summing ``scores`` per bucket (or taking ``sums``, made so by the caller)
    finds the bucket ``b`` where the share from the top first reaches ``threshold``;
    only the scores in ``b`` are sorted, their running sum continuing the sum of the
    buckets above. The answer is ``find_threshold``'s, up to the rounding of the sums
    (added in another order). Fewer than ``min_size`` scores, negative or non-finite ones
    go to :func:`find_threshold` itself.
    """
    if scores.size < max(min_size, 1):
        return find_threshold(scores, threshold)
    if sums is None:
        try:
            sums = np.bincount(scores.view(np.int64) >> 44, weights=scores, minlength=BUCKETS)
        except ValueError:  # a negative score (its sign bit makes the key negative)
            return find_threshold(scores, threshold)
    used = np.flatnonzero(sums)
    total = sums.sum()
    if not (np.isfinite(total) and total > 0) or sums.size > BUCKETS:
        return find_threshold(scores, threshold)
    first = int(used[0])  # buckets below hold nothing but, in bucket 0, zeros
    part = sums[first:used[-1] + 1]
    from_top = np.append(np.cumsum(part[::-1])[::-1], 0.0)  # sum of the buckets >= b
    crossing = np.flatnonzero(from_top[:-1] / total >= threshold)
    at = int(crossing[-1]) if crossing.size else 0
    while at >= 0:  # rounding may put the crossing one bucket lower
        if part[at] > 0:
            bucket = first + at
            lo, hi = np.array([bucket << 44, (bucket + 1) << 44], np.int64).view(np.float64)
            values = np.sort(scores[(scores >= lo) & (scores < hi)])[::-1]
            i = int(np.searchsorted((from_top[at + 1] + np.cumsum(values)) / total,
                                    threshold))
            if i < values.size:
                return float(values[i])
        at -= 1
    return float(scores.min())


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
           "logit_weights", "node_mask", "normalised", "prune", "prune_by_height",
           "prune_links", "threshold_by_buckets"]
