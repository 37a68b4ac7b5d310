"""The banded-rotation null of a composition score, in closed form (docs/science.md).

Row-vector convention. A writer ``W`` and a reader ``M`` enter a composition score only
through their normalised Grams, the *densities* (PSD, trace 1)

    rho_w = W^T W / ‖W‖_F^2,    rho_r = M M^T / ‖M‖_F^2,    score^2 = <rho_w, rho_r>_F.

The null rotates the residual stream between writer and reader, ``rho_w -> U rho_w U^T``,
with ``U = V diag(U_1, ..., U_K) V^T``: ``V`` the eigenbasis of the model's residual
metric cut into *bands* of sizes ``d_1..d_K`` and each ``U_k`` an independent
Haar-random element of ``O(d_k)``. A component keeps its spectrum and its mass in every
band; only its orientation inside each band is random. In the basis ``V``, with
``a_k = tr rho_w[k,k]`` (writer mass in band k), ``b_k`` the reader's, and
``N_kl = ‖rho[k,l]‖_F^2`` (blocks), the moments of ``s2 = score^2`` are exact:

    E[s2]   = sum_k a_k b_k / d_k
    Var[s2] = sum_k 2 (Nw_kk - a_k^2/d_k)(Nr_kk - b_k^2/d_k) / ((d_k - 1)(d_k + 2))
            + 4 sum_{k<l} Nw_kl Nr_kl / (d_k d_l)

(the first term is 0 for ``d_k = 1``): the orthogonal group's Weingarten integrals of
degree 1 and 2, by Schur's lemma. Every term is a writer feature times a reader feature,
so the moments of all pairs are two matrix products over ``F = K + K(K+1)/2`` features
per component (:func:`null_moments`).

Features come from a component's factor: ``X`` with ``rho ∝ X^T X`` (a head's write
factor ``A``, or a read factor transposed), through the per-band Grams
``g_k = (X V_k)(X V_k)^T``, or from a dense component's full Gram ``G`` through
``V^T G V``. Both skip the widest band: its Gram is the total less the others', and its
off-diagonal block norms are row norms less the others' (``V`` is orthogonal), which
saves most of the rotation cost on models whose spectrum has one bulk band.
"""

from __future__ import annotations

import numpy as np
import torch

Tensor = torch.Tensor

RATIO = 2.0
"""Consecutive eigenvalues of the metric share a band while ``first / last <= RATIO``."""
NULL_TOL = 1e-6
"""Eigenvalues below ``NULL_TOL`` times the largest are the metric's null space: one band
(a degenerate eigenvalue, so rotations inside it keep the metric exactly)."""
CHUNK = 256  # heads per batched product
DENSE_CHUNK = 8  # dense Grams per batched product (d_model^2 doubles each, twice)


