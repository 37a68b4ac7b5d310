"""Exact on every family TransformerBridge supports: GQA, rotary, parallel blocks, encoders.

Each tiny random model's stored Q, K and V scores equal ``all_composition_scores`` with the
same processing, copying scores equal the bridge's own OV-circuit eigenvalues, and the
nodes and MLP edges follow the block structure.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from headgraph.errors import SourceError, UnsupportedArchitectureError
from headgraph.ingest.compose import EDGE_KINDS, compose
from headgraph.ingest.random_hf import parse_family_shape, random_family_reader

FAMILIES = {
    "gpt2": "gpt2,layers=3,heads=4,d_model=32,vocab=50,ctx=16",
    "neox": "neox,layers=3,heads=4,d_model=32,vocab=50,ctx=16",
    "gptj": "gptj,layers=3,heads=4,d_model=32,vocab=50,ctx=16",
    "opt": "opt,layers=3,heads=4,d_model=32,vocab=50,ctx=16",
    "llama-gqa": "llama,layers=3,heads=4,kv_heads=2,d_model=32,vocab=50,ctx=16",
    "mistral-gqa": "mistral,layers=3,heads=4,kv_heads=2,d_model=32,vocab=50,ctx=16",
    "qwen2-gqa": "qwen2,layers=3,heads=4,kv_heads=1,d_model=32,vocab=50,ctx=16",
    "bert": "bert,layers=3,heads=4,d_model=32,vocab=50,ctx=16",
}


QUICK = ("gpt2", "llama-gqa", "bert")
"""Families the quick lane keeps: one learned-position, one grouped-query, one post-LN."""


@pytest.fixture(scope="module", ids=list(FAMILIES), params=[
    f if f in QUICK else pytest.param(f, marks=pytest.mark.slow) for f in FAMILIES])
def family(request):
    reader = random_family_reader(FAMILIES[request.param])
    return request.param, reader, compose(reader)


def test_head_scores_equal_the_bridge(family):
    _, reader, graph = family
    nodes, e = graph.nodes, graph.edges
    L, H = graph.spec.n_layers, graph.spec.n_heads
    for kind in "QKV":
        with torch.no_grad():
            ref = reader.bridge.all_composition_scores(kind).scores.double().numpy()
        got = np.zeros_like(ref)
        sel = (e.kind == EDGE_KINDS.index(kind)) & (nodes.heads[e.source] >= 0) & (
            nodes.heads[e.target] >= 0)
        s, t = e.source[sel], e.target[sel]
        got[nodes.layers[s], nodes.heads[s], nodes.layers[t], nodes.heads[t]] = e.score[sel]
        assert np.abs(got - ref).max() <= 1e-5, kind
        assert sel.sum() == H * H * L * (L - 1) // 2


def test_both_head_routes_give_the_same_edges(family):
    """QR products and block Grams (:mod:`headgraph.ingest.cost`) store the same rows."""
    _, reader, _ = family
    qr, gram = (compose(reader, head_method=m).edges for m in ("qr", "gram"))
    for col in ("source", "target", "kind", "rank"):
        np.testing.assert_array_equal(getattr(qr, col), getattr(gram, col))
    np.testing.assert_allclose(gram.score, qr.score, atol=1e-6)


def test_copying_equals_the_bridge_ov_eigenvalues(family):
    _, reader, graph = family
    b = reader.bridge
    with torch.no_grad():
        eig = (b.W_E @ b.OV @ b.W_U).eigenvalues.to(torch.complex128)
    ratio = (eig.sum(-1).real / eig.abs().sum(-1)).numpy().ravel()
    heads = graph.nodes.heads >= 0
    np.testing.assert_allclose(graph.metrics["copying_ratio"][heads], ratio, atol=1e-4)


def test_block_structure_of_mlp_edges(family):
    name, reader, graph = family
    spec, nodes, e = graph.spec, graph.nodes, graph.edges
    assert spec.parallel_blocks == (name in ("neox", "gptj"))
    assert spec.has_pos_embed == (name in ("gpt2", "opt", "bert"))
    assert spec.n_kv_heads == parse_family_shape(FAMILIES[name]).n_kv
    into_mlp = (e.kind == EDGE_KINDS.index("MLP")) & (nodes.heads[e.source] >= 0)
    src_layer = nodes.layers[e.source[into_mlp]]
    mlp_layer = nodes.layers[e.target[into_mlp]]
    if spec.parallel_blocks:
        assert (src_layer < mlp_layer).all()  # a parallel MLP never reads its own attention
    else:
        assert (src_layer <= mlp_layer).all() and (src_layer == mlp_layer).any()
    out_of_mlp = np.asarray(nodes.kinds)[e.source] == "mlp"
    to_heads = out_of_mlp & (nodes.heads[e.target] >= 0)
    assert (nodes.layers[e.source[to_heads]] < nodes.layers[e.target[to_heads]]).all()


@pytest.mark.parametrize("text, error", [
    ("gpt2,kv_heads=2", UnsupportedArchitectureError),
    ("llama,heads=4,kv_heads=3", SourceError),
    ("falcon", SourceError),
    ("llama-3-8b", SourceError),
])
def test_unsupported_shapes_get_one_clear_error(text, error):
    with pytest.raises(error):
        random_family_reader(text)


@pytest.mark.parametrize("name", ["gpt2", "neox", "llama-gqa", "bert"])
def test_plan_counts_the_edges_an_ingest_stores(name):
    from headgraph.ingest.plan import make_plan

    graph = compose(random_family_reader(FAMILIES[name]))
    plan = make_plan("random:" + FAMILIES[name], rate=100.0)
    assert plan.shape.n_kv_heads == graph.spec.n_kv_heads
    kinds = {k: int((graph.edges.kind == i).sum()) for i, k in enumerate(EDGE_KINDS)}
    assert {k: plan.edges[k] for k in EDGE_KINDS} == kinds
