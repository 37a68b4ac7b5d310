"""GraphQL types of attribution graphs: the graphs, their views (Neuronpedia's influence
filter or circuit-tracer's recomputed pruning, :mod:`headgraph.attribution.views`) and
neighbourhoods, and the root fields that reach them (:class:`AttributionQuery`, merged
into ``Query`` by :mod:`headgraph.server`).

Thin views over the records of :mod:`headgraph.attribution.graphs`. Lists are bounded: a
view returns at most ``first`` links (default and ceiling: the server's ``max_first``), the
strongest, with ``truncated``. Graphs are found by model and slug (a slug alone while no
other model has it).
"""

from __future__ import annotations

from enum import Enum

import strawberry
from strawberry import Info, Private
from strawberry.scalars import JSON

from headgraph.api.context import Context
from headgraph.api.limits import check_first
from headgraph.attribution import graphs as q
from headgraph.attribution.neighbourhood import neighbourhood
from headgraph.attribution.pruning import ROLE_NAMES
from headgraph.attribution.views import ViewAsk, default_rule, graph_view


@strawberry.enum(description="A node's part in circuit-tracer's pruning: features and errors "
                 "can be pruned; tokens and logits are always kept.")
class AttributionRole(Enum):
    FEATURE = "feature"
    ERROR = "error"
    TOKEN = "token"
    LOGIT = "logit"


@strawberry.enum(description="Which links a neighbourhood follows: into the node (IN, "
                 "upstream), out of it (OUT, downstream) or both.")
class LinkDirection(Enum):
    IN = "in"
    OUT = "out"
    BOTH = "both"


@strawberry.enum(description="How a view chooses its nodes. INFLUENCE: Neuronpedia's slider "
                 "on the file's stored influence (a node is shown when influence <= "
                 "nodeThreshold; embeddings, logits, pinned and clicked nodes always), with "
                 "every file link between shown nodes. RECOMPUTE: circuit-tracer's "
                 "prune_graph run again on the stored links.")
class PruneRule(Enum):
    INFLUENCE = "influence"
    RECOMPUTE = "recompute"


@strawberry.type(description="A node of an attribution graph (a transcoder feature, an "
                 "error, a token or a logit).")
class AttributionNode:
    row: Private[q.ViewNode]
    node_id: str = strawberry.field(description="The node's id as in the file. circuit-tracer "
                                    "gives an error node and a layer-0 feature one id when "
                                    "the feature's index equals the error's layer; `key` "
                                    "tells them apart.")
    key: str = strawberry.field(description="Unique in the graph: nodeId, or nodeId@position "
                                "(its place in the file) when two nodes share the id.")
    layer: str | None
    ctx_idx: int | None
    feature: str | None = strawberry.field(description="The feature index, as decimal text "
                                           "(it may not fit GraphQL's 32-bit Int).")
    feature_type: str | None
    clerp: str | None = strawberry.field(description="The node's label.")
    activation: float | None
    role: AttributionRole
    influence: float | None = strawberry.field(
        description="The file's influence: in circuit-tracer and Neuronpedia files the "
                    "node's cumulative share of the influence on the whole, unpruned graph "
                    "(small: important); null for logits and files without it.")
    recomputed_influence: float = strawberry.field(
        description="Influence recomputed on the stored graph: w^T (A + A^2 + ...) with A "
                    "the row-normalised |W| and w the logit probabilities.")
    recomputed_cumulative_influence: float = strawberry.field(
        description="Share of the recomputed influence held by the nodes at least as "
                    "influential as this one (prune RECOMPUTE at nodeThreshold t keeps nodes "
                    "up to the first share >= t).")
    pinned: bool = strawberry.field(description="Pinned in this view (qParams.pinnedIds of "
                                    "the file, or asked for): kept whatever the threshold.")
    fields: JSON = strawberry.field(description="Every field of the node as in the file.")

    @classmethod
    def of(cls, n: q.ViewNode, pinned: frozenset[int] = frozenset()) -> AttributionNode:
        f = n.fields
        feature = f.get("feature")
        layer = f.get("layer")
        return cls(row=n, node_id=n.node_id, key=n.key,
                   layer=None if layer is None else str(layer),
                   ctx_idx=f.get("ctx_idx") if isinstance(f.get("ctx_idx"), int) else None,
                   feature=None if feature is None else str(feature),
                   feature_type=f.get("feature_type"), clerp=f.get("clerp"),
                   activation=_number(f.get("activation")),
                   role=AttributionRole(ROLE_NAMES[n.role]), influence=n.influence,
                   recomputed_influence=n.score, recomputed_cumulative_influence=n.cum,
                   pinned=n.nid in pinned, fields=f)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


