"""GraphQL types of the graph side: paths, virtual heads, circuits, comparisons, series.

Each type is a thin view over a frozen record of :mod:`headgraph.graph` or
:mod:`headgraph.queries` (kept in a ``strawberry.Private`` field); node names become
:class:`~headgraph.api.types.Node` objects through the request's node loader, so a list of
paths costs one statement for all their nodes. The work itself (path search, circuits,
matching) runs in a worker thread (:mod:`headgraph.api.graph_ops`).

This module does not use ``from __future__ import annotations``: its ``Private`` fields
name records of :mod:`headgraph.graph` imported only for type checking (comparison pulls in
pandas and scipy, which a server should not import at start), and strawberry takes a
quoted ``Private["..."]`` without resolving it.
"""

from enum import Enum
from typing import TYPE_CHECKING

import strawberry
from strawberry import Info, Private

from headgraph.api.context import Context
from headgraph.api.graph_ops import (
    COMPOSITION_KINDS,
    Circuit,
    PathAsk,
    changed_edges,
    circuit_of,
    compare_models,
    family_series,
    find_paths,
)
from headgraph.api.limits import check_first
from headgraph.api.types import (
    Copying,
    Edge,
    EdgeKind,
    Model,
    Node,
    f32,
    kind_values,
    load_node_or_none,
    load_nodes,
)
from headgraph.queries.records import ModelRow, NodeRow
from headgraph.queries.series import SeriesPoint as SeriesPointRecord
from headgraph.queries.virtual import VirtualHeadRow, virtual_heads_of

if TYPE_CHECKING:
    from headgraph.graph.compare import Comparison as ComparisonRecord
    from headgraph.graph.compare import EdgeChange as EdgeChangeRecord
    from headgraph.graph.compare import HeadMatch as HeadMatchRecord
    from headgraph.graph.paths import Path as PathRecord


# --- paths and virtual heads ------------------------------------------------------------

@strawberry.type(description="A chain of edges into a target: nodes[i] -kinds[i]-> "
                 "nodes[i+1], first node first.")
class Path:
    record: Private["PathRecord"]
    model_id: Private[int]
    kinds: list[EdgeKind]
    score: float = strawberry.field(
        description="The ranking value: the product of the edge weights (rankBy: PRODUCT) "
                    "or its geometric mean per hop (PER_HOP).")
    product: float = strawberry.field(
        description="The product of the edge weights (scores, or score/baseline for RATIO).")
    edge_scores: list[float] = strawberry.field(
        description="Each edge's stored score, source end first.")
    length: int = strawberry.field(description="Number of edges.")

    @classmethod
    def from_row(cls, record: "PathRecord", model_id: int) -> "Path":
        return cls(record=record, model_id=model_id,
                   kinds=[EdgeKind(k) for k in record.kinds], score=record.value,
                   product=record.product, edge_scores=[f32(s) for s in record.scores],
                   length=record.length)

    @strawberry.field(description="The path's nodes, source first, target last.")
    async def nodes(self, info: Info[Context, None]) -> list[Node]:
        return await load_nodes(info, self.model_id, self.record.nodes)


async def model_paths(info: Info[Context, None], model: ModelRow, ask: PathAsk) -> list[Path]:
    """``Model.paths``: the search runs in a worker thread."""
    found = await info.context.db.run(find_paths, model, ask)
    return [Path.from_row(p, model.model_id) for p in found]


@strawberry.type(description="A virtual attention head: a chain of heads whose OV circuits, "
                 "multiplied, act as one head (the first head's values moved on by the "
                 "next). Scored exactly from the weights at ingest.")
class VirtualHead:
    row: Private[VirtualHeadRow]
    length: int = strawberry.field(description="Number of heads in the chain.")
    score: float = strawberry.field(
        description="||W_OV^1 W_OV^2 ...||_F / (||W_OV^1||_F ||W_OV^2||_F ...).")
    heuristic: float = strawberry.field(
        description="Product of the chain's stored V-composition scores (what chose it).")
    copying: Copying = strawberry.field(
        description="Copying scores of the chain's full OV circuit W_E W_OV^1 W_OV^2 ... W_U.")

    @classmethod
    def from_row(cls, row: VirtualHeadRow) -> "VirtualHead":
        return cls(row=row, length=row.length, score=f32(row.score),
                   heuristic=f32(row.heuristic),
                   copying=Copying(positive_fraction=f32(row.copying_positive_fraction),
                                   ratio=f32(row.copying_ratio)))

    @strawberry.field(description="The heads of the chain, first head (whose values are "
                      "moved first) first.")
    async def heads(self, info: Info[Context, None]) -> list[Node]:
        return await load_nodes(info, self.row.model_id, self.row.heads)


