"""Pass 1 of an ingest: per-layer factors and node metrics (see :mod:`.compose`).

For every layer: the heads' write factors ``A = R_V W_O`` (kept: they are the sources of
every later head), head norms and copying scores, and the Grams of the MLP's read and
write matrices. Embedding, positional-embedding and unembedding Grams are taken once. The
result, :class:`Factors`, is everything the scoring tasks share; it is built once and (on
a cluster) put in the object store once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from headgraph.ingest.kernel import (
    copying_scores,
    frob,
    head_read_factors,
    head_write_factor,
    read_gram,
    write_gram,
)
from headgraph.ingest.nodes import NodeTable, build_nodes
from headgraph.ingest.null import Shape
from headgraph.ingest.reader import WeightReader, check_finite, check_layer
from headgraph.ingest.spec import LayerWeights, ModelSpec

Progress = Callable[[str, int, int], None]

NODE_METRICS = (
    "qk_norm",
    "ov_norm",
    "copying_positive_fraction",
    "copying_ratio",
    "in_norm",
    "out_norm",
)


@dataclass(frozen=True)
class DenseSide:
    """Dense writers or readers (embeddings, MLPs, unembedding) as stacked Grams."""

    ids: np.ndarray  # node ids
    grams: torch.Tensor  # (n, d, d)
    sq_norms: torch.Tensor  # (n,) ‖W‖_F^2
    shapes: tuple[Shape, ...]
    positions: np.ndarray  # residual-stream positions of the nodes


@dataclass(frozen=True)
class Factors:
    """What every scoring task needs: write factors of all heads and the dense Grams."""

    spec: ModelSpec
    nodes: NodeTable
    A: torch.Tensor  # (L * H, d_head, d_model), heads in node order
    A_sq: torch.Tensor  # (L * H,) ‖W_OV‖_F^2
    writers: DenseSide
    readers: DenseSide
    head_writer: Shape
    head_reader: Shape
    metrics: dict[str, np.ndarray]

    def to(self, device: str | torch.device) -> Factors:
        """A copy with the tensors on ``device`` (tasks on a GPU)."""
        dev = torch.device(device)

        def side(s: DenseSide) -> DenseSide:
            return DenseSide(s.ids, s.grams.to(dev), s.sq_norms.to(dev), s.shapes, s.positions)

        return Factors(self.spec, self.nodes, self.A.to(dev), self.A_sq.to(dev),
                       side(self.writers), side(self.readers), self.head_writer,
                       self.head_reader, self.metrics)


def to_device(lw: LayerWeights, device: torch.device) -> LayerWeights:
    def move(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.to(device=device, dtype=torch.float32)

    return LayerWeights(layer=lw.layer, W_Q=move(lw.W_Q), W_K=move(lw.W_K), W_V=move(lw.W_V),
                        W_O=move(lw.W_O), W_in=move(lw.W_in), W_out=move(lw.W_out))


class _DenseCollector:
    def __init__(self, nodes: NodeTable, d: int, centred: bool, side: str,
                 metrics: dict[str, np.ndarray]) -> None:
        self.nodes, self.d, self.centred, self.side = nodes, d, centred, side
        self.metrics = metrics
        self.ids: list[int] = []
        self.grams: list[torch.Tensor] = []
        self.sq: list[torch.Tensor] = []
        self.shapes: list[Shape] = []

    def add(self, name: str, W: torch.Tensor) -> None:
        """``W`` is ``(rows, d)`` for a writer, ``(d, cols)`` for a reader."""
        i = self.nodes.index(name)
        self.ids.append(i)
        self.grams.append(write_gram(W) if self.side == "write" else read_gram(W))
        self.sq.append(W.square().sum())
        rows = W.shape[0] if self.side == "write" else W.shape[1]
        self.shapes.append(Shape("dense", self.d, rows, self.centred))
        metric = "out_norm" if self.side == "write" else "in_norm"
        self.metrics[metric][i] = float(self.sq[-1].sqrt())

    def build(self) -> DenseSide:
        ids = np.asarray(self.ids, np.int64)
        side = DenseSide(ids=ids, grams=torch.stack(self.grams), sq_norms=torch.stack(self.sq),
                         shapes=tuple(self.shapes), positions=self.nodes.positions[ids])
        self.grams.clear()
        return side


def compute_factors(reader: WeightReader, *, device: str | torch.device = "cpu",
                    progress: Progress | None = None) -> Factors:
    """Pass 1 over the layers of ``reader``."""
    spec = reader.spec
    dev = torch.device(device)
    nodes = build_nodes(spec)
    H, d, dh = spec.n_heads, spec.d_model, spec.d_head
    kv = torch.arange(H, device=dev) // spec.group
    tick = progress or (lambda stage, done, total: None)
    metrics = {m: np.full(len(nodes.names), np.nan, np.float32) for m in NODE_METRICS}
    read_centred = "fold_ln" in spec.processing  # folded LayerNorm centres reading weights
    write_centred = "center_writing_weights" in spec.processing
    writers = _DenseCollector(nodes, d, write_centred, "write", metrics)
    readers = _DenseCollector(nodes, d, read_centred, "read", metrics)
    with torch.inference_mode():
        g = reader.globals()
        for name in ("W_E", "W_U", "W_pos"):
            check_finite(name, getattr(g, name))
        W_E = g.W_E.to(dev, torch.float32)
        W_U = g.W_U.to(dev, torch.float32)
        readout = W_U @ W_E  # (d, d): the full OV circuit's core reads through this
        writers.add("EMBED", W_E)
        if spec.has_pos_embed and g.W_pos is not None:
            writers.add("POS_EMBED", g.W_pos.to(dev, torch.float32))
        readers.add("UNEMBED", W_U)
        del W_E, W_U, g  # vocabulary-sized: free them before the layers are read
        A_layers = []
        for layer in range(spec.n_layers):
            lw = to_device(check_layer(reader.layer(layer), spec), dev)
            A = head_write_factor(lw.W_V, lw.W_O, kv)
            A_layers.append(A)
            B_Q = head_read_factors(lw.W_Q, lw.W_K, lw.W_V, lw.W_O, kv)["Q"]
            ids = nodes.head_ids(layer, H)
            metrics["ov_norm"][ids] = frob(A).cpu().numpy()
            metrics["qk_norm"][ids] = frob(B_Q).cpu().numpy()
            pos, ratio = copying_scores(lw.W_V, lw.W_O, readout, kv)
            metrics["copying_positive_fraction"][ids] = pos.cpu().numpy()
            metrics["copying_ratio"][ids] = ratio.cpu().numpy()
            if lw.W_in is not None and lw.W_out is not None:
                readers.add(f"MLP{layer}", lw.W_in)
                writers.add(f"MLP{layer}", lw.W_out)
            tick("factors", layer + 1, spec.n_layers)
        A_all = torch.cat(A_layers)
        del A_layers
        return Factors(
            spec=spec, nodes=nodes, A=A_all, A_sq=frob(A_all).square(),
            writers=writers.build(), readers=readers.build(),
            head_writer=Shape("head", d, dh, write_centred),
            head_reader=Shape("head", d, dh, read_centred), metrics=metrics,
        )
