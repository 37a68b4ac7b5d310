"""GraphQL types of attribution graphs: the graphs, their pruned and neighbourhood
views, and the root fields that reach them (:class:`AttributionQuery`, merged into
``Query`` by :mod:`headgraph.server`).

Thin views over the records of :mod:`headgraph.attribution.graphs`. Lists are bounded: a
view returns at most ``first`` links (default and ceiling: the server's ``max_first``), the
strongest, with ``truncated``.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum

import strawberry
from strawberry import Info, Private
from strawberry.scalars import JSON

from headgraph.api.context import Context
from headgraph.api.cost import sized
from headgraph.api.http import encode_json
from headgraph.api.limits import check_first
from headgraph.attribution import graphs as q
from headgraph.attribution.neighbourhood import MAX_DEPTH, neighbourhood
from headgraph.attribution.pruned import pruned_view
from headgraph.attribution.pruning import ROLE_NAMES


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


@strawberry.type(description="A node of an attribution graph (a transcoder feature, an "
                 "error, a token or a logit).")
class AttributionNode:
    row: Private[q.ViewNode]
    node_id: str
    layer: str | None
    ctx_idx: int | None
    feature: str | None = strawberry.field(description="The feature index, as decimal text "
                                           "(it may not fit GraphQL's 32-bit Int).")
    feature_type: str | None
    clerp: str | None = strawberry.field(description="The node's label.")
    activation: float | None
    role: AttributionRole
    influence: float = strawberry.field(description="Computed influence on the whole graph: "
                                        "w^T (A + A^2 + ...) with A the row-normalised |W| "
                                        "and w the logit probabilities.")
    cumulative_influence: float = strawberry.field(
        description="Share of all influence held by the nodes at least as influential as "
                    "this one (a node threshold t keeps nodes up to the first share >= t).")
    fields: JSON = strawberry.field(description="Every field of the node as in the file.")

    @classmethod
    def of(cls, n: q.ViewNode) -> AttributionNode:
        f = n.fields
        feature = f.get("feature")
        layer = f.get("layer")
        return cls(row=n, node_id=n.node_id, layer=None if layer is None else str(layer),
                   ctx_idx=f.get("ctx_idx") if isinstance(f.get("ctx_idx"), int) else None,
                   feature=None if feature is None else str(feature),
                   feature_type=f.get("feature_type"), clerp=f.get("clerp"),
                   activation=_number(f.get("activation")),
                   role=AttributionRole(ROLE_NAMES[n.role]), influence=n.score,
                   cumulative_influence=n.cum, fields=f)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


@strawberry.type(description="A link of an attribution graph: the direct effect `weight` "
                 "of source on target.")
class AttributionLink:
    source: str
    target: str
    weight: float
    edge_influence: float | None = strawberry.field(
        description="In a pruned view, circuit-tracer's edge score A'[t, s] (w + I')[t].")


def _neighbourhood_links(args: Mapping[str, int], sizes: Mapping[str, int]) -> int:
    """Links a neighbourhood may gather, for the cost estimate: ``top`` per node per hop,
    ``depth`` hops, upstream and downstream."""
    top, depth = args.get("top", 10), args.get("depth", 1)
    return 2 * sum(top ** d for d in range(1, min(depth, MAX_DEPTH) + 1))


@strawberry.type(description="Part of an attribution graph: nodes and links in file order.")
class AttributionView:
    nodes: list[AttributionNode] = strawberry.field(metadata=sized(per_parent=2))
    links: list[AttributionLink] = strawberry.field(metadata=sized(per_parent=1))
    truncated: bool = strawberry.field(description="True when `first` cut links (the "
                                       "strongest were kept).")

    @classmethod
    def of(cls, view: q.GraphSlice) -> AttributionView:
        return cls(nodes=[AttributionNode.of(n) for n in view.nodes],
                   links=[AttributionLink(source=x.source, target=x.target, weight=x.weight,
                                          edge_influence=x.edge_score)
                          for x in view.link_records()],
                   truncated=view.truncated)


def _prompt(root: AttributionGraph, info: Info[Context, None]) -> str | None:
    """A graph's prompt, counted against ``max_response_bytes`` first (a file's prompt
    may be long, and a list of graphs asks for many)."""
    prompt = root.row.prompt
    if prompt is not None:
        info.context.charge(len(prompt.encode(errors="replace")), "this graph's prompt")
    return prompt


@strawberry.type(description="An imported circuit-tracer / Neuronpedia attribution graph. "
                 "Its Neuronpedia JSON: GET /graphs/{slug}.json (whole, or "
                 "?node_threshold=&edge_threshold=, or ?around=NODE).")
class AttributionGraph:
    row: Private[q.GraphRow]
    slug: str
    model: str = strawberry.field(description="The model it explains (metadata.scan unless "
                                  "named at import).")
    prompt: str | None = strawberry.field(resolver=_prompt)
    node_count: int
    link_count: int

    @classmethod
    def of(cls, row: q.GraphRow) -> AttributionGraph:
        return cls(row=row, slug=row.slug, model=row.model, node_count=row.n_nodes,
                   link_count=row.n_links)

    @strawberry.field(description="The file's `metadata` object.")
    def metadata(self, info: Info[Context, None]) -> JSON | None:
        metadata = self.row.header.get("metadata")
        if metadata is not None:  # it may be megabytes, and 30 aliases may ask for it
            info.context.charge(len(encode_json(metadata)), "this graph's metadata")
        return metadata

    @strawberry.field(description="circuit-tracer's pruned graph, computed in the database: "
                      "nodes up to cumulative influence `nodeThreshold`, then links up to "
                      "cumulative edge influence `edgeThreshold` (both in [0, 1]). At most "
                      "`first` links, the strongest. Errors: BAD_INPUT.",
                      metadata=sized("first", "max_first"))
    async def pruned(self, info: Info[Context, None], node_threshold: float = 0.8,
                     edge_threshold: float = 0.98, first: int | None = None) -> AttributionView:
        limit = _first(info, first)
        view = await info.context.db.run(pruned_view, self.row.slug, node_threshold,
                                         edge_threshold, max_links=limit)
        return AttributionView.of(view)

    @strawberry.field(description="The links around node `node` (a node_id): its `top` "
                      "strongest in-links (|weight|), then theirs, `depth` hops upstream, and "
                      "the same downstream, as `direction` says. Errors: NODE_NOT_FOUND, "
                      "BAD_INPUT, LIMIT_EXCEEDED.", metadata=sized(fn=_neighbourhood_links))
    async def neighbourhood(self, info: Info[Context, None], node: str, top: int = 10,
                            depth: int = 1, direction: LinkDirection = LinkDirection.BOTH
                            ) -> AttributionView:
        limit = info.context.settings.max_rows
        view = await info.context.db.run(neighbourhood, self.row.slug, node, top=top,
                                         depth=depth, direction=direction.value,
                                         max_links=limit)
        return AttributionView.of(view)


def _first(info: Info[Context, None], first: int | None) -> int:
    settings = info.context.settings
    return check_first(settings, "first", settings.max_first if first is None else first)


async def attribution_graphs(info: Info[Context, None], model: str | None, prompt: str | None,
                             first: int | None) -> list[AttributionGraph]:
    rows = await info.context.db.run(q.list_graphs, model, prompt, _first(info, first))
    return [AttributionGraph.of(r) for r in rows]


async def attribution_graph(info: Info[Context, None], slug: str) -> AttributionGraph:
    return AttributionGraph.of(await info.context.db.run(q.get_graph, slug))


@strawberry.type(description="Questions about imported attribution graphs.")
class AttributionQuery:
    @strawberry.field(description="Imported attribution graphs (circuit-tracer / Neuronpedia), "
                      "by model and slug: of one `model` if given, whose prompt contains "
                      "`prompt` (case-insensitive) if given; at most `first`.",
                      metadata=sized("first", "max_first"))
    async def attribution_graphs(self, info: Info[Context, None], model: str | None = None,
                                 prompt: str | None = None, first: int | None = None
                                 ) -> list[AttributionGraph]:
        return await attribution_graphs(info, model, prompt, first)

    @strawberry.field(description="One attribution graph by slug; an error GRAPH_NOT_FOUND if "
                      "there is none.")
    async def attribution_graph(self, info: Info[Context, None], slug: str
                                ) -> AttributionGraph | None:
        return await attribution_graph(info, slug)
