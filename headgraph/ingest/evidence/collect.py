"""Evidence from running the model, gathered and stored beside the weight graph.

For every probe (:mod:`headgraph.ingest.evidence.probes`):

1. one clean pass: the four role scores and shares of every head
   (:mod:`headgraph.ingest.evidence.roles`) -> ``node_scores``; on probes with a task
   metric also the clean metric (causal LMs: ``loss`` on node ``UNEMBED``);
2. **attribution** (causal LMs; :mod:`headgraph.ingest.evidence.attribution`): every head's
   ``attrib_ablation_{zero,mean}_dloss`` and every Q/K/V edge's
   ``attrib_path_{zero,mean}_dloss`` (heads, MLPs and embeddings into heads), from one
   forward and backward pass per chunk (``ig_*`` with ``attribution="ig"``);
3. **exact confirmation** (:mod:`headgraph.ingest.evidence.causal`), batched many
   interventions per forward pass, per ablation mode: the ``exact_heads`` heads with the
   largest ``|attribution|`` in that mode (every head for encoders, whose metric
   attribution cannot see), ablated -> ``ablation_{zero,mean}_d{loss,embed}``; the
   ``exact_edges`` Q/K/V edges with the largest ``|attribution|`` in that mode,
   path-patched -> ``path_{zero,mean}_dloss``;
4. their agreement (:mod:`headgraph.ingest.evidence.agreement`) -> ``evidence_agreement``,
   when stored.

Rows name their probe by its canonical string and their method by their metric
(:mod:`headgraph.schema.metrics`). Storing evidence replaces, inside the caller's
transaction, the rows with the same (probe, metric, node or edge) and keeps the others,
so ``headgraph probe`` can add exact confirmations to an earlier run's attribution, and a
failed run leaves the old evidence in place.
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
from headgraph.ingest.evidence.agreement import Agreement, refresh_agreement
from headgraph.ingest.evidence.attribution import MODES, Attribution, attribute
from headgraph.ingest.evidence.causal import HeadRef, ProbeRunner, SourceRef, split_qkv_inputs
from headgraph.ingest.evidence.probes import Probe
from headgraph.ingest.evidence.runnable import RunnableModel
from headgraph.schema import arrays
from headgraph.schema import tables as t
from headgraph.schema.bulk import bulk_insert
from headgraph.schema.metrics import APPROXIMATIONS

Progress = Callable[[str, int, int], None]
EdgeKey = tuple[str, str, str]  # (source, target, kind)
PATCH_KINDS = ("Q", "K", "V")
ATTRIBUTION_METHODS = ("attribution", "integrated_gradients", "none")
_HEAD = re.compile(r"^L\d+H\d+$")
_SOURCE = re.compile(r"^(L\d+H\d+|MLP\d+|EMBED|POS_EMBED)$")


@dataclass(frozen=True)
class EvidenceOptions:
    """How much causal work to do.

    ``attribution``: ``attribution`` (first order, one backward pass per chunk),
    ``integrated_gradients`` (EAP-IG, ``ig_steps`` runs per mode) or ``none``.
    ``exact_heads`` / ``exact_edges``: how many of the heads / Q/K/V edges with the largest
    ``|attribution|`` to confirm exactly (``None``: every head); ``heads`` / ``edges`` name
    the ones to measure exactly instead. ``ablate=False`` turns off every causal metric
    (role scores only)."""

    attribution: str = "attribution"
    ig_steps: int = 5
    exact_heads: int | None = 10
    exact_edges: int = 20
    heads: tuple[str, ...] | None = None
    edges: tuple[EdgeKey, ...] | None = None
    max_tokens: int = 8192
    ablate: bool = True

    def __post_init__(self) -> None:
        if self.attribution not in ATTRIBUTION_METHODS:
            raise BadInputError(f"attribution {self.attribution!r} is unknown; use one of "
                                f"{', '.join(ATTRIBUTION_METHODS)}.")
        for name in ("exact_heads", "exact_edges", "ig_steps"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise BadInputError(f"{name} must be >= 0, got {value}.")
        if self.ig_steps < 1:
            raise BadInputError(f"ig_steps must be >= 1, got {self.ig_steps}.")
        if self.max_tokens < 1:
            raise BadInputError(f"max_tokens must be >= 1, got {self.max_tokens}.")
        bad = [h for h in self.heads or () if not _HEAD.match(h)]
        if bad:
            raise BadInputError(f"heads {bad} are not head names like L0H1.")
        for s, target, kind in self.edges or ():
            if not _SOURCE.match(s) or not _HEAD.match(target) or kind not in PATCH_KINDS:
                raise BadInputError(f"edge {s}>{target}:{kind} is not SOURCE>HEAD:KIND with "
                                    "SOURCE a head, MLPn, EMBED or POS_EMBED and KIND Q, K "
                                    "or V.")


def parse_edges(text: str) -> tuple[EdgeKey, ...]:
    """``L0H2>L1H3:K,MLP0>L2H1:Q`` -> edge keys (checked by :class:`EvidenceOptions`)."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        source, _, rest = part.partition(">")
        target, _, kind = rest.partition(":")
        out.append((source.strip(), target.strip(), kind.strip().upper()))
    return tuple(out)


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
    """Everything one evidence run produced; ``probes`` are the canonical names it covers.
    ``agreement`` is filled in when it is stored (it counts earlier rows too)."""

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