async def model_virtual_heads(info: Info[Context, None], model: ModelRow, length: int | None,
                              top: int) -> list[VirtualHead]:
    """``Model.virtualHeads``: one bounded query."""
    rows = await info.context.db.run(virtual_heads_of, model.model_id, length=length, top=top)
    return [VirtualHead.from_row(r) for r in rows]


# --- circuits ---------------------------------------------------------------------------

@strawberry.type(description="A node's upstream circuit: the nodes and edges that reach it "
                 "within a few hops, strongest edges first.")
class Subgraph:
    circuit: Private[Circuit]
    edges: list[Edge]
    truncated: bool = strawberry.field(
        description="True when max_circuit_edges cut the circuit (the strongest edges are "
                    "kept).")

    @classmethod
    def from_row(cls, circuit: Circuit) -> "Subgraph":
        return cls(circuit=circuit, edges=[Edge.from_row(e) for e in circuit.edges],
                   truncated=circuit.truncated)

    @strawberry.field(description="The nodes met, the circuit's own node included.")
    async def nodes(self, info: Info[Context, None]) -> list[Node]:
        return await load_nodes(info, self.circuit.model_id, self.circuit.nodes)


async def node_circuit(info: Info[Context, None], node: NodeRow, depth: int,
                       kinds: tuple[str, ...] | None, min_score: float | None) -> Subgraph:
    """``Node.circuit``: the walk runs in a worker thread."""
    model = await info.context.loaders.model.load(node.model_id)
    circuit = await info.context.db.run(circuit_of, model, node.node, depth=depth, kinds=kinds,
                                        min_score=min_score,
                                        max_edges=info.context.settings.max_circuit_edges)
    return Subgraph.from_row(circuit)


# --- comparison -------------------------------------------------------------------------

@strawberry.enum(description="How Query.compare pairs heads: AUTO (by name for two models "
                 "of one family and shape, e.g. checkpoints of one run; by signature "
                 "otherwise), NAMES (heads of the same name), SIGNATURE (one-to-one optimal "
                 "assignment on signature similarity).")
class HeadMatching(Enum):
    AUTO = "auto"
    NAMES = "names"
    SIGNATURE = "signature"


@strawberry.enum(description="How an edge differs between the two models of a comparison.")
class ChangeStatus(Enum):
    APPEARED = "appeared"
    VANISHED = "vanished"
    CHANGED = "changed"


@strawberry.type(description="A head of model A paired with a head of model B.")
class HeadMatch:
    record: Private["HeadMatchRecord"]
    model_ids: Private[tuple[int, int]]
    similarity: float = strawberry.field(
        description="1 / (1 + distance of the standardised signatures); 1 when identical.")

    @strawberry.field
    async def a(self, info: Info[Context, None]) -> Node:
        (node,) = await load_nodes(info, self.model_ids[0], [self.record.a])
        return node

    @strawberry.field
    async def b(self, info: Info[Context, None]) -> Node:
        (node,) = await load_nodes(info, self.model_ids[1], [self.record.b])
        return node


@strawberry.type(description="An edge of A mapped through the head matching to B (or the "
                 "other way round), with its score in each. Endpoints are null where a "
                 "model has no such node.")
class EdgeChange:
    record: Private["EdgeChangeRecord"]
    model_ids: Private[tuple[int, int]]
    kind: EdgeKind
    score_a: float | None = strawberry.field(description="Score in A; null if A lacks it.")
    score_b: float | None = strawberry.field(description="Score in B; null if B lacks it.")
    change: float = strawberry.field(description="scoreB - scoreA (a missing score counts 0).")
    status: ChangeStatus = strawberry.field(
        description="APPEARED / VANISHED when the edge's z-score crosses presentZ, else "
                    "CHANGED.")

    @classmethod
    def from_row(cls, record: "EdgeChangeRecord", model_ids: tuple[int, int]) -> "EdgeChange":
        return cls(record=record, model_ids=model_ids, kind=EdgeKind(record.kind),
                   score_a=f32(record.score_a), score_b=f32(record.score_b),
                   change=record.change, status=ChangeStatus(record.status))

    @strawberry.field(description="The edge's source in A.")
    async def source_a(self, info: Info[Context, None]) -> Node | None:
        return await load_node_or_none(info, self.model_ids[0], _name(self.record.source_a))

    @strawberry.field(description="The edge's target in A.")
    async def target_a(self, info: Info[Context, None]) -> Node | None:
        return await load_node_or_none(info, self.model_ids[0], _name(self.record.target_a))

    @strawberry.field(description="The edge's source in B.")
    async def source_b(self, info: Info[Context, None]) -> Node | None:
        return await load_node_or_none(info, self.model_ids[1], _name(self.record.source_b))

    @strawberry.field(description="The edge's target in B.")
    async def target_b(self, info: Info[Context, None]) -> Node | None:
        return await load_node_or_none(info, self.model_ids[1], _name(self.record.target_b))


