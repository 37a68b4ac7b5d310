"""Pass 1 of an ingest: per-layer factors and node metrics (see :mod:`.compose`).

For every layer: the heads' write factors ``A = R_V W_O`` (kept: they are the sources of
every later head), head norms and copying scores, and the Grams of the MLP's read and
write matrices. Embedding, positional-embedding and unembedding Grams are taken once. The
result, :class:`Factors`, is everything the scoring tasks share; it is built once and (on
a cluster) put in the object store once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from headgraph.ingest.cost import choose_head_method, gram_edges
from headgraph.ingest.heap import trim_heap
from headgraph.ingest.kernel import (
    copying_scores,
    dense_gram_blocks,
    frob,
    gram_block_pairs,
    head_read_factors,
    head_write_factor,
    write_gram_blocks,
)
from headgraph.ingest.nodes import NodeTable, build_nodes
from headgraph.ingest.null import OperandShape
from headgraph.ingest.reader import WeightReader, check_layer, vocab_grams
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
    shapes: tuple[OperandShape, ...]
    positions: np.ndarray  # residual-stream positions of the nodes
    # block-Gram route: the upper blocks of every Gram, cut once ([n, s_p, s_q] each;
    # a reader's off-diagonal blocks doubled, see kernel.read_gram_blocks), else None
    blocks: tuple[torch.Tensor, ...] | None = None


@dataclass(frozen=True)
class Factors:
    """What every scoring task needs: write factors of all heads and the dense Grams."""

    spec: ModelSpec
    nodes: NodeTable
    A: torch.Tensor  # (L * H, d_head, d_model), heads in node order
    A_sq: torch.Tensor  # (L * H,) ‖W_OV‖_F^2
    writers: DenseSide
    readers: DenseSide
    head_writer: OperandShape
    head_reader: OperandShape
    metrics: dict[str, np.ndarray]
    # the block-Gram route (:mod:`.cost`): every head's source Gram blocks, else None
    A_grams: tuple[torch.Tensor, ...] | None = None
    gram_edges: tuple[int, ...] = ()
    readout: torch.Tensor | None = None  # W_U W_E (d x d): full OV circuits read through it

    def without_dense(self) -> Factors:
        """A copy without the dense sides' Grams and the heads' Gram blocks: what the
        virtual-head search needs (``A``, ``A_sq``, ``readout``) once composition is done.
        On gpt2-xl the Grams dropped are about 1 GB."""
        def empty(side: DenseSide) -> DenseSide:
            return DenseSide(side.ids[:0], side.grams[:0], side.sq_norms[:0], (),
                             side.positions[:0])

        return replace(self, writers=empty(self.writers), readers=empty(self.readers),
                       A_grams=None, gram_edges=())

    def to(self, device: str | torch.device) -> Factors:
        """A copy with the tensors on ``device`` (tasks on a GPU)."""
        dev = torch.device(device)

        def side(s: DenseSide) -> DenseSide:
            blocks = None if s.blocks is None else tuple(b.to(dev) for b in s.blocks)
            return DenseSide(s.ids, s.grams.to(dev), s.sq_norms.to(dev), s.shapes, s.positions,
                             blocks)

        grams = None if self.A_grams is None else tuple(g.to(dev) for g in self.A_grams)
        readout = None if self.readout is None else self.readout.to(dev)
        return Factors(self.spec, self.nodes, self.A.to(dev), self.A_sq.to(dev),
                       side(self.writers), side(self.readers), self.head_writer,
                       self.head_reader, self.metrics, grams, self.gram_edges, readout)


def to_device(lw: LayerWeights, device: torch.device) -> LayerWeights:
    def move(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.to(device=device, dtype=torch.float32)

    return LayerWeights(layer=lw.layer, W_Q=move(lw.W_Q), W_K=move(lw.W_K), W_V=move(lw.W_V),
                        W_O=move(lw.W_O), W_in=move(lw.W_in), W_out=move(lw.W_out))


class _DenseCollector:
    """Grams of dense writers or readers, written into one preallocated stack in
    residual-stream order (so "every writer before layer l" is a prefix and "every reader
    after it" a suffix: slices, never copies)."""

    def __init__(self, nodes: NodeTable, d: int, centred: bool, side: str,
                 metrics: dict[str, np.ndarray], names: list[str], device: torch.device
                 ) -> None:
        self.nodes, self.d, self.centred, self.side = nodes, d, centred, side
        self.metrics = metrics
        order = sorted(names, key=lambda n: nodes.positions[nodes.index(n)])
        self.slot = {name: k for k, name in enumerate(order)}
        self.ids = np.asarray([nodes.index(n) for n in order], np.int64)
        self.grams = torch.empty(len(order), d, d, device=device)
        self.sq = torch.zeros(len(order), device=device)
        self.shapes: list[OperandShape | None] = [None] * len(order)

    def add(self, name: str, W: torch.Tensor) -> None:
        """``W`` is ``(rows, d)`` for a writer, ``(d, cols)`` for a reader."""
        k = self.slot[name]
        torch.matmul(*((W.T, W) if self.side == "write" else (W, W.T)), out=self.grams[k])
        self._filled(k, W.shape[0] if self.side == "write" else W.shape[1])

    def add_gram(self, name: str, gram: torch.Tensor, rows: int) -> None:
        """A Gram formed elsewhere (:class:`~headgraph.ingest.spec.VocabGrams`)."""
        k = self.slot[name]
        self.grams[k].copy_(gram)
        self._filled(k, rows)

    def _filled(self, k: int, rows: int) -> None:
        self.sq[k] = torch.diagonal(self.grams[k]).sum()  # ‖W‖_F^2 = tr(W^T W)
        self.shapes[k] = OperandShape("dense", self.d, rows, self.centred)
        metric = "out_norm" if self.side == "write" else "in_norm"
        self.metrics[metric][self.ids[k]] = float(self.sq[k].clamp_min(0).sqrt())

    def build(self, edges: tuple[int, ...] = ()) -> DenseSide:
        """The stacked Grams; with ``edges`` (the block-Gram route) their upper blocks too."""
        filled = [k for k, s in enumerate(self.shapes) if s is not None]
        if len(filled) != len(self.shapes):  # e.g. an MLP the reader did not give
            keep = torch.as_tensor(filled, dtype=torch.long)
            self.grams, self.sq = self.grams[keep], self.sq[keep]
            self.ids = self.ids[filled]
            self.shapes = [self.shapes[k] for k in filled]
        blocks = None
        if edges:
            blocks = tuple(dense_gram_blocks(self.grams, edges))
            if self.side == "read":
                for b, (_, _, diagonal) in zip(blocks, gram_block_pairs(edges), strict=True):
                    if not diagonal:
                        b.mul_(2.0)
        return DenseSide(ids=self.ids, grams=self.grams, sq_norms=self.sq,
                         shapes=tuple(self.shapes), positions=self.nodes.positions[self.ids],
                         blocks=blocks)


def _gram_stacks(n: int, edges: tuple[int, ...], device: torch.device) -> list[torch.Tensor]:
    return [torch.empty(n, p.stop - p.start, q.stop - q.start, device=device)
            for p, q, _ in gram_block_pairs(edges)]


def compute_factors(reader: WeightReader, *, device: str | torch.device = "cpu",
                    progress: Progress | None = None, head_method: str = "auto") -> Factors:
    """Pass 1 over the layers of ``reader``. ``head_method`` picks how head pairs are
    scored (:func:`~.cost.choose_head_method`); for ``"gram"`` every head's source Gram
    blocks are formed here, layer by layer, into preallocated stacks."""
    spec = reader.spec
    dev = torch.device(device)
    nodes = build_nodes(spec)
    H, d, dh = spec.n_heads, spec.d_model, spec.d_head
    kv = torch.arange(H, device=dev) // spec.group
    tick = progress or (lambda stage, done, total: None)
    tick("factors", 0, spec.n_layers)
    metrics = {m: np.full(len(nodes.names), np.nan, np.float32) for m in NODE_METRICS}
    read_centred, write_centred = spec.read_centred, spec.write_centred
    mlps = [f"MLP{layer}" for layer in range(spec.n_layers)] if spec.d_mlp else []
    embeds = ["EMBED", "POS_EMBED"] if spec.has_pos_embed else ["EMBED"]
    writers = _DenseCollector(nodes, d, write_centred, "write", metrics, embeds + mlps, dev)
    readers = _DenseCollector(nodes, d, read_centred, "read", metrics, mlps + ["UNEMBED"], dev)
    method = choose_head_method(spec.n_layers, H, spec.n_kv_heads, d, dh, head_method)
    edges = gram_edges(d) if method == "gram" else ()
    grams = _gram_stacks(spec.n_layers * H, edges, dev) if edges else None
    with torch.inference_mode():
        vocab = vocab_grams(reader, dev)  # vocabulary-sized matrices are gone after this
        readout = vocab.readout  # (d, d): the full OV circuit's core reads through this
        writers.add_gram("EMBED", vocab.embed, vocab.rows)
        if spec.has_pos_embed and vocab.W_pos is not None:
            writers.add("POS_EMBED", vocab.W_pos)
        readers.add_gram("UNEMBED", vocab.unembed, vocab.rows)
        del vocab
        trim_heap()
        A_layers = []
        for layer in range(spec.n_layers):
            lw = to_device(check_layer(reader.layer(layer), spec), dev)
            A = head_write_factor(lw.W_V, lw.W_O, kv)
            A_layers.append(A)
            if grams is not None:
                write_gram_blocks(A, edges, [g[layer * H : (layer + 1) * H] for g in grams])
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
            del lw
            trim_heap()
            tick("factors", layer + 1, spec.n_layers)
        A_all = torch.cat(A_layers)
        del A_layers
        return Factors(
            spec=spec, nodes=nodes, A=A_all, A_sq=frob(A_all).square(),
            writers=writers.build(edges), readers=readers.build(edges),
            head_writer=OperandShape("head", d, dh, write_centred),
            head_reader=OperandShape("head", d, dh, read_centred), metrics=metrics,
            A_grams=None if grams is None else tuple(grams), gram_edges=edges,
            readout=readout,
        )
