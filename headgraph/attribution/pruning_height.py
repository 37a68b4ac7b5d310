"""The edge step of circuit-tracer's pruning (:mod:`headgraph.attribution.pruning`), fast, for
links stored grouped by the height of their target.

A node's *height* is the most links on a path from it to a sink (computed with its
influence at import, :func:`~headgraph.attribution.pruning.influence_and_heights`). A target
is always lower than its sources, in the whole graph and in any subgraph of it, so with
the links grouped by target and the targets by height (as ``attribution_links`` stores
them) the pruned graph's influence is one pass over contiguous slices, one per height:

==========================  ==========================================================
quantity                    how
==========================  ==========================================================
row sum ``R[t]``            ``max(sum of |w| into t, 1e-10)``: one ``reduceat`` over the
                            run of ``t``'s links
``y = w + I'``              ``y[s] = w[s] + sum of E over the links out of s``; once the
                            links into the heights below ``h`` are done, ``y`` is final
                            for the targets of height ``h``
edge score ``E``            ``E = |w| * (y / R)[t]``, a slice per height, added to the
                            sources' ``y`` (``add.at``) as it is made
threshold                   :func:`threshold_by_buckets`: bucket sums made with the scores,
                            one bucket sorted, not all scores
clean-up                    first round from the kept mask alone (runs, ``maximum.at``);
                            ends gathered only if a node leaves
==========================  ==========================================================

Equal to :func:`~headgraph.attribution.pruning.prune_links` up to the rounding of sums made in
another order (tests compare both with circuit-tracer's dense definitions). Index arrays
are best passed as ``intp``: numpy converts anything else on every call.
"""

from __future__ import annotations

import numpy as np

from headgraph.attribution.pruning import (
    EPS,
    ERROR,
    FEATURE,
    Pruned,
    edge_cut,
    find_threshold,
)

BUCKETS = 1 << 19  # value buckets of threshold_by_buckets: every non-negative double's key


def edge_scores(k: int, source: np.ndarray, target: np.ndarray, weight: np.ndarray,
                heights: np.ndarray, weights: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]] | None:
    """``E`` of every link of a graph of ``k`` nodes (all kept), the bucket sums of
    :func:`threshold_by_buckets`, and the runs of links by target (their starts and
    targets); None when the links are not grouped by target with the targets' heights
    (``heights`` per node) non-decreasing."""
    m = source.size
    runs = _target_runs(target, heights)
    if runs is None:
        return None
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
    return scores, sums, runs


def prune_by_height(k: int, source: np.ndarray, target: np.ndarray, weight: np.ndarray,
                    heights: np.ndarray, roles: np.ndarray, weights: np.ndarray,
                    edge_threshold: float) -> Pruned:
    """:func:`~headgraph.attribution.pruning.prune_links` with every one of the ``k`` nodes
    kept (see the module doc); links in another than the stored order are sorted so
    first."""
    found = edge_scores(k, source, target, weight, heights, weights)
    if found is None:  # not in stored order: sort, prune, and give positions in the input
        order = np.lexsort((target, heights[target]))
        got = prune_by_height(k, source[order], target[order], weight[order], heights,
                              roles, weights, edge_threshold)
        return Pruned(got.nodes, order[got.links], got.edge_scores)
    scores, sums, (starts, run_target) = found
    kept = scores >= edge_cut(scores, edge_threshold,
                              lambda x, q: threshold_by_buckets(x, q, sums=sums))
    # the clean-up's first round from the mask alone: a target has a kept in-link if its
    # run has one, a source a kept out-link if one of its links is kept
    has_in = np.zeros(k, bool)
    if kept.size:
        has_in[run_target] = np.logical_or.reduceat(kept, starts)
    has_out = np.zeros(k, np.int8)
    np.maximum.at(has_out, source, kept.view(np.int8))
    at = np.flatnonzero(kept)
    nodes = _stay(roles, has_in, has_out > 0)
    if not nodes.all():  # some leave: the rounds go on on the kept links' ends
        nodes, alive = clean_up(k, np.take(source, at), np.take(target, at), roles)
        at = at if alive is None else at[alive]
    return Pruned(nodes=nodes, links=at, edge_scores=np.take(scores, at))


def clean_up(k: int, source: np.ndarray, target: np.ndarray, roles: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray | None]:
    """The clean-up of the kept links with these ends: the nodes that stay, and which
    links stay (None: all). A feature or error node without a kept out-link leaves, a
    feature without a kept in-link leaves, links of nodes that left leave, until nothing
    changes."""
    nodes = _stay(roles, np.bincount(target, minlength=k) > 0,
                  np.bincount(source, minlength=k) > 0)
    if nodes.all():
        return nodes, None
    alive = np.ones(source.size, bool)
    while True:
        alive &= nodes[source] & nodes[target]
        before = int(nodes.sum())
        nodes &= _stay(roles, np.bincount(target[alive], minlength=k) > 0,
                       np.bincount(source[alive], minlength=k) > 0)
        if int(nodes.sum()) == before:
            return nodes, alive


def _stay(roles: np.ndarray, has_in: np.ndarray, has_out: np.ndarray) -> np.ndarray:
    """Which nodes one round of the clean-up keeps."""
    feature = roles == FEATURE
    return ~((feature | (roles == ERROR)) & ~has_out) & ~(feature & ~has_in)


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
