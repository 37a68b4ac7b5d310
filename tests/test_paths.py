"""Top-k paths are exactly the brute-force ranking, on random layered graphs."""

from __future__ import annotations

import datetime as dt
import itertools

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headgraph.errors import BadInputError, LimitExceededError, NodeNotFoundError
from headgraph.graph.paths import top_paths
from headgraph.graph.view import GraphView
from headgraph.queries.nodes import EDGE_KINDS
from headgraph.queries.records import ModelRow


def fake_model(n_layers: int, n_heads: int) -> ModelRow:
    return ModelRow(model_id=1, name="m", family=None, step=None, source="test",
                    architecture="test", n_layers=n_layers, n_heads=n_heads,
                    n_kv_heads=n_heads, d_model=8, d_head=2, d_mlp=0, d_vocab=None,
                    n_ctx=None, position_scheme=None, parallel_blocks=False, readout=None,
                    processing="", weights_digest="", ingested_at=dt.datetime.now(dt.UTC),
                    headgraph_version="", n_nodes=0, n_edges=0)


def random_view(seed: int, n_layers: int, n_heads: int, density: float) -> GraphView:
    rng = np.random.default_rng(seed)
    names = [f"L{layer}H{h}" for layer in range(n_layers) for h in range(n_heads)]
    attrs = {n: {"kind": "head", "layer": int(n[1:].split("H")[0])} for n in names}
    src, dst, kind, score = [], [], [], []
    for (i, a), (j, b) in itertools.product(enumerate(names), repeat=2):
        if attrs[a]["layer"] < attrs[b]["layer"]:
            for k in range(3):
                if rng.random() < density:
                    src.append(i)
                    dst.append(j)
                    kind.append(k)
                    score.append(rng.uniform(0.01, 1.0))
    arr = np.asarray
    return GraphView(fake_model(n_layers, n_heads), names, attrs, arr(src, np.int32),
                     arr(dst, np.int32), arr(kind, np.int8), arr(score),
                     np.full(len(score), 0.1))


def brute_force(view: GraphView, target: str, source: str | None, kinds, max_length: int,
                rank_by: str) -> list[tuple[float, tuple[str, ...], tuple[str, ...]]]:
    g = view.to_networkx()
    allowed = set(kinds)
    found = []
    sources = [source] if source else [n for n in g.nodes if n != target]
    for s in sources:
        if s not in g or target not in g:
            continue
        for path in nx.all_simple_edge_paths(g, s, target, cutoff=max_length):
            ks = tuple(k for _, _, k in path)
            if not set(ks) <= allowed:
                continue
            prod = float(np.prod([g.edges[e]["score"] for e in path]))
            value = prod if rank_by == "product" else prod ** (1 / len(path))
            found.append((value, (path[0][0], *[v for _, v, _ in path]), ks))
    return sorted(found, key=lambda x: -x[0])


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6), layers=st.integers(2, 4), heads=st.integers(1, 3),
       density=st.floats(0.2, 0.9), max_length=st.integers(1, 3), top=st.integers(1, 8),
       from_any=st.booleans(), rank_by=st.sampled_from(["product", "per_hop"]),
       kinds=st.sampled_from([("Q", "K", "V"), ("K",), ("V", "K")]))
def test_top_paths_equal_brute_force(seed, layers, heads, density, max_length, top, from_any,
                                     rank_by, kinds):
    view = random_view(seed, layers, heads, density)
    target = f"L{layers - 1}H0"
    source = None if from_any else "L0H0"
    got = top_paths(view, target, source, kinds=kinds, max_length=max_length, top=top,
                    rank_by=rank_by)
    want = brute_force(view, target, source, kinds, max_length, rank_by)[:top]
    assert [round(p.value, 12) for p in got] == [round(v, 12) for v, _, _ in want]
    assert [(p.nodes, p.kinds) for p in got] == [(n, k) for _, n, k in want]


def test_pattern_fixes_the_kind_sequence():
    view = random_view(7, 4, 3, 0.9)
    got = top_paths(view, "L3H0", pattern=("V", "K"), top=5)
    assert got and all(p.kinds == ("V", "K") for p in got)
    want = [x for x in brute_force(view, "L3H0", None, ("V", "K"), 2, "product")
            if x[2] == ("V", "K")][:5]
    assert [p.nodes for p in got] == [n for _, n, _ in want]


def test_bad_requests_are_refused():
    view = random_view(1, 3, 2, 0.8)
    with pytest.raises(NodeNotFoundError):
        top_paths(view, "L9H9")
    with pytest.raises(BadInputError, match="no path can run"):
        top_paths(view, "L0H0", "L2H1")
    with pytest.raises(LimitExceededError):
        top_paths(view, "L2H0", max_length=7)
    with pytest.raises(LimitExceededError):
        top_paths(view, "L2H0", top=1000)
    with pytest.raises(BadInputError):
        top_paths(view, "L2H0", kinds=("X",))


def test_ratio_weight_divides_by_baseline():
    view = random_view(3, 3, 2, 0.9)
    by_score = top_paths(view, "L2H0", max_length=1, top=3)
    by_ratio = top_paths(view, "L2H0", max_length=1, top=3, weight="ratio")
    assert [p.nodes for p in by_score] == [p.nodes for p in by_ratio]  # equal baselines
    assert by_ratio[0].product == pytest.approx(by_score[0].product / 0.1)
    assert EDGE_KINDS[:3] == ("Q", "K", "V")


def test_upstream_circuit_is_the_depth_bounded_ancestry():
    from headgraph.graph.upstream import upstream

    view = random_view(11, 4, 3, 0.4)
    sub = upstream(view, "L3H1", depth=2, kinds=("K", "V"))
    g = view.to_networkx()
    # every node within two K/V hops upstream, computed by networkx on the full graph
    kv = nx.MultiDiGraph((u, v, k, d) for u, v, k, d in g.edges(keys=True, data=True)
                         if k in ("K", "V"))
    want = {n for n, dist in nx.single_source_shortest_path_length(kv.reverse(), "L3H1",
                                                                   cutoff=2).items()}
    assert set(sub.nodes) == want
    assert all(e.kind in ("K", "V") for e in sub.edges)
    assert not sub.truncated
    capped = upstream(view, "L3H1", depth=2, max_edges=3)
    assert capped.truncated and len(capped.edges) == 3
