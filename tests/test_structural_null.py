"""The structural null (headgraph.ingest.rotation_null, headgraph.ingest.structural):
its closed form against sampling, its calibration on random weights, and z on the toy."""

from __future__ import annotations

import statistics

import numpy as np
import pytest
import torch

from headgraph.ingest import rotation_null as rn
from headgraph.ingest.structural import FAMILIES, calibrate


def _factor(d: int, r: int, weight: float, gen: torch.Generator) -> torch.Tensor:
    """A rank-r row factor [r, d] with an anisotropic spectrum and mass on e_0."""
    X = torch.randn(r, d, generator=gen, dtype=torch.float64)
    X = X * torch.logspace(0, -1.0, d, dtype=torch.float64)[None, :]
    X[0, 0] += weight * float(X.norm()) / r ** 0.5
    return X


CASES = [  # (d, writer rank, reader rank, band layout, centred)
    (10, 3, 4, lambda d: [d], False),  # one band: the plain spectrum-preserving Haar null
    (8, 1, 1, lambda d: [d], False),  # rank 1 each
    (10, 3, 4, lambda d: [1, d - 1], False),  # singleton + bulk
    (12, 4, 3, lambda d: [1, 2, 3, 6], False),  # uneven
    (8, 2, 3, lambda d: [1] * d, False),  # all singletons (random sign flips)
    (8, 2, 3, lambda d: [2] * (d // 2), False),  # pairs
    (12, 3, 4, lambda d: [1, 2, d - 4, 1], True),  # centred: the ones direction fixed
]


@pytest.mark.parametrize("d,rw,rr,layout,centred", CASES)
def test_closed_form_matches_sampling(d, rw, rr, layout, centred):
    """Mean and spread of score^2 under random rotations within bands: the closed form
    (both feature routes) against 20,000 Haar draws, within 4.5 standard errors."""
    gen = torch.Generator().manual_seed(d * 100 + rw * 10 + rr + len(layout(d)))
    Xw, Xr = _factor(d, rw, 2.0, gen), _factor(d, rr, 1.5, gen)
    if centred:
        P = torch.eye(d, dtype=torch.float64) - 1.0 / d
        Xw, Xr = Xw @ P, Xr @ P
    rho_w = Xw.T @ Xw / Xw.square().sum()
    rho_r = Xr.T @ Xr / Xr.square().sum()
    noise = torch.randn(d, d, generator=gen, dtype=torch.float64)
    _, V, _ = rn.metric_basis(rho_w + rho_r + 0.05 * noise.T @ noise / d, centred)
    sizes = layout(d)
    mean, var = rn.null_moments(rn.factor_features(Xw[None], V, sizes),
                                rn.gram_features((Xr.T @ Xr)[None], V, sizes), sizes)
    mean2, var2 = rn.null_moments(rn.gram_features((Xw.T @ Xw)[None], V, sizes),
                                  rn.factor_features(Xr[None], V, sizes), sizes)
    assert float(mean) == pytest.approx(float(mean2), rel=1e-9)
    assert float(var) == pytest.approx(float(var2), rel=1e-9, abs=1e-18)
    n = 20_000
    s2 = rn.sample_s2(rho_w, rho_r, V, sizes, n, gen)
    sm, ss = float(s2.mean()), float(s2.std())
    se_mean = ss / n ** 0.5
    se_sd = float(((s2 - sm) ** 2).std()) / (2 * ss * n ** 0.5)
    assert abs(sm - float(mean)) < 4.5 * se_mean
    assert abs(ss - float(var) ** 0.5) < 4.5 * se_sd


def test_plain_haar_closed_form():
    """One band over d dims: E[s2] = 1/d and Var = 2 (|rho_w|^2 - 1/d)(|rho_r|^2 - 1/d) /
    ((d - 1)(d + 2)), whatever the basis."""
    gen = torch.Generator().manual_seed(3)
    d = 9
    Xw, Xr = _factor(d, 2, 1.0, gen), _factor(d, 3, 0.5, gen)
    rho_w = Xw.T @ Xw / Xw.square().sum()
    rho_r = Xr.T @ Xr / Xr.square().sum()
    V = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))[0]
    mean, var = rn.null_moments(rn.factor_features(Xw[None], V, [d]),
                                rn.factor_features(Xr[None], V, [d]), [d])
    expect = 2 * (rho_w.square().sum() - 1 / d) * (rho_r.square().sum() - 1 / d) / (
        (d - 1) * (d + 2))
    assert float(mean) == pytest.approx(1 / d)
    assert float(var) == pytest.approx(float(expect))


def test_features_skip_the_widest_band_exactly():
    """The widest band's Gram and block norms are taken as what is left over: equal to
    rotating the whole density and summing its blocks."""
    gen = torch.Generator().manual_seed(5)
    d, sizes = 16, [2, 9, 1, 4]
    X = torch.randn(3, 5, d, generator=gen, dtype=torch.float64)
    V = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))[0]
    R = V.T @ (X.transpose(1, 2) @ X) @ V
    R = R / R.diagonal(dim1=1, dim2=2).sum(-1)[:, None, None]
    cuts = rn.band_slices(sizes)
    mass = torch.stack([R[:, s, s].diagonal(dim1=1, dim2=2).sum(-1) for s in cuts], 1)
    blocks = [R[:, a, b].square().sum(dim=(1, 2)) for i, a in enumerate(cuts)
              for b in cuts[i:]]
    direct = torch.cat([mass, torch.stack(blocks, 1)], 1)
    assert torch.allclose(rn.factor_features(X, V, sizes), direct, atol=1e-12)
    assert torch.allclose(rn.gram_features(X.transpose(1, 2) @ X, V, sizes), direct, atol=1e-12)


