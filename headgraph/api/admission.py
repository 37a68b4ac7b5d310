"""What a GraphQL document must pass before any resolver runs, cheapest check first.

1. **Parse**, at most ``max_tokens`` tokens (graphql-core stops counting there).
2. **Shape**: ``max_depth``, ``max_aliases``, no NUL or lone surrogate in a string literal
   (:mod:`headgraph.api.limits`), and a plan of the operation
   (:func:`headgraph.api.cost.document_plan`: fragments expanded, no response key
   repeated more than ``MAX_FIELD_REPEATS`` times in one selection). Each is linear in
   the document.
3. **Cost** with this request's variables and the database's sizes (the most heads of a
   stored model...; :class:`~headgraph.api.context.Context`): over ``max_cost``,
   ``LIMIT_EXCEEDED`` with the estimate in the message.
4. **graphql-core's validation rules** (fields exist, arguments fit, fragments...), which
   step 2 keeps from their quadratic cases.

Steps 1, 2 and 4 depend on the text only and are kept, per document, in an LRU of
:data:`DOCUMENT_CACHE_SIZE` entries (clients send the same few documents with other
variables; parsing and validating were most of a small request's time, ~60% of a
feeders query in-process); step 3 costs tens of microseconds per request. A document
over a limit is refused on every request from the cache.

All of it is :class:`Admission`, one strawberry extension (it replaces strawberry's
``ParserCache``, which raised a syntax error from its hook, past strawberry's handling, so
the error lost its code; and its ``ValidationCache`` and ``AddValidationRules``, which
validate in one pass with no early exit).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from graphql import DocumentNode, GraphQLError, GraphQLSchema, parse, specified_rules, validate
from graphql.execution.values import get_variable_values
from graphql.utilities import get_operation_ast
from strawberry.extensions import SchemaExtension

from headgraph.api.cost import Plan, PlanError, document_plan, introspection_sizes, named_sizes
from headgraph.api.limits import LIMIT_EXCEEDED, SafeStrings, aliases_rule, depth_rule
from headgraph.api.settings import Settings

DOCUMENT_CACHE_SIZE = 256
"""Documents kept per server (LRU by query text)."""


@dataclass
class _Entry:
    """What is known of one query text; filled as requests need it."""

    document: DocumentNode
    shape: list[GraphQLError] | None = None
    rules: list[GraphQLError] | None = None
    plans: dict[str | None, Plan | None] = field(default_factory=dict)
    refusals: dict[str | None, GraphQLError] = field(default_factory=dict)


class _Documents:
    """An LRU of :class:`_Entry` by query text (thread-safe; `headgraph query` and the
    server's loop may share one schema)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, text: str) -> _Entry | None:
        with self._lock:
            entry = self._entries.get(text)
            if entry is not None:
                self._entries.move_to_end(text)
            return entry

    def put(self, text: str, entry: _Entry) -> None:
        with self._lock:
            self._entries[text] = entry
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)


def cost_error(cost: int, budget: int) -> GraphQLError:
    return GraphQLError(
        f"this query would resolve about {cost:,} values (each field, times the sizes of "
        f"the lists above it: top, first, or default_first), over this server's budget of "
        f"{budget:,} (max_cost). Ask for fewer levels or fields, or lower top/first.",
        extensions={"code": LIMIT_EXCEEDED})


def admission(settings: Settings) -> Callable[[], SchemaExtension]:
    """The factory strawberry wants (one extension instance per request), over one cache
    and one set of rules for the schema of ``settings``."""
    documents = _Documents(DOCUMENT_CACHE_SIZE)
    shape_rules = [depth_rule(settings.max_depth), aliases_rule(settings.max_aliases),
                   SafeStrings]
    rules = [*specified_rules, SafeStrings]

    class Admission(SchemaExtension):
        def on_parse(self) -> Iterator[None]:
            context = self.execution_context
            text = context.query
            if text is not None and documents.get(text) is None:
                try:
                    document = parse(text, max_tokens=settings.max_tokens)
                except GraphQLError:
                    pass  # strawberry parses it again and reports the error as usual
                else:
                    documents.put(text, _Entry(document))
            entry = documents.get(text) if text is not None else None
            if entry is not None:
                context.graphql_document = entry.document
            yield

        def on_validate(self) -> Iterator[None]:
            context = self.execution_context
            entry = documents.get(context.query or "")
            if entry is None or entry.document is not context.graphql_document:
                entry = _Entry(context.graphql_document)  # not cached (evicted meanwhile)
            context.pre_execution_errors = _check(context.schema._schema, entry, shape_rules,
                                                  rules, settings, context.operation_name,
                                                  context.variables, context.context)
            yield

    return Admission


def _check(schema: GraphQLSchema, entry: _Entry, shape_rules: list, rules: list,
           settings: Settings, operation: str | None, variables: dict | None,
           request: object) -> list[GraphQLError]:
    if entry.shape is None:
        entry.shape = validate(schema, entry.document, shape_rules)
    if entry.shape:
        return entry.shape
    if operation not in entry.plans and operation not in entry.refusals:
        try:
            entry.plans[operation] = document_plan(schema, entry.document, operation)
        except PlanError as exc:
            entry.refusals[operation] = GraphQLError(str(exc),
                                                     extensions={"code": LIMIT_EXCEEDED})
    if operation in entry.refusals:
        return [entry.refusals[operation]]
    bad = _variable_errors(schema, entry.document, operation, variables)
    if bad:  # a wrong variable is the client's input error, whatever the document costs
        return bad
    plan = entry.plans[operation]
    if plan is not None and settings.max_cost:
        sizes = named_sizes(settings, getattr(request, "database_sizes", None))
        cost = plan.cost(variables, sizes, introspection_sizes(schema))
        if hasattr(request, "cost"):
            request.cost = cost
        if cost > settings.max_cost:
            return [cost_error(cost, settings.max_cost)]
    if entry.rules is None:
        entry.rules = validate(schema, entry.document, rules)
    return entry.rules


def _variable_errors(schema: GraphQLSchema, document: DocumentNode, operation: str | None,
                     variables: dict | None) -> list[GraphQLError]:
    """The errors of coercing ``variables`` to the operation's variable types (as execution
    would, first): checked before the cost, so an enum value that is none of the enum's is
    answered as the input error it is. ``[]`` if they coerce, or if the operation is not
    found (execution reports that)."""
    op = get_operation_ast(document, operation)
    if op is None or not op.variable_definitions:
        return []
    coerced = get_variable_values(schema, op.variable_definitions, variables or {},
                                  max_errors=5)
    return coerced if isinstance(coerced, list) else []
