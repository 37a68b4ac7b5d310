"""GraphQL types of comparisons and checkpoint series, reached only from ``Query``
(``Query.compare``, ``Query.series``): head matches, changed edges, series points.

Each type is a thin view over a frozen record of :mod:`headgraph.graph.compare` or
:mod:`headgraph.queries.series` (kept in a ``strawberry.Private`` field); node names become
:class:`~headgraph.api.types.Node` objects through the request's node loader. Matching
runs in a worker thread (:mod:`headgraph.api.graph_ops`).

This module does not use ``from __future__ import annotations``: its ``Private`` fields
name records of :mod:`headgraph.graph.compare` imported only for type checking (comparison
pulls in pandas and scipy, which a server should not import at start), and strawberry takes
a quoted ``Private["..."]`` without resolving it.
"""

from enum import Enum
from typing import TYPE_CHECKING

import strawberry
from strawberry import Info, Private

from headgraph.api.context import Context
from headgraph.api.cost import sized
from headgraph.api.enums import EdgeKind
from headgraph.api.graph_ops import COMPOSITION_KINDS, changed_edges, compare_models, family_series
from headgraph.api.limits import check_first
from headgraph.api.types import Model, Node, load_node_or_none, load_nodes
from headgraph.api.values import f32, kind_values
from headgraph.queries.series import SeriesPoint as SeriesPointRecord

if TYPE_CHECKING:
    from headgraph.graph.compare import Comparison as ComparisonRecord
    from headgraph.graph.compare import EdgeChange as EdgeChangeRecord
    from headgraph.graph.compare import HeadMatch as HeadMatchRecord


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
    matches: list[HeadMatch] = strawberry.field(description="Most similar pairs first.",
                                                metadata=sized(assumed="heads"))

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
                      "heads than B has).", metadata=sized(assumed="heads"))
    async def unmatched_a(self, info: Info[Context, None]) -> list[Node]:
        return await load_nodes(info, self.record.a.model_id, self.record.unmatched_a)

    @strawberry.field(description="Heads of B left unmatched.",
                      metadata=sized(assumed="heads"))
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
