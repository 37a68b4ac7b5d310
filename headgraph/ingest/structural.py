"""Structural z of every edge: the banded-rotation null, calibrated per model.

A trained model's weights are low-rank and anisotropic: a few residual directions are
written and read by nearly every component, so almost every pair overlaps more than
Gaussian matrices of the same shapes would (the Gaussian null of :mod:`.null`, kept as
``baseline`` / ``null_std``). This module asks instead how far an edge stands above what
the model's own residual-stream structure explains (docs/science.md, "The structural
null"):

1. **Metric and bands.** ``M`` = the mean normalised write density of all heads (from
   pass 1's write factors ``A``); its eigenbasis, cut into bands of eigenvalues within a
   factor 2 (:func:`~.rotation_null.metric_basis`; the all-ones direction its own band in
   a centred model).
2. **Features.** Per component, its mass and block norms per band: heads' writes from
   ``A``, heads' Q/K/V reads from the read factors (each layer's attention weights are
   read once more), dense components from the Grams pass 1 formed.
3. **Raw z per edge** on ``s2 = score^2``: ``(s2 - E[s2]) / sd[s2]``, exact moments under
   random rotations within the bands (:func:`~.rotation_null.null_moments`).
4. **Calibration** (Efron's empirical null): per kind and family of edge,
   ``delta = median(z)`` and ``phi = max(1, 1.4826 MAD(z))`` (lower medians: of an even
   count, the smaller middle value); the stored ``z`` is
   ``(raw - delta) / phi``. Families: ``head->head``, ``dense->head`` (Q, K, V),
   ``head->dense`` and ``dense->dense`` (MLP, UNEMBED). A family is calibrated on its own
   edges when it has enough (:data:`MIN_OWN`); else ``dense->head`` borrows its kind's
   ``head->head`` values, MLP and UNEMBED pool their family's two kinds, and what still
   has too few edges keeps the analytic null (``delta = 0``, ``phi = 1``).

No sampling: two small matrix products per kind, about a second for a gpt2-small shape
(BENCHMARKS.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from headgraph.ingest.factors import Factors, to_device
from headgraph.ingest.kernel import head_read_factors
from headgraph.ingest.reader import WeightReader, check_layer
from headgraph.ingest.rotation_null import (
    factor_features,
    gram_features,
    metric_basis,
    null_moments,
)

Progress = Callable[[str, int, int], None]
HEAD_KINDS = ("Q", "K", "V")
DENSE_KINDS = ("MLP", "UNEMBED")
FAMILIES = ("head->head", "dense->head", "head->dense", "dense->dense")
MIN_OWN = {"head->head": 16, "dense->head": 50, "head->dense": 50, "dense->dense": 50}
"""Edges a family needs to be calibrated on itself. The MAD of n values has a relative
standard error of about 1.17/sqrt(n): 29% at 16 (the smallest head->head set the
calibration is trusted on: a 2-layer model with 4 heads a layer), 16% at 50."""
MAD_SCALE = 1.4826  # 1 / Phi^-1(3/4): MAD -> standard deviation for a normal
READ_BATCH = 192  # read factors featurised together (about 10 MB for d_model 768)


@dataclass(frozen=True)
class Calibration:
    """The empirical-null centre ``delta`` and scale ``phi`` of one kind and family of
    edges (``edges`` of them have a z); ``basis`` says where they came from: ``own``,
    another unit's name (``K head->head``, ``MLP+UNEMBED head->dense``) or ``analytic``."""

    kind: str
    family: str
    edges: int
    delta: float
    phi: float
    basis: str


@dataclass(frozen=True)
class StructuralNull:
    """The null of one model: band sizes (in the metric's eigenvalue order; the all-ones
    direction last when ``centred``), the calibrated ``z`` per edge (float32, in the
    order of the edge arrays given, NaN where undefined) and the calibration."""

    bands: tuple[int, ...]
    centred: bool
    z: np.ndarray
    calibration: tuple[Calibration, ...]
    seconds: float = 0.0

    def bands_text(self) -> str:
        """``"3,64,291,185,33"``; a centred model's ones direction as ``+1`` at the end."""
        sizes = list(self.bands[:-1] if self.centred else self.bands)
        return ",".join(map(str, sizes)) + ("+1" if self.centred else "")


