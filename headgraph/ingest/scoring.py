"""Pass 2 of an ingest: the scoring tasks (see :mod:`.compose`).

The unit of work is one *target layer*: every edge into that layer's heads (Q, K, V from
all earlier heads by one chunked product ``A_earlier @ B_layer``, and from earlier dense
writers by the Gram trick), plus the edges from that layer's heads into the dense readers
after them. A task needs the shared :class:`~.factors.Factors` and its own layer's
attention weights, and returns :class:`ScoreBlock` records (numpy), so it runs the same
in-process or on a Ray worker. One extra task scores dense writers into dense readers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from headgraph.ingest.factors import Factors, to_device
from headgraph.ingest.kernel import (
    block_sq_norms,
    block_sq_norms_grouped,
    frob,
    gram_inner,
    gram_pairs,
    grouped_read_parts,
    head_read_factors,
)
from headgraph.ingest.null import Shape
from headgraph.ingest.spec import LayerWeights


@dataclass(frozen=True)
class ScoreBlock:
    """Scores of ``sources x targets`` in one kind, with the shapes that pick the null."""

    sources: np.ndarray  # node ids
    targets: np.ndarray  # node ids
    kind: str
    scores: np.ndarray  # (len(sources), len(targets)) float32, NaN where undefined
    writer: Shape
    reader: Shape


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
        grouped = grouped_read_parts(lw.W_Q, lw.W_K, lw.W_V, lw.W_O) if spec.group > 1 else {}
        targets = nodes.head_ids(layer, H)
        n_src = layer * H  # heads are the first L * H rows of A, in node order
        src_heads = np.concatenate([nodes.head_ids(s, H) for s in range(layer)]) if layer else None
        w = f.writers
        n_dense = int(np.searchsorted(w.positions, 2 * layer))  # writers before: a prefix
        dense = np.arange(n_dense)
        for kind in ("Q", "K", "V"):
            Bk = B[kind]
            B_sq = frob(Bk).square()
            if n_src:
                A_src = f.A[:n_src]
                if kind in grouped:
                    num = block_sq_norms_grouped(A_src, *grouped[kind], kv)
                else:
                    num = block_sq_norms(A_src, Bk)
                blocks.append(ScoreBlock(src_heads, targets, kind,
                                         _np(ratio(num, f.A_sq[:n_src], B_sq)),
                                         f.head_writer, f.head_reader))
            if n_dense:
                num = gram_pairs(Bk, w.grams[:n_dense], side="read").T  # (n_writers, H)
                scores = _np(ratio(num, w.sq_norms[:n_dense], B_sq))
                for row, j in enumerate(dense):
                    blocks.append(ScoreBlock(w.ids[j : j + 1], targets, kind,
                                             scores[row : row + 1], w.shapes[j], f.head_reader))
        r = f.readers
        first = int(np.searchsorted(r.positions, 2 * layer, side="right"))  # a suffix
        later = np.arange(first, len(r.ids))
        if len(later):
            A_layer = f.A[n_src : n_src + H]
            num = gram_pairs(A_layer, r.grams[first:], side="write")  # (H, n_readers)
            scores = _np(ratio(num, f.A_sq[n_src : n_src + H], r.sq_norms[first:]))
            for col, j in enumerate(later):
                blocks.append(ScoreBlock(targets, r.ids[j : j + 1], _dense_kind(f, r.ids[j]),
                                         scores[:, col : col + 1], f.head_writer, r.shapes[j]))
    return blocks


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
