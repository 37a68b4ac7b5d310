"""One request never holds the event loop for long, and stops at its deadline by itself.

graphql-core builds an answer by recursion, awaiting each field's awaitable; an awaitable
that is already done (a DataLoader's cached row) does not give the loop back, so an
answer built from cached rows ran without a break: a fan-out document held the loop for
0.5 s at a time, every other client waiting, and cancelling it at the deadline took as
long again (millions of coroutines thrown into and dropped). :class:`Pacer` sees every
field resolution (a strawberry extension's ``resolve`` hook, about a microsecond each):

* every :data:`CHECK_EVERY` fields it looks at the clock: after :data:`YIELD_AFTER_S` of
  work, the request stands aside for :data:`PAUSE_S`: every field it reaches meanwhile is
  resolved only after that pause, so the loop's queue empties of this request's work and
  other requests run in between (it was the queue, tens of thousands of tasks that
  graphql-core had made ready at once, that kept the loop from other clients);
* past the request's deadline (``max_query_seconds``), that field and every one after it
  resolve at once to an empty value of their type (``null``, ``[]``, a zero, an object
  whose fields are empty in turn) without running anything, so the execution winds down
  through what was already under way; the request is then answered with one
  ``LIMIT_EXCEEDED`` error and none of that answer (:mod:`headgraph.api.execute`).
  Raising there instead made graphql-core cancel every sibling task of each failing
  field: on a large answer that storm took longer than the work it stopped.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

from graphql import (
    GraphQLEnumType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLScalarType,
)
from strawberry.extensions import SchemaExtension

from headgraph.errors import LimitExceededError

CHECK_EVERY = 32  # fields between two looks at the clock
YIELD_AFTER_S = 0.02  # the longest one request works before it pauses, in seconds
PAUSE_S = 0.005  # how long it then stands aside


class Pacer(SchemaExtension):
    """See the module doc; one instance per request (strawberry makes them)."""

    def __init__(self) -> None:
        self._count = 0
        self._since = time.monotonic()
        self._paused_until: float | None = None

    def resolve(self, _next: Callable[..., Any], root: Any, info: Any, *args: Any,
                **kwargs: Any) -> Any:
        self._count += 1
        if self._paused_until is not None or self._count % CHECK_EVERY == 0:
            now = time.monotonic()
            context = info.context
            db = getattr(context, "db", None)
            if db is not None and db.deadline is not None and now > db.deadline:
                context.paced_out = True
            elif self._paused_until is not None and now >= self._paused_until:
                self._paused_until, self._since = None, now
            elif self._paused_until is None and now - self._since > YIELD_AFTER_S:
                self._paused_until = now + PAUSE_S
            if self._paused_until is not None and not context.paced_out:
                return _later(self, self._paused_until - now, _next, root, info, args, kwargs)
        if getattr(info.context, "paced_out", False):
            info.context.emptied = True
            return _neutral(info.return_type)
        return _next(root, info, *args, **kwargs)


async def _later(pacer: Pacer, delay: float, resolve: Callable[..., Any], root: Any,
                 info: Any, args: tuple, kwargs: dict) -> Any:
    """Resolve the field after ``delay`` seconds (its value awaited if awaitable), paced
    again: the fields deferred by one pause wake together, and may need another."""
    await asyncio.sleep(delay)
    result = pacer.resolve(resolve, root, info, *args, **kwargs)
    if inspect.isawaitable(result):
        return await result
    return result


_ZEROS = {"Int": 0, "Float": 0.0, "String": "", "Boolean": False, "ID": "", "JSON": {}}


def _neutral(return_type: Any) -> Any:
    """An empty value of a field's type, valid for graphql-core to complete (the answer
    it goes into is dropped)."""
    if not isinstance(return_type, GraphQLNonNull):
        return None
    inner = return_type.of_type
    if isinstance(inner, GraphQLList):
        return []
    if isinstance(inner, GraphQLEnumType):
        return next(iter(inner.values.values())).value
    if isinstance(inner, GraphQLObjectType):
        definition = (inner.extensions or {}).get("strawberry-definition")
        origin = getattr(definition, "origin", None)
        if origin is not None:
            return origin.__new__(origin)  # its fields resolve empty too: nothing is read
    if isinstance(inner, GraphQLScalarType) and inner.name in _ZEROS:
        return _ZEROS[inner.name]
    raise LimitExceededError("past the deadline")  # a type without an empty value