PriorAttribution = Callable[[str], Attribution | None]
"""``probe -> attribution stored for it earlier`` (``headgraph probe`` without a new one)."""


def _heads(model: RunnableModel) -> list[HeadRef]:
    return [HeadRef(layer, head) for layer in range(model.n_layers)
            for head in range(model.n_heads)]


def _largest(values: dict, n: int | None) -> list:
    keys = sorted(values, key=lambda k: (-abs(values[k]), k))
    return keys if n is None else keys[:n]


def _chosen_heads(opts: EvidenceOptions, attr: Attribution | None, heads: list[HeadRef],
                  mode: str) -> list[HeadRef]:
    """The heads to ablate exactly in ``mode``: named, all, or the ``exact_heads`` with the
    largest ``|attribution|`` in that mode."""
    if opts.heads is not None:
        return [h for h in heads if h.name in opts.heads]
    if opts.exact_heads is None:
        return heads
    if attr is None:
        return []  # nothing ranks the heads (no attribution run or stored)
    names = set(_largest(attr.nodes.get(mode, {}), opts.exact_heads))
    return [h for h in heads if h.name in names]


def _chosen_edges(opts: EvidenceOptions, attr: Attribution | None, mode: str
                  ) -> list[EdgeKey]:
    """The edges to path-patch exactly in ``mode`` (named, or by ``|attribution|``)."""
    if opts.edges is not None:
        return list(opts.edges)
    if attr is None:
        return []
    return _largest(attr.edges.get(mode, {}), opts.exact_edges)


class _Clock:
    """Seconds and forward passes per stage of an evidence run."""

    def __init__(self) -> None:
        self.seconds = {"roles": 0.0, "attribution": 0.0, "ablation": 0.0, "paths": 0.0}
        self.passes = dict.fromkeys(self.seconds, 0)

    def run(self, stage: str, runner: ProbeRunner, fn, *args, **kwargs):
        start, before = time.perf_counter(), runner.forward_passes
        out = fn(*args, **kwargs)
        self.seconds[stage] += time.perf_counter() - start
        self.passes[stage] += runner.forward_passes - before
        return out


def collect_evidence(model: RunnableModel, probes: Sequence[Probe],
                     options: EvidenceOptions | None = None,
                     progress: Progress | None = None,
                     prior: PriorAttribution | None = None) -> Evidence:
    """Run every probe and return the rows to store (see the module docstring)."""
    opts = options or EvidenceOptions()
    tick = progress or (lambda stage, done, total: None)
    nodes: list[NodeScore] = []
    edges: list[EdgeScore] = []
    notes: list[str] = []
    clock = _Clock()
    heads = _heads(model)
    missing = sorted(set(opts.heads or ()) - {h.name for h in heads})
    if missing:
        raise BadInputError(f"heads {missing} are not in this model ({model.n_layers} layers "
                            f"x {model.n_heads} heads).")
    for i, probe in enumerate(probes):
        tick("probes", i, len(probes))
        runner = ProbeRunner(model, probe, max_tokens=opts.max_tokens)
        clean = clock.run("roles", runner, runner.clean)
        notes += [f"{probe.name}: {n}" for n in clean.notes]
        for metric, values in clean.role_scores.items():
            nodes += [NodeScore(h.name, metric, probe.name, float(values[h.layer, h.head]))
                      for h in heads]
        if runner.metric_name is None or not opts.ablate:
            continue
        if runner.metric_name == "loss":
            nodes.append(NodeScore("UNEMBED", "loss", probe.name, float(clean.metric)))
        found = _causal(runner, heads, opts, clock, prior)
        nodes += found[0]
        edges += found[1]
        notes += found[2]
    tick("probes", len(probes), len(probes))
    return Evidence(tuple(p.name for p in probes), tuple(nodes), tuple(edges), tuple(notes),
                    clock.seconds, clock.passes)