def _name(value: object) -> str | None:
    return value if isinstance(value, str) else None  # pandas leaves NaN for a missing name


@strawberry.type(description="Two models' heads matched one-to-one (by name, or by their "
                 "signatures: relative depth, copying, z-scored composition profile, "
                 "evidence), and the edges that changed under that matching.")
class Comparison:
    record: Private["ComparisonRecord"]
    same_shape: bool = strawberry.field(description="Same number of layers and heads.")
    note: str = strawberry.field(description="How the models were compared, in words.")
    features: list[str] = strawberry.field(description="The signature features used.")
    matches: list[HeadMatch] = strawberry.field(description="Most similar pairs first.")

    @classmethod
    def from_row(cls, record: "ComparisonRecord") -> "Comparison":
        ids = (record.a.model_id, record.b.model_id)
        return cls(record=record, same_shape=record.same_shape, note=record.note,
                   features=list(record.features),
                   matches=[HeadMatch(record=m, model_ids=ids, similarity=m.similarity)
                            for m in record.matches])

    @strawberry.field
    def a(self) -> Model:
        return Model.from_row(self.record.a)

    @strawberry.field
    def b(self) -> Model:
        return Model.from_row(self.record.b)

    @strawberry.field(description="Heads of A left unmatched (below minSimilarity, or more "
                      "heads than B has).")
    async def unmatched_a(self, info: Info[Context, None]) -> list[Node]:
        return await load_nodes(info, self.record.a.model_id, self.record.unmatched_a)

    @strawberry.field(description="Heads of B left unmatched.")
    async def unmatched_b(self, info: Info[Context, None]) -> list[Node]:
        return await load_nodes(info, self.record.b.model_id, self.record.unmatched_b)

    @strawberry.field(description="The `top` edges (of `kinds`, default Q, K, V) whose score "
                      "changed most between A and B under the matching, largest |change| "
                      "first; an edge APPEARED or VANISHED when its z-score crosses "
                      "`presentZ`. Head-to-head edges only, unless `headsOnly` is false "
                      "(then EMBED, MLPs... join, matched by name).")
    async def changed_edges(self, info: Info[Context, None], top: int | None = 20,
                            kinds: list[EdgeKind] | None = None,
                            present_z: float | None = 3.0,
                            heads_only: bool | None = True) -> list[EdgeChange]:
        top = check_first(info.context.settings, "top", 20 if top is None else top)
        found = await info.context.db.run(
            changed_edges, self.record, top=top, kinds=kind_values(kinds) or COMPOSITION_KINDS,
            present_z=3.0 if present_z is None else present_z,
            heads_only=heads_only is not False)
        ids = (self.record.a.model_id, self.record.b.model_id)
        return [EdgeChange.from_row(c, ids) for c in found]


async def compare(info: Info[Context, None], a: str, b: str, min_similarity: float | None,
                  match_by: HeadMatching | None) -> Comparison:
    """``Query.compare``: matching runs in a worker thread."""
    record = await info.context.db.run(compare_models, a, b,
                                       0.0 if min_similarity is None else min_similarity,
                                       (match_by or HeadMatching.AUTO).value)
    info.context.loaders.known_model(record.a)
    info.context.loaders.known_model(record.b)
    return Comparison.from_row(record)


# --- checkpoint series ------------------------------------------------------------------

@strawberry.type(description="One checkpoint's value of a node or edge metric.")
class SeriesPoint:
    row: Private[SeriesPointRecord]
    step: int = strawberry.field(description="Training step of the checkpoint.")
    model: str = strawberry.field(description="The checkpoint's model name.")
    value: float

    @classmethod
    def from_row(cls, row: SeriesPointRecord) -> "SeriesPoint":
        return cls(row=row, step=row.step, model=row.model, value=f32(row.value))


async def series(info: Info[Context, None], family: str, node: str | None, source: str | None,
                 target: str | None, kind: EdgeKind | None,
                 metric: str | None) -> list[SeriesPoint]:
    """``Query.series``: one query."""
    points = await info.context.db.run(family_series, family, node=node, source=source,
                                       target=target, kind=None if kind is None else kind.value,
                                       metric=metric)
    return [SeriesPoint.from_row(p) for p in points]
