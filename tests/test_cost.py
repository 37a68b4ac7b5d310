"""The block-Gram route: exact on any block grid, and chosen only where it is cheaper and fits.

The block identity ``<G, M> = sum_p <G_pp, M_pp> + 2 sum_{p<q} <G_pq, M_pq>`` holds for
symmetric ``G`` and ``M``; here it is checked against direct products ``‖W_OV M‖_F^2`` for
head readers and dense readers and writers, on block grids of every size.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from headgraph.errors import BadInputError
from headgraph.ingest.cost import (
    choose_head_method,
    gram_bytes,
    gram_edges,
    gram_fraction,
    head_pair_flops,
)
from headgraph.ingest.kernel import (
    block_sq_norms,
    dense_gram_blocks,
    gram_block_inner,
    gram_block_pairs,
    head_read_factors,
    head_write_factor,
    read_gram_blocks,
    write_gram_blocks,
)


def _weights(seed: int, n: int, d: int, dh: int):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g, dtype=torch.float64)
            for shape in ((n, d, dh), (n, d, dh), (n, d, dh), (n, dh, d))]


@pytest.mark.slow
@settings(max_examples=30, deadline=None)
@given(st.integers(1, 5), st.integers(2, 40), st.integers(1, 8), st.integers(1, 17),
       st.integers(0, 10**6))
def test_block_grams_equal_direct_products(n, d, dh, block, seed):
    dh = min(dh, d)
    edges = gram_edges(d, block)
    assert edges[0] == 0 and edges[-1] == d and list(edges) == sorted(set(edges))
    W_Q, W_K, W_V, W_O = _weights(seed, n, d, dh)
    kv = torch.arange(n)
    A = head_write_factor(W_V, W_O, kv)
    B = torch.cat(list(head_read_factors(W_Q, W_K, W_V, W_O, kv).values()))  # (3n, d, dh)
    got = gram_block_inner(write_gram_blocks(A, edges), read_gram_blocks(B, edges))
    torch.testing.assert_close(got, block_sq_norms(A, B))
    # the first n_src sources only (a target layer sees a prefix of the heads)
    got = gram_block_inner(write_gram_blocks(A, edges), read_gram_blocks(B, edges), 1)
    torch.testing.assert_close(got, block_sq_norms(A[:1], B))
    # dense writers' full Grams, cut into the same blocks, against heads' read Grams
    W = torch.randn(2, 3, d, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    dense = dense_gram_blocks(W.transpose(-1, -2) @ W, edges)
    want = torch.stack([(W[j] @ B).square().sum(dim=(1, 2)) for j in range(2)])
    torch.testing.assert_close(gram_block_inner(dense, read_gram_blocks(B, edges)), want)
    # and the pairs cover each block of the upper triangle once
    assert len(gram_block_pairs(edges)) == (len(edges) - 1) * len(edges) // 2


def test_fraction_counts_the_upper_blocks():
    assert gram_fraction(100) == 1.0  # one block
    assert gram_fraction(768) == pytest.approx(21 / 36)  # 6 x 6 blocks of 128
    assert gram_bytes(12, 12, 768) == pytest.approx(144 * 768**2 * 21 / 36 * 4)


def test_auto_picks_the_cheaper_route_that_fits():
    # GPT-2 small: d_head^2 = 4096 > d_model = 768, Grams take 212 MB: block Grams
    flops = head_pair_flops(12, 12, 12, 768, 64)
    assert flops["gram"] < flops["qr"] / 3
    assert choose_head_method(12, 12, 12, 768, 64) == "gram"
    # gpt2-xl: still fewer FLOPs, but 6 GB of Grams: QR
    assert head_pair_flops(48, 25, 25, 1600, 64)["gram"] < head_pair_flops(
        48, 25, 25, 1600, 64)["qr"]
    assert choose_head_method(48, 25, 25, 1600, 64) == "qr"
    # wide heads of a small width: the QR products are cheaper
    assert choose_head_method(4, 4, 4, 4096, 8) == "qr"
    assert choose_head_method(12, 12, 12, 768, 64, "qr") == "qr"
    assert choose_head_method(48, 25, 25, 1600, 64, "gram") == "gram"
    with pytest.raises(BadInputError, match="unknown head-pair method 'fast'"):
        choose_head_method(1, 1, 1, 8, 8, "fast")