def _causal(runner: ProbeRunner, heads: list[HeadRef], opts: EvidenceOptions, clock: _Clock,
            prior: PriorAttribution | None
            ) -> tuple[list[NodeScore], list[EdgeScore], list[str]]:
    """One probe's attribution and exact confirmations (module docstring, 2 and 3)."""
    probe, m = runner.probe.name, runner.metric_name
    nodes: list[NodeScore] = []
    edges: list[EdgeScore] = []
    notes: list[str] = []
    with split_qkv_inputs(runner.model) as refusal:
        if refusal is not None and m == "loss":
            notes.append(f"{probe}: no edge evidence: {refusal}.")
        attr = None
        if m != "loss":
            notes.append(f"{probe}: the {m} metric is 0 with a zero gradient at the clean "
                         "run, so attribution cannot see it; heads are measured exactly.")
        elif opts.attribution != "none":
            method = "ig" if opts.attribution == "integrated_gradients" else "attrib"
            attr = clock.run("attribution", runner, attribute, runner, method=method,
                             steps=opts.ig_steps, edges=refusal is None)
            notes += attr.notes
            found = _attribution_rows(attr, probe, opts.attribution)
            nodes += found[0]
            edges += found[1]
        elif prior is not None:
            attr = prior(probe)
        jobs = [(h, mode) for mode in MODES for h in (
            heads if m != "loss" and opts.heads is None  # encoders: attribution is blind
            else _chosen_heads(opts, attr, heads, mode))]
        values = clock.run("ablation", runner, runner.effects,
                           [runner.ablate(h, mode) for h, mode in jobs])
        nodes += [NodeScore(h.name, f"ablation_{mode}_d{m}", probe, v)
                  for (h, mode), v in zip(jobs, values, strict=True)]
        if refusal is None and m == "loss":
            paths = [(e, mode) for mode in MODES for e in _chosen_edges(opts, attr, mode)]
            values = clock.run("paths", runner, runner.effects,
                               [runner.patch_path(SourceRef(s), HeadRef.parse(tg), k, mode)
                                for (s, tg, k), mode in paths])
            edges += [EdgeScore(s, tg, k, f"path_{mode}_dloss", probe, v)
                      for ((s, tg, k), mode), v in zip(paths, values, strict=True)]
    return nodes, edges, notes


def _attribution_rows(attr: Attribution, probe: str, method: str
                      ) -> tuple[list[NodeScore], list[EdgeScore]]:
    prefix = APPROXIMATIONS[method]
    nodes = [NodeScore(h, f"{prefix}ablation_{mode}_dloss", probe, v)
             for mode in MODES for h, v in attr.nodes.get(mode, {}).items()]
    edges = [EdgeScore(s, tg, k, f"{prefix}path_{mode}_dloss", probe, v)
             for mode in MODES for (s, tg, k), v in attr.edges.get(mode, {}).items()]
    return nodes, edges


def evidence_tables(model_id: int, evidence: Evidence) -> tuple[pa.Table, pa.Table]:
    """Arrow tables for ``node_scores`` and ``edge_scores``."""
    ns, es = evidence.node_scores, evidence.edge_scores

    def values(rows) -> pa.Array:
        return arrays.numeric(np.fromiter((r.value for r in rows), np.float32, len(rows)))

    nodes = pa.table({
        "model_id": arrays.constant(model_id, len(ns)),
        "node": arrays.strings([s.node for s in ns]),
        "metric": arrays.strings([s.metric for s in ns]),
        "probe": arrays.strings([s.probe for s in ns]),
        "value": values(ns),
    })
    edges = pa.table({
        "model_id": arrays.constant(model_id, len(es)),
        "source": arrays.strings([s.source for s in es]),
        "target": arrays.strings([s.target for s in es]),
        "kind": arrays.strings([s.kind for s in es]),
        "metric": arrays.strings([s.metric for s in es]),
        "probe": arrays.strings([s.probe for s in es]),
        "value": values(es),
    })
    return nodes, edges


def _replace_rows(conn: Connection, model_id: int, evidence: Evidence) -> None:
    """Delete the stored rows the new ones replace: same (probe, metric) and same node or
    edge."""
    n_groups: dict[tuple[str, str], set[str]] = {}
    for s in evidence.node_scores:
        n_groups.setdefault((s.probe, s.metric), set()).add(s.node)
    c = t.node_scores.c
    for (probe, metric), names in n_groups.items():
        conn.execute(delete(t.node_scores).where(and_(
            c.model_id == model_id, c.probe == probe, c.metric == metric,
            c.node.in_(sorted(names)))))
    e = t.edge_scores.c
    estimates = tuple(APPROXIMATIONS.values())
    wholes = {(s.probe, s.metric) for s in evidence.edge_scores if s.metric.startswith(estimates)}
    for probe, metric in sorted(wholes):  # an estimate covers every edge: replace them all
        conn.execute(delete(t.edge_scores).where(and_(
            e.model_id == model_id, e.probe == probe, e.metric == metric)))
    e_groups: dict[tuple[str, str, str, str], set[str]] = {}
    for s in evidence.edge_scores:
        if not s.metric.startswith(estimates):
            e_groups.setdefault((s.probe, s.metric, s.target, s.kind), set()).add(s.source)
    for (probe, metric, target, kind), sources in sorted(e_groups.items()):
        conn.execute(delete(t.edge_scores).where(and_(
            e.model_id == model_id, e.probe == probe, e.metric == metric, e.target == target,
            e.kind == kind, e.source.in_(sorted(sources)))))


def store_evidence(conn: Connection, model_id: int, evidence: Evidence) -> list[Agreement]:
    """Write ``evidence``'s rows in the caller's transaction, replacing stored rows of the
    same probe, metric and node or edge, then recompute the agreement of its probes."""
    _replace_rows(conn, model_id, evidence)
    nodes, edges = evidence_tables(model_id, evidence)
    bulk_insert(conn, "node_scores", nodes)
    bulk_insert(conn, "edge_scores", edges)
    return refresh_agreement(conn, model_id, evidence.probes)
