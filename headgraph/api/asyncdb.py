"""One request's database session, called from async code: :class:`AsyncDB`.

A request holds one read-only connection from start to end (see
:mod:`headgraph.api.execute` for why), so everything it reads is one consistent view.
Resolvers are async (DataLoaders batch on the event loop) but the driver is blocking:
:class:`AsyncDB` runs each queries-layer call in a worker thread, one at a time, because
a DuckDB connection serves one thread at a time; on DuckDB, bounded lookups run on the
event loop (:meth:`AsyncDB.lookup`), where they cost less than the thread switch. Nothing
that waits on a network runs on the loop: a PostgreSQL server that stalls (SIGSTOP, a
lost network) would stop every client of the server with it, so on PostgreSQL every call
goes to a worker thread.

Time budget (``max_query_seconds``): a call still running at the request's deadline is
abandoned, not killed (Python cannot stop a thread): its resolver, and every call after
it, raises ``LIMIT_EXCEEDED``, the response leaves at once, the running statement is
interrupted where the driver allows it (DuckDB ``interrupt()``, PostgreSQL cancel, from
a thread of its own: a cancel opens a connection, which a stalled server never answers;
PostgreSQL also ends the statement itself at ``statement_timeout``, set to the same
budget), and the request's connection is closed by the worker thread as soon as the call
returns (:meth:`AsyncDB.close_when_idle`). Until then the request's database turn stays
taken, so abandoned work is bounded by the number of turns.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Concatenate, ParamSpec, TypeVar

from headgraph.errors import LimitExceededError
from headgraph.queries.session import GraphDB

P = ParamSpec("P")
CANCEL_TIMEOUT_S = 5.0  # how long a PostgreSQL cancel request may take to connect
T = TypeVar("T")


class AsyncDB:
    """One request's :class:`GraphDB` session, callable from async code.

    ``await db.run(feeders_of, model_id, names, "K")`` runs ``feeders_of(session, ...)``.
    ``budget_s`` (``max_query_seconds``; 0 or ``None``: no limit) bounds the wall time of
    all calls together, counted from ``start`` (``time.monotonic()``; default now: the
    service passes the moment the request arrived).
    """

    def __init__(self, session: GraphDB, budget_s: float | None = None,
                 start: float | None = None) -> None:
        self.session = session
        self._lock = asyncio.Lock()
        self._budget = budget_s or None
        begun = time.monotonic() if start is None else start
        self._deadline = None if self._budget is None else begun + self._budget
        self._inline_ok = session.target.dialect == "duckdb"  # in-process: nothing to stall
        self._state = threading.Lock()
        self._running = False  # a call owns the connection (from run() until its thread ends)
        self._started = False
        self._on_idle: Callable[[], None] | None = None
        self._pending: asyncio.Future | None = None
        self.timed_out = False

    async def run(self, fn: Callable[Concatenate[GraphDB, P], T], *args: P.args,
                  **kwargs: P.kwargs) -> T:
        """``fn(session, *args, **kwargs)`` in a worker thread, abandoned at the deadline."""
        return await self._run(False, fn, *args, **kwargs)

    async def lookup(self, fn: Callable[Concatenate[GraphDB, P], T], *args: P.args,
                     **kwargs: P.kwargs) -> T:
        """``fn(session, *args, **kwargs)`` on the event loop, for a bounded index lookup
        (a model or node by name) on DuckDB: it answers in about 0.1 ms, less than the two
        thread switches :meth:`run` costs, and under load each switch is one more wait for
        a core. It cannot be abandoned at the deadline, which is why only lookups whose
        size the caller has bounded come here. On PostgreSQL it is :meth:`run`: a
        statement there waits on the network, which must never hold the event loop."""
        return await self._run(self._inline_ok, fn, *args, **kwargs)

    async def _run(self, inline: bool, fn: Callable[..., T], *args: object,
                   **kwargs: object) -> T:
        async with self._lock:
            if self._pending is not None and not self._pending.done():
                # a call whose caller stopped waiting (a sibling field failed) still runs:
                # the connection serves one thread at a time, so wait for it
                await asyncio.wait({self._pending}, timeout=self._left())
            if self._left() == 0.0 or (self._pending is not None and not self._pending.done()):
                self.timed_out = True
            if self.timed_out:
                raise self.over()
            with self._state:
                self._running, self._started = True, False
            if inline:
                return self._call(fn, *args, **kwargs)
            task = asyncio.ensure_future(asyncio.to_thread(self._call, fn, *args, **kwargs))
            self._pending = task
            try:
                done, _ = await asyncio.wait({task}, timeout=self._left())
            except asyncio.CancelledError:  # the thread runs on alone; see _settle
                task.add_done_callback(self._settle)
                raise
            if task in done:
                return task.result()
            self.timed_out = True  # the thread still holds the connection: nothing more runs
            task.add_done_callback(self._settle)
            self.interrupt()
            raise self.over()

    @property
    def deadline(self) -> float | None:
        """When the budget ends (``time.monotonic()``), ``None`` without one."""
        return self._deadline

    def interrupt(self) -> None:
        """Ask the driver to stop the running statement: on the loop for DuckDB (an
        in-process flag), from a thread of its own elsewhere (a cancel request is a new
        connection, which a stalled server may never answer)."""
        if self._inline_ok:
            _interrupt(self.session)
        else:
            threading.Thread(target=_interrupt, args=(self.session,), daemon=True,
                             name="headgraph-interrupt").start()

    def _left(self) -> float | None:
        """Seconds left of the budget (0.0 when spent), ``None`` without a budget."""
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - time.monotonic())

    def _call(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        with self._state:
            self._started = True
        try:
            return fn(self.session, *args, **kwargs)
        finally:
            self._idle()

    def _idle(self) -> None:
        with self._state:
            self._running = False
            on_idle, self._on_idle = self._on_idle, None
        if on_idle is not None:  # the request has answered already: release its session
            on_idle()

    def _settle(self, task: asyncio.Future) -> None:
        """A call nobody waits for has ended: read its outcome (no "never retrieved"
        warning); if it was cancelled before its thread began (the loop is closing),
        release the session here."""
        if task.cancelled():
            with self._state:
                never_ran = not self._started
            if never_ran:
                self._idle()
        elif task.exception() is not None:
            log.info("a call nobody waited for ended with %s", type(task.exception()).__name__)

    def close_when_idle(self, close: Callable[[], None]) -> bool:
        """Hand ``close`` to the call still running (abandoned at the deadline, or by a
        request that stopped waiting for it), which runs it in its thread when it
        returns. False when no call runs: close it yourself."""
        with self._state:
            if not self._running:
                return False
            self._on_idle = close
            return True

    def over(self) -> LimitExceededError:
        """The error of a request past its budget."""
        return LimitExceededError(
            f"this request ran past this server's limit of {self._budget:g} s "
            "(max_query_seconds) and was stopped; this field and the ones after it have no "
            "answer. Ask for less (lower maxLength, depth, top or first; a higher minScore).")


log = logging.getLogger("headgraph.api")


def _interrupt(session: GraphDB) -> None:
    """Ask the driver to stop the statement running on the session's connection, if any
    (best effort: DuckDB ``interrupt()``, psycopg ``cancel_safe()``)."""
    conn = getattr(session, "_conn", None)  # the session's one SQLAlchemy Connection
    try:
        raw = conn.connection.dbapi_connection if conn is not None else None
        if raw is None:
            return
        for name in ("interrupt", "cancel_safe", "cancel"):
            stop = getattr(raw, name, None)
            if callable(stop):
                if name == "cancel_safe":
                    stop(timeout=CANCEL_TIMEOUT_S)
                else:
                    stop()
                return
    except Exception as exc:  # the connection may be closing: nothing to stop
        log.debug("could not interrupt a timed-out statement: %s", exc)
