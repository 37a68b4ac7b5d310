"""What an attribution-graph import stores for the pruned view asked for most: the one at
circuit-tracer's default node threshold (0.8), at any edge threshold.

The edge step of the pruning (:mod:`headgraph.attribution.pruning`) runs on the adjacency
pruned to the nodes kept, so its edge scores depend on the node threshold and cannot be
stored for all of them; for one node threshold they can. At import the nodes kept at
:data:`~headgraph.attribution.pruning.NODE_THRESHOLD` are the first ``K0`` nids; the links
between them get their edge scores ``E`` (:func:`~headgraph.attribution.pruning_height.edge_scores`)
and are stored in ``attribution_pruned_links`` sorted by ``E``, largest first, with
``share``: the part of the sum of ``E`` held by the links before each. Then, for an edge
threshold ``q``, circuit-tracer's ``find_threshold`` is ``min(E where share < q)`` (the
largest ``E`` when none; the smallest positive ``E`` at ``q = 1``, as
:func:`~headgraph.attribution.pruning.edge_cut`), and the links above it are a prefix of the
table: the view reads only those and cleans up. Cost: one sort of the ``K0`` subgraph's
links at import.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from headgraph.attribution import pruning
from headgraph.attribution.pruning_height import edge_scores


def pruned_links(by_target: pa.Table, k: int, heights: np.ndarray, roles: np.ndarray,
                 token_prob: np.ndarray) -> pa.Table | None:
    """The ``attribution_pruned_links`` rows (less ``graph_id``) of the subgraph of the
    first ``k`` nids, from ``attribution_links`` as stored (``by_target``: ``idx``,
    ``source``, ``target``, ``weight`` by nid, grouped by target height); ``heights``,
    ``roles`` and ``token_prob`` by nid. None if the links are not in that order."""
    src = by_target.column("source").to_numpy()
    tgt = by_target.column("target").to_numpy()
    inside = np.flatnonzero((src < k) & (tgt < k))
    source, target = src[inside].astype(np.intp), tgt[inside].astype(np.intp)
    weight = by_target.column("weight").to_numpy()[inside]
    found = edge_scores(k, source, target, weight, heights[:k],
                        pruning.logit_weights(roles[:k], token_prob[:k]))
    if found is None:
        return None
    scores = found[0]
    order = np.argsort(scores)[::-1]  # among equal scores any order: ties are read together
    ranked = scores[order]
    total = ranked.sum()
    before = np.concatenate([[0.0], np.cumsum(ranked)[:-1]])
    share = before / total if total > 0 else np.zeros_like(ranked)
    return pa.table({
        "idx": pa.array(by_target.column("idx").to_numpy()[inside][order]),
        "source": pa.array(source[order].astype(np.int32)),
        "target": pa.array(target[order].astype(np.int32)),
        "weight": pa.array(weight[order]), "edge_score": pa.array(ranked),
        "share": pa.array(share)})
