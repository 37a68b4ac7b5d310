"""Turns: a few at a time may use something scarce, and nobody waits for one for ever.

The server has two scarce things. Database sessions: at most :data:`MAX_OPEN_SESSIONS`
requests hold a connection at once (PostgreSQL's pool has 5 + 10; on DuckDB each session
is a thread beside the event loop). Downloads (exports, attribution graphs): at most
:data:`MAX_DOWNLOADS` are produced and sent at once. Each is a :class:`Turns`: waiting
happens on the event loop (never in a worker thread: waiting there for a connection that
only a worker thread can give back deadlocked the pool, every request stalling for its 30
s timeout), and lasts at most ``max_wait_s`` (and a GraphQL request's time left), after
which the request is answered 503 ``SERVER_BUSY`` with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

from headgraph.errors import ServerBusyError

MAX_OPEN_SESSIONS = 6
"""Requests holding a database connection at once: below PostgreSQL's pool (5 + 10
overflow) even with the downloads that may be produced beside them, and about the event
loop's worker threads."""
MAX_DOWNLOADS = 8
"""Downloads (exports, attribution graphs) being produced or sent at once: each producer
may hold a connection, and 6 + 8 stay under PostgreSQL's pool of 15."""
MAX_PRODUCING = 2
"""Downloads being produced at once (writing a graph is CPU work, in threads that share
the interpreter's lock with the event loop: six at once kept /healthz waiting over a
second on two cores); the others wait for their turn, then are sent from their spools."""


class Turns:
    """At most ``n`` holders at once, one :class:`asyncio.Semaphore` per event loop
    (``headgraph query`` runs each request on a loop of its own)."""

    def __init__(self, n: int, what: str) -> None:
        self.n = n
        self.what = what
        self._gate: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None

    def _slots(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._gate is None or self._gate[0] is not loop:
            self._gate = (loop, asyncio.Semaphore(self.n))
        return self._gate[1]

    @property
    def free(self) -> int:
        """Turns free now (for /healthz)."""
        return 0 if self._gate is None else self._gate[1]._value  # noqa: SLF001

    async def take(self, wait_s: float, deadline: float | None = None
                   ) -> Callable[[], None]:
        """Wait for a turn at most ``wait_s`` seconds (and not past ``deadline``, a
        ``time.monotonic()`` instant); returns the function that gives it back, callable
        from any thread. :class:`ServerBusyError` when none came."""
        slots = self._slots()
        if deadline is not None:
            wait_s = min(wait_s, max(0.0, deadline - time.monotonic()))
        if slots.locked():
            try:
                await asyncio.wait_for(slots.acquire(), wait_s)
            except TimeoutError:
                raise ServerBusyError(
                    f"every {self.what} of this server stayed taken for {wait_s:.3g} s "
                    "(max_wait_s); retry after Retry-After seconds.") from None
        else:
            await slots.acquire()
        loop = asyncio.get_running_loop()

        def give_back() -> None:
            try:
                loop.call_soon_threadsafe(slots.release)
            except RuntimeError:  # the loop has closed (headgraph query's): nobody waits
                pass

        return give_back

    @contextlib.asynccontextmanager
    async def hold(self, wait_s: float) -> AsyncIterator[None]:
        """A turn for the block (work that opens and closes its session inside it)."""
        give_back = await self.take(wait_s)
        try:
            yield
        finally:
            give_back()
