"""Exact composition scores, reduced to small cores (Elhage et al. 2021; docs/science.md).

Composition of a writer ``W`` (a head's ``W_OV``, an MLP's ``W_out``...) into a reader
``M`` (a head's ``W_QK``, ``W_QK^T`` or ``W_OV``, an MLP's ``W_in``...) is

    score = ‖W M‖_F / (‖W‖_F ‖M‖_F).

Two exact reductions keep this cheap:

*QR.* For a thin factor ``F = Q R`` (``Q`` with orthonormal columns),
``‖Q R X‖_F = ‖R X‖_F`` and ``‖X R^T Q^T‖_F = ‖X R^T‖_F``. A head's
``W_OV = W_V W_O = Q_V (R_V W_O)`` so its *write factor* is ``A = R_V W_O``
(``d_head x d_model``), and its *read factors* are ``W_Q R_K^T`` (for Q-composition,
``W_QK = W_Q R_K^T Q_K^T``), ``W_K R_Q^T`` (K, ``W_QK^T``) and ``W_V R_O^T`` (V, with
``W_O^T = Q_O R_O``), each ``d_model x d_head``. Then every head-to-head numerator is a
block of one product ``A_sources @ B_targets``.

*Gram.* For dense components (MLPs, embeddings, unembedding) the factors are as wide as
the model, so ``‖W M‖_F^2 = <W^T W, M M^T>_F`` is used instead: one ``d_model x d_model``
Gram matrix per component, and a single matrix product of flattened Grams scores all
pairs.

*Block Gram.* Head pairs take the Gram route too when it is cheaper: the QR product costs
``2 d_model d_head^2`` per pair, the inner product of two Grams ``2 d_model^2``, so for
``d_head^2 > d_model`` (5.3x on GPT-2 small) Grams win once each is reused by enough pairs.
Grams are symmetric, so only the blocks on and above the diagonal of a ``b x b`` block grid
are formed and multiplied (off-diagonal blocks count twice):
``<G, M> = sum_p <G_pp, M_pp> + 2 sum_{p<q} <G_pq, M_pq>``, which saves ``(b-1)/2b`` of
both the Gram products and the inner products. :mod:`.cost` decides which route a model
takes.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def qr_r(x: Tensor) -> Tensor:
    """A ``k x k`` factor ``R`` with ``R^T R = x^T x``, batched: ``[..., n, k] -> [..., k, k]``.

    Any such ``R`` serves the reduction (``‖x X‖_F^2 = tr(X^T x^T x X) = ‖R X‖_F^2``); the
    QR's triangular ``R`` is one. It is computed here from the Gram ``x^T x`` in float64:
    its Cholesky factor ``L^T`` (far cheaper than a batched Householder QR on the CPU), or,
    for a rank-deficient ``x`` where Cholesky fails, the Gram's symmetric square root.
    """
    gram = (x.transpose(-1, -2) @ x).double()  # (..., k, k): fp32 products, fp64 factor
    lower, info = torch.linalg.cholesky_ex(gram)
    root = lower.transpose(-1, -2)
    failed = info != 0
    if bool(failed.any()):
        vals, vecs = torch.linalg.eigh(gram[failed])
        sym = (vecs * vals.clamp_min(0).sqrt().unsqueeze(-2)) @ vecs.transpose(-1, -2)
        root = root.clone()
        root[failed] = sym
    return root.to(x.dtype)


def frob(x: Tensor) -> Tensor:
    """Frobenius norm over the last two dims."""
    return torch.linalg.matrix_norm(x)


def head_write_factor(W_V: Tensor, W_O: Tensor, kv_of_head: Tensor) -> Tensor:
    """``A = R_V W_O``: ``[H, d_head, d_model]`` with ``‖A X‖ = ‖W_OV X‖`` for any X."""
    R_V = qr_r(W_V)  # (Hkv, dh, dh)
    return R_V[kv_of_head] @ W_O  # (H, dh, d)


def head_read_factors(
    W_Q: Tensor, W_K: Tensor, W_V: Tensor, W_O: Tensor, kv_of_head: Tensor
) -> dict[str, Tensor]:
    """Read factors ``[H, d_model, d_head]`` with ``‖X B_kind‖ = ‖X M_kind‖``.

    ``M_Q = W_QK = W_Q W_K^T``, ``M_K = W_QK^T = W_K W_Q^T``, ``M_V = W_OV = W_V W_O``.
    """
    R_Q = qr_r(W_Q)  # (H, dh, dh)
    R_K = qr_r(W_K)  # (Hkv, dh, dh)
    R_O = qr_r(W_O.transpose(-1, -2))  # (H, dh, dh), W_O^T = Q_O R_O
    return {
        "Q": W_Q @ R_K[kv_of_head].transpose(-1, -2),
        "K": W_K[kv_of_head] @ R_Q.transpose(-1, -2),
        "V": W_V[kv_of_head] @ R_O.transpose(-1, -2),
    }


def grouped_read_parts(
    W_Q: Tensor, W_K: Tensor, W_V: Tensor, W_O: Tensor
) -> dict[str, tuple[Tensor, Tensor]]:
    """K and V read factors split as ``B_h = base[kv(h)] @ core[h]`` for grouped-query
    attention: ``base`` is shared by the query heads of one KV head (``W_K`` or ``W_V``,
    ``[Hkv, d_model, d_head]``), ``core`` is per query head (``R_Q^T`` or ``R_O^T``,
    ``[H, d_head, d_head]``). Then ``A @ base`` is one product per KV head, and only a
    ``d_head x d_head`` core is applied per query head (docs/science.md, "Architectures")."""
    R_Q = qr_r(W_Q)
    R_O = qr_r(W_O.transpose(-1, -2))
    return {"K": (W_K, R_Q.transpose(-1, -2)), "V": (W_V, R_O.transpose(-1, -2))}


def block_sq_norms_grouped(write: Tensor, base: Tensor, core: Tensor, kv_of_head: Tensor,
                           max_elems: int = 1 << 25) -> Tensor:
    """``‖write_i @ base[kv(h)] @ core[h]‖_F^2`` for all sources ``i`` and query heads ``h``:
    ``[n, r, d] x [Hkv, d, c] x [H, c, e] -> [n, H]``, sharing ``write @ base`` per KV head."""
    n, r, d = write.shape
    n_kv, _, c = base.shape
    H = core.shape[0]
    rhs = base.permute(1, 0, 2).reshape(d, n_kv * c)
    out = torch.empty(n, H, dtype=write.dtype, device=write.device)
    rows = max(1, max_elems // max(1, r * H * c))
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        shared = (write[start:stop].reshape(-1, d) @ rhs).view(stop - start, r, n_kv, c)
        per_head = torch.einsum("mrhc,hce->mrhe", shared[:, :, kv_of_head, :], core)
        out[start:stop] = per_head.square_().sum(dim=(1, 3))
    return out


def block_sq_norms(write: Tensor, read: Tensor, max_elems: int = 1 << 25) -> Tensor:
    """``‖write_i @ read_j‖_F^2`` for all pairs: ``[n, r, d] x [m, d, c] -> [n, m]``.

    One large matrix product ``[n r, d] @ [d, m c]``, chunked over the source rows so
    that no intermediate holds more than ``max_elems`` floats.
    """
    n, r, d = write.shape
    m, _, c = read.shape
    rhs = read.permute(1, 0, 2).reshape(d, m * c)  # (d, m c)
    out = torch.empty(n, m, dtype=write.dtype, device=write.device)
    rows = max(1, max_elems // max(1, r * m * c))
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        prod = write[start:stop].reshape(-1, d) @ rhs  # ((stop-start) r, m c)
        prod.square_()
        out[start:stop] = prod.view(stop - start, r, m, c).sum(dim=(1, 3))
    return out


def write_gram(factor: Tensor) -> Tensor:
    """``F^T F`` (``[..., a, d] -> [..., d, d]``): the Gram of a component's write rows."""
    return factor.transpose(-1, -2) @ factor


