"""GraphQL object types of the composition graph: thin views over frozen records.

``Model``, ``Node`` and ``Edge`` and the types their fields return (pages of edges, paths,
virtual heads, upstream circuits, evidence gaps) refer to each other, as a GraphQL schema
does, so they live in this one module. Each type keeps its record in a
``strawberry.Private`` field and is built with ``from_row``; plain fields are copied from
the record, and fields that need the database (``Node.feeders``, ``Edge.source``,
``Model.edges``...) go through the request's DataLoaders or one bounded query. The graph
side's work (path search, circuits) runs in a worker thread (:mod:`headgraph.api.graph_ops`).
Leaf values are in :mod:`headgraph.api.values`, comparisons and series (reached only from
``Query``) in :mod:`headgraph.api.compare_types`. Field names are camelCase in GraphQL.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterable, Mapping
from enum import Enum

import strawberry
from strawberry import Info, Private

from headgraph.api.context import Context
from headgraph.api.cost import sized
from headgraph.api.enums import EdgeKind, HeadOrder, NodeKind, PathRank, PathWeight
from headgraph.api.graph_ops import PathAsk, UpstreamCircuit, circuit_of, find_paths
from headgraph.api.limits import check_first
from headgraph.api.loaders import EdgeAsk, EvidenceAsk, NodeKey, ScoreAsk
from headgraph.api.summary_types import ModelSummary, StructuralNull
from headgraph.api.values import Copying, PageInfo, Score, f32, kind_values
from headgraph.errors import NodeNotFoundError
from headgraph.graph.paths import MAX_LENGTH as MAX_PATH_LENGTH
from headgraph.graph.paths import Path as PathRecord
from headgraph.queries.circuits import CircuitRow
from headgraph.queries.edges import EdgeKey, EdgePage, count_edges, edge_page
from headgraph.queries.gaps import ABSENT, evidence_gaps
from headgraph.queries.gaps import EvidenceGap as GapRecord
from headgraph.queries.nodes import list_nodes, top_heads
from headgraph.queries.records import EdgeRow, ModelRow, NodeRow
from headgraph.queries.roles import ROLE_RULES, heads_in_role
from headgraph.queries.structural import structural_null_of
from headgraph.queries.summary import summarize
from headgraph.queries.virtual import VirtualHeadRow, virtual_heads_of

SCORES = 20
"""Evidence rows assumed per node or edge in the cost estimate (each is a database row, so
``max_rows`` bounds the real number; what is asked of each is leaves)."""
MAX_CHAIN = 3  # heads in the longest stored virtual head
N_KINDS = len(EdgeKind)


def circuit_edges(args: Mapping[str, int], sizes: Mapping[str, int]) -> int:
    """Edges an upstream circuit may hold, for the cost estimate: at most
    ``max_circuit_edges``; within one hop, the root's feeders of every kind; further, the
    feeders of every node."""
    reach = 1 if args.get("depth", 2) <= 1 else sizes["nodes"]
    return min(sizes["max_circuit_edges"], N_KINDS * sizes["nodes"] * reach)


@strawberry.type(description="One weighted edge: how strongly the source's write enters the "
                 "target through one kind of reading.")
class Edge:
    row: Private[EdgeRow]
    kind: EdgeKind
    score: float = strawberry.field(description="||W_write M_read||_F / (||W_write|| ||M_read||).")

    # computed only when asked for: a request for 10 feeders and their sources' names
    # spent ~7% of its time on decimals of fields nobody asked for
    @strawberry.field(description="Mean score of Gaussian matrices of the same shapes (the "
                      "Gaussian null; see gaussianZ).")
    def baseline(self) -> float:
        return f32(self.row.baseline)

    @strawberry.field(description="Spread of the Gaussian null's score.")
    def null_std(self) -> float | None:
        return f32(self.row.null_std)

    rank: int = strawberry.field(
        description="1 for the strongest source among the target's feeders of this kind.")

    @classmethod
    def from_row(cls, row: EdgeRow) -> Edge:
        return cls(row=row, kind=EdgeKind(row.kind), score=f32(row.score), rank=row.rank)

    @strawberry.field(description="How far this edge stands above what the model's structure "
                      "explains: the structural z (banded-rotation null of the model's own "
                      "residual metric, calibrated per model, kind and family; docs/science.md). "
                      "About N(0, 1) for edges the structure explains; null for a model "
                      "ingested before headgraph stored it (Model.structuralNull is null: "
                      "re-ingest it) or where it is undefined.")
    def z(self) -> float | None:
        return f32(self.row.z)

    @strawberry.field(description="(score - baseline) / nullStd: how far above Gaussian "
                      "matrices of the same shapes. On trained models nearly every edge is far "
                      "above it (their weights are low-rank and share directions); z is the "
                      "one to threshold.")
    def gaussian_z(self) -> float | None:
        return self.row.gaussian_z

    @strawberry.field(description="In a readers list: 1 for the strongest reader of the "
                      "source in this kind (`rank` is the source's place among the target's "
                      "feeders). Null outside readers lists.")
    def reader_rank(self) -> int | None:
        return self.row.reader_rank

    @strawberry.field(description="For K and V edges into a head: the key/value head of the "
                      "target that the source's write enters. Under grouped-query attention "
                      "it is shared by the query heads of its group, so their K and V edges "
                      "from one source read the same keys and values. Null otherwise.")
    async def kv_head(self, info: Info[Context, None]) -> int | None:
        if self.row.kind not in ("K", "V"):
            return None
        row = await info.context.loaders.node.load(NodeKey(self.row.model_id, self.row.target))
        return None if row is None else row.kv_head

    @strawberry.field
    async def source(self, info: Info[Context, None]) -> Node:
        return await _node(info, self.row.model_id, self.row.source)

    @strawberry.field(description="Causal evidence on this edge from running the model "
                      "(path patching: path_zero_dloss, path_mean_dloss...), of one probe "
                      "if given; [] when none was measured.", metadata=sized(assumed=SCORES))
    async def evidence(self, info: Info[Context, None], probe: str | None = None) -> list[Score]:
        r = self.row
        rows = await info.context.loaders.evidence.load(
            EvidenceAsk(r.model_id, r.source, r.target, r.kind, probe))
        return [Score.from_row(e) for e in rows]

    @strawberry.field
    async def target(self, info: Info[Context, None]) -> Node:
        return await _node(info, self.row.model_id, self.row.target)


EMPTY_NODE_ROW = NodeRow(model_id=0, node="", kind="head", layer=None, head=None,
                         kv_head=None, qk_norm=None, ov_norm=None,
                         copying_positive_fraction=None, copying_ratio=None, in_norm=None,
                         out_norm=None)
"""What an edge's end resolves to past the request's deadline (the answer is dropped)."""


async def _node(info: Info[Context, None], model_id: int, name: str) -> Node:
    pace = info.context.pace
    if pace.due() and await pace.turn():
        return Node.from_row(EMPTY_NODE_ROW)
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
    pace = info.context.pace
    if name is None or (pace.due() and await pace.turn()):
        return None
    row = await info.context.loaders.node.load(NodeKey(model_id, name))
    return None if row is None else Node.from_row(row)


async def _edges(info: Info[Context, None], node: NodeRow, readers: bool, kind: EdgeKind,
                 top: int, min_score: float | None) -> list[Edge]:
    check_first(info.context.settings, "top", top)
    pace = info.context.pace
    if pace.due() and await pace.turn():
        return []
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
                      "through `kind`, strongest first: `readerRank` is each one's place "
                      "among this node's readers (`rank` its place among the reader's own "
                      "feeders).")
    async def readers(self, info: Info[Context, None], kind: EdgeKind, top: int = 10,
                      min_score: float | None = None) -> list[Edge]:
        return await _edges(info, self.row, True, kind, top, min_score)

    @strawberry.field(description="Evidence rows about this node (of one probe if given).",
                      metadata=sized(assumed=SCORES))
    async def scores(self, info: Info[Context, None], probe: str | None = None) -> list[Score]:
        rows = await info.context.loaders.scores.load(
            ScoreAsk(self.row.model_id, self.row.node, probe))
        return [Score.from_row(r) for r in rows]

    @strawberry.field(description="The roles this node plays (previous_token, induction, "
                      "duplicate_token, first_token, copying, suppression), from its stored "
                      "evidence and weights by headgraph.queries.roles.ROLE_RULES (from "
                      "one probe's evidence if given); [] for none. An attention role holds "
                      "where its share stands at least 0.25 above the same head's null: its "
                      "share on the same rows with the role's relation taken away "
                      "(positions shuffled for previous_token and first_token, tokens "
                      "redrawn for induction and duplicate_token; docs/science.md, Roles); "
                      "previous_token also needs more attention to i-1 than to i or i-2. "
                      "Evidence stored before nulls were measured keeps the fixed share "
                      "thresholds (0.5, 0.4, 0.4, 0.5). copying and suppression are fixed "
                      "thresholds on the weights.",
                      metadata=sized(assumed=len(ROLE_RULES)))
    async def roles(self, info: Info[Context, None], probe: str | None = None) -> list[str]:
        return await info.context.loaders.roles.load(
            ScoreAsk(self.row.model_id, self.row.node, probe))

    @strawberry.field(description="Everything that reaches this node within `depth` hops "
                      "(1-6) through `kinds` (default all) over edges with score >= "
                      "`minScore`: its upstream circuit, nodes and edges, for a client to "
                      "draw. At most max_circuit_edges edges (the strongest); `truncated` "
                      "says when that cap cut.", metadata=sized(fn=circuit_edges))
    async def circuit(self, info: Info[Context, None], depth: int | None = 2,
                      kinds: list[EdgeKind] | None = None,
                      min_score: float | None = None) -> Subgraph:
        return await node_circuit(info, self.row, 2 if depth is None else depth,
                                  kind_values(kinds), min_score)


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
    min_z: Private[float | None]
    edges: list[EdgeEdge] = strawberry.field(metadata=sized(per_parent=1))
    page_info: PageInfo

    @classmethod
    def of(cls, page: EdgePage, model_id: int, kind: str | None, min_score: float | None,
           after: EdgeKey | None, min_z: float | None = None) -> EdgeConnection:
        items = [EdgeEdge(node=Edge.from_row(r), cursor=EdgeKey.of(r).encode())
                 for r in page.rows]
        info = PageInfo(has_next_page=page.has_next, has_previous_page=after is not None,
                        start_cursor=items[0].cursor if items else None,
                        end_cursor=items[-1].cursor if items else None)
        return cls(model_id=model_id, kind=kind, min_score=min_score, min_z=min_z,
                   edges=items, page_info=info)

    @strawberry.field(description="How many edges match the filter, all pages together.")
    async def total_count(self, info: Info[Context, None]) -> int:
        return await info.context.db.run(count_edges, self.model_id, kind=self.kind,
                                          min_score=self.min_score, min_z=self.min_z)


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

    @strawberry.field(description="The structural null its edges' z is measured against "
                      "(band sizes, calibration per kind and family); null for a model "
                      "ingested before headgraph stored it: its edges then have no z (their "
                      "gaussianZ remains); re-ingest it with --replace.")
    async def structural_null(self, info: Info[Context, None]) -> StructuralNull | None:
        found = await info.context.db.run(structural_null_of, self.row)
        return None if found is None else StructuralNull.of(found)

    @strawberry.field(description="The findings a researcher looks for first, each with its "
                      "evidence, and where weights and evidence disagree (as `headgraph "
                      "summary`).")
    async def summary(self, info: Info[Context, None]) -> ModelSummary:
        return ModelSummary.of(await info.context.db.run(summarize, self.row))

    @strawberry.field(description="Nodes in residual-stream order, optionally of one kind "
                      "or layer.", metadata=sized(assumed="nodes"))
    async def nodes(self, info: Info[Context, None], kind: NodeKind | None = None,
                    layer: int | None = None) -> list[Node]:
        rows = await info.context.db.run(list_nodes, self.row,
                                         None if kind is None else kind.value, layer)
        info.context.loaders.known_nodes(rows)
        return [Node.from_row(r) for r in rows]

    @strawberry.field(description="Heads in an order (default LAYER: residual-stream order). "
                      "Metric orders put the highest first unless descending is false; heads "
                      "without the metric come last. `first` defaults to all heads. `role` "
                      "keeps only the heads that play it (see Node.roles); with it, "
                      "ROLE_SCORE orders by the role's strength (strongest first). An unknown "
                      "role, or ROLE_SCORE without a role, is BAD_INPUT.",
                      metadata=sized("first", "heads"))
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
                      "connection). `first` defaults to the server's default_first (100). "
                      "`minZ` keeps the edges whose structural z is at least that (e.g. 3: "
                      "above what the model's structure explains; BAD_INPUT for a model "
                      "without z).")
    async def edges(self, info: Info[Context, None], kind: EdgeKind | None = None,
                    min_score: float | None = None, first: int | None = None,
                    after: str | None = None, min_z: float | None = None) -> EdgeConnection:
        settings = info.context.settings
        default = min(settings.default_first, settings.max_first)
        size = check_first(settings, "first", default if first is None else first)
        key = None if after is None else EdgeKey.decode(after)
        kind_value = None if kind is None else kind.value
        page = await info.context.db.run(edge_page, self.row.model_id, kind=kind_value,
                                         min_score=min_score, first=size, after=key,
                                         min_z=min_z)
        return EdgeConnection.of(page, self.row.model_id, kind_value, min_score, key, min_z)

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
                    rank_by: PathRank | None = PathRank.PRODUCT) -> list[Path]:
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
                            top: int | None = 10) -> list[VirtualHead]:
        top = check_first(info.context.settings, "top", 10 if top is None else top)
        return await model_virtual_heads(info, self.row, length, top)

    @strawberry.field(description="Where discovered circuits (ACDC, auto-circuit, EAP-IG) and "
                      "weights disagree, per stored circuit: edges with weight z >= `minZ` "
                      "that the circuit leaves out (strongest first), then circuit edges with "
                      "weight z < `maxZ` (weakest first); z is the structural z (Edge.z). At "
                      "most `top` of each per circuit; of one `tool` / `task` if given. "
                      "BAD_INPUT for a model ingested before headgraph stored z.",
                      metadata=sized(fn=lambda a, n: 2 * a.get("top", 10) * n["circuits"]))
    async def evidence_gaps(self, info: Info[Context, None], kind: EdgeKind | None = None,
                            top: int | None = 10, tool: str | None = None,
                            task: str | None = None, min_z: float | None = 3.0,
                            max_z: float | None = 1.0) -> list[EvidenceGap]:
        return await model_evidence_gaps(info, self.row, kind, 10 if top is None else top,
                                         tool, task, 3.0 if min_z is None else min_z,
                                         1.0 if max_z is None else max_z)


@strawberry.type(description="A chain of edges into a target: nodes[i] -kinds[i]-> "
                 "nodes[i+1], first node first.")
class Path:
    record: Private[PathRecord]
    model_id: Private[int]
    kinds: list[EdgeKind] = strawberry.field(metadata=sized(assumed=MAX_PATH_LENGTH))
    score: float = strawberry.field(
        description="The ranking value: the product of the edge weights (rankBy: PRODUCT) "
                    "or its geometric mean per hop (PER_HOP).")
    product: float = strawberry.field(
        description="The product of the edge weights (scores, score/baseline for RATIO, z "
                    "floored at 0 for Z).")
    edge_scores: list[float] = strawberry.field(
        description="Each edge's stored score, source end first.",
        metadata=sized(assumed=MAX_PATH_LENGTH))
    edge_weights: list[float] = strawberry.field(
        description="Each edge's weight as ranked (score, ratio or z), source end first.",
        metadata=sized(assumed=MAX_PATH_LENGTH))
    length: int = strawberry.field(description="Number of edges.")

    @classmethod
    def from_row(cls, record: PathRecord, model_id: int) -> Path:
        return cls(record=record, model_id=model_id,
                   kinds=[EdgeKind(k) for k in record.kinds], score=record.value,
                   product=record.product, edge_scores=[f32(s) for s in record.scores],
                   edge_weights=list(record.weights), length=record.length)

    @strawberry.field(description="The path's nodes, source first, target last.",
                      metadata=sized(assumed=MAX_PATH_LENGTH + 1))
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
    def from_row(cls, row: VirtualHeadRow) -> VirtualHead:
        return cls(row=row, length=row.length, score=f32(row.score),
                   heuristic=f32(row.heuristic),
                   copying=Copying(positive_fraction=f32(row.copying_positive_fraction),
                                   ratio=f32(row.copying_ratio)))

    @strawberry.field(description="The heads of the chain, first head (whose values are "
                      "moved first) first.", metadata=sized(assumed=MAX_CHAIN))
    async def heads(self, info: Info[Context, None]) -> list[Node]:
        return await load_nodes(info, self.row.model_id, self.row.heads)


async def model_virtual_heads(info: Info[Context, None], model: ModelRow, length: int | None,
                              top: int) -> list[VirtualHead]:
    """``Model.virtualHeads``: one bounded query."""
    rows = await info.context.db.run(virtual_heads_of, model.model_id, length=length, top=top)
    return [VirtualHead.from_row(r) for r in rows]


@strawberry.type(description="A node's upstream circuit: the nodes and edges that reach it "
                 "within a few hops, strongest edges first.")
class Subgraph:
    circuit: Private[UpstreamCircuit]
    edges: list[Edge] = strawberry.field(metadata=sized(per_parent=1))
    truncated: bool = strawberry.field(
        description="True when max_circuit_edges cut the circuit (the strongest edges are "
                    "kept).")

    @classmethod
    def from_row(cls, circuit: UpstreamCircuit) -> Subgraph:
        return cls(circuit=circuit, edges=[Edge.from_row(e) for e in circuit.edges],
                   truncated=circuit.truncated)

    @strawberry.field(description="The nodes met, the circuit's own node included.",
                      metadata=sized(per_parent=1))
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


@strawberry.enum(description="How a circuit and the weights disagree on an edge.")
class GapKind(Enum):
    ABSENT_FROM_CIRCUIT = "absent"
    WEAK_IN_WEIGHTS = "weak"


@strawberry.type(description="A head-level circuit imported from ACDC, auto-circuit or "
                 "EAP-IG: its edges are evidence rows (metric `<tool>:in_graph` / "
                 "`<tool>:score`, probe `task:<task>`).")
class Circuit:
    tool: str
    task: str
    probe: str
    format: str
    edge_count: int
    in_graph_count: int

    @classmethod
    def of(cls, c: CircuitRow) -> Circuit:
        return cls(tool=c.tool, task=c.task, probe=c.probe, format=c.format,
                   edge_count=c.n_edges, in_graph_count=c.n_in_graph)


@strawberry.type(description="An edge on which a circuit and the weights disagree.")
class EvidenceGap:
    gap: GapKind
    circuit: Circuit
    edge: Edge = strawberry.field(description="The weight edge, with its z-score.")
    circuit_score: float | None = strawberry.field(description="The circuit's own score of "
                                                   "the edge, if its file had one.")
    in_circuit: bool

    @classmethod
    def of(cls, g: GapRecord) -> EvidenceGap:
        return cls(gap=GapKind.ABSENT_FROM_CIRCUIT if g.gap == ABSENT else
                   GapKind.WEAK_IN_WEIGHTS, circuit=Circuit.of(g.circuit),
                   edge=Edge.from_row(g.edge), circuit_score=g.circuit_score,
                   in_circuit=g.in_circuit)


async def model_evidence_gaps(info: Info[Context, None], model: ModelRow, kind: EdgeKind | None,
                              top: int, tool: str | None, task: str | None, min_z: float,
                              max_z: float) -> list[EvidenceGap]:
    check_first(info.context.settings, "top", top)
    gaps = await info.context.db.run(evidence_gaps, model, None if kind is None else kind.value,
                                     top, tool=tool, task=task, min_z=min_z, max_z=max_z)
    return [EvidenceGap.of(g) for g in gaps]
