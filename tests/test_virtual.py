"""Stored virtual heads equal a direct torch computation from the model's weights."""

from __future__ import annotations

import duckdb
import pytest
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


def _brute_force_triples(source: str) -> list[tuple[float, str]]:
    """Every chain of length 3 of ``source``'s heads, scored directly, best first."""
    from headgraph.ingest.sources import open_source

    reader = open_source(source)
    spec = reader.spec
    ovs, names = [], []
    for layer in range(spec.n_layers):
        lw = reader.layer(layer, mlp=False)
        kv = torch.arange(spec.n_heads) // spec.group
        for h in range(spec.n_heads):
            ovs.append(lw.W_V[kv[h]].double() @ lw.W_O[h].double())
            names.append((layer, f"L{layer}H{h}"))
    norms = [torch.linalg.matrix_norm(ov) for ov in ovs]
    out = []
    for i, (li, ni) in enumerate(names):
        for m, (lm, nm) in enumerate(names):
            if lm <= li:
                continue
            im = ovs[i] @ ovs[m]
            for j, (lj, nj) in enumerate(names):
                if lj <= lm:
                    continue
                score = torch.linalg.matrix_norm(im @ ovs[j]) / (norms[i] * norms[m] * norms[j])
                out.append((float(score), f"{ni},{nm},{nj}"))
    return sorted(out, reverse=True)


@pytest.mark.parametrize("cap", [None, 40], ids=["all-candidates", "candidates-capped"])
def test_stored_chains_of_three_are_the_exact_top_of_all_chains(tmp_path, monkeypatch, cap):
    """The bound search stores only chains whose score and rank are exact: they equal the
    top of a brute-force ranking of every chain, in order, also when the candidates held
    in memory are capped (then fewer may be stored, never a wrong one)."""
    from headgraph.ingest import virtual
    from headgraph.ingest.pipeline import ingest

    if cap is not None:
        monkeypatch.setattr(virtual, "MAX_CANDIDATES", cap)
    source = "random:L4H3D24V40,ctx=16"
    db = tmp_path / "v.duckdb"
    ingest(source, db, name="v")
    con = duckdb.connect(str(db), read_only=True)
    stored = con.execute("SELECT heads, score FROM virtual_heads WHERE length = 3 "
                         "ORDER BY score DESC").fetchall()
    con.close()
    want = _brute_force_triples(source)
    assert stored, "no chain of three stored"
    for (heads, score), (best, name) in zip(stored, want, strict=False):
        assert heads == name and abs(score - best) < 1e-5, (heads, score, name, best)
