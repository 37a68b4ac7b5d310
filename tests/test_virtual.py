"""Stored virtual heads equal a direct torch computation from the model's weights."""

from __future__ import annotations

import duckdb
import torch

from headgraph.ingest.bridge_reader import read_directory
from headgraph.toy import checkpoint_dir


def test_virtual_heads_match_a_direct_computation(toy_db):
    reader = read_directory(checkpoint_dir(), "toy")
    b = reader.bridge
    with torch.no_grad():
        W_V, W_O = b.W_V.double(), b.W_O.double()
        W_E, W_U = b.W_E.double(), b.W_U.double()
    con = duckdb.connect(str(toy_db), read_only=True)
    rows = con.execute("SELECT heads, score, copying_ratio, copying_positive_fraction "
                       "FROM virtual_heads").fetchall()
    assert len(rows) >= 10
    for heads, score, ratio, positive in rows:
        chain = [tuple(map(int, h[1:].split("H"))) for h in heads.split(",")]
        ovs = [W_V[layer, head] @ W_O[layer, head] for layer, head in chain]
        composed = ovs[0]
        for ov in ovs[1:]:
            composed = composed @ ov
        want = torch.linalg.matrix_norm(composed) / torch.prod(
            torch.stack([torch.linalg.matrix_norm(ov) for ov in ovs]))
        assert abs(float(want) - score) < 1e-5, heads
        eig = torch.linalg.eigvals(W_E @ composed @ W_U)  # (vocab x vocab): the full circuit
        eig = eig[eig.abs().argsort(descending=True)][: W_V.shape[-1]]  # its non-zero part
        assert abs(float(eig.sum().real / eig.abs().sum()) - ratio) < 1e-4, heads
        assert abs(float((eig.real > 0).double().mean()) - positive) < 1e-6, heads
