"""From processed weights to every node metric and every composition edge of a model.

Two passes over the layers keep memory bounded by what the scores need, not by the model:

1. *Factors.* For each layer: the heads' write factors ``A = R_V W_O`` (kept: they are
   the sources of every later head), their norms and copying scores, and the Grams of
   the MLP's read and write matrices. Embedding, positional embedding and unembedding
   Grams are taken once.
2. *Scores, by target layer.* The layer's read factors (Q, K, V) are rebuilt, and one
   product ``A_earlier @ B_layer`` (chunked) scores every earlier head into it; dense
   writers (embeddings, earlier MLPs) are scored by the Gram trick. Then each layer's
   heads are scored into the dense readers after them (later MLPs, the unembedding).

See :mod:`headgraph.ingest.kernel` for the algebra and DESIGN.md for the definitions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from headgraph.ingest.kernel import (
    block_sq_norms,
    block_sq_norms_grouped,
    copying_scores,
    frob,
    gram_inner,
    gram_pairs,
    grouped_read_parts,
    head_read_factors,
    head_write_factor,
    read_gram,
    write_gram,
)
from headgraph.ingest.nodes import NodeTable, build_nodes
from headgraph.ingest.null import NullStat, Shape, sample_null
from headgraph.ingest.reader import WeightReader, check_finite, check_layer
from headgraph.ingest.spec import LayerWeights, ModelSpec

EDGE_KINDS = ("Q", "K", "V", "MLP", "UNEMBED")
"""Q/K/V: the source's write read by a head's queries, keys or values; MLP: read by an
MLP's input; UNEMBED: read by the unembedding (a direct effect on the logits)."""

KIND_CODE = {k: i for i, k in enumerate(EDGE_KINDS)}

Progress = Callable[[str, int, int], None]
NullProvider = Callable[[Shape, Shape, str], NullStat]


@dataclass(frozen=True)
class EdgeArrays:
    """All edges of a model as parallel arrays, sorted by (target name, kind, rank)."""

    source: np.ndarray  # int32 node ids
    target: np.ndarray  # int32 node ids
    kind: np.ndarray  # int8 codes into EDGE_KINDS
    score: np.ndarray  # float32
    baseline: np.ndarray  # float32, mean of the Gaussian null for this edge type
    null_std: np.ndarray  # float32, its standard deviation
    rank: np.ndarray  # int32, 1 = strongest source of this target and kind

    def __len__(self) -> int:
        return len(self.score)


@dataclass(frozen=True)
class ComposedGraph:
    """Nodes with their metrics, and edges: what one ingest stores."""

    spec: ModelSpec
    nodes: NodeTable
    metrics: dict[str, np.ndarray]  # per node, NaN where a metric does not apply
    edges: EdgeArrays
    nulls: tuple[NullStat, ...] = field(default_factory=tuple)


NODE_METRICS = (
    "qk_norm",
    "ov_norm",
    "copying_positive_fraction",
    "copying_ratio",
    "in_norm",
    "out_norm",
)