def _metric(A: torch.Tensor) -> torch.Tensor:
    """Mean of ``A_i^T A_i / ‖A_i‖^2`` over heads with a non-zero write (float64)."""
    d = A.shape[-1]
    M = torch.zeros(d, d, dtype=torch.float64, device=A.device)
    count = 0
    for start in range(0, A.shape[0], 256):
        a = A[start : start + 256]
        norm = a.square().sum(dim=(1, 2)).sqrt()
        keep = norm > 0
        a = (a[keep] / norm[keep][:, None, None]).reshape(-1, d)
        M += (a.T @ a).double()
        count += int(keep.sum())
    return M / max(count, 1)


def _head_read_features(f: Factors, reader: WeightReader, V: torch.Tensor, sizes: list[int],
                        tick: Progress) -> dict[str, torch.Tensor]:
    """Features of every head's Q, K and V read (rows in head order). Each layer's
    attention weights are read once more; the read factors of a few layers are gathered
    and featurised together (fewer, larger products)."""
    spec = f.spec
    dev = f.A.device
    kv = torch.arange(spec.n_heads, device=dev) // spec.group
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in HEAD_KINDS}
    pending: list[torch.Tensor] = []  # per layer: [3 H, d_head, d_model], kinds in order

    def flush() -> None:
        if pending:
            feats = factor_features(torch.cat(pending), V, sizes)
            for i, chunk in enumerate(feats.split(spec.n_heads)):
                parts[HEAD_KINDS[i % 3]].append(chunk)
            pending.clear()

    for layer in range(spec.n_layers):
        lw = to_device(check_layer(reader.layer(layer, mlp=False), spec), dev)
        B = head_read_factors(lw.W_Q, lw.W_K, lw.W_V, lw.W_O, kv)
        pending.append(torch.cat([B[k].transpose(1, 2) for k in HEAD_KINDS]))
        del lw, B
        if sum(len(p) for p in pending) >= READ_BATCH:
            flush()
        tick("null", layer + 1, spec.n_layers)
    flush()
    return {k: torch.cat(v) for k, v in parts.items()}


