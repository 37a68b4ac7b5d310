"""The random null: composition scores of Gaussian matrices of the same shapes.

A raw composition score means little on its own: for random matrices it is about
``1/sqrt(d_model)``-ish and depends on the shapes involved. For every *edge type* (the
writer's shape, the reader's shape and the kind) we sample independent standard Gaussian
weight matrices of exactly those shapes, score them with the same formulas as the real
ones, and keep the mean (stored as each edge's ``baseline``) and standard deviation
(for z-scores). Samples are seeded by the edge type's key, so the null is reproducible
and can be cached per shape in the database.

Processing is mirrored: where the model's weights were centred over ``d_model`` (folded
LayerNorm centres reading weights; ``center_writing_weights`` the writing ones), the null's
matrices are centred too (``X -> X P`` with ``P = I - 11^T/d_model``), so the null lives in
the same ``d_model - 1`` dimensional space as the real weights.

Dense components (``[a, d_model]`` writes, ``[d_model, k]`` reads) are sampled through
their Gram matrix: ``W^T W`` of a Gaussian ``W`` is Wishart, drawn with Bartlett's
decomposition in ``O(d_model^2)`` random numbers, which keeps a vocabulary-sized
embedding cheap.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import torch

from headgraph.ingest.kernel import frob, head_read_factors, head_write_factor

NULL_SEED = 20211222  # the framework paper's publication date


@dataclass(frozen=True)
class OperandShape:
    """A writer or reader shape: ``head`` (``d_model``, ``d_head``) or ``dense``
    (``rows``: the other side of a ``[rows, d_model]`` matrix)."""

    kind: str
    d_model: int
    size: int  # d_head for heads, rows for dense components
    centred: bool = False  # processing removed the mean over d_model (LayerNorm models)

    def label(self) -> str:
        c = ",centred" if self.centred else ""
        if self.kind == "head":
            return f"head(d={self.d_model},dh={self.size}{c})"
        return f"dense(d={self.d_model},n={self.size}{c})"


@dataclass(frozen=True)
class NullStat:
    key: str
    mean: float
    std: float
    samples: int
    seed: int


def null_key(writer: OperandShape, reader: OperandShape, kind: str) -> str:
    return f"{writer.label()}->{reader.label()}:{kind}"


def _gaussian_gram_factor(rows: int, d: int, rng: np.random.Generator) -> torch.Tensor:
    """A matrix ``F`` whose ``F^T F`` has the law of ``W^T W`` for Gaussian ``W [rows, d]``."""
    if rows <= 2 * d:
        return torch.from_numpy(rng.standard_normal((rows, d), dtype=np.float32))
    lower = np.tril(rng.standard_normal((d, d), dtype=np.float32), k=-1)
    diag = np.sqrt(rng.chisquare(rows - np.arange(d))).astype(np.float32)
    lower[np.arange(d), np.arange(d)] = diag
    return torch.from_numpy(lower.T.copy())  # F = L^T, F^T F = L L^T ~ Wishart(rows, I)


def _head_weights(n: int, d: int, dh: int, rng: np.random.Generator) -> list[torch.Tensor]:
    """``n`` independent Gaussian heads: W_Q, W_K, W_V ``[n, d, dh]``, W_O ``[n, dh, d]``."""
    shape = [(n, d, dh), (n, d, dh), (n, d, dh), (n, dh, d)]
    return [torch.from_numpy(rng.standard_normal(s, dtype=np.float32)) for s in shape]


def _write_factors(shape: OperandShape, n: int, rng: np.random.Generator) -> list[torch.Tensor]:
    """Factors ``X [r, d_model]`` with ``‖X M‖ = ‖W M‖`` for a Gaussian writer ``W``."""
    if shape.kind == "head":
        _, _, W_V, W_O = _head_weights(n, shape.d_model, shape.size, rng)
        xs = list(head_write_factor(W_V, W_O, torch.arange(n)))
    else:
        xs = [_gaussian_gram_factor(shape.size, shape.d_model, rng) for _ in range(n)]
    return [x - x.mean(dim=-1, keepdim=True) for x in xs] if shape.centred else xs


def _read_factors(shape: OperandShape, kind: str, n: int, rng: np.random.Generator) -> list[torch.Tensor]:
    """Factors ``Y [d_model, c]`` with ``‖X Y‖ = ‖X M‖`` for a Gaussian reader ``M``."""
    if shape.kind == "head":
        W_Q, W_K, W_V, W_O = _head_weights(n, shape.d_model, shape.size, rng)
        ys = list(head_read_factors(W_Q, W_K, W_V, W_O, torch.arange(n))[kind])
    else:
        ys = [_gaussian_gram_factor(shape.size, shape.d_model, rng).T for _ in range(n)]
    return [y - y.mean(dim=0, keepdim=True) for y in ys] if shape.centred else ys


def sample_null(writer: OperandShape, reader: OperandShape, kind: str, samples: int | None = None) -> NullStat:
    """Mean and standard deviation of the composition score under the Gaussian null."""
    key = null_key(writer, reader, kind)
    if samples is None:
        dense = (writer.kind == "dense") + (reader.kind == "dense")
        samples = (64, 24, 8)[dense]
    seed = NULL_SEED ^ zlib.crc32(key.encode())
    rng = np.random.default_rng(seed)
    xs = _write_factors(writer, samples, rng)
    ys = _read_factors(reader, kind, samples, rng)
    values = np.asarray([float(frob(x @ y) / (frob(x) * frob(y))) for x, y in zip(xs, ys, strict=True)])
    std = float(values.std(ddof=1)) if samples > 1 else 0.0
    return NullStat(key=key, mean=float(values.mean()), std=std, samples=samples, seed=seed)
