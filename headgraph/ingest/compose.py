"""From processed weights to every node metric and every composition edge of a model.

Two passes over the layers keep memory bounded by what the scores need, not by the model:

1. *Factors* (:mod:`.factors`): for each layer the heads' write factors ``A = R_V W_O``
   (kept: they are the sources of every later head), their norms and copying scores, and
   the Grams of the MLP's read and write matrices; embedding Grams once.
2. *Scores, one task per target layer* (:mod:`.scoring`): the layer's read factors are
   rebuilt and one product ``A_earlier @ B_layer`` (chunked) scores every earlier head
   into it; dense writers go through the Gram trick; the layer's heads are scored into
   the dense readers after them. Tasks run in-process or on a cluster (a :class:`~.scoring.LayerScorer`).

Then one buffer resolves null baselines, ranks every target's feeders and sorts the rows.

See :mod:`headgraph.ingest.kernel` for the algebra and docs/science.md for the definitions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from headgraph.ingest.factors import Factors, compute_factors
from headgraph.ingest.heap import trim_heap
from headgraph.ingest.nodes import NodeTable
from headgraph.ingest.null import NullStat, OperandShape, sample_null
from headgraph.ingest.reader import WeightReader
from headgraph.ingest.scoring import LayerScorer, ScoreBlock, score_dense, score_layers_here
from headgraph.ingest.spec import ModelSpec
from headgraph.ingest.structural import StructuralNull, structural_null

EDGE_KINDS = ("Q", "K", "V", "MLP", "UNEMBED")
"""Q/K/V: the source's write read by a head's queries, keys or values; MLP: read by an
MLP's input; UNEMBED: read by the unembedding (a direct effect on the logits)."""

KIND_CODE = {k: i for i, k in enumerate(EDGE_KINDS)}

Progress = Callable[[str, int, int], None]
NullProvider = Callable[[OperandShape, OperandShape, str], NullStat]


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
    structural: StructuralNull | None = None  # calibrated z per edge (:mod:`.structural`)




class _EdgeBuffer:
    """Collects score blocks; resolves null baselines and ranks at the end."""

    def __init__(self, null: NullProvider) -> None:
        self._null = null
        self._nulls: dict[str, tuple[int, NullStat]] = {}
        self._by_shape: dict[tuple[OperandShape, OperandShape, str], tuple[int, NullStat]] = {}
        self._parts: list[tuple[np.ndarray, ...]] = []

    def add(self, block: ScoreBlock) -> None:
        """Add a block of scores; NaN (zero-norm, undefined) entries are dropped."""
        values = block.scores
        keep = np.isfinite(values)
        if not keep.any():
            return
        key = (block.writer, block.reader, block.kind)
        found = self._by_shape.get(key)
        if found is None:
            stat = self._null(*key)
            found = self._nulls.setdefault(stat.key, (len(self._nulls), stat))
            self._by_shape[key] = found
        src = np.broadcast_to(block.sources[:, None], values.shape)[keep]
        tgt = np.broadcast_to(block.targets[None, :], values.shape)[keep]
        n = len(src)
        self._parts.append(
            (
                src.astype(np.int32),
                tgt.astype(np.int32),
                np.full(n, KIND_CODE[block.kind], np.int8),
                values[keep].astype(np.float32),
                np.full(n, found[0], np.int16),
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


def compose(
    reader: WeightReader,
    *,
    device: str | torch.device = "cpu",
    null: NullProvider = sample_null,
    progress: Progress | None = None,
    executor: LayerScorer | None = None,
    head_method: str = "auto",
) -> ComposedGraph:
    """Compute every node metric and composition edge of the model behind ``reader``
    (:func:`compose_model`, without the factors)."""
    return compose_model(reader, device=device, null=null, progress=progress,
                         executor=executor, head_method=head_method)[0]


def compose_model(
    reader: WeightReader,
    *,
    device: str | torch.device = "cpu",
    null: NullProvider = sample_null,
    progress: Progress | None = None,
    executor: LayerScorer | None = None,
    head_method: str = "auto",
) -> tuple[ComposedGraph, Factors]:
    """Compute every node metric and composition edge of the model behind ``reader``, and
    return the pass-1 factors too (the virtual heads are scored from them).

    Parameters
    ----------
    reader : a :class:`WeightReader` giving processed weights layer by layer.
    device : where the matrix work runs (``"cpu"``, ``"cuda"``).
    null : the Gaussian-null provider for baselines (cached by the caller).
    progress : called as ``progress(stage, done, total)``.
    executor : runs the per-layer scoring tasks (default: in this process, in order).
    head_method : ``"qr"``, ``"gram"`` or ``"auto"`` (fewer FLOPs within the memory
        budget): how head pairs are scored; both are exact (:mod:`.cost`).
    """
    tick = progress or (lambda stage, done, total: None)
    factors = compute_factors(reader, device=device, progress=tick, head_method=head_method)
    spec = factors.spec
    buf = _EdgeBuffer(null)
    layers = list(range(spec.n_layers))
    done = 0
    tick("compose", 0, spec.n_layers)
    blocks_of = (score_layers_here(factors, reader, layers) if executor is None
                 else executor.score_layers(factors, reader, layers))
    for blocks in blocks_of:
        for block in blocks:
            buf.add(block)
        del blocks
        trim_heap()  # the layer's temporaries are freed: give their pages back
        done += 1
        tick("compose", done, spec.n_layers)
    for block in score_dense(factors):
        buf.add(block)
    edges, stats = buf.finish(factors.nodes.names)
    tick("rank", 1, 1)
    structural = structural_null(factors, reader, edges.source, edges.target, edges.kind,
                                 edges.score, EDGE_KINDS, progress=tick)
    graph = ComposedGraph(spec=spec, nodes=factors.nodes, metrics=factors.metrics, edges=edges,
                          nulls=stats, structural=structural)
    return graph, factors
