"""Virtual attention heads: the exact top-k V-chains, found by bounds (Elhage et al. 2021).

A chain of V-composition ``h1 -> h2 (-> h3)`` acts as one *virtual head* whose OV circuit is
the product ``W_OV^1 W_OV^2 (W_OV^3)``. Its strength is

    score = ‖W_OV^1 W_OV^2 …‖_F / Π_i ‖W_OV^i‖_F

(1 would mean the heads' OV circuits align perfectly), and its copying score comes from the
eigenvalues of the full circuit ``W_E W_OV^1 W_OV^2 … W_U``, whose non-zero eigenvalues are
those of the ``d_head x d_head`` core ``W_O^n (W_U W_E) W_V^1 (W_O^1 W_V^2) … (W_O^{n-1} W_V^n)``.

**Length 2.** The score of ``a -> b`` *is* the V-composition score of the edge ``a -> b``,
so the top-k chains of length 2 are the top-k head -> head V edges, exactly.

**Length 3.** There are ``~ (L H)^3 / 6`` chains (270 million on gpt2-xl), so they are not
all scored. With ``s_im``, ``s_mj`` the V scores of the chain's two edges, ``F = ‖W_OV‖_F``,
``ρ = ‖W_OV‖_2 / F`` and ``κ = F / σ_min(W_OV)`` (the smallest of its ``d_head`` non-zero
singular values; ``‖XY‖_F <= ‖X‖_2 ‖Y‖_F``, and ``W_m = U S V^T`` gives
``W_i W_m W_j = (W_i U S) S^{-1} (S V^T W_j)``):

    score(i, m, j) <= U(i, m, j) = min(s_im ρ_j,  ρ_i s_mj,  κ_m s_im s_mj).

The search scores exactly a first set of promising chains (largest ``s_im s_mj``), which
sets ``τ``, the k-th best exact score; then the chains whose bound ``U`` exceeds ``τ`` are
scored exactly, best bound first, until the budget (:data:`BUDGET_SHARE` of the
composition's FLOPs) is spent. Every chain left unscored scores at most ``bound_left``,
the largest bound among them, so the chains found above ``bound_left`` are exactly the
top of the ranking of *all* chains, in order: those are stored (all k when every chain
above ``τ`` was scored: the search is then *certified*), and the rest are not, so every
stored chain is exact in its score and in its rank. On random weights every chain scores
alike and the bounds prune little; trained models have structure the bounds find.
Scoring a chain is ``‖X_im Y_mj‖_F`` with ``X_im = A_i W_V^m`` and
``Y_mj = W_O^m B_j`` (``d_head x d_head``; ``A`` the write factors, ``B`` the V read
factors of :mod:`headgraph.ingest.kernel`), so the ``d_model``-wide products are paid per
chain edge, not per chain, and chains cost ``2 d_head^2`` each through the Grams of the
``X`` and ``Y``.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np
import torch

from headgraph.ingest.compose import EDGE_KINDS, ComposedGraph
from headgraph.ingest.factors import Factors
from headgraph.ingest.heap import trim_heap
from headgraph.ingest.kernel import copying_core_scores, qr_r
from headgraph.ingest.plan import compose_flops
from headgraph.ingest.reader import WeightReader
from headgraph.ingest.stages import VIRTUAL_BUDGET_SHARE as BUDGET_SHARE

SEED_TRIPLES = 4096
"""Chains scored first (largest product of V scores) to set the threshold ``τ``."""


@dataclass(frozen=True)
class VirtualHead:
    heads: tuple[str, ...]
    score: float  # exact ‖Π W_OV‖ / Π ‖W_OV‖
    heuristic: float  # product of the chain's stored V-composition scores
    copying_positive_fraction: float
    copying_ratio: float


@dataclass(frozen=True)
class VirtualSearch:
    """How the chains of length 3 were found: ``chains`` in the model, ``scored`` exactly,
    ``certified`` when every chain whose bound exceeds the k-th best score was scored
    (then the stored top-k is exact), else ``bound_left``: the largest bound not scored."""

    chains: int
    scored: int
    certified: bool
    bound_left: float


class _Heads:
    """Per-head weights the search needs, read layer by layer once: ``V [N, d, dh]`` (the
    key/value head each query head reads), ``O [N, dh, d]`` and ``B [N, d, dh]`` (V read
    factors), in head order ``layer * H + head``."""

    def __init__(self, reader: WeightReader, factors: Factors, device: torch.device) -> None:
        spec = factors.spec
        H, d, dh = spec.n_heads, spec.d_model, spec.d_head
        kv = torch.arange(H, device=device) // spec.group
        n = spec.n_layers * H
        # filled in place, layer by layer: stacking per-layer copies held both at once, and
        # glibc kept the freed half (3 GB on gpt2-xl, never returned)
        self.V = torch.empty(n, d, dh, device=device)
        self.O = torch.empty(n, dh, d, device=device)
        self.B = torch.empty(n, d, dh, device=device)
        for layer in range(spec.n_layers):
            lw = reader.layer(layer, mlp=False)
            rows = slice(layer * H, (layer + 1) * H)
            self.V[rows] = lw.W_V.to(device, torch.float32)[kv]
            self.O[rows] = lw.W_O.to(device, torch.float32)
            self.B[rows] = self.V[rows] @ qr_r(self.O[rows].transpose(-1, -2)).transpose(-1, -2)
            del lw
        trim_heap()


def _v_scores(graph: ComposedGraph, n_heads: int) -> np.ndarray:
    """``S[i, j]``: the V score of head ``i`` into head ``j`` (0 where there is no edge)."""
    e, nodes = graph.edges, graph.nodes
    sel = ((e.kind == EDGE_KINDS.index("V")) & (nodes.heads[e.source] >= 0)
           & (nodes.heads[e.target] >= 0))
    H = graph.spec.n_heads
    src = nodes.layers[e.source[sel]] * H + nodes.heads[e.source[sel]]
    dst = nodes.layers[e.target[sel]] * H + nodes.heads[e.target[sel]]
    S = np.zeros((n_heads, n_heads), np.float64)
    S[src, dst] = e.score[sel]
    return S


def _spectra(A: torch.Tensor, A_sq: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """``(ρ, κ)`` per head from ``A = R_V W_O`` (same singular values as ``W_OV``)."""
    ev = torch.linalg.eigvalsh((A @ A.transpose(-1, -2)).double()).clamp_min(0)  # σ², ascending
    F2 = A_sq.double()
    rho = torch.where(F2 > 0, (ev[:, -1] / F2).sqrt(), torch.zeros_like(F2))
    tiny = ev[:, 0] <= 1e-12 * F2
    kappa = torch.where(tiny, torch.full_like(F2, float("inf")),
                        (F2 / ev[:, 0].clamp_min(1e-300)).sqrt())
    return rho.cpu().numpy(), kappa.cpu().numpy()


class _Scorer:
    """Exact scores of chains ``(i, m, j)``, grouped by middle head."""

    def __init__(self, factors: Factors, heads: _Heads) -> None:
        self.A, self.heads = factors.A, heads
        self.norm = factors.A_sq.double().sqrt().cpu().numpy()
        self.scored = 0

    def _grams(self, m: int, src: np.ndarray, dst: np.ndarray
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """``X^T X`` and ``Y Y^T`` (flattened, float64) of the chain edges into and out of
        ``m``: ``X = A_i W_V^m``, ``Y = W_O^m B_j``."""
        h = self.heads
        dh, d = self.A.shape[1], self.A.shape[2]
        gx, gy = [], []  # factors gathered GRAM_CHUNK heads at a time (26 MB on gpt2-xl)
        for part in np.array_split(src, max(1, -(-len(src) // GRAM_CHUNK))):
            A = self.A[torch.as_tensor(part)]  # (a, dh, d)
            X = (A.reshape(-1, d) @ h.V[m]).view(len(part), dh, dh)  # one GEMM per chunk
            gx.append(torch.bmm(X.transpose(1, 2), X).flatten(1).double())
        for part in np.array_split(dst, max(1, -(-len(dst) // GRAM_CHUNK))):
            B = h.B[torch.as_tensor(part)]  # (b, d, dh)
            Y = (h.O[m] @ B.transpose(0, 1).reshape(d, -1)).view(dh, len(part), dh)
            Y = Y.transpose(0, 1)
            gy.append(torch.bmm(Y, Y.transpose(1, 2)).flatten(1).double())
        return torch.cat(gx), torch.cat(gy)

    def _ratio(self, num_sq: np.ndarray, den: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, np.sqrt(np.clip(num_sq, 0, None)) / den, 0.0)

    def middle(self, m: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        """Scores of every chain ``src[a] -> m -> dst[b]``: ``[len(src), len(dst)]``."""
        gx, gy = self._grams(m, src, dst)
        num_sq = (gx @ gy.T).cpu().numpy()
        self.scored += num_sq.size
        return self._ratio(num_sq, self.norm[src][:, None] * self.norm[m]
                           * self.norm[dst][None, :])

    def chains(self, m: int, src: np.ndarray, dst: np.ndarray, ia: np.ndarray,
               ib: np.ndarray) -> np.ndarray:
        """Scores of the chains ``src[ia[c]] -> m -> dst[ib[c]]`` only."""
        gx, gy = self._grams(m, src, dst)
        if len(ia) * 4 >= len(src) * len(dst):  # dense: one GEMM, then pick (memory-bound
            num_sq = (gx @ gy.T).cpu().numpy()[ia, ib]  # gathers cost more than the FLOPs)
        else:
            num_sq = (gx[torch.as_tensor(ia)] * gy[torch.as_tensor(ib)]).sum(1).cpu().numpy()
        self.scored += len(ia)
        return self._ratio(num_sq, self.norm[src[ia]] * self.norm[m] * self.norm[dst[ib]])


def _bounds(S: np.ndarray, rho: np.ndarray, kappa: np.ndarray, m: int, tau: float
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sources, targets and bounds ``U > tau`` of chains through middle ``m``."""
    s_in, s_out = S[:, m], S[m, :]
    src, dst = np.flatnonzero(s_in > 0), np.flatnonzero(s_out > 0)
    if not len(src) or not len(dst):
        return src[:0], dst[:0], np.zeros((0, 0))
    k = kappa[m]
    cap_in = np.minimum(rho[dst].max(), k * s_out[dst].max())  # U <= s_im * cap_in
    cap_out = np.minimum(rho[src].max(), k * s_in[src].max())
    src = src[s_in[src] * cap_in > tau]
    dst = dst[s_out[dst] * cap_out > tau]
    a, b = s_in[src][:, None], s_out[dst][None, :]
    with np.errstate(invalid="ignore"):
        U = np.minimum(np.minimum(a * rho[dst][None, :], rho[src][:, None] * b), k * a * b)
    return src, dst, U


