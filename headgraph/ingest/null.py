"""The random null: composition scores of Gaussian matrices of the same shapes.

A raw composition score means little on its own: for random matrices it is about
``1/sqrt(d_model)``-ish and depends on the shapes involved. For every *edge type* (the
writer's shape, the reader's shape and the kind) we sample independent standard Gaussian
weight matrices of exactly those shapes, score them with the same formulas as the real
ones, and keep the mean (stored as each edge's ``baseline``) and standard deviation
(for z-scores). Samples are seeded by the edge type's key, so the null is reproducible;
it is cached per shape in the database (``baselines``) and on disk
(:mod:`headgraph.ingest.nullcache`), so a shape is sampled once per machine.

Processing is mirrored: where the model's weights were centred over ``d_model`` (folded
LayerNorm centres reading weights; ``center_writing_weights`` the writing ones), the null's
matrices are centred too (``X -> X P`` with ``P = I - 11^T/d_model``), so the null lives in
the same ``d_model - 1`` dimensional space as the real weights.

Sampling draws only what the score depends on, never the full Gaussian weights:

* a Gaussian ``W [n, k]`` (``n >= k``) enters a score only through its Gram ``W^T W``,
  which is Wishart(n, I_k); its Cholesky factor ``R`` (``R^T R = W^T W``, upper
  triangular) is drawn directly by Bartlett's decomposition: ``R_ii = sqrt(chi2(n - i))``
  and ``R_ij ~ N(0, 1)`` above the diagonal, ``k (k + 1) / 2`` numbers instead of ``n k``;
* a head writes through ``W_OV = W_V W_O``, and ``‖W_OV X‖ = ‖R_V W_O X‖``
  (:func:`~headgraph.ingest.kernel.head_write_factor`), so its write factor is
  ``R_V W_O`` with ``R_V`` Bartlett(d_model, d_head) and ``W_O`` Gaussian;
* a head's Q, K and V read factors (``W_Q R_K^T``, ``W_K R_Q^T``, ``W_V R_O^T``;
  :func:`~headgraph.ingest.kernel.head_read_factors`) are each a Gaussian ``[d_model,
  d_head]`` times the transpose of an independent Bartlett(d_model, d_head) factor;
* a dense writer ``[rows, d_model]`` (embedding, MLP output) or reader (MLP input,
  unembedding) enters through its ``d_model x d_model`` Gram: Bartlett(rows, d_model) when
  ``rows > 2 d_model``, else the Gaussian matrix itself.

So the null of an edge type is exactly the law of the score of independent Gaussian
weights of those shapes; only the number of random draws differs from drawing the weights.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from headgraph.ingest.spec import ModelSpec

NULL_SEED = 20211222  # the framework paper's publication date
NULL_VERSION = 2
"""Sampler version: bumped whenever the same key and seed would give different numbers
(version 2 draws Bartlett factors instead of whole Gaussian weights). It names the on-disk
cache; a database keeps the baselines it already stores."""


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


EdgeType = tuple[OperandShape, OperandShape, str]


def edge_types(spec: ModelSpec) -> list[EdgeType]:
    """Every (writer shape, reader shape, kind) whose null an ingest of ``spec`` needs, in
    the shapes :mod:`headgraph.ingest.factors` gives its nodes."""
    d, L = spec.d_model, spec.n_layers
    head_w = OperandShape("head", d, spec.d_head, spec.write_centred)
    head_r = OperandShape("head", d, spec.d_head, spec.read_centred)
    embeds = [OperandShape("dense", d, spec.d_vocab, spec.write_centred)]
    if spec.has_pos_embed:
        embeds.append(OperandShape("dense", d, spec.n_ctx, spec.write_centred))
    mlp_w = OperandShape("dense", d, spec.d_mlp, spec.write_centred) if spec.d_mlp else None
    mlp_r = OperandShape("dense", d, spec.d_mlp_in, spec.read_centred) if spec.d_mlp else None
    unembed = OperandShape("dense", d, spec.d_vocab, spec.read_centred)
    into_heads = [*embeds, head_w] if L > 1 else list(embeds)
    if mlp_w is not None and L > 1:
        into_heads.append(mlp_w)
    types: list[EdgeType] = [(w, head_r, k) for w in into_heads for k in "QKV"]
    dense_readers = [(unembed, "UNEMBED")] + ([(mlp_r, "MLP")] if mlp_r is not None else [])
    writers = [*embeds, head_w] + ([mlp_w] if mlp_w is not None else [])
    for reader, kind in dense_readers:
        for w in writers:
            if kind == "MLP" and w is mlp_w and L < 2:
                continue  # an MLP feeds only later MLPs
            types.append((w, reader, kind))
    return list(dict.fromkeys(types))


def null_samples(writer: OperandShape, reader: OperandShape) -> int:
    """Samples per edge type: 64 head -> head, 24 with one dense side, 8 with two."""
    return (64, 24, 8)[(writer.kind == "dense") + (reader.kind == "dense")]


def null_seed(key: str) -> int:
    return NULL_SEED ^ zlib.crc32(key.encode())


def bartlett(rows: int, k: int, count: int, rng: np.random.Generator) -> torch.Tensor:
    """``count`` upper-triangular ``R [k, k]`` with ``R^T R`` ~ Wishart(rows, I_k): the
    law of the Cholesky factor of ``W^T W`` for a Gaussian ``W [rows, k]`` (rows >= k)."""
    out = np.zeros((count, k, k), np.float32)
    upper = np.triu_indices(k, 1)
    out[:, upper[0], upper[1]] = rng.standard_normal((count, len(upper[0])), np.float32)
    diag = np.sqrt(rng.chisquare(rows - np.arange(k), size=(count, k))).astype(np.float32)
    out[:, np.arange(k), np.arange(k)] = diag
    return torch.from_numpy(out)


def _gaussian(shape: tuple[int, ...], rng: np.random.Generator) -> torch.Tensor:
    return torch.from_numpy(rng.standard_normal(shape, np.float32))


def _gram_factor(rows: int, d: int, count: int, rng: np.random.Generator) -> torch.Tensor:
    """``F [count, r, d]`` whose ``F^T F`` has the law of ``W^T W`` for Gaussian
    ``W [rows, d]``: Bartlett when that is fewer numbers, else ``W`` itself."""
    if rows > 2 * d:
        return bartlett(rows, d, count, rng)
    return _gaussian((count, rows, d), rng)


def _write_factors(shape: OperandShape, n: int, rng: np.random.Generator) -> torch.Tensor:
    """``X [n, r, d_model]`` with ``‖X M‖ = ‖W M‖`` in law for a Gaussian writer ``W``."""
    d, size = shape.d_model, shape.size
    if shape.kind == "head":
        R_V = bartlett(d, size, n, rng) if d >= size else _gaussian((n, d, size), rng)
        x = R_V @ _gaussian((n, size, d), rng)  # R_V W_O (or W_V W_O, d < d_head)
    else:
        x = _gram_factor(size, d, n, rng)
    return x - x.mean(dim=-1, keepdim=True) if shape.centred else x


def _read_factors(shape: OperandShape, n: int, rng: np.random.Generator) -> torch.Tensor:
    """``Y [n, d_model, c]`` with ``‖X Y‖ = ‖X M‖`` in law for a Gaussian reader ``M``
    (every kind of head read has the same law: Gaussian times a Bartlett transpose)."""
    d, size = shape.d_model, shape.size
    if shape.kind == "head":
        # W_K^T for d < d_head (a rank-deficient factor: the reader itself)
        R = bartlett(d, size, n, rng) if d >= size else _gaussian((n, d, size), rng)
        y = _gaussian((n, d, size), rng) @ R.transpose(1, 2)
    else:
        y = _gram_factor(size, d, n, rng).transpose(1, 2)
    return y - y.mean(dim=1, keepdim=True) if shape.centred else y


def sample_null(writer: OperandShape, reader: OperandShape, kind: str,
                samples: int | None = None) -> NullStat:
    """Mean and standard deviation of the composition score under the Gaussian null.

    Every sample is one independent draw of the writer's and the reader's weights,
    scored with ``‖X Y‖_F / (‖X‖_F ‖Y‖_F)`` on the factors above."""
    key = null_key(writer, reader, kind)
    samples = null_samples(writer, reader) if samples is None else samples
    seed = null_seed(key)
    rng = np.random.default_rng(seed)
    xs = _write_factors(writer, samples, rng)
    ys = _read_factors(reader, samples, rng)
    num = torch.linalg.matrix_norm(torch.bmm(xs, ys)).double()
    den = torch.linalg.matrix_norm(xs).double() * torch.linalg.matrix_norm(ys).double()
    values = (num / den).numpy()
    std = float(values.std(ddof=1)) if samples > 1 else 0.0
    return NullStat(key=key, mean=float(values.mean()), std=std, samples=samples, seed=seed)
