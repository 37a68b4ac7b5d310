"""Pass 2 of an ingest: the scoring tasks (see :mod:`.compose`).

The unit of work is one *target layer*: every edge into that layer's heads (Q, K, V from
all earlier heads by one chunked product ``A_earlier @ B_layer``, and from earlier dense
writers by the Gram trick), plus the edges from that layer's heads into the dense readers
after them. A task needs the shared :class:`~.factors.Factors` and its own layer's
attention weights, and returns :class:`ScoreBlock` records (numpy), so it runs the same
in-process or on a Ray worker. One extra task scores dense writers into dense readers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from headgraph.ingest.factors import Factors, to_device
from headgraph.ingest.kernel import (
    block_sq_norms,
    block_sq_norms_grouped,
    frob,
    gram_block_inner,
    gram_inner,
    gram_pairs,
    grouped_read_parts,
    head_read_factors,
    read_gram_blocks,
)
from headgraph.ingest.null import OperandShape
from headgraph.ingest.reader import WeightReader, check_layer
from headgraph.ingest.spec import LayerWeights


@dataclass(frozen=True)
class ScoreBlock:
    """Scores of ``sources x targets`` in one kind, with the shapes that pick the null."""

    sources: np.ndarray  # node ids
    targets: np.ndarray  # node ids
    kind: str
    scores: np.ndarray  # (len(sources), len(targets)) float32, NaN where undefined
    writer: OperandShape
    reader: OperandShape


def ratio(num_sq: torch.Tensor, left_sq: torch.Tensor, right_sq: torch.Tensor) -> torch.Tensor:
    """``sqrt(num²) / sqrt(left² right²)`` with NaN where a norm is zero (score undefined)."""
    denom = (left_sq[:, None] * right_sq[None, :]).sqrt()
    out = num_sq.clamp_min(0).sqrt() / denom
    return torch.where(denom > 0, out, torch.full_like(out, float("nan")))


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().to("cpu", torch.float32).numpy()


def _dense_kind(f: Factors, node: int) -> str:
    return "UNEMBED" if f.nodes.kinds[node] == "unembed" else "MLP"


def score_layer(f: Factors, lw: LayerWeights) -> list[ScoreBlock]:
    """Every edge into layer ``lw.layer``'s heads, and from them into later dense readers."""
    spec, nodes = f.spec, f.nodes
    layer, H = lw.layer, spec.n_heads
    dev = f.A.device
    kv = torch.arange(H, device=dev) // spec.group
    blocks: list[ScoreBlock] = []
    with torch.inference_mode():
        lw = to_device(lw, dev)
        B = head_read_factors(lw.W_Q, lw.W_K, lw.W_V, lw.W_O, kv)
        targets = nodes.head_ids(layer, H)
        n_src = layer * H  # heads are the first L * H rows of A, in node order
        src_heads = np.concatenate([nodes.head_ids(s, H) for s in range(layer)]) if layer else None
        w = f.writers
        n_dense = int(np.searchsorted(w.positions, 2 * layer))  # writers before: a prefix
        r = f.readers
        first = int(np.searchsorted(r.positions, 2 * layer, side="right"))  # a suffix
        B_sq = {kind: frob(B[kind]).square() for kind in "QKV"}
        if f.A_grams is not None:
            heads, dense, to_dense = _gram_route(f, B, n_src, n_dense, first)
        else:
            heads, dense, to_dense = _qr_route(f, B, lw, kv, n_src, n_dense, first)
        for kind in "QKV":
            if n_src:
                blocks.append(ScoreBlock(src_heads, targets, kind,
                                         _np(ratio(heads[kind], f.A_sq[:n_src], B_sq[kind])),
                                         f.head_writer, f.head_reader))
            if n_dense:
                scores = _np(ratio(dense[kind], w.sq_norms[:n_dense], B_sq[kind]))
                for row in range(n_dense):
                    blocks.append(ScoreBlock(w.ids[row : row + 1], targets, kind,
                                             scores[row : row + 1], w.shapes[row],
                                             f.head_reader))
        if first < len(r.ids):
            scores = _np(ratio(to_dense, f.A_sq[n_src : n_src + H], r.sq_norms[first:]))
            for col, j in enumerate(range(first, len(r.ids))):
                blocks.append(ScoreBlock(targets, r.ids[j : j + 1], _dense_kind(f, r.ids[j]),
                                         scores[:, col : col + 1], f.head_writer, r.shapes[j]))
    return blocks


