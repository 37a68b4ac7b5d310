"""The limits every GraphQL request is held to (values from :mod:`headgraph.api.settings`).

* document size: ``max_tokens`` (the parser stops early), ``max_aliases``, ``max_depth``;
* list sizes: ``top`` and ``first`` at most ``max_first``;
* total work: a cost estimate at most ``max_cost`` before anything runs
  (:mod:`headgraph.api.cost`), at most ``max_rows`` rows read per request (enforced in
  :meth:`headgraph.queries.session.GraphDB.session`, while fetching), at most
  ``max_query_seconds`` of wall time (:class:`headgraph.api.asyncdb.AsyncDB` and
  :mod:`headgraph.api.execute`), and at most ``max_response_bytes`` of answer;
* strings: no NUL character in a string literal (:class:`SafeStrings`; variables are
  checked in :mod:`headgraph.api.execute`), so every backend answers the same BAD_INPUT.

Depth and alias limits are validation rules that report ``extensions.code =
LIMIT_EXCEEDED``, so a client can tell a refused query from a malformed one without
parsing messages. They count as strawberry's ``QueryDepthLimiter`` and
``MaxAliasesLimiter`` do, but look each fragment up once: strawberry's walk every
fragment spread anew, so a document of 20 fragments that each spread the next twice (200
tokens) took 5 s to validate, on the event loop, and one of 30 would have taken hours.
Unknown and cyclic fragments count 0 here; graphql-core's own rules refuse them
(``BAD_INPUT``). :mod:`headgraph.api.admission` runs these rules, and the cost, before
graphql-core's.
"""

from __future__ import annotations

from collections.abc import Callable

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    StringValueNode,
    ValidationContext,
    ValidationRule,
)

from headgraph.api.settings import Settings
from headgraph.errors import BadInputError, LimitExceededError

LIMIT_EXCEEDED = LimitExceededError.code
NUL_MESSAGE = ("a string may not contain a NUL character (\\u0000) or an unpaired surrogate: "
               "no stored name holds one.")


def unsafe_string(value: str) -> bool:
    """A NUL character, or text that is not valid UTF-8 (a lone surrogate from JSON's
    ``\\ud800``): DuckDB refuses the latter and PostgreSQL the former as parameters."""
    if "\x00" in value:
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


class SafeStrings(ValidationRule):
    """Refuse string literals that :func:`unsafe_string` flags (``BAD_INPUT``)."""

    def enter_string_value(self, node: StringValueNode, *_: object) -> None:
        if unsafe_string(node.value):
            self.report_error(GraphQLError(NUL_MESSAGE, node,
                                           extensions={"code": BadInputError.code}))


class _Fragments:
    """Per-fragment sums and maxima over one document, each fragment computed once."""

    def __init__(self, document: DocumentNode,
                 measure: Callable[[SelectionSetNode, _Fragments], int]) -> None:
        self._defs = {d.name.value: d for d in document.definitions
                      if isinstance(d, FragmentDefinitionNode)}
        self._measure = measure
        self._done: dict[str, int] = {}
        self._active: set[str] = set()

    def __call__(self, name: str) -> int:
        if name in self._done:
            return self._done[name]
        if name in self._active or name not in self._defs:
            return 0  # a cycle or an unknown name: refused by graphql-core's own rules
        self._active.add(name)
        value = self._measure(self._defs[name].selection_set, self)
        self._active.discard(name)
        self._done[name] = value
        return value


def _depth(selections: SelectionSetNode, fragments: _Fragments) -> int:
    """Levels of fields with sub-selections below this selection set, introspection
    fields (``__schema``...) not counted (strawberry's ``QueryDepthLimiter``)."""
    deepest = 0
    for node in selections.selections:
        if isinstance(node, FieldNode):
            if node.selection_set is not None and not node.name.value.startswith("__"):
                deepest = max(deepest, 1 + _depth(node.selection_set, fragments))
        elif isinstance(node, InlineFragmentNode):
            deepest = max(deepest, _depth(node.selection_set, fragments))
        elif isinstance(node, FragmentSpreadNode):
            deepest = max(deepest, fragments(node.name.value))
    return deepest


def _aliases(selections: SelectionSetNode, fragments: _Fragments) -> int:
    """Aliased fields reached from this selection set, a fragment counted at each spread
    (strawberry's ``MaxAliasesLimiter``)."""
    count = 0
    for node in selections.selections:
        if isinstance(node, FieldNode):
            count += node.alias is not None
            if node.selection_set is not None:
                count += _aliases(node.selection_set, fragments)
        elif isinstance(node, InlineFragmentNode):
            count += _aliases(node.selection_set, fragments)
        elif isinstance(node, FragmentSpreadNode):
            count += fragments(node.name.value)
    return count


def _limit_error(message: str, node: OperationDefinitionNode | None = None) -> GraphQLError:
    return GraphQLError(message, node, extensions={"code": LIMIT_EXCEEDED})


def depth_rule(max_depth: int) -> type[ValidationRule]:
    """A rule refusing operations nested deeper than ``max_depth`` (``LIMIT_EXCEEDED``)."""

    class DepthLimit(ValidationRule):
        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            fragments = _Fragments(context.document, _depth)
            for op in context.document.definitions:
                if not isinstance(op, OperationDefinitionNode):
                    continue
                name = op.name.value if op.name else "anonymous"
                try:
                    depth = _depth(op.selection_set, fragments)
                except RecursionError:
                    depth = max_depth + 1
                if depth > max_depth:
                    context.report_error(_limit_error(
                        f"'{name}' exceeds maximum operation depth of {max_depth} "
                        "(max_depth)", op))

    return DepthLimit


def aliases_rule(max_aliases: int) -> type[ValidationRule]:
    """A rule refusing documents with more than ``max_aliases`` aliased fields."""

    class AliasLimit(ValidationRule):
        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            fragments = _Fragments(context.document, _aliases)
            ops = [d for d in context.document.definitions
                   if isinstance(d, OperationDefinitionNode)]
            try:
                total = sum(_aliases(op.selection_set, fragments) for op in ops)
            except RecursionError:
                total = max_aliases + 1
            if total > max_aliases:
                context.report_error(_limit_error(
                    f"{total} aliases found. Allowed: {max_aliases} (max_aliases)"))

    return AliasLimit


def is_token_limit(error: GraphQLError) -> bool:
    """The parser's own refusal of a document over ``max_tokens`` (graphql-core's message)."""
    return "Document contains more than" in error.message and "tokens" in error.message


def check_first(settings: Settings, name: str, value: int) -> int:
    """A ``top``/``first`` argument: refused when negative or over ``max_first``."""
    if value < 0:
        raise BadInputError(f"{name} must be 0 or more, not {value}.")
    if value > settings.max_first:
        raise LimitExceededError(
            f"{name}={value} is over this server's limit of {settings.max_first} (max_first). "
            "Ask for fewer, or page through Model.edges with first/after."
        )
    return value