def test_bands_group_eigenvalues_by_ratio():
    vals = np.array([8.0, 5.0, 4.5, 2.0, 1.1, 0.9, 1e-9, 1e-12])
    assert rn.ratio_bands(vals, 2.0) == [3, 2, 1, 2]  # the metric's null space: one band
    assert rn.ratio_bands(np.array([1.0, 1.0, 1.0])) == [3]
    assert rn.ratio_bands(np.zeros(4)) == [4]


def test_centred_basis_keeps_the_ones_direction_apart():
    gen = torch.Generator().manual_seed(1)
    d = 12
    X = torch.randn(40, d, generator=gen, dtype=torch.float64)
    X = X - X.mean(1, keepdim=True)
    _, V, sizes = rn.metric_basis(X.T @ X / 40, centred=True)
    assert sizes[-1] == 1 and sum(sizes) == d
    assert torch.allclose(V[:, -1], torch.full((d,), d ** -0.5, dtype=torch.float64))
    assert torch.allclose(V.T @ V, torch.eye(d, dtype=torch.float64), atol=1e-12)


def test_calibration_rules():
    """Own (median, 1.4826 MAD, floored at 1) with enough edges; dense->head borrows its
    kind's head->head; MLP/UNEMBED pool; too few: analytic (0, 1)."""
    rng = np.random.default_rng(0)
    kinds = ("Q", "K", "V", "MLP", "UNEMBED")
    hh = 3.0 + 4.0 * rng.standard_normal(40)  # K head->head: shifted and 4x too wide
    dh = 3.0 + 4.0 * rng.standard_normal(10)  # K dense->head: too few of its own
    hd_mlp, hd_un = rng.standard_normal(30), rng.standard_normal(30)  # pooled: 60
    dd = rng.standard_normal(5)
    raw = np.concatenate([hh, dh, hd_mlp, hd_un, dd])
    code = np.concatenate([np.full(50, 1), np.full(30, 3), np.full(30, 4), np.full(5, 4)])
    fam = np.concatenate([np.zeros(40), np.ones(10), np.full(60, 2), np.full(5, 3)]).astype(int)
    z, cal = calibrate(raw, code, fam, kinds)
    by = {(c.kind, c.family): c for c in cal}
    own = by["K", "head->head"]
    assert own.basis == "own" and own.edges == 40
    low = statistics.median_low(hh)
    assert own.delta == pytest.approx(low)
    assert own.phi == pytest.approx(max(1.0, 1.4826 * statistics.median_low(np.abs(hh - low))))
    assert 2.5 < own.phi < 6
    assert by["K", "dense->head"].basis == "K head->head"
    assert by["MLP", "head->dense"].basis == "MLP+UNEMBED head->dense"
    assert by["UNEMBED", "dense->dense"].basis == "analytic"
    assert statistics.median_low(np.abs(z[:40])) == pytest.approx(1 / 1.4826, rel=1e-6)  # MAD / phi
    np.testing.assert_allclose(z[110:], raw[110:].astype(np.float32))
    assert FAMILIES[int(fam[0])] == "head->head"


@pytest.mark.slow
def test_random_weights_are_explained_by_their_structure():
    """On random weights the calibrated null is the analytic one: phi about 1 and the
    median |z| about 0.67 (a standard normal's), per kind."""
    from headgraph.ingest.compose import EDGE_KINDS, compose
    from headgraph.ingest.sources import open_source
    from headgraph.ingest.task import cached_null

    reader = open_source("random:L4H8D256,seed=7")
    try:
        graph = compose(reader, null=cached_null({}))
    finally:
        reader.close()
    st = graph.structural
    e = graph.edges
    is_head = np.asarray([k == "head" for k in graph.nodes.kinds])
    for kind in "QKV":
        cal = next(c for c in st.calibration if c.kind == kind and c.family == "head->head")
        assert cal.basis == "own" and cal.edges == 8 * 8 * 6
        assert cal.phi < 1.25, cal
        sel = (e.kind == EDGE_KINDS.index(kind)) & is_head[e.source] & is_head[e.target]
        raw = st.z[sel] * cal.phi + cal.delta
        assert 0.55 < np.median(np.abs(raw)) < 0.8
        assert abs(np.median(raw)) < 0.15
        assert 0.55 < np.median(np.abs(st.z[sel])) < 0.8


def test_toy_previous_token_head_stands_above_its_structure(toy_db):
    """L0H2 feeds the keys of every induction head far above what the toy's structure
    explains; no other feeder of theirs (heads, embeddings) comes near."""
    import headgraph

    with headgraph.open(toy_db) as g:
        toy = g.model("toy")
        assert toy.structural_null() is not None
        for h in range(4):
            feeders = toy.node(f"L1H{h}").feeders("K", top=10)
            by = {e.source: e.z for e in feeders}
            assert by["L0H2"] > 5
            assert max(z for s, z in by.items() if s != "L0H2") < by["L0H2"] - 4
            assert max(z for s, z in by.items() if s.startswith("L") and s != "L0H2") < 2
            assert all(e.gaussian_z is not None for e in feeders)
        k = [e.z for e in toy.edges(kind="K") if e.source.startswith("L") and
             e.target.startswith("L")]
        assert np.median(np.abs(k)) == pytest.approx(0.6745, abs=0.05)