def _raw_z(s2: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    sd = np.sqrt(var)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (s2 - mean) / sd
    z[~(sd > 0)] = np.nan
    return z


def median_low(values: np.ndarray) -> float:
    """The lower median: the middle value, or the smaller of the two middle values of an
    even count (always one of the values; as ``statistics.median_low`` and
    ``torch.median``)."""
    k = (len(values) - 1) // 2
    return float(np.partition(values, k)[k])


def _efron(values: np.ndarray) -> tuple[float, float]:
    """Lower median and ``max(1, 1.4826 MAD)`` (MAD by the lower median) of ``values``."""
    delta = median_low(values)
    return delta, max(1.0, MAD_SCALE * median_low(np.abs(values - delta)))


def calibrate(raw: np.ndarray, kinds: np.ndarray, families: np.ndarray,
              kind_names: tuple[str, ...]) -> tuple[np.ndarray, tuple[Calibration, ...]]:
    """Calibrated z and the calibration per (kind, family) present (module docstring).

    ``kinds`` are codes into ``kind_names``; ``families`` codes into :data:`FAMILIES`."""
    finite = np.isfinite(raw)
    units: dict[tuple[str, str], np.ndarray] = {}
    for code, kind in enumerate(kind_names):
        for fcode, family in enumerate(FAMILIES):
            sel = (kinds == code) & (families == fcode)
            if sel.any():
                units[kind, family] = sel
    own: dict[tuple[str, str], tuple[float, float]] = {}
    for (kind, family), sel in units.items():
        values = raw[sel & finite]
        if len(values) >= MIN_OWN[family]:
            own[kind, family] = _efron(values)
    out = np.full(len(raw), np.nan, np.float32)
    records = []
    for (kind, family), sel in units.items():
        n = int((sel & finite).sum())
        if (kind, family) in own:
            (delta, phi), basis = own[kind, family], "own"
        elif family == "dense->head" and (kind, "head->head") in own:
            (delta, phi), basis = own[kind, "head->head"], f"{kind} head->head"
        else:
            pooled = np.zeros(len(raw), bool)
            if kind in DENSE_KINDS:
                for other in DENSE_KINDS:
                    if other in kind_names and (other, family) in units:
                        pooled |= units[other, family]
            values = raw[pooled & finite]
            if len(values) >= MIN_OWN[family]:
                (delta, phi), basis = _efron(values), f"MLP+UNEMBED {family}"
            else:
                (delta, phi), basis = (0.0, 1.0), "analytic"
        out[sel] = ((raw[sel] - delta) / phi).astype(np.float32)
        records.append(Calibration(kind, family, n, delta, phi, basis))
    return out, tuple(records)


def structural_null(f: Factors, reader: WeightReader, source: np.ndarray, target: np.ndarray,
                    kind: np.ndarray, score: np.ndarray, kind_names: tuple[str, ...],
                    progress: Progress | None = None) -> StructuralNull:
    """The structural null of a composed model: calibrated ``z`` for every edge given as
    parallel arrays (node ids, kind codes into ``kind_names``, scores)."""
    tick = progress or (lambda stage, done, total: None)
    start = time.perf_counter()
    spec, nodes = f.spec, f.nodes
    tick("null", 0, spec.n_layers)
    centred = bool(f.head_writer.centred or f.head_reader.centred)
    with torch.inference_mode():
        _, V, sizes = metric_basis(_metric(f.A).cpu(), centred)
        V = V.to(f.A.device)
        head_ids = np.concatenate([nodes.head_ids(layer, spec.n_heads)
                                   for layer in range(spec.n_layers)])
        writer_ids = np.concatenate([head_ids, f.writers.ids]).astype(np.int64)
        fw = torch.cat([factor_features(f.A, V, sizes), gram_features(f.writers.grams, V, sizes)])
        reads = _head_read_features(f, reader, V, sizes, tick)
        dense_r = gram_features(f.readers.grams, V, sizes)
    n_nodes = len(nodes.names)
    w_pos = np.full(n_nodes, -1, np.int64)
    w_pos[writer_ids] = np.arange(len(writer_ids))
    raw = np.full(len(score), np.nan)
    s2 = np.square(score.astype(np.float64))
    for code, name in enumerate(kind_names):
        sel = np.flatnonzero(kind == code)
        if not len(sel):
            continue
        if name in HEAD_KINDS:
            r_ids, fr = head_ids, reads[name]
        else:
            r_ids, fr = f.readers.ids, dense_r
        r_pos = np.full(n_nodes, -1, np.int64)
        r_pos[r_ids] = np.arange(len(r_ids))
        mean, var = (x.cpu().numpy() for x in null_moments(fw, fr, sizes))
        rows, cols = w_pos[source[sel]], r_pos[target[sel]]
        ok = (rows >= 0) & (cols >= 0)
        raw[sel[ok]] = _raw_z(s2[sel[ok]], mean[rows[ok], cols[ok]], var[rows[ok], cols[ok]])
    is_head = np.asarray([k == "head" for k in nodes.kinds])
    head_reader = np.isin(kind, [kind_names.index(k) for k in HEAD_KINDS if k in kind_names])
    families = np.where(is_head[source], np.where(head_reader, 0, 2), np.where(head_reader, 1, 3))
    z, calibration = calibrate(raw, kind, families, kind_names)
    return StructuralNull(bands=tuple(sizes), centred=centred, z=z, calibration=calibration,
                          seconds=time.perf_counter() - start)
