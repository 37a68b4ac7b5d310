"""circuit-tracer's influence and pruning on links (headgraph.attribution.pruning) against a
brute-force dense numpy version of circuit-tracer's own code, on random layered graphs."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from headgraph.attribution import pruning as P
from headgraph.attribution import pruning_height as H
from headgraph.errors import BadInputError


def dense_reference(n, src, tgt, w, roles, lw, node_threshold, edge_threshold):
    """circuit-tracer's graph.py, line for line, with numpy dense matrices (rows are
    targets): normalize_matrix, compute_influence by summing powers until they vanish,
    find_threshold, prune_graph."""
    W = np.zeros((n, n))
    W[tgt, src] = w

    def normalize(m):
        m = np.abs(m)
        return m / np.maximum(m.sum(1, keepdims=True), 1e-10)

    def influence(a, x):
        cur = x @ a
        total = cur.copy()
        for _ in range(1000):
            if not cur.any():
                return total
            cur = cur @ a
            total += cur
        raise AssertionError("no convergence")

    def threshold(scores, q):
        desc = np.sort(scores)[::-1]
        with np.errstate(invalid="ignore"):  # all-zero scores: NaN shares, index 0, keep all
            cum = np.cumsum(desc) / desc.sum()
        return desc[min(np.searchsorted(cum, q), len(cum) - 1)]

    node_influence = influence(normalize(W), lw)
    node_mask = node_influence >= threshold(node_influence, node_threshold)
    node_mask |= (roles == P.TOKEN) | (roles == P.LOGIT)
    pruned = W.copy()
    pruned[~node_mask] = 0
    pruned[:, ~node_mask] = 0
    a = normalize(pruned)
    edge_scores = a * (influence(a, lw) + lw)[:, None]
    if not edge_scores.any():  # nothing reaches the logits: 0/0 shares (documented apart)
        return None
    edge_mask = edge_scores >= threshold(edge_scores.flatten(), edge_threshold)
    fe, f = (roles == P.FEATURE) | (roles == P.ERROR), roles == P.FEATURE
    old = node_mask.copy()
    node_mask[fe] &= edge_mask[:, fe].any(0)
    node_mask[f] &= edge_mask[f].any(1)
    while not (node_mask == old).all():
        old[:] = node_mask
        edge_mask[~node_mask] = False
        edge_mask[:, ~node_mask] = False
        node_mask[fe] &= edge_mask[:, fe].any(0)
        node_mask[f] &= edge_mask[f].any(1)
    return node_influence, node_mask, edge_mask


def random_graph(rng: np.random.Generator):
    """A layered DAG: layer 0 tokens, the last layer logits, errors among the middle."""
    n = int(rng.integers(6, 40))
    layer = np.sort(np.r_[0, 5, rng.integers(0, 6, n - 2)])
    roles = np.full(n, P.FEATURE)
    roles[layer == 0], roles[layer == 5] = P.TOKEN, P.LOGIT
    roles[(layer > 0) & (layer < 5) & (rng.random(n) < 0.2)] = P.ERROR
    s, t = np.nonzero((layer[:, None] < layer[None, :]) & (rng.random((n, n)) < 0.4))
    w = rng.standard_normal(s.size) * rng.lognormal(0, 1, s.size)
    return n, s, t, w, roles, P.logit_weights(roles, rng.random(n))


def compared_cases(rng: np.random.Generator) -> Iterator[tuple]:
    """Random graphs and thresholds with their dense reference (cases the reference
    cannot decide are skipped); fails unless more than 100 of 120 draws compare."""
    compared = 0
    for _ in range(120):
        n, s, t, w, roles, lw = random_graph(rng)
        if s.size == 0:
            continue
        nt, et = rng.uniform(0.3, 0.99), rng.uniform(0.3, 0.99)
        ref = dense_reference(n, s, t, w, roles, lw, nt, et)
        if ref is None:
            continue
        compared += 1
        yield (n, s, t, w, roles, lw, nt, et), ref
    assert compared > 100


def test_influence_and_pruning_match_circuit_tracers_dense_definitions():
    rng = np.random.default_rng(7)
    for (n, s, t, w, roles, lw, nt, et), ref in compared_cases(rng):
        ref_influence, ref_nodes, ref_links = ref
        np.testing.assert_allclose(P.influence(n, s, t, w, lw), ref_influence,
                                   rtol=1e-9, atol=1e-12)
        got = P.prune(n, s, t, w, roles, lw, nt, et)
        links = np.zeros((n, n), bool)
        links[t[got.links], s[got.links]] = True
        assert (got.nodes == ref_nodes).all()
        assert (links == ref_links).all()


def test_find_threshold_keeps_the_fewest_largest_values_holding_the_share():
    scores = np.array([1.0, 4.0, 3.0, 2.0])  # shares 0.4, 0.7, 0.9, 1.0
    assert P.find_threshold(scores, 0.4) == 4.0
    assert P.find_threshold(scores, 0.5) == 3.0
    assert P.find_threshold(scores, 0.95) == 1.0
    assert P.find_threshold(scores, 1.5) == 1.0  # past the end: the last index
    cum = P.cumulative_share(scores)
    for q in (0.1, 0.4, 0.5, 0.8, 0.95, 1.0):
        assert P.find_threshold(scores, q) == max(scores[cum >= q], default=scores.min())


def test_a_cycle_is_refused():
    with pytest.raises(BadInputError, match="cycle"):
        P.influence(3, np.array([0, 1, 2]), np.array([1, 2, 1]), np.ones(3), np.ones(3))


def test_thresholds_must_be_shares():
    with pytest.raises(BadInputError, match="node_threshold"):
        P.check_thresholds(1.5, 0.9)


def by_height(n, s, t, w, lw):
    """The links grouped by their target's height, as the database stores them."""
    _, heights = P.influence_and_heights(n, s, t, w, lw)
    order = np.lexsort((t, heights[t]))
    return order, heights


