"""Stored scores equal TransformerLens's reference on real models (same processing).

References: ``TransformerBridge.all_composition_scores`` for Q/K/V composition and the
eigenvalues of the full OV circuit as a TransformerLens ``FactoredMatrix`` for copying.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from headgraph.ingest.bridge_reader import read_directory
from headgraph.ingest.compose import EDGE_KINDS, ComposedGraph, compose

TOLERANCE = 1e-5


def _models() -> list[str]:
    from headgraph.toy import checkpoint_steps

    return (["toy"] if checkpoint_steps() else []) + ["minilm"]


@pytest.fixture(scope="module", params=_models())
def reader(request, minilm_dir: Path):
    if request.param == "toy":
        from headgraph.toy import checkpoint_dir

        return read_directory(checkpoint_dir(), "toy")
    return read_directory(minilm_dir, "minilm")


@pytest.fixture(scope="module", params=["qr", pytest.param("gram", marks=pytest.mark.slow)])
def composed(request, reader) -> tuple[object, ComposedGraph]:
    """Both exact head-pair routes (QR products and block Grams), whichever ``auto`` picks."""
    return reader.bridge, compose(reader, head_method=request.param)


def _dense(graph: ComposedGraph, kind: str) -> np.ndarray:
    """Stored head-to-head scores as an ``[L, H, L, H]`` array (0 where no edge)."""
    spec, nodes, e = graph.spec, graph.nodes, graph.edges
    out = np.zeros((spec.n_layers, spec.n_heads, spec.n_layers, spec.n_heads), np.float64)
    sel = (e.kind == EDGE_KINDS.index(kind)) & (nodes.heads[e.source] >= 0) & (
        nodes.heads[e.target] >= 0)
    s, t = e.source[sel], e.target[sel]
    out[nodes.layers[s], nodes.heads[s], nodes.layers[t], nodes.heads[t]] = e.score[sel]
    return out


@pytest.mark.parametrize("kind", ["Q", "K", "V"])
def test_composition_scores_match_transformer_lens(composed, kind):
    bridge, graph = composed
    with torch.no_grad():
        ref = bridge.all_composition_scores(kind).scores.double().numpy()
    got = _dense(graph, kind)
    assert np.abs(got - ref).max() <= TOLERANCE
    # every ordered pair across layers is stored, and none within or backwards
    L = graph.spec.n_layers
    H = graph.spec.n_heads
    assert int(((got != 0)).sum()) == H * H * L * (L - 1) // 2


def test_copying_scores_match_factored_matrix_eigenvalues(composed):
    from transformer_lens import FactoredMatrix

    bridge, graph = composed
    with torch.no_grad():
        W_U = bridge.W_E.T if graph.spec.readout == "embed_transpose" else bridge.W_U
        full_ov = bridge.W_E @ bridge.OV @ W_U  # FactoredMatrix, (L, H, vocab, vocab)
        assert isinstance(full_ov, FactoredMatrix)
        eig = full_ov.eigenvalues.to(torch.complex128)  # (L, H, d_head)
    ratio = (eig.sum(-1).real / eig.abs().sum(-1)).numpy().ravel()
    positive = (eig.real > 0).double().mean(-1).numpy().ravel()
    heads = graph.nodes.heads >= 0
    np.testing.assert_allclose(graph.metrics["copying_ratio"][heads], ratio, atol=1e-4)
    np.testing.assert_allclose(graph.metrics["copying_positive_fraction"][heads], positive,
                               atol=1e-6)
