"""One request never holds the event loop for long, and stops at its deadline by itself.

graphql-core builds an answer by recursion, awaiting each field's awaitable; an awaitable
that is already done (a DataLoader's cached row) does not give the loop back, and a large
answer makes thousands of tasks ready at once, all of which the loop runs before it looks
at its sockets again. A fan-out document built from cached rows held the loop for 0.5 s
at a time, every other client waiting, and cancelling it at the deadline took as long
again (millions of coroutines thrown into and dropped).

The resolvers that expand an answer (a node's feeders and readers, an edge's ends, the
nodes of a path or a circuit: :mod:`headgraph.api.types`) ask the request's :class:`Pace`
first (``if pace.due(): await pace.turn()``, a clock read when nothing is due):

* after :data:`YIELD_AFTER_S` of work (the first time: :data:`PACE_AFTER_S` after it
  began) the request stands aside for :data:`PAUSE_S`: every such resolver reached
  meanwhile waits for the pause to end, so the loop's queue empties of this request's
  work and other requests run in between. A pause splits the DataLoaders' batches (loads
  before it and after it are two statements), so requests that take under 0.1 s, nearly
  all of them, are never paced;
* past the request's deadline (``max_query_seconds``; :mod:`headgraph.api.execute` sets
  :attr:`Pace.out` with a timer) they resolve at once to an empty value (no feeders, an
  empty node) without running anything, so the execution winds down through what was
  already under way; the request is then answered with one ``LIMIT_EXCEEDED`` error and
  none of that answer. Raising there instead made graphql-core cancel every sibling task
  of each failing field: on a large answer that storm took longer than the work it
  stopped.

A strawberry extension's ``resolve`` hook could see every field, but it cost 45% more CPU
on a 2,000-field answer (measured: 64 against 44 ms); the check in these few resolvers
costs a clock read each. What they cannot see, graphql-core completing the objects
already resolved once the last rows have arrived, :class:`PacedExecution` stops.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

YIELD_AFTER_S = 0.02  # the longest one request works before it stands aside, in seconds
PACE_AFTER_S = 0.1  # a request younger than this is never paced (it would split batches)
PAUSE_S = 0.005  # how long it then stands aside


class Pace:
    """One request's pacing (see the module doc)."""

    def __init__(self, deadline: float | None = None) -> None:
        self.since = time.monotonic() + PACE_AFTER_S - YIELD_AFTER_S
        self.deadline = deadline
        """When the request's budget ends (``time.monotonic()``), ``None`` without one."""
        self.paused_until: float | None = None
        self.out = False
        """Set at the deadline: every resolver asking after that answers empty."""
        self.emptied = False
        """Whether one did: the answer is then dropped."""

    def due(self) -> bool:
        """Whether :meth:`turn` has something to do (a pause, or the deadline)."""
        if self.out or self.paused_until is not None:
            return True
        now = time.monotonic()
        if self.deadline is not None and now > self.deadline:
            self.out = True
            return True
        return now - self.since > YIELD_AFTER_S

    def past_deadline(self) -> bool:
        """Whether the request is past its deadline (and marked so)."""
        if not self.out and self.deadline is not None and time.monotonic() > self.deadline:
            self.out = True
        return self.out

    async def turn(self) -> bool:
        """Stand aside if this request has worked long enough; ``True`` when it is past
        its deadline (the caller answers empty)."""
        while True:
            if self.out:
                self.emptied = True
                return True
            now = time.monotonic()
            if self.paused_until is not None:
                if now < self.paused_until:
                    await asyncio.sleep(self.paused_until - now)
                    continue
                self.paused_until, self.since = None, now
            elif now - self.since > YIELD_AFTER_S:
                self.paused_until = now + PAUSE_S
                continue
            return False


class PacedExecution(StrawberryGraphQLCoreExecutionContext):
    """graphql-core's execution, stopped at the request's deadline where the resolvers'
    checks cannot see: completing a large list of objects already resolved (the rows of
    the last batch) is one synchronous loop of graphql-core's. Past the deadline, an
    object is completed with no fields at all (an empty mapping: graphql-core takes it
    as it is), so the rest of the list goes by in microseconds, with no error to
    propagate and no sibling task to cancel (raising there cost 0.3-0.4 s of cancelling
    on a 92,000-value answer); the answer is then dropped. A clock read per object.
    (Pausing there too, completing the object after the pause from a coroutine, doubled
    that answer's time: a task per object.)"""

    def complete_object_value(self, return_type: Any, field_details_list: Any, info: Any,
                              path: Any, result: Any, position_context: Any) -> Any:
        pace = getattr(self.context_value, "pace", None)
        if pace is not None and pace.past_deadline():
            pace.emptied = True
            return {}  # the object, completed with no fields: no error, nothing to cancel
        return super().complete_object_value(return_type, field_details_list, info, path,
                                             result, position_context)