Squares = dict[str, torch.Tensor]


def _qr_route(f: Factors, B: Squares, lw: LayerWeights, kv: torch.Tensor, n_src: int,
              n_dense: int, first: int) -> tuple[Squares, Squares, torch.Tensor | None]:
    """Squared numerators by the QR products (and the full-Gram trick for dense nodes):
    ``(heads into the layer per kind, dense writers into it per kind, its heads into the
    later dense readers)``."""
    spec, w, r = f.spec, f.writers, f.readers
    grouped = grouped_read_parts(lw.W_Q, lw.W_K, lw.W_V, lw.W_O) if spec.group > 1 else {}
    heads: Squares = {}
    dense: Squares = {}
    for kind in "QKV":
        if n_src:
            A_src = f.A[:n_src]
            heads[kind] = (block_sq_norms_grouped(A_src, *grouped[kind], kv) if kind in grouped
                           else block_sq_norms(A_src, B[kind]))
        if n_dense:
            dense[kind] = gram_pairs(B[kind], w.grams[:n_dense], side="read").T
    to_dense = None
    if first < len(r.ids):
        H = spec.n_heads
        to_dense = gram_pairs(f.A[n_src : n_src + H], r.grams[first:], side="write")
    return heads, dense, to_dense


def _gram_route(f: Factors, B: Squares, n_src: int, n_dense: int, first: int
                ) -> tuple[Squares, Squares, torch.Tensor | None]:
    """The same numerators by block Grams (:mod:`.cost`): the layer's read Grams are formed
    once for all three kinds and meet the stored source Grams, the dense writers' Grams and
    (for its own heads' writes) the later dense readers' Grams."""
    H, edges = f.spec.n_heads, f.gram_edges
    assert f.A_grams is not None and f.writers.blocks is not None
    assert f.readers.blocks is not None
    heads: Squares = {}
    dense: Squares = {}
    if n_src or n_dense:
        reads = read_gram_blocks(torch.cat([B[k] for k in "QKV"]), edges)  # (3H, ...)
        if n_src:
            for i, part in enumerate(gram_block_inner(list(f.A_grams), reads, n_src).split(H, 1)):
                heads["QKV"[i]] = part
        if n_dense:
            writers = [b[:n_dense] for b in f.writers.blocks]  # a prefix: views
            for i, part in enumerate(gram_block_inner(writers, reads).split(H, 1)):
                dense["QKV"[i]] = part
    to_dense = None
    if first < len(f.readers.ids):
        own = [g[n_src : n_src + H] for g in f.A_grams]
        later = [b[first:] for b in f.readers.blocks]  # a suffix, off-diagonal doubled
        to_dense = gram_block_inner(own, later)
    return heads, dense, to_dense


def score_dense(f: Factors) -> list[ScoreBlock]:
    """Dense writers (embeddings, MLPs) into dense readers (later MLPs, the unembedding)."""
    w, r = f.writers, f.readers
    with torch.inference_mode():
        scores = _np(ratio(gram_inner(w.grams, r.grams), w.sq_norms, r.sq_norms))
    blocks = []
    for i in range(len(w.ids)):
        for j in range(len(r.ids)):
            if w.positions[i] < r.positions[j]:
                blocks.append(ScoreBlock(w.ids[i : i + 1], r.ids[j : j + 1],
                                         _dense_kind(f, r.ids[j]), scores[i : i + 1, j : j + 1],
                                         w.shapes[i], r.shapes[j]))
    return blocks


class LayerScorer(Protocol):
    """Runs the per-target-layer scoring tasks of one model (:func:`score_layer`) somewhere:
    here (:func:`score_layers_here`) or on a cluster
    (:class:`~headgraph.ingest.ray_executor.RayExecutor`)."""

    def score_layers(self, factors: Factors, reader: WeightReader, layers: list[int]
                     ) -> Iterator[list[ScoreBlock]]:
        """Yield the blocks of each layer's task (in any order)."""
        ...


def score_layers_here(factors: Factors, reader: WeightReader, layers: list[int]
                      ) -> Iterator[list[ScoreBlock]]:
    """Each layer's task in this process, in order; the layer's attention weights are read
    from ``reader`` as the task starts."""
    for layer in layers:
        yield score_layer(factors, check_layer(reader.layer(layer, mlp=False), factors.spec))
