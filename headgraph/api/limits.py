"""The limits every GraphQL request is held to (values from :mod:`headgraph.api.settings`).

* document size: ``max_tokens`` (the parser stops early), ``max_aliases``, ``max_depth``;
* list sizes: ``top`` and ``first`` at most ``max_first``;
* total work: at most ``max_rows`` rows read per request (enforced in
  :meth:`headgraph.queries.session.GraphDB.session`, while fetching).

Depth and alias limits reuse strawberry's validation rules; their errors are given
``extensions.code = LIMIT_EXCEEDED`` as they are reported, so a client can tell a refused
query from a malformed one without parsing messages.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from graphql import GraphQLError, ValidationContext, ValidationRule
from strawberry.extensions import (
    AddValidationRules,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    QueryDepthLimiter,
    SchemaExtension,
)

from headgraph.api.settings import Settings
from headgraph.errors import BadInputError, LimitExceededError

LIMIT_EXCEEDED = LimitExceededError.code


class _CodedContext:
    """A validation context that stamps ``extensions.code`` on the errors one rule reports."""

    def __init__(self, context: ValidationContext, code: str) -> None:
        self._context = context
        self._code = code

    def report_error(self, error: GraphQLError) -> None:
        error.extensions = {**(error.extensions or {}), "code": self._code}
        self._context.report_error(error)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


def _coded(rule: type[ValidationRule], code: str) -> type[ValidationRule]:
    class Coded(rule):  # type: ignore[misc, valid-type]
        def __init__(self, context: ValidationContext) -> None:
            super().__init__(_CodedContext(context, code))  # type: ignore[arg-type]

    Coded.__name__ = Coded.__qualname__ = f"Coded{rule.__name__}"
    return Coded


class _LimitRules(AddValidationRules):
    """Another extension's validation rules, their errors coded ``LIMIT_EXCEEDED``."""

    def __init__(self, inner: AddValidationRules) -> None:
        super().__init__([_coded(r, LIMIT_EXCEEDED) for r in inner.validation_rules])


def limit_extensions(settings: Settings) -> list[Callable[[], SchemaExtension]]:
    """Extension factories (strawberry wants classes or factories, not instances)."""
    return [
        lambda: _LimitRules(QueryDepthLimiter(max_depth=settings.max_depth)),
        lambda: _LimitRules(MaxAliasesLimiter(max_alias_count=settings.max_aliases)),
        lambda: MaxTokensLimiter(max_token_count=settings.max_tokens),
    ]


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