def read_gram(factor: Tensor) -> Tensor:
    """``M M^T`` (``[..., d, k] -> [..., d, d]``): the Gram of a component's read columns."""
    return factor @ factor.transpose(-1, -2)


def gram_inner(left: Tensor, right: Tensor) -> Tensor:
    """``<L_i, R_j>_F`` for stacks of Grams ``[n, d, d] x [m, d, d] -> [n, m]``."""
    return left.flatten(1) @ right.flatten(1).T


def gram_pairs(
    thin: Tensor, grams: Tensor, side: str, max_elems: int = 1 << 25
) -> Tensor:
    """``‖W M‖_F^2`` between thin factors and dense Grams, by the Gram trick.

    ``side="write"``: ``thin`` are write factors ``[n, r, d]`` (``‖A M‖^2 = <A^T A, M M^T>``);
    ``side="read"``: ``thin`` are read factors ``[n, d, c]`` (``‖W B‖^2 = <W^T W, B B^T>``).
    ``grams`` is ``[m, d, d]``. Returns ``[n, m]``, built in chunks of thin factors.
    """
    n = thin.shape[0]
    d = grams.shape[-1]
    out = torch.empty(n, grams.shape[0], dtype=thin.dtype, device=thin.device)
    if grams.shape[0] == 0 or n == 0:
        return out
    flat = grams.flatten(1)
    step = max(1, max_elems // (d * d))
    for start in range(0, n, step):
        chunk = thin[start : start + step]
        grams_of_chunk = write_gram(chunk) if side == "write" else read_gram(chunk)
        out[start : start + step] = grams_of_chunk.flatten(1) @ flat.T
    return out


def gram_block_pairs(edges: tuple[int, ...]) -> list[tuple[slice, slice, bool]]:
    """``(rows, cols, on_diagonal)`` of the blocks on and above the diagonal."""
    cuts = [slice(edges[i], edges[i + 1]) for i in range(len(edges) - 1)]
    return [(cuts[p], cuts[q], p == q) for p in range(len(cuts)) for q in range(p, len(cuts))]


def write_gram_blocks(A: Tensor, edges: tuple[int, ...],
                      out: list[Tensor] | None = None) -> list[Tensor]:
    """Upper blocks of ``A_i^T A_i`` for write factors ``[n, r, d]``: one ``[n, s_p, s_q]``
    tensor per block (written into ``out`` when given)."""
    blocks = []
    for k, (p, q, _) in enumerate(gram_block_pairs(edges)):
        target = None if out is None else out[k]
        blocks.append(torch.bmm(A[:, :, p].transpose(1, 2), A[:, :, q], out=target))
    return blocks


def read_gram_blocks(B: Tensor, edges: tuple[int, ...]) -> list[Tensor]:
    """Upper blocks of ``B_j B_j^T`` for read factors ``[m, d, c]``, off-diagonal blocks
    doubled so that a plain sum of block inner products gives ``<G, B B^T>``."""
    blocks = []
    for p, q, diagonal in gram_block_pairs(edges):
        g = torch.bmm(B[:, p, :], B[:, q, :].transpose(1, 2))
        blocks.append(g if diagonal else g.mul_(2.0))
    return blocks


def dense_gram_blocks(grams: Tensor, edges: tuple[int, ...]) -> list[Tensor]:
    """The same upper blocks cut from full Grams ``[m, d, d]`` (copies, not doubled)."""
    return [grams[:, p, q].contiguous() for p, q, _ in gram_block_pairs(edges)]


def gram_block_inner(left: list[Tensor], right: list[Tensor], n: int | None = None) -> Tensor:
    """``sum_k <left_k[i], right_k[j]>_F`` for the first ``n`` of ``left``: ``[n, m]``.

    With one side from :func:`read_gram_blocks` (doubled off-diagonal blocks) and the other
    from :func:`write_gram_blocks` or :func:`dense_gram_blocks`, this is ``‖W M‖_F^2``.
    """
    n = left[0].shape[0] if n is None else n
    out = torch.zeros(n, right[0].shape[0], dtype=left[0].dtype, device=left[0].device)
    for lk, rk in zip(left, right, strict=True):
        out.addmm_(lk[:n].flatten(1), rk.flatten(1).T)
    return out


def _centre_left(x: Tensor) -> Tensor:
    """``P x`` with ``P = I - 11^T / d`` (rows of ``x`` indexed by d_model)."""
    return x - x.mean(dim=0, keepdim=True)


def _centre_right(x: Tensor) -> Tensor:
    """``x P``."""
    return x - x.mean(dim=1, keepdim=True)


def tied_vocab_grams(E: Tensor, scale: Tensor | None, *, centre_write: bool,
                     centre_read: bool, centre_vocab: bool) -> tuple[Tensor, Tensor, Tensor]:
    """``(W_E^T W_E, W_U W_U^T, W_U W_E)`` of a model whose unembedding is its embedding
    ``E [d_vocab, d_model]`` transposed, from the one Gram ``G = E^T E``.

    With ``P = I - 11^T/d_model`` (where the processing centres), ``D = diag(scale)`` (the
    folded final norm) and ``C_V = I - 11^T/d_vocab`` (``center_unembed``):
    ``W_E = E P_w`` and ``W_U = P_r D E^T C_V``, so with ``m`` the mean row of ``E`` and
    ``G_c = E^T C_V E = G - d_vocab m m^T``:

        W_E^T W_E = P_w G P_w,   W_U W_U^T = P_r D G_c D P_r,   W_U W_E = P_r D G_c P_w.

    One ``2 d_model^2 d_vocab`` product instead of three (exact; tested against the
    direct products in tests/test_kernel.py)."""
    G = E.T @ E
    m = E.mean(dim=0, dtype=torch.float64)
    Gc = (G.double() - E.shape[0] * torch.outer(m, m)).to(G.dtype) if centre_vocab else G
    if scale is not None:
        Gc_right = Gc * scale[:, None]  # D G_c
        unembed = Gc_right * scale[None, :]  # D G_c D
    else:
        Gc_right, unembed = Gc, Gc
    embed = G
    if centre_write:
        embed = _centre_right(_centre_left(embed))
    readout = Gc_right
    if centre_read:
        unembed = _centre_right(_centre_left(unembed))
        readout = _centre_left(readout)
    if centre_write:
        readout = _centre_right(readout)
    return embed, unembed, readout


def copying_scores(
    W_V: Tensor, W_O: Tensor, readout: Tensor, kv_of_head: Tensor
) -> tuple[Tensor, Tensor]:
    """Copying scores from the eigenvalues of the full OV circuit ``W_E W_OV W_U``.

    Its non-zero eigenvalues are those of the ``d_head x d_head`` core
    ``W_O (W_U W_E) W_V``; ``readout = W_U W_E`` (``[d_model, d_model]``).
    Returns ``positive_fraction`` (share of eigenvalues with real part > 0) and
    ``ratio = Σλ / Σ|λ|`` in [-1, 1], each ``[H]``.
    """
    return copying_core_scores(W_O @ readout @ W_V[kv_of_head])  # (H, dh, dh) cores


def copying_core_scores(core: Tensor) -> tuple[Tensor, Tensor]:
    """``(positive_fraction, ratio)`` from the eigenvalues of ``d_head x d_head`` cores
    ``[n, dh, dh]`` (see :func:`copying_scores`)."""
    eig = torch.linalg.eigvals(core.double())
    positive = (eig.real > 0).double().mean(dim=-1)
    total = eig.sum(dim=-1).real
    magnitude = eig.abs().sum(dim=-1)
    ratio = torch.where(magnitude > 0, total / magnitude.clamp_min(1e-300), torch.zeros_like(total))
    return positive.float(), ratio.float()