class _EdgeBuffer:
    """Collects score blocks; resolves null baselines and ranks at the end."""

    def __init__(self, null: NullProvider) -> None:
        self._null = null
        self._nulls: dict[str, tuple[int, NullStat]] = {}
        self._by_shape: dict[tuple[Shape, Shape, str], tuple[int, NullStat]] = {}
        self._parts: list[tuple[np.ndarray, ...]] = []

    def add(
        self,
        sources: np.ndarray,
        targets: np.ndarray,
        kind: str,
        scores: torch.Tensor,
        writer: Shape,
        reader: Shape,
    ) -> None:
        """Add a ``[len(sources), len(targets)]`` block; NaN (zero-norm) entries are dropped."""
        block = scores.detach().to("cpu", torch.float32).numpy()
        keep = np.isfinite(block)
        if not keep.any():
            return
        found = self._by_shape.get((writer, reader, kind))
        if found is None:
            stat = self._null(writer, reader, kind)
            found = self._nulls.setdefault(stat.key, (len(self._nulls), stat))
            self._by_shape[(writer, reader, kind)] = found
        idx = found[0]
        src = np.broadcast_to(sources[:, None], block.shape)[keep]
        tgt = np.broadcast_to(targets[None, :], block.shape)[keep]
        n = len(src)
        self._parts.append(
            (
                src.astype(np.int32),
                tgt.astype(np.int32),
                np.full(n, KIND_CODE[kind], np.int8),
                block[keep].astype(np.float32),
                np.full(n, idx, np.int16),
            )
        )

    def finish(self, names: tuple[str, ...]) -> tuple[EdgeArrays, tuple[NullStat, ...]]:
        """Resolve baselines and ranks; order rows by (target, kind, rank) as *strings*
        sort, so DuckDB's per-block min/max (zone maps) skip all but a target's block."""
        cols = [np.concatenate([p[i] for p in self._parts]) for i in range(5)] if self._parts else [
            np.empty(0, t) for t in (np.int32, np.int32, np.int8, np.float32, np.int16)
        ]
        src, tgt, kind, score, null_idx = cols
        stats = [s for _, s in sorted(self._nulls.values(), key=lambda v: v[0])]
        means = np.asarray([s.mean for s in stats] or [0.0], np.float32)
        stds = np.asarray([s.std for s in stats] or [0.0], np.float32)
        name_key = np.argsort(np.argsort(np.asarray(names)))  # node id -> string order
        kind_key = np.argsort(np.argsort(np.asarray(EDGE_KINDS)))
        order = np.lexsort((src, -score, kind_key[kind], name_key[tgt]))
        src, tgt, kind, score, null_idx = (c[order] for c in (src, tgt, kind, score, null_idx))
        group = np.ones(len(score), bool)
        if len(score):
            group[1:] = (tgt[1:] != tgt[:-1]) | (kind[1:] != kind[:-1])
        starts = np.flatnonzero(group)
        sizes = np.diff(np.append(starts, len(score)))
        rank = np.arange(len(score), dtype=np.int64) - np.repeat(starts, sizes) + 1
        edges = EdgeArrays(
            source=src,
            target=tgt,
            kind=kind,
            score=score,
            baseline=means[null_idx],
            null_std=stds[null_idx],
            rank=rank.astype(np.int32),
        )
        return edges, tuple(stats)


