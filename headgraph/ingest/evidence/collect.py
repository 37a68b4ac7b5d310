"""Evidence from running the model, gathered and stored beside the weight graph.

For every probe (:mod:`headgraph.ingest.evidence.probes`):

1. one clean pass: the four role scores and shares of every head
   (:mod:`headgraph.ingest.evidence.roles`) -> ``node_scores``;
2. on probes with a task metric (:mod:`headgraph.ingest.evidence.causal`): the clean metric (causal
   LMs: ``loss`` on node ``UNEMBED``, the model's own output), then every head zero- and
   mean-ablated -> ``ablation_{zero,mean}_d{loss,embed}``;
3. path patching on causal LMs: the ``patch_targets`` heads (layer >= 1) with the largest
   mean-ablation effect; into each, for each kind in ``patch_kinds``, the ``patch_sources``
   strongest *weight* edges from heads (by composition score rank) -> ``edge_scores``
   ``path_{zero,mean}_dloss``.

Rows name their probe by its canonical string; storing evidence first deletes the model's
earlier rows of the same probes, inside the caller's transaction, so a re-run replaces
rather than duplicates and a failed one leaves the old evidence in place.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
from sqlalchemy import Connection, and_, delete

from headgraph.errors import BadInputError
from headgraph.ingest.compose import EDGE_KINDS, ComposedGraph
from headgraph.ingest.evidence.causal import HeadRef, ProbeRunner, split_qkv_inputs
from headgraph.ingest.evidence.probes import Probe
from headgraph.ingest.evidence.runnable import RunnableModel
from headgraph.schema import tables as t
from headgraph.schema.bulk import bulk_insert

Feeders = Callable[[str, str, int], list[str]]
"""``(target, kind, n) -> sources``: the ``n`` strongest weight feeders of ``target``
through ``kind``, strongest first."""

Progress = Callable[[str, int, int], None]
PATCH_KINDS = ("Q", "K", "V")
_HEAD = re.compile(r"^L\d+H\d+$")


@dataclass(frozen=True)
class EvidenceOptions:
    """How much causal work to do. ``patch_targets=0`` or ``patch_sources=0`` turns path
    patching off; ``ablate=False`` turns off all causal metrics; ``heads`` (node names)
    restricts ablation, and so the choice of patch targets, to those heads (role scores
    always cover every head: they cost one pass)."""

    patch_targets: int = 4
    patch_sources: int = 4
    patch_kinds: tuple[str, ...] = PATCH_KINDS
    max_tokens: int = 8192
    ablate: bool = True
    heads: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("patch_targets", "patch_sources"):
            if getattr(self, name) < 0:
                raise BadInputError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if self.max_tokens < 1:
            raise BadInputError(f"max_tokens must be >= 1, got {self.max_tokens}.")
        bad = [k for k in self.patch_kinds if k not in PATCH_KINDS]
        if bad:
            raise BadInputError(f"patch kinds {bad} unknown; use Q, K and/or V.")
        bad = [h for h in self.heads or () if not _HEAD.match(h)]
        if bad:
            raise BadInputError(f"heads {bad} are not head names like L0H1.")


@dataclass(frozen=True)
class NodeScore:
    """One ``node_scores`` row (without the model id)."""

    node: str
    metric: str
    probe: str
    value: float


@dataclass(frozen=True)
class EdgeScore:
    """One ``edge_scores`` row (without the model id)."""

    source: str
    target: str
    kind: str
    metric: str
    probe: str
    value: float


@dataclass(frozen=True)
class Evidence:
    """Everything one evidence run produced; ``probes`` are the canonical names it covers
    (their earlier rows are replaced when this is stored)."""

    probes: tuple[str, ...]
    node_scores: tuple[NodeScore, ...]
    edge_scores: tuple[EdgeScore, ...]
    notes: tuple[str, ...] = ()
    timings: dict[str, float] = field(default_factory=dict)
    forward_passes: dict[str, int] = field(default_factory=dict)

    def node_value(self, node: str, metric: str, probe: str | None = None) -> float:
        """One stored number (tests, reports); KeyError if absent."""
        for s in self.node_scores:
            if s.node == node and s.metric == metric and probe in (None, s.probe):
                return s.value
        raise KeyError((node, metric, probe))


def feeders_from_graph(graph: ComposedGraph) -> Feeders:
    """:data:`Feeders` over an in-memory composed graph (during ingest)."""
    e, names = graph.edges, graph.nodes.names

    def feeders(target: str, kind: str, n: int) -> list[str]:
        sel = (e.target == names.index(target)) & (e.kind == EDGE_KINDS.index(kind))
        order = np.argsort(e.rank[sel], kind="stable")
        found = [names[i] for i in e.source[sel][order]]
        return [s for s in found if _HEAD.match(s)][:n]

    return feeders


def _heads(model: RunnableModel) -> list[HeadRef]:
    return [HeadRef(layer, head) for layer in range(model.n_layers)
            for head in range(model.n_heads)]


def collect_evidence(model: RunnableModel, probes: Sequence[Probe], feeders: Feeders | None,
                     options: EvidenceOptions | None = None,
                     progress: Progress | None = None) -> Evidence:
    """Run every probe and return the rows to store (see the module docstring)."""
    opts = options or EvidenceOptions()
    tick = progress or (lambda stage, done, total: None)
    nodes: list[NodeScore] = []
    edges: list[EdgeScore] = []
    notes: list[str] = []
    timings = {"roles": 0.0, "ablation": 0.0, "paths": 0.0}
    passes = {"roles": 0, "ablation": 0, "paths": 0}
    heads = _heads(model)
    missing = sorted(set(opts.heads or ()) - {h.name for h in heads})
    if missing:
        raise BadInputError(f"heads {missing} are not in this model ({model.n_layers} layers "
                            f"x {model.n_heads} heads).")
    for i, probe in enumerate(probes):
        tick("probes", i, len(probes))
        runner = ProbeRunner(model, probe, max_tokens=opts.max_tokens)
        start = time.perf_counter()
        clean = runner.clean()
        timings["roles"] += time.perf_counter() - start
        passes["roles"] += runner.forward_passes
        for metric, values in clean.role_scores.items():
            nodes += [NodeScore(h.name, metric, probe.name, float(values[h.layer, h.head]))
                      for h in heads]
        if runner.metric_name is None or not opts.ablate:
            continue
        m = runner.metric_name
        if m == "loss":
            nodes.append(NodeScore("UNEMBED", "loss", probe.name, float(clean.metric)))
        start, before = time.perf_counter(), runner.forward_passes
        effect: dict[str, float] = {}
        chosen = [h for h in heads if opts.heads is None or h.name in opts.heads]
        for h in chosen:
            for mode in ("zero", "mean"):
                value = runner.effect(runner.ablate(h, mode))
                nodes.append(NodeScore(h.name, f"ablation_{mode}_d{m}", probe.name, value))
                if mode == "mean":
                    effect[h.name] = value
        timings["ablation"] += time.perf_counter() - start
        passes["ablation"] += runner.forward_passes - before
        if feeders is None or not opts.patch_targets or not opts.patch_sources:
            continue
        start, before = time.perf_counter(), runner.forward_passes
        edges += _path_patch(runner, chosen, effect, feeders, opts, probe.name, notes)
        timings["paths"] += time.perf_counter() - start
        passes["paths"] += runner.forward_passes - before
    tick("probes", len(probes), len(probes))
    return Evidence(tuple(p.name for p in probes), tuple(nodes), tuple(edges), tuple(notes),
                    timings, passes)


def _path_patch(runner: ProbeRunner, heads: list[HeadRef], effect: dict[str, float],
                feeders: Feeders, opts: EvidenceOptions, probe: str,
                notes: list[str]) -> list[EdgeScore]:
    targets = sorted((h for h in heads if h.layer > 0), key=lambda h: -effect[h.name])
    out: list[EdgeScore] = []
    with split_qkv_inputs(runner.model) as refusal:
        if refusal is not None:
            notes.append(f"{probe}: no path patching: {refusal}.")
            return out
        for target in targets[: opts.patch_targets]:
            for kind in opts.patch_kinds:
                for name in feeders(target.name, kind, opts.patch_sources):
                    source = HeadRef.parse(name)
                    for mode in ("zero", "mean"):
                        value = runner.effect(runner.patch_path(source, target, kind, mode))
                        out.append(EdgeScore(source.name, target.name, kind,
                                             f"path_{mode}_dloss", probe, value))
    return out


def evidence_tables(model_id: int, evidence: Evidence) -> tuple[pa.Table, pa.Table]:
    """Arrow tables for ``node_scores`` and ``edge_scores``."""
    ns, es = evidence.node_scores, evidence.edge_scores
    nodes = pa.table({
        "model_id": pa.array([model_id] * len(ns), pa.int32()),
        "node": pa.array([s.node for s in ns], pa.string()),
        "metric": pa.array([s.metric for s in ns], pa.string()),
        "probe": pa.array([s.probe for s in ns], pa.string()),
        "value": pa.array([s.value for s in ns], pa.float32()),
    })
    edges = pa.table({
        "model_id": pa.array([model_id] * len(es), pa.int32()),
        "source": pa.array([s.source for s in es], pa.string()),
        "target": pa.array([s.target for s in es], pa.string()),
        "kind": pa.array([s.kind for s in es], pa.string()),
        "metric": pa.array([s.metric for s in es], pa.string()),
        "probe": pa.array([s.probe for s in es], pa.string()),
        "value": pa.array([s.value for s in es], pa.float32()),
    })
    return nodes, edges


def store_evidence(conn: Connection, model_id: int, evidence: Evidence) -> None:
    """Replace the model's rows of ``evidence.probes`` with ``evidence``'s, in the caller's
    transaction."""
    for table in (t.node_scores, t.edge_scores):
        conn.execute(delete(table).where(and_(table.c.model_id == model_id,
                                              table.c.probe.in_(evidence.probes))))
    nodes, edges = evidence_tables(model_id, evidence)
    bulk_insert(conn, "node_scores", nodes)
    bulk_insert(conn, "edge_scores", edges)
