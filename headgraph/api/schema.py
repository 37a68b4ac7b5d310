"""The GraphQL schema: the ``Query`` root and :func:`build_schema`.

Read-only: there are no mutations or subscriptions. An unknown model or node is an
*error* with a code (``MODEL_NOT_FOUND``, ``NODE_NOT_FOUND``), not a silent ``null``:
``model`` and ``node`` are nullable only so that the rest of a query can still answer
(``data.model`` is ``null`` and ``errors[0].extensions.code`` says why).

Features add root fields of their own (:func:`build_schema`'s ``queries``);
:mod:`headgraph.server` builds the schema that is served, and snapshots its SDL in
``headgraph/api/schema.graphql``. The settings change only limits, never the SDL.
"""

from __future__ import annotations

from collections.abc import Sequence

import strawberry
from graphql import GraphQLError
from strawberry import Info
from strawberry.extensions import MaxTokensLimiter
from strawberry.types import ExecutionContext

from headgraph.api import compare_types
from headgraph.api.admission import admission
from headgraph.api.compare_types import Comparison, HeadMatching, SeriesPoint
from headgraph.api.context import Context
from headgraph.api.cost import sized
from headgraph.api.errors import CodedErrors, log_errors
from headgraph.api.pacing import PacedExecution
from headgraph.api.settings import Settings
from headgraph.api.types import EdgeKind, Model, Node
from headgraph.queries.models import get_model, list_models
from headgraph.queries.nodes import model_and_node


@strawberry.type(description="Questions about the stored models' circuit graphs.")
class Query:
    @strawberry.field(description="Stored models (of one training-run family if given), by "
                      "family, step and name.", metadata=sized(assumed="models"))
    async def models(self, info: Info[Context, None], family: str | None = None) -> list[Model]:
        rows = await info.context.db.run(list_models, family)
        for row in rows:
            info.context.loaders.known_model(row)
        return [Model.from_row(r) for r in rows]

    @strawberry.field(description="One model by name; an error MODEL_NOT_FOUND if there is none.")
    async def model(self, info: Info[Context, None], name: str) -> Model | None:
        row = await info.context.db.lookup(get_model, name)
        info.context.loaders.known_model(row)
        return Model.from_row(row)

    @strawberry.field(description="One node of one model, e.g. node(model: \"toy\", name: "
                      "\"L1H2\"); errors MODEL_NOT_FOUND / NODE_NOT_FOUND.")
    async def node(self, info: Info[Context, None], model: str, name: str) -> Node | None:
        model_row, node_row = await info.context.db.lookup(model_and_node, model, name)
        info.context.loaders.known_model(model_row)
        info.context.loaders.known_nodes([node_row])
        return Node.from_row(node_row)

    @strawberry.field(description="Compare two models (checkpoints of one run, or models of "
                      "different shapes): their heads matched one-to-one (`matchBy`: by name "
                      "for checkpoints of one run, by signature otherwise), pairs under "
                      "`minSimilarity` (0-1) left unmatched, and the edges that changed. "
                      "Errors: MODEL_NOT_FOUND, BAD_INPUT.")
    async def compare(self, info: Info[Context, None], a: str, b: str,
                      min_similarity: float | None = None,
                      match_by: HeadMatching | None = HeadMatching.AUTO) -> Comparison:
        return await compare_types.compare(info, a, b, min_similarity, match_by)

    @strawberry.field(description="A metric across the checkpoints of training-run `family`, "
                      "by step: a node series (`node`, `metric` a node column such as "
                      "copying_ratio, the default, or an evidence metric) or an edge series "
                      "(`source`, `target`, `kind`, `metric` score (default), baseline, rank, "
                      "z (the structural z, as Edge.z) or gaussian_z). Checkpoints lacking the "
                      "node or edge (or, for z, ingested before it was stored) are left out. Errors: "
                      "MODEL_NOT_FOUND (no such family), NODE_NOT_FOUND, BAD_INPUT.",
                      metadata=sized(assumed="models"))
    async def series(self, info: Info[Context, None], family: str, node: str | None = None,
                     source: str | None = None, target: str | None = None,
                     kind: EdgeKind | None = None,
                     metric: str | None = None) -> list[SeriesPoint]:
        return await compare_types.series(info, family, node, source, target, kind, metric)


class HeadgraphSchema(strawberry.Schema):
    """strawberry's schema, logging only internal errors (refusals are not server faults)."""

    def process_errors(self, errors: list[GraphQLError],
                       execution_context: ExecutionContext | None = None) -> None:
        log_errors(errors)


def build_schema(settings: Settings | None = None, queries: Sequence[type] = ()
                 ) -> HeadgraphSchema:
    """The schema with the limits of ``settings`` (defaults if ``None``): the ``Query``
    root of the composition graph, with the root fields of ``queries`` (strawberry types,
    one per feature, e.g. :class:`headgraph.attribution.types.AttributionQuery`) merged in,
    in that order."""
    settings = settings or Settings()
    root = Query
    if queries:  # class Query(Query, *queries): the core's fields first, then each feature's
        root = strawberry.type(type("Query", (Query, *queries), {}),
                               description=Query.__strawberry_definition__.description)
    return HeadgraphSchema(
        query=root,
        execution_context_class=PacedExecution,
        extensions=[lambda: MaxTokensLimiter(max_token_count=settings.max_tokens),
                    admission(settings), CodedErrors],
    )