@strawberry.type(description="A link of an attribution graph: the direct effect `weight` "
                 "of source on target.")
class AttributionLink:
    source: str = strawberry.field(description="The source's node id, as in the file.")
    target: str = strawberry.field(description="The target's node id, as in the file.")
    source_key: str = strawberry.field(description="The source's key (unique in the graph).")
    target_key: str = strawberry.field(description="The target's key (unique in the graph).")
    weight: float
    edge_influence: float | None = strawberry.field(
        description="In a RECOMPUTE view, circuit-tracer's edge score A'[t, s] (w + I')[t]; "
                    "null elsewhere.")


@strawberry.type(description="Part of an attribution graph: nodes and links in file order.")
class AttributionView:
    nodes: list[AttributionNode]
    links: list[AttributionLink]
    truncated: bool = strawberry.field(description="True when `first` cut links (the "
                                       "strongest were kept).")
    prune: PruneRule | None = strawberry.field(description="The rule that chose the nodes "
                                               "(null for a neighbourhood).")
    node_threshold: float | None = strawberry.field(
        description="The node threshold applied (null: INFLUENCE on a file with no positive "
                    "metadata.node_threshold, where Neuronpedia shows every node).")
    edge_threshold: float | None = strawberry.field(description="RECOMPUTE's edge threshold.")
    node_count: int = strawberry.field(description="Nodes in the view (all of them are in "
                                       "`nodes`).")

    @classmethod
    def of(cls, view: q.GraphSlice, pinned: frozenset[int] = frozenset()) -> AttributionView:
        keys = {r.idx: r for r in view.link_records(keys=True)}
        prune = view.params.get("prune")
        return cls(nodes=[AttributionNode.of(n, pinned) for n in view.nodes],
                   links=[AttributionLink(source=x.source, target=x.target,
                                          source_key=keys[x.idx].source,
                                          target_key=keys[x.idx].target, weight=x.weight,
                                          edge_influence=x.edge_score)
                          for x in view.link_records()],
                   truncated=view.truncated, prune=None if prune is None else PruneRule(prune),
                   node_threshold=view.params.get("node_threshold"),
                   edge_threshold=view.params.get("edge_threshold"), node_count=len(view.nodes))


@strawberry.type(description="An imported circuit-tracer / Neuronpedia attribution graph, "
                 "keyed by model and slug. Its Neuronpedia JSON: GET "
                 "/graphs/{model}/{slug}.json (whole, or ?prune=&node_threshold=&"
                 "edge_threshold=&pinned=, or ?around=NODE).")