class _TopK:
    """The ``k`` best (score, chain) found so far; ``tau`` is the k-th best (0 until full)."""

    def __init__(self, k: int) -> None:
        self.k, self.heap = k, []

    @property
    def tau(self) -> float:
        return self.heap[0][0] if len(self.heap) >= self.k else 0.0

    def offer(self, scores: np.ndarray, m: int, src: np.ndarray, dst: np.ndarray) -> None:
        """A block of scores ``[len(src), len(dst)]`` through middle ``m``."""
        rows, cols = np.meshgrid(src, dst, indexing="ij")
        self.offer_list(scores.ravel(), m, rows.ravel(), cols.ravel())

    def offer_list(self, scores: np.ndarray, m: int, src: np.ndarray, dst: np.ndarray
                   ) -> None:
        """Chains ``src[c] -> m -> dst[c]`` with ``scores[c]``."""
        keep = np.flatnonzero(scores > self.tau)
        if len(keep) > self.k:
            keep = keep[np.argpartition(-scores[keep], self.k - 1)[: self.k]]
        for c in keep:
            item = (float(scores[c]), (int(src[c]), m, int(dst[c])))
            if len(self.heap) < self.k:
                heapq.heappush(self.heap, item)
            elif item[0] > self.heap[0][0]:
                heapq.heapreplace(self.heap, item)