def test_heights_are_the_longest_paths_to_a_sink():
    rng = np.random.default_rng(3)
    for _ in range(30):
        n, s, t, w, _, lw = random_graph(rng)
        _, heights = P.influence_and_heights(n, s, t, w, lw)
        expected = np.zeros(n, int)
        for _ in range(n):  # relax until stable: h[s] = 1 + max h[t] over s's targets
            np.maximum.at(expected, s, expected[t] + 1)
        assert (heights == expected).all()


def test_pruning_by_height_matches_the_dense_definitions():
    rng = np.random.default_rng(11)
    for (n, s, t, w, roles, lw, nt, et), ref in compared_cases(rng):
        _, ref_nodes, ref_links = ref
        # the database's node step: nodes kept at nt, renumbered in keep order, links
        # between them grouped by target height (heights of the whole graph)
        keep = P.node_mask(P.influence(n, s, t, w, lw), roles, nt)
        order, heights = by_height(n, s, t, w, lw)
        order = order[keep[s[order]] & keep[t[order]]]
        nid = np.cumsum(keep) - 1
        got = H.prune_by_height(int(keep.sum()), nid[s[order]], nid[t[order]], w[order],
                                heights[keep], roles[keep], lw[keep], et)
        nodes = np.zeros(n, bool)
        nodes[np.flatnonzero(keep)[got.nodes]] = True
        links = np.zeros((n, n), bool)
        links[t[order[got.links]], s[order[got.links]]] = True
        assert (nodes == ref_nodes).all()
        assert (links == ref_links).all()


@pytest.mark.parametrize("seed", range(4))
def test_pruning_by_height_equals_pruning_links_on_big_graphs(seed: int):
    """Graphs with over 32k links take the bucketed threshold."""
    rng = np.random.default_rng(seed)
    n = 3000
    layer = np.sort(np.r_[0, 9, rng.integers(0, 10, n - 2)])
    roles = np.where(layer == 0, P.TOKEN, np.where(layer == 9, P.LOGIT, P.FEATURE))
    roles[(roles == P.FEATURE) & (rng.random(n) < 0.1)] = P.ERROR
    m = 200_000
    t = rng.integers(0, n, m)
    t = t[layer[t] > 0]
    s = rng.integers(0, np.searchsorted(layer, layer[t]))  # a lower layer
    w = rng.standard_normal(t.size) * np.exp(rng.normal(0, 1.5, n))[s]
    lw = P.logit_weights(roles, rng.random(n))
    order, heights = by_height(n, s, t, w, lw)
    for et in (0.5, 0.9, 0.98, 1.0):
        ref = P.prune_links(n, s, t, w, roles, lw, np.ones(n, bool), et)
        got = H.prune_by_height(n, s[order], t[order], w[order], heights, roles, lw, et)
        assert (got.nodes == ref.nodes).all()
        assert np.array_equal(np.sort(order[got.links]), np.sort(ref.links))
        shuffled = H.prune_by_height(n, s, t, w, heights, roles, lw, et)  # sorted inside
        assert np.array_equal(np.sort(shuffled.links), np.sort(ref.links))
        np.testing.assert_allclose(np.sort(got.edge_scores), np.sort(ref.edge_scores),
                                   rtol=1e-12)


def test_the_bucketed_threshold_is_find_threshold():
    rng = np.random.default_rng(5)
    for i in range(200):
        n = int(rng.integers(1, 50_000))
        x = np.abs(rng.standard_normal(n) * np.exp(rng.normal(0, 3, n)))
        if i % 3 == 0:
            x[rng.random(n) < 0.3] = 0  # zeros share the lowest bucket
        if i % 5 == 0:
            x = np.round(x, 1)  # ties
        q = float(rng.random())
        assert H.threshold_by_buckets(x, q, min_size=0) == P.find_threshold(x, q)
    assert H.threshold_by_buckets(np.array([-1.0, 2.0]), 0.5, min_size=0) == 2.0


def test_an_edge_threshold_of_one_keeps_every_link_that_carries_influence():
    scores = np.array([0.0, 1e-30, 3.0, 1.0, 0.0])
    assert P.edge_cut(scores, 1.0) == 1e-30
    assert P.edge_cut(scores, 1.0, H.threshold_by_buckets) == 1e-30
    assert P.edge_cut(np.zeros(3), 1.0) == 0.0  # nothing reaches the logits: keep all
    assert P.edge_cut(scores, 0.5) == P.find_threshold(scores, 0.5) == 3.0


def test_the_kept_nodes_are_the_first_k_in_keep_order():
    rng = np.random.default_rng(4)
    for _ in range(50):
        n, s, t, w, roles, lw = random_graph(rng)
        scores = P.influence(n, s, t, w, lw)
        pinned = (roles == P.TOKEN) | (roles == P.LOGIT)
        order = np.r_[np.flatnonzero(pinned),
                      np.flatnonzero(~pinned)[np.argsort(-scores[~pinned], kind="stable")]]
        q = float(rng.uniform(0.1, 1.0))
        k = P.keep_count(scores[order], P.cumulative_share(scores)[order], roles[order], q)
        assert set(order[:k]) == set(np.flatnonzero(P.node_mask(scores, roles, q)))