class AttributionGraph:
    row: Private[q.GraphRow]
    slug: str
    model: str = strawberry.field(description="The model it explains (named at import, or "
                                  "by metadata.scan).")
    prompt: str | None
    node_count: int
    link_count: int

    @classmethod
    def of(cls, row: q.GraphRow) -> AttributionGraph:
        return cls(row=row, slug=row.slug, model=row.model, prompt=row.prompt,
                   node_count=row.n_nodes, link_count=row.n_links)

    @strawberry.field(description="The file's `metadata` object.")
    def metadata(self) -> JSON | None:
        return self.row.header.get("metadata")

    @strawberry.field(description="qParams.pinnedIds: the node ids pinned in the file.")
    def pinned_ids(self) -> list[str]:
        return list(self.row.pinned_ids)

    @strawberry.field(description="metadata.node_threshold when positive: where "
                      "Neuronpedia's slider starts and the INFLUENCE view's default.")
    def node_threshold(self) -> float | None:
        return self.row.node_threshold

    @strawberry.field(description="The rule `pruned` uses when none is named: INFLUENCE for "
                      "files that store each node's influence (circuit-tracer and "
                      "Neuronpedia files, already pruned), else RECOMPUTE.")
    async def default_prune(self, info: Info[Context, None]) -> PruneRule:
        nodes = await info.context.db.run(q.graph_nodes, self.row)
        return PruneRule(default_rule(nodes))

    @strawberry.field(description="The graph's nodes, in file order: of one `role` if "
                      "given; at most `first` (default and ceiling: max_first).")
    async def nodes(self, info: Info[Context, None], role: AttributionRole | None = None,
                    first: int | None = None) -> list[AttributionNode]:
        limit = _first(info, first)
        found = await info.context.db.run(q.graph_nodes, self.row)
        pinned = frozenset(found.nids_of(self.row.pinned_ids))
        chosen = [n for n in sorted(found.nodes, key=lambda n: n.idx)
                  if role is None or ROLE_NAMES[n.role] == role.value][:limit]
        return [AttributionNode.of(n, pinned) for n in chosen]

    @strawberry.field(description="The graph's pruned view: `prune` INFLUENCE (Neuronpedia's "
                      "filter on the stored influence at `nodeThreshold`, default "
                      "metadata.node_threshold) or RECOMPUTE (circuit-tracer's prune_graph "
                      "on the stored links at `nodeThreshold` 0.8 and `edgeThreshold` 0.98 "
                      "unless given); default: defaultPrune. `pinned` (node ids or keys) "
                      "and `clicked` are kept whatever the threshold, as the file's pinned "
                      "ids. At most `first` links, the strongest. Errors: BAD_INPUT, "
                      "NODE_NOT_FOUND.")
    async def pruned(self, info: Info[Context, None], prune: PruneRule | None = None,
                     node_threshold: float | None = None, edge_threshold: float | None = None,
                     pinned: list[str] | None = None, clicked: str | None = None,
                     first: int | None = None) -> AttributionView:
        limit = _first(info, first)
        ask = ViewAsk(None if prune is None else prune.value, node_threshold, edge_threshold,
                      tuple(pinned or ()), clicked)
        view = await info.context.db.run(graph_view, self.row.slug, ask, model=self.row.model,
                                         max_links=limit)
        nodes = await info.context.db.run(q.graph_nodes, view.graph)
        kept = frozenset(nodes.nids_of([*self.row.pinned_ids, *(pinned or ())]))
        return AttributionView.of(view, kept)

    @strawberry.field(description="The links around node `node` (a node id, or a key where "
                      "two nodes share the id): its `top` strongest in-links (|weight|), then "
                      "theirs, `depth` hops upstream, and the same downstream, as `direction` "
                      "says. Errors: NODE_NOT_FOUND, BAD_INPUT, LIMIT_EXCEEDED.")
    async def neighbourhood(self, info: Info[Context, None], node: str, top: int = 10,
                            depth: int = 1, direction: LinkDirection = LinkDirection.BOTH
                            ) -> AttributionView:
        limit = info.context.settings.max_rows
        view = await info.context.db.run(neighbourhood, self.row.slug, node, top=top,
                                         depth=depth, direction=direction.value,
                                         max_links=limit, model=self.row.model)
        nodes = await info.context.db.run(q.graph_nodes, view.graph)
        return AttributionView.of(view, frozenset(nodes.nids_of(self.row.pinned_ids)))


def _first(info: Info[Context, None], first: int | None) -> int:
    settings = info.context.settings
    return check_first(settings, "first", settings.max_first if first is None else first)


async def attribution_graphs(info: Info[Context, None], model: str | None, prompt: str | None,
                             first: int | None, slug: str | None = None
                             ) -> list[AttributionGraph]:
    rows = await info.context.db.run(q.list_graphs, model, prompt, _first(info, first), slug)
    return [AttributionGraph.of(r) for r in rows]


async def attribution_graph(info: Info[Context, None], slug: str, model: str | None
                            ) -> AttributionGraph:
    return AttributionGraph.of(await info.context.db.run(q.get_graph, slug, model))


@strawberry.type(description="Questions about imported attribution graphs.")
class AttributionQuery:
    @strawberry.field(description="Imported attribution graphs (circuit-tracer / Neuronpedia), "
                      "by model and slug: of one `model` if given, of one `slug` if given, "
                      "whose prompt contains `prompt` (case-insensitive) if given; at most "
                      "`first`.")
    async def attribution_graphs(self, info: Info[Context, None], model: str | None = None,
                                 prompt: str | None = None, first: int | None = None,
                                 slug: str | None = None) -> list[AttributionGraph]:
        return await attribution_graphs(info, model, prompt, first, slug)

    @strawberry.field(description="One attribution graph by slug, of `model` (needed only when "
                      "graphs of several models have that slug); errors GRAPH_NOT_FOUND, "
                      "GRAPH_AMBIGUOUS.")
    async def attribution_graph(self, info: Info[Context, None], slug: str,
                                model: str | None = None) -> AttributionGraph | None:
        return await attribution_graph(info, slug, model)
