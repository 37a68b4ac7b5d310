"""The QR and Gram reductions give exactly the composition scores of the full matrices."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from headgraph.ingest.kernel import (
    block_sq_norms,
    copying_scores,
    gram_pairs,
    head_read_factors,
    head_write_factor,
    qr_r,
)


def _heads(seed: int, n: int, d: int, dh: int, n_kv: int | None = None):
    g = torch.Generator().manual_seed(seed)
    n_kv = n_kv or n
    W_Q = torch.randn(n, d, dh, generator=g, dtype=torch.float64)
    W_K = torch.randn(n_kv, d, dh, generator=g, dtype=torch.float64)
    W_V = torch.randn(n_kv, d, dh, generator=g, dtype=torch.float64)
    W_O = torch.randn(n, dh, d, generator=g, dtype=torch.float64)
    return W_Q, W_K, W_V, W_O


dims = st.tuples(st.integers(1, 4), st.integers(2, 24), st.integers(1, 8), st.integers(0, 10**6))


@settings(max_examples=40, deadline=None)
@given(dims)
def test_factors_preserve_every_product_norm(params):
    """‖A X‖ = ‖W_OV X‖ and ‖X B_kind‖ = ‖X M_kind‖ for arbitrary X (the QR reduction)."""
    n, d, dh, seed = params
    dh = min(dh, d)
    W_Q, W_K, W_V, W_O = _heads(seed, n, d, dh)
    kv = torch.arange(n)
    A = head_write_factor(W_V, W_O, kv)
    B = head_read_factors(W_Q, W_K, W_V, W_O, kv)
    X = torch.randn(d, d, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 1))
    full = {
        "Q": W_Q @ W_K.transpose(-1, -2),
        "K": W_K @ W_Q.transpose(-1, -2),
        "V": W_V @ W_O,
    }
    ov = W_V @ W_O
    torch.testing.assert_close(torch.linalg.matrix_norm(A @ X), torch.linalg.matrix_norm(ov @ X))
    for kind, M in full.items():
        torch.testing.assert_close(torch.linalg.matrix_norm(X @ B[kind]),
                                   torch.linalg.matrix_norm(X @ M))


@settings(max_examples=25, deadline=None)
@given(dims, st.integers(1, 4))
def test_block_scores_equal_direct_products(params, n_tgt):
    n, d, dh, seed = params
    dh = min(dh, d)
    W_Q, W_K, W_V, W_O = _heads(seed, n, d, dh)
    T_Q, T_K, T_V, T_O = _heads(seed + 7, n_tgt, d, dh)
    A = head_write_factor(W_V, W_O, torch.arange(n))
    B = head_read_factors(T_Q, T_K, T_V, T_O, torch.arange(n_tgt))["K"]
    got = block_sq_norms(A, B, max_elems=max(1, d))  # tiny chunks exercise the loop
    ov = W_V @ W_O
    qk_t = T_K @ T_Q.transpose(-1, -2)
    want = torch.stack([torch.stack([(ov[i] @ qk_t[j]).square().sum() for j in range(n_tgt)])
                        for i in range(n)])
    torch.testing.assert_close(got, want)


@settings(max_examples=25, deadline=None)
@given(dims, st.integers(1, 40))
def test_gram_trick_equals_direct_products(params, rows):
    n, d, dh, seed = params
    dh = min(dh, d)
    g = torch.Generator().manual_seed(seed)
    W_Q, W_K, W_V, W_O = _heads(seed, n, d, dh)
    A = head_write_factor(W_V, W_O, torch.arange(n))
    R = torch.randn(3, d, rows, generator=g, dtype=torch.float64)  # dense readers
    got = gram_pairs(A, R @ R.transpose(-1, -2), side="write", max_elems=d * d)
    ov = W_V @ W_O
    want = torch.stack([torch.stack([(ov[i] @ R[j]).square().sum() for j in range(3)])
                        for i in range(n)])
    torch.testing.assert_close(got, want)
    W = torch.randn(2, rows, d, generator=g, dtype=torch.float64)  # dense writers
    B = head_read_factors(W_Q, W_K, W_V, W_O, torch.arange(n))["Q"]
    got = gram_pairs(B, W.transpose(-1, -2) @ W, side="read")
    qk = W_Q @ W_K.transpose(-1, -2)
    want = torch.stack([torch.stack([(W[j] @ qk[i]).square().sum() for j in range(2)])
                        for i in range(n)])
    torch.testing.assert_close(got, want)


def test_grouped_query_heads_share_kv_factors():
    """With 4 query heads on 2 KV heads, head h reads KV head h // 2."""
    W_Q, W_K, W_V, W_O = _heads(3, 4, 16, 4, n_kv=2)
    kv = torch.arange(4) // 2
    B = head_read_factors(W_Q, W_K, W_V, W_O, kv)
    for h in range(4):
        qk = W_Q[h] @ W_K[h // 2].T
        X = torch.eye(16, dtype=torch.float64)
        torch.testing.assert_close(torch.linalg.matrix_norm(X @ B["Q"][h]),
                                   torch.linalg.matrix_norm(qk))


def test_root_factor_handles_rank_deficient_input():
    x = torch.zeros(10, 3, dtype=torch.float64)
    x[:, 0] = 1.0
    r = qr_r(x)
    torch.testing.assert_close(r.T @ r, x.T @ x)
    assert torch.isfinite(r).all()


def test_copying_scores_of_identity_and_negated_circuits():
    """An OV circuit that maps each token to itself copies (+1); its negation suppresses."""
    d, dh = 8, 4
    W_V = torch.eye(d, dh, dtype=torch.float64)[None]
    W_O = torch.eye(dh, d, dtype=torch.float64)[None]
    readout = torch.eye(d, dtype=torch.float64)
    pos, ratio = copying_scores(W_V, W_O, readout, torch.zeros(1, dtype=torch.long))
    assert float(pos[0]) == 1.0 and abs(float(ratio[0]) - 1.0) < 1e-6
    pos, ratio = copying_scores(W_V, -W_O, readout, torch.zeros(1, dtype=torch.long))
    assert float(pos[0]) == 0.0 and abs(float(ratio[0]) + 1.0) < 1e-6


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 10**6), st.sampled_from([(4, 2), (4, 1), (6, 3), (2, 2)]))
def test_grouped_kernel_equals_per_query_head_kernel(seed, heads):
    """Sharing ``A @ W_K`` per KV head changes nothing but the cost."""
    from headgraph.ingest.kernel import block_sq_norms_grouped, grouped_read_parts

    n_heads, n_kv = heads
    W_Q, W_K, W_V, W_O = _heads(seed, n_heads, 12, 3, n_kv=n_kv)
    kv = torch.arange(n_heads) // (n_heads // n_kv)
    S_Q, S_K, S_V, S_O = _heads(seed + 1, 5, 12, 3)
    A = head_write_factor(S_V, S_O, torch.arange(5))
    B = head_read_factors(W_Q, W_K, W_V, W_O, kv)
    parts = grouped_read_parts(W_Q, W_K, W_V, W_O)
    for kind in ("K", "V"):
        torch.testing.assert_close(block_sq_norms_grouped(A, *parts[kind], kv, max_elems=40),
                                   block_sq_norms(A, B[kind]))
