"""Every GraphQL error leaves with a stable ``extensions.code`` and no stack trace.

| where it came from                              | code                            |
|-------------------------------------------------|---------------------------------|
| a :class:`~headgraph.errors.HeadgraphError`      | its ``.code`` (``MODEL_NOT_FOUND``, ``NODE_NOT_FOUND``, ``BAD_INPUT``, ``LIMIT_EXCEEDED``, ``DATABASE_LOCKED``...) |
| a depth/alias/token limit                       | ``LIMIT_EXCEEDED``              |
| a stored number GraphQL cannot carry (NaN, Infinity) | ``DATABASE_ERROR``, the field's path in the message |
| a syntax or validation error, a bad variable    | ``BAD_INPUT``                   |
| anything else raised while resolving (a bug)    | ``INTERNAL_ERROR``, message masked, traceback logged on the server |
| no or a wrong bearer token (``auth_token`` set) | ``UNAUTHENTICATED`` (HTTP 401, :mod:`headgraph.api.app`) |

``DATABASE_LOCKED`` and ``SERVER_BUSY`` errors also carry ``extensions.retryable = true``. This replaces
strawberry's ``MaskErrors`` (which masks every error, coded ones included).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from graphql import GraphQLError
from strawberry.extensions import SchemaExtension

from headgraph.api.limits import LIMIT_EXCEEDED, is_token_limit
from headgraph.errors import (
    BadInputError,
    DatabaseError,
    DatabaseLockedError,
    HeadgraphError,
    ServerBusyError,
)

INTERNAL_ERROR = "INTERNAL_ERROR"
BAD_INPUT = BadInputError.code
INTERNAL_MESSAGE = "internal error; the server log has the details."

log = logging.getLogger("headgraph.api")


NOT_A_NUMBER = ("Float cannot represent", "Int cannot represent")  # graphql-core's serializers


def is_bad_number(error: GraphQLError) -> bool:
    """A stored value that GraphQL cannot serialize (a NaN or infinite Float): bad data in
    the database, not a bug of the server."""
    original = error.original_error  # a variable's coercion fails the same way: no path
    return (error.path is not None and isinstance(original, GraphQLError)
            and original.message.startswith(NOT_A_NUMBER))


def is_internal(error: GraphQLError) -> bool:
    """An error raised while resolving that is not one of headgraph's refusals: a bug."""
    if isinstance(error.original_error, HeadgraphError) or is_bad_number(error):
        return False
    return error.path is not None


def error_extensions(exc: HeadgraphError) -> dict[str, Any]:
    """``extensions`` for a refusal: its code, and ``retryable`` where waiting helps."""
    ext: dict[str, Any] = {"code": exc.code}
    if isinstance(exc, DatabaseLockedError | ServerBusyError):
        ext["retryable"] = True
    return ext


def coded(error: GraphQLError) -> GraphQLError:
    """A copy of ``error`` with a code, its message masked if it is internal."""
    original = error.original_error
    if isinstance(original, HeadgraphError):
        message, extensions = original.message, error_extensions(original)
    elif is_bad_number(error):
        where = ".".join(str(p) for p in error.path or ())
        message = (f"the database holds a value at {where} that is not a finite number (NaN "
                   "or Infinity); `headgraph check` lists such rows.")
        extensions = {"code": DatabaseError.code}
    elif is_internal(error):
        message, extensions = INTERNAL_MESSAGE, {"code": INTERNAL_ERROR}
    elif error.extensions and "code" in error.extensions:
        message, extensions = error.message, dict(error.extensions)
    else:
        code = LIMIT_EXCEEDED if is_token_limit(error) else BAD_INPUT
        message, extensions = error.message, {"code": code}
    return GraphQLError(message, nodes=error.nodes, source=error.source,
                        positions=error.positions, path=error.path, extensions=extensions)


def request_error(exc: HeadgraphError) -> dict[str, Any]:
    """A refusal before execution (bad body, locked database) in the GraphQL error shape."""
    return {"message": exc.message, "extensions": error_extensions(exc)}


def log_errors(errors: list[GraphQLError]) -> None:
    """Log internal errors with their traceback; refusals are the client's business."""
    for error in errors:
        if is_internal(error):
            log.error("internal error at %s: %s", error.path, error.message,
                      exc_info=error.original_error or error)


class CodedErrors(SchemaExtension):
    """Replace each error of the result by its :func:`coded` copy."""

    def on_operation(self) -> Iterator[None]:
        yield
        result = self.execution_context.result
        errors = getattr(result, "errors", None)
        if errors:
            result.errors = [coded(e) for e in errors]  # type: ignore[union-attr]