def _to(lw: LayerWeights, device: torch.device) -> LayerWeights:
    def move(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.to(device=device, dtype=torch.float32)

    return LayerWeights(
        layer=lw.layer,
        W_Q=move(lw.W_Q),
        W_K=move(lw.W_K),
        W_V=move(lw.W_V),
        W_O=move(lw.W_O),
        W_in=move(lw.W_in),
        W_out=move(lw.W_out),
    )


def _sq(x: torch.Tensor) -> torch.Tensor:
    return x.square().sum()


def _ratio(num_sq: torch.Tensor, left_sq: torch.Tensor, right_sq: torch.Tensor) -> torch.Tensor:
    """``sqrt(num²) / sqrt(left² right²)`` with NaN where a norm is zero (score undefined)."""
    denom = (left_sq[:, None] * right_sq[None, :]).sqrt()
    out = num_sq.clamp_min(0).sqrt() / denom
    return torch.where(denom > 0, out, torch.full_like(out, float("nan")))


def compose(
    reader: WeightReader,
    *,
    device: str | torch.device = "cpu",
    null: NullProvider = sample_null,
    progress: Progress | None = None,
    keep_factors_bytes: int = 1 << 30,
) -> ComposedGraph:
    """Compute every node metric and composition edge of the model behind ``reader``.

    Parameters
    ----------
    reader : a :class:`WeightReader` giving processed weights layer by layer.
    device : where the matrix work runs (``"cpu"``, ``"cuda"``).
    null : the Gaussian-null provider for baselines (cached by the caller).
    progress : called as ``progress(stage, done, total)``.
    keep_factors_bytes : keep the heads' read factors between the passes when they fit in
        this many bytes; otherwise re-read each layer in the second pass.
    """
    spec = reader.spec
    dev = torch.device(device)
    nodes = build_nodes(spec)
    L, H, d, dh = spec.n_layers, spec.n_heads, spec.d_model, spec.d_head
    kv = torch.arange(H, device=dev) // spec.group
    tick = progress or (lambda stage, done, total: None)
    buf = _EdgeBuffer(null)
    metrics = {m: np.full(len(nodes.names), np.nan, np.float32) for m in NODE_METRICS}
    read_centred = "fold_ln" in spec.processing  # folded LayerNorm centres reading weights
    write_centred = "center_writing_weights" in spec.processing
    head_writer = Shape("head", d, dh, write_centred)
    head_reader = Shape("head", d, dh, read_centred)

    with torch.inference_mode():
        g = reader.globals()
        for name in ("W_E", "W_U", "W_pos"):
            check_finite(name, getattr(g, name))
        W_E = g.W_E.to(dev, torch.float32)
        W_U = g.W_U.to(dev, torch.float32)
        readout = W_U @ W_E  # (d, d): the full OV circuit's core reads through this

        # Dense writers and readers: (node id, Gram, squared norm, shape).
        w_ids: list[int] = []
        w_grams: list[torch.Tensor] = []
        w_sq: list[torch.Tensor] = []
        w_shapes: list[Shape] = []
        r_ids: list[int] = []
        r_grams: list[torch.Tensor] = []
        r_sq: list[torch.Tensor] = []
        r_shapes: list[Shape] = []

        def add_writer(name: str, W: torch.Tensor) -> None:  # W: (rows, d)
            i = nodes.index(name)
            w_ids.append(i)
            w_grams.append(write_gram(W))
            w_sq.append(_sq(W))
            w_shapes.append(Shape("dense", d, W.shape[0], write_centred))
            metrics["out_norm"][i] = float(w_sq[-1].sqrt())

        def add_reader(name: str, R: torch.Tensor) -> None:  # R: (d, cols)
            i = nodes.index(name)
            r_ids.append(i)
            r_grams.append(read_gram(R))
            r_sq.append(_sq(R))
            r_shapes.append(Shape("dense", d, R.shape[1], read_centred))
            metrics["in_norm"][i] = float(r_sq[-1].sqrt())

        add_writer("EMBED", W_E)
        if spec.has_pos_embed and g.W_pos is not None:
            add_writer("POS_EMBED", g.W_pos.to(dev, torch.float32))
        add_reader("UNEMBED", W_U)
        del W_E, W_U, g  # vocabulary-sized: free them before the layers are read

        # ---- pass 1: write factors, head metrics, MLP Grams
        A_layers: list[torch.Tensor] = []
        B_layers: dict[int, dict[str, torch.Tensor]] = {}
        factor_bytes = 3 * L * H * d * dh * 4
        keep = factor_bytes <= keep_factors_bytes
        for layer in range(L):
            lw = _to(check_layer(reader.layer(layer), spec), dev)
            A = head_write_factor(lw.W_V, lw.W_O, kv)
            A_layers.append(A)
            B = head_read_factors(lw.W_Q, lw.W_K, lw.W_V, lw.W_O, kv)
            if keep:
                B_layers[layer] = B
            ids = nodes.head_ids(layer, H)
            metrics["ov_norm"][ids] = frob(A).cpu().numpy()
            metrics["qk_norm"][ids] = frob(B["Q"]).cpu().numpy()
            pos, ratio = copying_scores(lw.W_V, lw.W_O, readout, kv)
            metrics["copying_positive_fraction"][ids] = pos.cpu().numpy()
            metrics["copying_ratio"][ids] = ratio.cpu().numpy()
            if lw.W_in is not None and lw.W_out is not None:
                add_reader(f"MLP{layer}", lw.W_in)
                add_writer(f"MLP{layer}", lw.W_out)
            tick("factors", layer + 1, L)
        del readout

        w_pos = nodes.positions[np.asarray(w_ids)]
        r_pos = nodes.positions[np.asarray(r_ids)]
        W_grams = torch.stack(w_grams)
        W_sq = torch.stack(w_sq)
        R_grams = torch.stack(r_grams)
        R_sq = torch.stack(r_sq)
        w_grams.clear()  # the stacked copies are kept
        r_grams.clear()
        A_sq = [frob(A).square() for A in A_layers]

        # ---- pass 2: into each layer's heads (Q, K, V)
        for layer in range(L):
            B = B_layers.pop(layer, None)
            lw = None
            if B is None:
                lw = _to(check_layer(reader.layer(layer, mlp=False), spec), dev)
                B = head_read_factors(lw.W_Q, lw.W_K, lw.W_V, lw.W_O, kv)
            targets = nodes.head_ids(layer, H)
            src_heads = np.concatenate([nodes.head_ids(s, H) for s in range(layer)]) if layer else None
            A_src = torch.cat(A_layers[:layer]) if layer else None
            A_src_sq = torch.cat(A_sq[:layer]) if layer else None
            dense_mask = w_pos < 2 * layer
            grouped = None
            if spec.group > 1 and A_src is not None:
                if lw is None or lw.layer != layer:
                    lw = _to(check_layer(reader.layer(layer, mlp=False), spec), dev)
                grouped = grouped_read_parts(lw.W_Q, lw.W_K, lw.W_V, lw.W_O)
            for kind in ("Q", "K", "V"):
                Bk = B[kind]
                B_sq = frob(Bk).square()
                if A_src is not None:
                    if grouped is not None and kind in grouped:
                        num = block_sq_norms_grouped(A_src, *grouped[kind], kv)
                    else:
                        num = block_sq_norms(A_src, Bk)
                    buf.add(src_heads, targets, kind, _ratio(num, A_src_sq, B_sq), head_writer,
                            head_reader)
                if dense_mask.any():
                    sel = np.flatnonzero(dense_mask)
                    num = gram_pairs(Bk, W_grams[sel], side="read").T  # (n_writers, H)
                    scores = _ratio(num, W_sq[sel], B_sq)
                    for row, j in enumerate(sel):
                        buf.add(
                            np.asarray([w_ids[j]]),
                            targets,
                            kind,
                            scores[row : row + 1],
                            w_shapes[j],
                            head_reader,
                        )
            # this layer's heads into the dense readers after them (MLP inputs, unembedding)
            later = np.flatnonzero(r_pos > 2 * layer)
            if len(later):
                num = gram_pairs(A_layers[layer], R_grams[later], side="write")  # (H, n_readers)
                scores = _ratio(num, A_sq[layer], R_sq[later])
                for col, j in enumerate(later):
                    kind = "UNEMBED" if nodes.kinds[r_ids[j]] == "unembed" else "MLP"
                    buf.add(targets, np.asarray([r_ids[j]]), kind, scores[:, col : col + 1],
                            head_writer, r_shapes[j])
            tick("compose", layer + 1, L)

        # ---- dense writers into dense readers (embeddings/MLPs into MLPs and unembedding)
        num = gram_inner(W_grams, R_grams)
        scores = _ratio(num, W_sq, R_sq)
        for i in range(len(w_ids)):
            for j in range(len(r_ids)):
                if w_pos[i] < r_pos[j]:
                    kind = "UNEMBED" if nodes.kinds[r_ids[j]] == "unembed" else "MLP"
                    buf.add(np.asarray([w_ids[i]]), np.asarray([r_ids[j]]), kind,
                            scores[i : i + 1, j : j + 1], w_shapes[i], r_shapes[j])

    edges, stats = buf.finish(nodes.names)
    tick("rank", 1, 1)
    return ComposedGraph(spec=spec, nodes=nodes, metrics=metrics, edges=edges, nulls=stats)