def _first_counts(codes: np.ndarray) -> np.ndarray:
    """``out[p]``: how many distinct values ``codes[:p + 1]`` holds."""
    if not len(codes):
        return np.zeros(0, np.int64)
    _, first = np.unique(codes, return_index=True)
    flags = np.zeros(len(codes), np.int64)
    flags[first] = 1
    return np.cumsum(flags)


MAX_CANDIDATES = 2_000_000
"""Chains of length 3 held at once as candidates (32 bytes each, and their sort)."""
MAX_BANDS = 8
GRAM_CHUNK = 64
"""Heads whose factors are gathered at once when a middle's chain Grams are formed."""
"""Bands of candidates taken at most: past them the search stops, its ``bound_left`` said."""


def _band(S: np.ndarray, rho: np.ndarray, kappa: np.ndarray, low: float, high: float
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(U, middle, source, target)`` of every chain with ``low < U <= high``."""
    parts = []
    for m in range(len(S)):
        src, dst, U = _bounds(S, rho, kappa, m, low)
        if U.size:
            rows, cols = np.nonzero((U > low) & (U <= high))
            parts.append((U[rows, cols], np.full(len(rows), m, np.int64), src[rows],
                          dst[cols]))
    if not parts:
        empty = np.zeros(0, np.int64)
        return np.zeros(0), empty, empty, empty
    u, mid, a, b = (np.concatenate(c) for c in zip(*parts, strict=True))
    return u, mid, a, b


def _band_floors(S: np.ndarray, rho: np.ndarray, kappa: np.ndarray, tau: float, cap: int,
                 bands: int, bins: int = 8192) -> list[float]:
    """Descending floors ``θ_1 > θ_2 > ...`` (the last ``tau``, or fewer than ``bands``)
    with at most ``cap`` chains between consecutive ones (the first band above ``θ_1``),
    from one histogram of every bound above ``tau`` over ``bins`` log-spaced edges up to
    ``max S · max ρ`` (no bound exceeds it). A single bin holding more than ``cap`` is one
    band whatever its size."""
    top = float(S.max() * max(rho.max(), 1e-300))
    if top <= tau:
        return [tau]
    edges = np.geomspace(max(tau, top * 1e-9), top, bins)
    counts = np.zeros(bins + 1, np.int64)  # counts[i]: bounds in (edges[i-1], edges[i]]
    for m in range(len(S)):
        _, _, U = _bounds(S, rho, kappa, m, tau)
        above = U[U > tau]
        counts += np.bincount(np.searchsorted(edges, above, side="left"), minlength=bins + 1)
    counts[bins - 1] += counts[bins]  # rounding: a bound a hair above the top edge
    below = int(counts[0])
    floors: list[float] = []
    held = 0
    for i in range(bins - 1, 0, -1):  # from the top bin down
        if held and held + counts[i] > cap:
            floors.append(float(edges[i]))  # the band above edges[i] is full
            held = 0
            if len(floors) == bands:
                return floors
        held += int(counts[i])
    if below and held + below > cap and len(floors) < bands:
        floors.append(float(edges[0]))
    if len(floors) < bands:
        floors.append(tau)
    return floors


def top_triples(S: np.ndarray, rho: np.ndarray, kappa: np.ndarray, scorer: _Scorer, k: int,
                max_flops: float, d_model: int, d_head: int, seed: int = SEED_TRIPLES
                ) -> tuple[list[tuple[float, tuple[int, int, int]]], VirtualSearch]:
    """The exact top-``k`` chains of length 3 (see the module docstring). Scoring a chain
    costs ``2 d_head^2`` and each chain edge ``(i, m)`` or ``(m, j)`` it is the first to
    need ``2 d_model d_head^2``; chains are scored best bound first until ``max_flops``."""
    n = len(S)
    into, out = (S > 0).sum(0), (S > 0).sum(1)
    chains = int((into * out).sum())
    pair_cost, chain_cost = 2.0 * d_model * d_head**2, 2.0 * d_head**2
    best = _TopK(k)
    seeded = []  # chain codes (i n + m) n + j of the seed
    spent = 0.0
    # 1. seed: the chains with the largest product of V scores, per middle
    fan = max(2, int(np.sqrt(seed / max(1, n))) + 1)
    for m in range(n):
        src = np.flatnonzero(S[:, m] > 0)
        dst = np.flatnonzero(S[m, :] > 0)
        if not len(src) or not len(dst):
            continue
        src = src[np.argsort(-S[src, m], kind="stable")[:fan]]
        dst = dst[np.argsort(-S[m, dst], kind="stable")[:fan]]
        best.offer(scorer.middle(m, src, dst), m, src, dst)
        seeded.append(((src[:, None] * n + m) * n + dst[None, :]).ravel())
        spent += (len(src) + len(dst)) * pair_cost + len(src) * len(dst) * chain_cost
    # 2. every chain whose bound beats the k-th best, best bound first, within the budget.
    # The candidates are taken in bands of bounds, (floor, ceiling], each holding at most
    # MAX_CANDIDATES chains in memory (random weights leave hundreds of millions of chains
    # above tau on gpt2-xl's shape); a band is scored best bound first, and the next one
    # is taken while the budget lasts and its bounds can still beat the k-th best.
    seen = np.concatenate(seeded) if seeded else np.zeros(0, np.int64)
    ceiling, bound_left = np.inf, 0.0
    for floor in _band_floors(S, rho, kappa, best.tau, MAX_CANDIDATES, MAX_BANDS):
        if ceiling <= best.tau:  # every chain that could beat the k-th best was scored
            bound_left = 0.0
            break
        floor = max(floor, best.tau)
        u, mid, a, b = _band(S, rho, kappa, floor, ceiling)
        fresh = ~np.isin((a * n + mid) * n + b, seen)
        order = np.flatnonzero(fresh)
        order = order[np.argsort(-u[order], kind="stable")]
        u, mid, a, b = u[order], mid[order], a[order], b[order]
        cost = ((_first_counts(a * n + mid) + _first_counts(mid * n + b)) * pair_cost
                + np.arange(1, len(u) + 1) * chain_cost)
        take = int(np.searchsorted(cost, max(0.0, max_flops - spent), side="right"))
        spent += float(cost[take - 1]) if take else 0.0
        for m in np.unique(mid[:take]):
            sel = np.flatnonzero(mid[:take] == m)
            src, inv_a = np.unique(a[sel], return_inverse=True)
            dst, inv_b = np.unique(b[sel], return_inverse=True)
            scores = scorer.chains(int(m), src, dst, inv_a, inv_b)
            best.offer_list(scores, int(m), src[inv_a], dst[inv_b])
        if take < len(u):  # the budget ran out: the next in line is the largest bound left
            bound_left = float(u[take])
            break
        ceiling, bound_left = floor, floor  # below this band, nothing is scored yet
    if bound_left <= best.tau:
        bound_left = 0.0
    certified = bound_left <= best.tau
    found = sorted(best.heap, key=lambda x: (-x[0], x[1]))
    return found, VirtualSearch(chains=chains, scored=scorer.scored, certified=certified,
                                bound_left=0.0 if certified else bound_left)


def _copying(heads: _Heads, readout: torch.Tensor, chains: list[tuple[int, ...]]
             ) -> tuple[np.ndarray, np.ndarray]:
    """Copying scores of chains from their ``d_head x d_head`` cores (module docstring):
    ``(W_O^n W_U W_E)(W_V^1 (W_O^1 W_V^2) …)``, the ``d_model``-wide products taken once
    per distinct last head."""
    if not chains:
        return np.zeros(0), np.zeros(0)
    dev = readout.device
    last = sorted({c[-1] for c in chains})
    slot = {h: i for i, h in enumerate(last)}
    O_last = heads.O[torch.as_tensor(last, device=dev)]  # (n, dh, d)
    dh, d = O_last.shape[1], O_last.shape[2]
    read = (O_last.reshape(-1, d) @ readout).view(len(last), dh, d)  # W_O^n W_U W_E
    cores = []
    for chain in chains:
        right = heads.V[chain[0]]  # (d, dh)
        for prev, nxt in zip(chain, chain[1:], strict=False):
            right = right @ (heads.O[prev] @ heads.V[nxt])
        cores.append(read[slot[chain[-1]]] @ right)
    pos, ratio = copying_core_scores(torch.stack(cores))
    return pos.cpu().numpy(), ratio.cpu().numpy()


def score_virtual_heads(reader: WeightReader, graph: ComposedGraph, factors: Factors, *,
                        top: int = 100, max_flops: float | None = None,
                        ) -> tuple[list[VirtualHead], VirtualSearch]:
    """The exact top-``top`` virtual heads of length 2 and of length 3, with their copying
    scores, and how the length-3 search went. The search spends at most ``max_flops``
    (default :data:`BUDGET_SHARE` of the composition's own FLOPs)."""
    spec = graph.spec
    n = spec.n_layers * spec.n_heads
    empty = VirtualSearch(0, 0, True, 0.0)
    if top <= 0 or spec.n_layers < 2 or factors.readout is None:
        return [], empty
    dev = factors.A.device
    S = _v_scores(graph, n)
    names = [graph.nodes.names[i] for i in range(len(graph.nodes.names))
             if graph.nodes.heads[i] >= 0]  # heads come first, in head order
    with torch.inference_mode():
        heads = _Heads(reader, factors, dev)
        flat = np.flatnonzero(S.ravel() > 0)
        pairs = flat[np.argsort(-S.ravel()[flat], kind="stable")[:top]]
        found: list[tuple[float, tuple[int, ...], float]] = [
            (float(S.ravel()[p]), (int(p // n), int(p % n)), float(S.ravel()[p]))
            for p in pairs]
        search = empty
        if spec.n_layers >= 3:
            rho, kappa = _spectra(factors.A, factors.A_sq)
            if max_flops is None:
                max_flops = BUDGET_SHARE * compose_flops(spec)
            triples, search = top_triples(S, rho, kappa, _Scorer(factors, heads), top,
                                          max_flops, spec.d_model, spec.d_head)
            # exact where reported: below the largest bound left unscored, a chain's place
            # in the ranking of all chains is unknown, so the list stops there
            found += [(s, c, float(S[c[0], c[1]] * S[c[1], c[2]])) for s, c in triples
                      if s > search.bound_left]
        pos, ratio = _copying(heads, factors.readout, [c for _, c, _ in found])
        out = [VirtualHead(heads=tuple(names[i] for i in chain), score=score,
                           heuristic=heuristic, copying_positive_fraction=float(p),
                           copying_ratio=float(r))
               for (score, chain, heuristic), p, r in zip(found, pos, ratio, strict=True)]
    return [v for v in out if np.isfinite(v.score)], search
