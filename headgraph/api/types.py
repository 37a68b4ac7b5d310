"""GraphQL types: thin views over the frozen records of :mod:`headgraph.queries.records`.

Each type keeps its record in a ``strawberry.Private`` field and is built with
``from_row``; plain fields are copied from the record, and fields that need the database
(``Node.feeders``, ``Edge.source``, ``Model.edges``...) go through the request's
DataLoaders or one bounded query. Field names are camelCase in GraphQL.

Stored metrics are 4-byte floats (``REAL``); they are shown as the shortest decimal that
reads back as the same float (``0.13215104``, not ``0.1321510374546051``).

The graph side's fields (``Model.paths``, ``Model.virtualHeads``, ``Node.circuit``) are
declared here and answered in :mod:`headgraph.api.graph_types`, whose types are referenced
lazily (that module imports this one).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import struct
from collections.abc import Iterable
from typing import TYPE_CHECKING, Annotated

import strawberry
from strawberry import Info, Private

from headgraph.api.context import Context
from headgraph.api.enums import EdgeKind, HeadOrder, NodeKind, PathRank, PathWeight
from headgraph.api.limits import check_first
from headgraph.api.loaders import EdgeAsk, EvidenceAsk, NodeKey, ScoreAsk
from headgraph.errors import BadInputError, NodeNotFoundError
from headgraph.queries.edges import EdgeKey, EdgePage, count_edges, edge_page
from headgraph.queries.evidence import EdgeEvidence, heads_in_role
from headgraph.queries.nodes import list_nodes, top_heads
from headgraph.queries.records import EdgeRow, ModelRow, NodeRow, ScoreRow

if TYPE_CHECKING:
    from headgraph.api.attribution_types import EvidenceGap
    from headgraph.api.graph_types import Path, Subgraph, VirtualHead

_GRAPH_TYPES = "headgraph.api.graph_types"
PathT = Annotated["Path", strawberry.lazy(_GRAPH_TYPES)]
VirtualHeadT = Annotated["VirtualHead", strawberry.lazy(_GRAPH_TYPES)]
SubgraphT = Annotated["Subgraph", strawberry.lazy(_GRAPH_TYPES)]
EvidenceGapT = Annotated["EvidenceGap", strawberry.lazy("headgraph.api.attribution_types")]


def f32(x: float | None) -> float | None:
    """The shortest decimal that reads back as the same 4-byte float as ``x``."""
    if x is None or not math.isfinite(x):
        return x
    try:
        for digits in range(6, 10):
            y = float(f"{x:.{digits}g}")
            if struct.unpack("f", struct.pack("f", y))[0] == x:
                return y
    except OverflowError:
        pass
    return x


@strawberry.type(description="Copying scores from the eigenvalues of the full OV circuit "
                 "W_E W_OV W_U.")
class Copying:
    positive_fraction: float | None = strawberry.field(
        description="Share of eigenvalues with positive real part.")
    ratio: float | None = strawberry.field(
        description="sum(eigenvalues) / sum(|eigenvalues|), in [-1, 1]: near +1 copies, "
                    "negative suppresses.")


@strawberry.type(description="Evidence about a node or an edge from running the model: "
                 "`metric` = `value` on `probe`.")
class Score:
    row: Private[ScoreRow | EdgeEvidence]
    metric: str
    probe: str = strawberry.field(description="The probe input set that produced it.")
    value: float

    @classmethod
    def from_row(cls, row: ScoreRow | EdgeEvidence) -> Score:
        return cls(row=row, metric=row.metric, probe=row.probe, value=f32(row.value))


@strawberry.type(description="One weighted edge: how strongly the source's write enters the "
                 "target through one kind of reading.")
class Edge:
    row: Private[EdgeRow]
    kind: EdgeKind
    score: float = strawberry.field(description="||W_write M_read||_F / (||W_write|| ||M_read||).")

    # computed only when asked for: a request for 10 feeders and their sources' names
    # spent ~7% of its time on decimals of fields nobody asked for
    @strawberry.field(description="Mean score of random matrices of the same shapes (the null).")
    def baseline(self) -> float:
        return f32(self.row.baseline)

    @strawberry.field(description="Spread of the null score.")
    def null_std(self) -> float | None:
        return f32(self.row.null_std)

    rank: int = strawberry.field(
        description="1 for the strongest source among the target's feeders of this kind.")

    @classmethod
    def from_row(cls, row: EdgeRow) -> Edge:
        return cls(row=row, kind=EdgeKind(row.kind), score=f32(row.score), rank=row.rank)

    @strawberry.field(description="(score - baseline) / nullStd: how far above chance.")
    def z(self) -> float | None:
        return self.row.z

    @strawberry.field
    async def source(self, info: Info[Context, None]) -> Node:
        return await _node(info, self.row.model_id, self.row.source)

    @strawberry.field(description="Causal evidence on this edge from running the model "
                      "(path patching: path_zero_dloss, path_mean_dloss...), of one probe "
                      "if given; [] when none was measured.")
    async def evidence(self, info: Info[Context, None], probe: str | None = None) -> list[Score]:
        r = self.row
        rows = await info.context.loaders.evidence.load(
            EvidenceAsk(r.model_id, r.source, r.target, r.kind, probe))
        return [Score.from_row(e) for e in rows]

    @strawberry.field
    async def target(self, info: Info[Context, None]) -> Node:
        return await _node(info, self.row.model_id, self.row.target)


async def _node(info: Info[Context, None], model_id: int, name: str) -> Node:
    row = await info.context.loaders.node.load(NodeKey(model_id, name))
    if row is None:  # an edge whose endpoint has no node row: a damaged database
        raise NodeNotFoundError(f"edge endpoint {name!r} has no node row; re-ingest the model.")
    return Node.from_row(row)


async def load_nodes(info: Info[Context, None], model_id: int, names: Iterable[str]
                     ) -> list[Node]:
    """The nodes of one model with these names, in order, through the request's node
    loader (one statement for all the names of one event-loop tick)."""
    return list(await asyncio.gather(*(_node(info, model_id, n) for n in names)))


async def load_node_or_none(info: Info[Context, None], model_id: int,
                            name: str | None) -> Node | None:
    """A node by name, or ``None`` when there is no name or the model has no such node."""
    if name is None:
        return None
    row = await info.context.loaders.node.load(NodeKey(model_id, name))
    return None if row is None else Node.from_row(row)


def kind_values(kinds: list[EdgeKind] | None) -> tuple[str, ...] | None:
    """GraphQL ``[EdgeKind!]`` as stored kind strings (``None`` stays ``None``; an empty
    list, which would allow nothing, is refused)."""
    if kinds is None:
        return None
    if not kinds:
        raise BadInputError("kinds is empty; name at least one edge kind, or leave it out "
                            "for all kinds.")
    return tuple(dict.fromkeys(k.value for k in kinds))


async def _edges(info: Info[Context, None], node: NodeRow, readers: bool, kind: EdgeKind,
                 top: int, min_score: float | None) -> list[Edge]:
    check_first(info.context.settings, "top", top)
    ask = EdgeAsk(node.model_id, node.node, kind.value, top, min_score)
    loader = info.context.loaders.readers if readers else info.context.loaders.feeders
    rows = await loader.load(ask)
    return [Edge.from_row(r) for r in rows]


@strawberry.type(description="A component of a model: an attention head (L{layer}H{head}), an "
                 "MLP (MLP{layer}), the embeddings (EMBED, POS_EMBED) or the unembedding.")
class Node:
    row: Private[NodeRow]
    name: str
    kind: NodeKind
    layer: int | None
    head: int | None
    kv_head: int | None = strawberry.field(
        description="The key/value head this query head reads (grouped-query attention).")

    # computed only when asked for (most requests want a node's name): see Edge.baseline
    @strawberry.field(description="||W_Q W_K^T||_F of a head.")
    def qk_norm(self) -> float | None:
        return f32(self.row.qk_norm)

    @strawberry.field(description="||W_V W_O||_F of a head.")
    def ov_norm(self) -> float | None:
        return f32(self.row.ov_norm)

    @strawberry.field(description="Norm of the read matrix (MLP, unembed).")
    def in_norm(self) -> float | None:
        return f32(self.row.in_norm)

    @strawberry.field(description="Norm of the write matrix (MLP, embeddings).")
    def out_norm(self) -> float | None:
        return f32(self.row.out_norm)

    @classmethod
    def from_row(cls, row: NodeRow) -> Node:
        return cls(row=row, name=row.node, kind=NodeKind(row.kind), layer=row.layer,
                   head=row.head, kv_head=row.kv_head)

    @strawberry.field(description="Copying scores of a head; null for other nodes.")
    def copying(self) -> Copying | None:
        if self.row.kind != "head":
            return None
        return Copying(positive_fraction=f32(self.row.copying_positive_fraction),
                       ratio=f32(self.row.copying_ratio))

    @strawberry.field
    async def model(self, info: Info[Context, None]) -> Model:
        return Model.from_row(await info.context.loaders.model.load(self.row.model_id))

    @strawberry.field(description="The strongest sources this node reads through `kind`, "
                      "strongest first (at most `top`, each with score >= `minScore`).")
    async def feeders(self, info: Info[Context, None], kind: EdgeKind, top: int = 10,
                      min_score: float | None = None) -> list[Edge]:
        return await _edges(info, self.row, False, kind, top, min_score)

    @strawberry.field(description="The components that read this node's write most strongly "
                      "through `kind`, strongest first.")
    async def readers(self, info: Info[Context, None], kind: EdgeKind, top: int = 10,
                      min_score: float | None = None) -> list[Edge]:
        return await _edges(info, self.row, True, kind, top, min_score)

    @strawberry.field(description="Evidence rows about this node (of one probe if given).")
    async def scores(self, info: Info[Context, None], probe: str | None = None) -> list[Score]:
        rows = await info.context.loaders.scores.load(
            ScoreAsk(self.row.model_id, self.row.node, probe))
        return [Score.from_row(r) for r in rows]

    @strawberry.field(description="The roles this node plays (previous_token, induction, "
                      "duplicate_token, first_token, copying, suppression), derived from its "
                      "stored evidence and weights with the thresholds of "
                      "headgraph.queries.evidence.ROLE_RULES (from one probe's evidence if "
                      "given); [] for none.")
    async def roles(self, info: Info[Context, None], probe: str | None = None) -> list[str]:
        return await info.context.loaders.roles.load(
            ScoreAsk(self.row.model_id, self.row.node, probe))

    @strawberry.field(description="Everything that reaches this node within `depth` hops "
                      "(1-6) through `kinds` (default all) over edges with score >= "
                      "`minScore`: its upstream circuit, nodes and edges, for a client to "
                      "draw. At most max_circuit_edges edges (the strongest); `truncated` "
                      "says when that cap cut.")
    async def circuit(self, info: Info[Context, None], depth: int | None = 2,
                      kinds: list[EdgeKind] | None = None,
                      min_score: float | None = None) -> SubgraphT:
        from headgraph.api.graph_types import node_circuit

        return await node_circuit(info, self.row, 2 if depth is None else depth,
                                  kind_values(kinds), min_score)


@strawberry.type(description="Relay page information.")
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type(description="An edge of the graph with its cursor (Relay's 'edge').")
class EdgeEdge:
    node: Edge
    cursor: str


@strawberry.type(description="A page of a model's edges, ordered by score descending, then "
                 "source, target, kind. Pass pageInfo.endCursor as `after` for the next page.")
class EdgeConnection:
    model_id: Private[int]
    kind: Private[str | None]
    min_score: Private[float | None]
    edges: list[EdgeEdge]
    page_info: PageInfo

    @classmethod
    def of(cls, page: EdgePage, model_id: int, kind: str | None, min_score: float | None,
           after: EdgeKey | None) -> EdgeConnection:
        items = [EdgeEdge(node=Edge.from_row(r), cursor=EdgeKey.of(r).encode())
                 for r in page.rows]
        info = PageInfo(has_next_page=page.has_next, has_previous_page=after is not None,
                        start_cursor=items[0].cursor if items else None,
                        end_cursor=items[-1].cursor if items else None)
        return cls(model_id=model_id, kind=kind, min_score=min_score, edges=items,
                   page_info=info)

    @strawberry.field(description="How many edges match the filter, all pages together.")
    async def total_count(self, info: Info[Context, None]) -> int:
        return await info.context.db.run(count_edges, self.model_id, kind=self.kind,
                                          min_score=self.min_score)


@strawberry.type(description="A stored model (a checkpoint is a model with a family and step).")
class Model:
    row: Private[ModelRow]
    name: str
    family: str | None
    step: int | None
    source: str = strawberry.field(description="Where the weights came from.")
    architecture: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    d_head: int
    d_mlp: int
    d_vocab: int | None
    n_ctx: int | None
    position_scheme: str | None
    parallel_blocks: bool | None
    readout: str | None
    processing: str = strawberry.field(description="How the weights were processed (folding).")
    weights_digest: str
    ingested_at: dt.datetime
    headgraph_version: str
    n_nodes: int
    n_edges: int

    @classmethod
    def from_row(cls, row: ModelRow) -> Model:
        return cls(row=row, name=row.name, family=row.family, step=row.step, source=row.source,
                   architecture=row.architecture, n_layers=row.n_layers, n_heads=row.n_heads,
                   n_kv_heads=row.n_kv_heads, d_model=row.d_model, d_head=row.d_head,
                   d_mlp=row.d_mlp, d_vocab=row.d_vocab, n_ctx=row.n_ctx,
                   position_scheme=row.position_scheme, parallel_blocks=row.parallel_blocks,
                   readout=row.readout,
                   processing=row.processing, weights_digest=row.weights_digest,
                   ingested_at=row.ingested_at, headgraph_version=row.headgraph_version,
                   n_nodes=row.n_nodes, n_edges=row.n_edges)

    @strawberry.field(description="Nodes in residual-stream order, optionally of one kind "
                      "or layer.")
    async def nodes(self, info: Info[Context, None], kind: NodeKind | None = None,
                    layer: int | None = None) -> list[Node]:
        rows = await info.context.db.run(list_nodes, self.row,
                                         None if kind is None else kind.value, layer)
        info.context.loaders.known_nodes(rows)
        return [Node.from_row(r) for r in rows]

    @strawberry.field(description="Heads in an order (default LAYER: residual-stream order). "
                      "Metric orders put the highest first unless descending is false; heads "
                      "without the metric come last. `first` defaults to all heads. `role` "
                      "keeps only the heads that play it (see Node.roles); an unknown role "
                      "is BAD_INPUT.")
    async def heads(self, info: Info[Context, None],
                    order_by: HeadOrder | None = HeadOrder.LAYER, descending: bool | None = None,
                    first: int | None = None, role: str | None = None) -> list[Node]:
        order_by = order_by or HeadOrder.LAYER
        if first is not None:
            check_first(info.context.settings, "first", first)
        down = (order_by is not HeadOrder.LAYER) if descending is None else descending
        if role is None:
            rows = await info.context.db.run(top_heads, self.row, order_by.value, down, first)
        else:
            rows = await info.context.db.run(heads_in_role, self.row, role, order_by.value,
                                             down, first)
        info.context.loaders.known_nodes(rows)
        return [Node.from_row(r) for r in rows]

    @strawberry.field(description="All edges of the model, a page at a time (Relay "
                      "connection). `first` defaults to the server's default_first (100).")
    async def edges(self, info: Info[Context, None], kind: EdgeKind | None = None,
                    min_score: float | None = None, first: int | None = None,
                    after: str | None = None) -> EdgeConnection:
        settings = info.context.settings
        default = min(settings.default_first, settings.max_first)
        size = check_first(settings, "first", default if first is None else first)
        key = None if after is None else EdgeKey.decode(after)
        kind_value = None if kind is None else kind.value
        page = await info.context.db.run(edge_page, self.row.model_id, kind=kind_value,
                                         min_score=min_score, first=size, after=key)
        return EdgeConnection.of(page, self.row.model_id, kind_value, min_score, key)

    @strawberry.field(description="The `top` (<= 100) strongest chains of edges into "
                      "`target` (from `source` if given), ranked exactly: paths of 1 to "
                      "`maxLength` (<= 6) edges through `kinds` (default all), or exactly "
                      "the kind sequence `pattern` (source to target, e.g. [V, K]), over "
                      "edges with score >= `minScore`. A path's score is the product of its "
                      "edge weights (`weight`), or per hop (`rankBy`). Errors: "
                      "NODE_NOT_FOUND, BAD_INPUT for a path that cannot exist (a source "
                      "that does not write before the target reads), LIMIT_EXCEEDED.")
    async def paths(self, info: Info[Context, None], *, source: str | None = None,
                    target: str, kinds: list[EdgeKind] | None = None,
                    max_length: int | None = 3, top: int | None = 10,
                    min_score: float | None = None, pattern: list[EdgeKind] | None = None,
                    weight: PathWeight | None = PathWeight.SCORE,
                    rank_by: PathRank | None = PathRank.PRODUCT) -> list[PathT]:
        from headgraph.api.graph_ops import PathAsk
        from headgraph.api.graph_types import model_paths

        top = check_first(info.context.settings, "top", 10 if top is None else top)
        ask = PathAsk(target=target, source=source, kinds=kind_values(kinds),
                      pattern=None if pattern is None else tuple(k.value for k in pattern),
                      max_length=3 if max_length is None else max_length, top=top,
                      min_score=min_score, weight=(weight or PathWeight.SCORE).value,
                      rank_by=(rank_by or PathRank.PRODUCT).value)
        return await model_paths(info, self.row, ask)

    @strawberry.field(description="The strongest stored virtual attention heads: chains of "
                      "V-composition (L0H1 -> L1H2) whose product OV circuit acts as one "
                      "head, scored exactly at ingest, strongest first; of one chain "
                      "`length` (2 or 3) if given.")
    async def virtual_heads(self, info: Info[Context, None], length: int | None = None,
                            top: int | None = 10) -> list[VirtualHeadT]:
        from headgraph.api.graph_types import model_virtual_heads

        top = check_first(info.context.settings, "top", 10 if top is None else top)
        return await model_virtual_heads(info, self.row, length, top)

    @strawberry.field(description="Where discovered circuits (ACDC, auto-circuit, EAP-IG) and "
                      "weights disagree, per stored circuit: edges with weight z >= `minZ` "
                      "that the circuit leaves out (strongest first), then circuit edges with "
                      "weight z < `maxZ` (weakest first); z = (score - baseline) / nullStd. At "
                      "most `top` of each per circuit; of one `tool` / `task` if given.")
    async def evidence_gaps(self, info: Info[Context, None], kind: EdgeKind | None = None,
                            top: int | None = 10, tool: str | None = None,
                            task: str | None = None, min_z: float | None = 3.0,
                            max_z: float | None = 1.0) -> list[EvidenceGapT]:
        from headgraph.api.attribution_types import model_evidence_gaps

        return await model_evidence_gaps(info, self.row, kind, 10 if top is None else top,
                                         tool, task, 3.0 if min_z is None else min_z,
                                         1.0 if max_z is None else max_z)