def band_slices(sizes: list[int]) -> list[slice]:
    """``[slice(0, d_1), slice(d_1, d_1 + d_2), ...]``."""
    cuts = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    return [slice(int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]


def ratio_bands(vals: np.ndarray, ratio: float = RATIO, tol: float = NULL_TOL) -> list[int]:
    """Band sizes for eigenvalues in descending order: runs with ``first / last <= ratio``,
    and the eigenvalues below ``tol`` times the largest as one last band."""
    v = np.asarray(vals, dtype=np.float64)
    if len(v) == 0:
        return []
    if not v[0] > 0:
        return [len(v)]
    live = int(np.count_nonzero(v > v[0] * tol))
    sizes, start = [], 0
    for i in range(1, live + 1):
        if i == live or v[start] / v[i] > ratio:
            sizes.append(i - start)
            start = i
    if live < len(v):
        sizes.append(len(v) - live)
    return sizes


def metric_basis(metric: Tensor, centred: bool, ratio: float = RATIO
                 ) -> tuple[np.ndarray, Tensor, list[int]]:
    """Eigenvalues (descending), eigenbasis ``V`` (columns, float64) and band sizes of the
    residual metric. ``centred``: the weights live in the complement of the all-ones
    direction (folded LayerNorm), which becomes its own last band of size 1; the metric
    is then diagonalised inside the complement (the ones direction is shifted to
    eigenvalue -1 first, so it separates from any null space of the metric)."""
    M = metric.double()
    M = (M + M.T) / 2
    d = M.shape[0]
    if not centred:
        vals, vecs = torch.linalg.eigh(M)
        order = torch.argsort(vals, descending=True)
        v = vals[order].cpu().numpy()
        return v, vecs[:, order], ratio_bands(v, ratio)
    f = torch.full((d,), d ** -0.5, dtype=M.dtype, device=M.device)
    P = torch.eye(d, dtype=M.dtype, device=M.device) - torch.outer(f, f)
    vals, vecs = torch.linalg.eigh(P @ M @ P - torch.outer(f, f))
    order = torch.argsort(vals, descending=True)[: d - 1]  # drop the ones direction (-1)
    inner = vecs[:, order]
    inner = inner - torch.outer(f, f @ inner)  # orthogonal to ones to rounding
    v = vals[order].cpu().numpy()
    return v, torch.cat([inner, f[:, None]], 1), ratio_bands(v, ratio) + [1]


def _widest(sizes: list[int]) -> int:
    return int(np.argmax(sizes))


def _pack(mass: Tensor, blocks: Tensor, total: Tensor) -> Tensor:
    """Features ``[n, K + K(K+1)/2]``: masses ``a_k``, then ``N_kl`` for ``k <= l``."""
    K = mass.shape[1]
    iu = torch.triu_indices(K, K, device=mass.device)
    tot = total.clamp_min(torch.finfo(total.dtype).tiny)
    return torch.cat([mass / tot[:, None], blocks[:, iu[0], iu[1]] / tot[:, None] ** 2], 1)


def factor_features(X: Tensor, V: Tensor, sizes: list[int]) -> Tensor:
    """Features of components given by row factors ``X [n, r, d]`` (density
    ``X^T X / ‖X‖^2``): a head's write factor, or a read factor transposed. float64."""
    out = []
    big = _widest(sizes)
    slices = band_slices(sizes)
    small = [k for k in range(len(sizes)) if k != big]
    cols = torch.cat([torch.arange(slices[k].start, slices[k].stop) for k in small]) \
        if small else torch.empty(0, dtype=torch.long)
    Vs = V[:, cols.to(V.device)].to(X.dtype)
    for start in range(0, X.shape[0], CHUNK):
        x = X[start : start + CHUNK]
        total = (x @ x.transpose(1, 2)).double()  # [n, r, r]
        xs = (x @ Vs).double()  # [n, r, d - d_big]
        grams, at = [], 0
        for k in small:
            part = xs[:, :, at : at + sizes[k]]
            at += sizes[k]
            grams.append(part @ part.transpose(1, 2))
        grams.insert(big, total - sum(grams) if grams else total)
        g = torch.stack(grams, 1)  # [n, K, r, r]
        mass = g.diagonal(dim1=2, dim2=3).sum(-1)
        flat = g.flatten(2)
        blocks = flat @ flat.transpose(1, 2)
        out.append(_pack(mass, blocks, mass.sum(1)))
    return torch.cat(out) if out else torch.empty(0, n_features(len(sizes)),
                                                  dtype=torch.float64, device=X.device)


def gram_features(G: Tensor, V: Tensor, sizes: list[int]) -> Tensor:
    """Features of dense components given by their full Grams ``G [n, d, d]``. float64.

    With ``C = V_s^T G`` (``V_s``: the bands other than the widest, ``b``), the blocks
    between small bands are ``C V_s``; ``‖R[k, b]‖^2 = ‖C_k‖^2 - sum_l ‖R[k, l]‖^2``
    (``V`` orthogonal), and ``R[b, b]`` takes what is left of ``‖G‖^2`` and ``tr G``."""
    K = len(sizes)
    big = _widest(sizes)
    slices = band_slices(sizes)
    small = [k for k in range(K) if k != big]
    out = []
    if small:
        cols = torch.cat([torch.arange(slices[k].start, slices[k].stop) for k in small])
        Vs = V[:, cols.to(V.device)].to(G.dtype)
    for start in range(0, G.shape[0], DENSE_CHUNK):
        g = G[start : start + DENSE_CHUNK]
        n = g.shape[0]
        total = g.diagonal(dim1=1, dim2=2).sum(-1).double()
        sq_total = g.double().square().sum(dim=(1, 2))
        mass = torch.zeros(n, K, dtype=torch.float64, device=g.device)
        blocks = torch.zeros(n, K, K, dtype=torch.float64, device=g.device)
        if small:
            C = (Vs.T @ g).double()  # [n, d_s, d]
            D = C @ Vs.double()  # [n, d_s, d_s]
            row_sq = C.square().sum(-1)  # [n, d_s]: ‖(V^T G V)[i, :]‖^2
            at = {}
            pos = 0
            for k in small:
                at[k] = slice(pos, pos + sizes[k])
                pos += sizes[k]
            for k in small:
                mass[:, k] = D[:, at[k], at[k]].diagonal(dim1=1, dim2=2).sum(-1)
                inside = 0.0
                for m in small:
                    norm = D[:, at[k], at[m]].square().sum(dim=(1, 2))
                    blocks[:, k, m] = norm
                    inside = inside + norm
                blocks[:, k, big] = blocks[:, big, k] = (row_sq[:, at[k]].sum(-1) - inside
                                                         ).clamp_min(0)
            mass[:, big] = total - mass.sum(1)
            blocks[:, big, big] = (sq_total - blocks.sum(dim=(1, 2))).clamp_min(0)
        else:
            mass[:, big] = total
            blocks[:, big, big] = sq_total
        out.append(_pack(mass, blocks, total))
    return torch.cat(out) if out else torch.empty(0, n_features(K), dtype=torch.float64,
                                                  device=G.device)


def n_features(K: int) -> int:
    return K + K * (K + 1) // 2


def null_moments(fw: Tensor, fr: Tensor, sizes: list[int]) -> tuple[Tensor, Tensor]:
    """Exact ``E[s2]`` and ``Var[s2]`` for every writer x reader pair: ``[n, m]`` each,
    from features ``fw [n, F]`` and ``fr [m, F]`` (the module's formulas)."""
    K = len(sizes)
    dev = fw.device
    d = torch.tensor(sizes, dtype=torch.float64, device=dev)
    iu = torch.triu_indices(K, K, device=dev)
    aw, ar = fw[:, :K], fr[:, :K]
    bw, br = fw[:, K:], fr[:, K:]
    mean = (aw / d) @ ar.T
    diag = iu[0] == iu[1]
    k = iu[0][diag]
    tw = bw[:, diag] - aw[:, k] ** 2 / d[k]
    tr = br[:, diag] - ar[:, k] ** 2 / d[k]
    coef = torch.where(d[k] > 1, 2.0 / ((d[k] - 1) * (d[k] + 2)).clamp_min(1.0),
                       torch.zeros_like(d[k]))
    var = (tw * coef) @ tr.T
    off = ~diag
    if bool(off.any()):
        var = var + (bw[:, off] * (4.0 / (d[iu[0][off]] * d[iu[1][off]]))) @ br[:, off].T
    return mean, var.clamp_min(0.0)


def haar(n: int, size: int, gen: torch.Generator) -> Tensor:
    """``[size, n, n]`` Haar-random orthogonal matrices (QR of a Gaussian, signs fixed:
    Mezzadri 2007); for checking the closed form by sampling."""
    Z = torch.randn(size, n, n, generator=gen, dtype=torch.float64)
    Q, R = torch.linalg.qr(Z)
    return Q * torch.sign(torch.diagonal(R, dim1=1, dim2=2))[:, None, :]


def sample_s2(rho_w: Tensor, rho_r: Tensor, V: Tensor, sizes: list[int], n: int,
              gen: torch.Generator) -> Tensor:
    """``n`` draws of ``<U rho_w U^T, rho_r>`` under the null (for tests)."""
    d = rho_w.shape[0]
    U = torch.zeros(n, d, d, dtype=torch.float64)
    for s in band_slices(sizes):
        U[:, s, s] = haar(s.stop - s.start, n, gen)
    U = V @ U @ V.T
    return torch.einsum("ij,nji->n", rho_w, U @ rho_r @ U.transpose(1, 2))
