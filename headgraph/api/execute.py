"""Run one GraphQL request against the database: the step that the HTTP app and
``headgraph query`` share.

Each request holds one read-only connection from its start to its end; it is handed back
(to PostgreSQL's pool, or DuckDB's held file) as the response leaves.

Serving while an ingest runs (DuckDB)
-------------------------------------
DuckDB lets no process read a file that another holds for writing, and no process write
one that another reads (docs/engines.md). Opening the file costs 10-30 ms, so between
requests the server keeps it open (an idle anchor connection: each request then connects
in about 0.5 ms) for as long as no writer waits. A writer that finds the file held leaves a
``<database>.write-pending`` marker (below); the server sees it within
:data:`WATCH_SECONDS` even when idle, lets go of the file, and takes it again at the
first request after the writer has gone. What a client sees:

* While an ingest writes (from the moment it opens the file read-write until it commits
  and closes it, usually the "write" stage of ``headgraph ingest``, a few seconds): every
  GraphQL request is answered at once with HTTP **503**, a ``Retry-After`` header
  (``retry_after_s``, default 1 s) and the body
  ``{"errors": [{"message": "...", "extensions": {"code": "DATABASE_LOCKED",
  "retryable": true}}]}``; ``/healthz`` answers 200 with ``"database": "locked"``. No
  request ever sees half a model: the ingest writes each model in one transaction.
* As soon as the ingest closes the file, the next request is answered normally and sees
  the new model. Nothing needs restarting.
* The other way round: an ingest that starts while a request is being answered finds the
  file held and fails with ``DATABASE_LOCKED`` (retry it). Requests take milliseconds, so
  a retry succeeds unless the server is answering requests back to back.
* ``headgraph query`` and the Python API (``headgraph.open``) behave the same way.

A writer that finds the file held asks servers to step aside: while a live writer holds
its ``<database>.write-pending`` marker (:mod:`headgraph.schema.pending`: a lock that the
kernel drops when the writer's process ends), a server lets go of the file and opens it
for no new request (each gets the 503 above at once), the requests in flight finish, and
the writer gets its gap. Without it, 32 clients asking back to back keep the file held
without a break and an ingest waits in vain (measured: RELIABILITY.md). A marker left by
a killed ingest, or naming a PID that another process has since taken, never blocks a
server.

On PostgreSQL none of this applies: readers and the writer never wait for each other.

At most :data:`~headgraph.api.turns.MAX_OPEN_SESSIONS` requests hold a connection at
once; the others wait their turn on the event loop (:mod:`headgraph.api.turns`), at most
``max_wait_s`` and never past their deadline (then 503 ``SERVER_BUSY``).

Deadline (``max_query_seconds``, counted from the request's arrival): database calls and
graph work in worker threads are abandoned at the deadline (:class:`AsyncDB`; their
fields answer ``LIMIT_EXCEEDED``); work on the event loop (the executor building a large
answer) is stopped a little later, at ``1.05 x budget + 0.05 s``, and the request is
answered ``{"data": null, "errors": [LIMIT_EXCEEDED]}``. Either way the answer is JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from strawberry.exceptions import MissingQueryError
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.types.graphql import OperationType

from headgraph.api.asyncdb import AsyncDB
from headgraph.api.context import Context
from headgraph.api.errors import request_error
from headgraph.api.heap import Trimmer
from headgraph.api.limits import NUL_MESSAGE, unsafe_string
from headgraph.api.schema import build_schema
from headgraph.api.settings import Settings
from headgraph.api.turns import MAX_DOWNLOADS, MAX_OPEN_SESSIONS, MAX_PRODUCING, Turns
from headgraph.errors import (
    BadInputError,
    DatabaseLockedError,
    HeadgraphError,
    LimitExceededError,
    ServerBusyError,
)
from headgraph.queries.models import database_sizes
from headgraph.queries.session import GraphDB, open_reader
from headgraph.schema.database import resolve_target
from headgraph.schema.pending import writer_waiting

log = logging.getLogger("headgraph.api")
QUERY_ONLY = frozenset({OperationType.QUERY})
MAX_MESSAGE_CHARS = 1000  # an error message echoing a huge name is cut here
WATCH_SECONDS = 0.1  # how often a server holding a DuckDB file looks for a waiting writer
BACKSTOP_SHARE, BACKSTOP_S = 0.05, 0.05  # work on the loop stops at 1.05 x budget + 0.05 s
SIZES_EVERY_S = 10.0  # how often the database's sizes for the cost estimate are read again


@dataclass(frozen=True)
class Outcome:
    """A GraphQL response: HTTP status, JSON body, extra headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    heavy: bool = False  # stopped at its deadline: what it built was dropped

    @property
    def ok(self) -> bool:
        return not self.body.get("errors")


def refusal(exc: HeadgraphError, status: int, headers: dict[str, str] | None = None) -> Outcome:
    """A request refused before execution, in the GraphQL error shape."""
    return Outcome(status, {"errors": [request_error(exc)]}, headers or {})


class Service:
    """The schema, its settings and the database, ready to answer requests.

    The database is opened (and its schema version checked) on first use; a database
    locked by a writer at that moment is retried on the next request.
    """

    def __init__(self, db: str | os.PathLike[str] | None, settings: Settings | None = None,
                 queries: Sequence[type] = ()) -> None:
        self.db = db
        self.target = resolve_target(db)
        self.settings = settings or Settings()
        self.schema = build_schema(self.settings, queries)
        self.turns = Turns(MAX_OPEN_SESSIONS, "database turn")
        self.downloads = Turns(MAX_DOWNLOADS, "download slot")
        self.producing = Turns(MAX_PRODUCING, "download producer's turn")
        self.trimmer = Trimmer()  # memory back to the system after a large answer
        self._reader: GraphDB | None = None
        self._opening = threading.Lock()
        self._closed = threading.Event()
        self._watcher: threading.Thread | None = None
        self._sizes: tuple[float, dict[str, int]] | None = None

    def reader(self) -> GraphDB:
        """The read-only handle (opened once; it holds the file only per request)."""
        with self._opening:
            if self._reader is None:
                self._reader = open_reader(
                    self.db, release=True,
                    statement_timeout_s=self.settings.max_query_seconds or None)
            return self._reader

    def close(self) -> None:
        self._closed.set()
        if self._reader is not None:
            self._reader.close()

    def busy(self, exc: HeadgraphError) -> Outcome:
        """503 + ``Retry-After`` for a locked database or a server without a free turn."""
        return refusal(exc, 503, {"Retry-After": str(self.settings.retry_after_s)})

    @contextlib.contextmanager
    def open_session(self, max_rows: int | None = None) -> Iterator[GraphDB]:
        """One unit of work on the database, for every route: refused with
        :class:`DatabaseLockedError` while a writer waits; the file is held between units
        (:meth:`GraphDB.hold`) and a watcher lets go of it when a writer comes."""
        self.check_writer()
        reader = self.reader()
        reader.hold()
        self._watch(reader)
        with reader.session(max_rows=max_rows) as db:
            yield db

    def _watch(self, reader: GraphDB) -> None:
        """Start (once) the thread that unholds the file when a writer's marker appears,
        so an idle server never keeps a writer waiting."""
        if self._watcher is not None or self.target.path is None:
            return
        with self._opening:
            if self._watcher is not None:
                return

            def watch() -> None:
                while not self._closed.wait(WATCH_SECONDS):
                    if reader.held and self.writer_waiting():
                        reader.unhold()

            self._watcher = threading.Thread(target=watch, name="headgraph-writer-watch",
                                             daemon=True)
            self._watcher.start()

    def writer_waiting(self) -> bool:
        """Whether a live writer has left its ``<file>.write-pending`` marker."""
        return self.target.path is not None and writer_waiting(self.target.path)

    @contextlib.asynccontextmanager
    async def session_gate(self, wait_s: float | None = None) -> AsyncIterator[None]:
        """Wait (on the event loop, never in a worker thread, at most ``wait_s``, default
        ``max_wait_s``) for one of the database turns, for work that opens and closes its
        session inside the block. :class:`ServerBusyError` when none came."""
        async with self.turns.hold(self.settings.max_wait_s if wait_s is None else wait_s):
            yield

    def check_writer(self) -> None:
        """:class:`DatabaseLockedError` while a live writer waits for the DuckDB file (its
        ``<file>.write-pending`` marker): no new request opens the file until it has
        written (and the file is let go). Called before every request opens the file."""
        if self.writer_waiting():
            if self._reader is not None:
                self._reader.unhold()
            raise DatabaseLockedError(f"{self.target}: an ingest is waiting to write the "
                                      "database; requests are refused until it has written. "
                                      "Retry after Retry-After seconds.")

    async def execute(self, query: object, variables: object = None,
                      operation_name: object = None, *, query_only: bool = False,
                      start: float | None = None) -> Outcome:
        """Answer one request (``start``: when it arrived, ``time.monotonic()``; default
        now); never raises for anything a client sent. Its error messages name no file
        path or URL of the database (:meth:`public`)."""
        return self.public(await self._execute(
            query, variables, operation_name, query_only=query_only,
            start=time.monotonic() if start is None else start))

    def public(self, outcome: Outcome) -> Outcome:
        """``outcome`` with each error message fit to leave the server: the database's path
        or URL (which the queries layer puts in some messages) replaced by "the database",
        and at most :data:`MAX_MESSAGE_CHARS` characters."""
        errors = outcome.body.get("errors")
        if not errors:
            return outcome
        where = str(self.target)
        cleaned = []
        for error in errors:
            message = str(error.get("message", "")).replace(where, "the database")
            if len(message) > MAX_MESSAGE_CHARS:
                message = message[:MAX_MESSAGE_CHARS] + "... (cut)"
            cleaned.append({**error, "message": message})
        return Outcome(outcome.status, {**outcome.body, "errors": cleaned}, outcome.headers,
                       outcome.heavy)

    async def _execute(self, query: object, variables: object, operation_name: object, *,
                       query_only: bool, start: float) -> Outcome:
        try:
            query, variables, operation_name = _checked(query, variables, operation_name)
        except BadInputError as exc:
            return refusal(exc, 400)
        budget = self.settings.max_query_seconds or None
        deadline = None if budget is None else start + budget
        try:
            give_back = await self.turns.take(self.settings.max_wait_s, deadline)
        except ServerBusyError as exc:
            return self.busy(exc)
        stack = ExitStack()
        stack.callback(give_back)
        try:
            if self._quick_open():  # the DuckDB file is held open: ~0.1 ms
                session = self._open_session(stack)
            else:  # may open the file (10-30 ms) or reach PostgreSQL (a network wait)
                session = await self._open_in_time(stack, deadline)
        except LimitExceededError as exc:
            return Outcome(200, {"data": None, "errors": [request_error(exc)]})
        except DatabaseLockedError as exc:
            await asyncio.to_thread(stack.close)
            return self.busy(exc)
        except HeadgraphError as exc:
            await asyncio.to_thread(stack.close)
            return refusal(exc, 500)
        except BaseException:
            await asyncio.to_thread(stack.close)
            raise
        db = AsyncDB(session, budget, start)
        try:
            return await self._run(db, query, variables, operation_name, query_only)
        finally:
            # a call abandoned at the deadline still uses the connection: its thread
            # closes the session when it returns; otherwise close it now
            if not db.close_when_idle(stack.close):
                loop = asyncio.get_running_loop()
                if self._quick_open():  # held DuckDB file: at the loop's next turn, once
                    loop.call_soon(_close_quietly, stack)  # the answer has left
                else:  # PostgreSQL's rollback is a round trip: in a worker thread, unwaited
                    loop.run_in_executor(None, _close_quietly, stack)

    async def _run(self, db: AsyncDB, query: str, variables: dict[str, Any] | None,
                   operation_name: str | None, query_only: bool) -> Outcome:
        context = Context(db=db, settings=self.settings,
                          database_sizes=await self._database_sizes(db))
        context.pace.deadline = db.deadline
        work = self.schema.execute(query, variable_values=variables, context_value=context,
                                   operation_name=operation_name,
                                   allowed_operation_types=QUERY_ONLY if query_only else None)
        try:
            if db.deadline is None:
                result = await work
            else:  # at the deadline the resolvers still to come answer empty (pacing.py)
                left = db.deadline - time.monotonic()
                stop = asyncio.get_running_loop().call_later(
                    max(0.0, left), setattr, context.pace, "out", True)
                grace = BACKSTOP_SHARE * self.settings.max_query_seconds + BACKSTOP_S
                try:
                    async with asyncio.timeout(left + grace):
                        result = await work
                finally:
                    stop.cancel()
        except TimeoutError:  # work on the event loop ran past the deadline
            return self._over_time(db)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the server is stopping this request: let it
            log.warning("a resolver's cancellation reached the request; answered as timed out")
            return self._over_time(db)
        except MissingQueryError:
            return refusal(BadInputError("the request has no query."), 400)
        except InvalidOperationTypeError as exc:
            return refusal(BadInputError(f"{exc.operation_type.value} operations are not "
                                         "allowed here; this API is read-only."), 405)
        except CannotGetOperationTypeError:
            return refusal(BadInputError(f"no operation named {operation_name!r} in the "
                                         "document."), 400)
        if context.pace.emptied:  # stopped while building its answer: one error, none of it
            return self._over_time(db)
        body: dict[str, Any] = {"data": result.data}
        if result.errors:
            body["errors"] = [e.formatted for e in result.errors]
        return Outcome(200, body)

    async def _database_sizes(self, db: AsyncDB) -> dict[str, int] | None:
        """The database's sizes (for the cost estimate), read again every
        :data:`SIZES_EVERY_S` seconds; ``None`` when they cannot be read now."""
        now = time.monotonic()
        if self._sizes is None or now - self._sizes[0] > SIZES_EVERY_S:
            try:
                self._sizes = (now, await db.lookup(database_sizes))
            except HeadgraphError:
                return None if self._sizes is None else self._sizes[1]
        return self._sizes[1]

    def _over_time(self, db: AsyncDB) -> Outcome:
        db.timed_out = True  # nothing more starts on this session
        db.interrupt()
        exc = LimitExceededError(
            f"this request ran past this server's limit of {self.settings.max_query_seconds:g}"
            " s (max_query_seconds) and was stopped. Ask for less (lower maxLength, depth, "
            "top or first; a higher minScore; fewer fields).")
        return Outcome(200, {"data": None, "errors": [request_error(exc)]}, heavy=True)

    def _quick_open(self) -> bool:
        """Whether opening a session is a cheap step to take on the event loop rather than
        in a worker thread: only when the DuckDB file is held open (a PostgreSQL checkout
        may wait on the network, which must never hold the event loop)."""
        reader = self._reader
        return reader is not None and reader.held

    async def _open_in_time(self, stack: ExitStack, deadline: float | None) -> GraphDB:
        """Open the session in a worker thread, waiting at most until ``deadline``: a
        PostgreSQL server that stopped answering never answers the pool's ping. Past it,
        :class:`LimitExceededError`; the thread closes the session (and gives the turn
        back) whenever it gets one."""
        opening = asyncio.ensure_future(asyncio.to_thread(self._open_session, stack))
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        done, _ = await asyncio.wait({opening}, timeout=left)
        if opening in done:
            return opening.result()

        def close_late(task: asyncio.Future) -> None:
            if task.cancelled() or task.exception() is None:
                asyncio.get_running_loop().run_in_executor(None, _close_quietly, stack)
            else:
                _close_quietly(stack)

        opening.add_done_callback(close_late)
        raise LimitExceededError(
            f"the database did not answer within this server's limit of "
            f"{self.settings.max_query_seconds:g} s (max_query_seconds); retry later.")

    def _open_session(self, stack: ExitStack) -> GraphDB:
        return stack.enter_context(self.open_session(max_rows=self.settings.max_rows))

    def execute_sync(self, query: object, variables: object = None,
                     operation_name: object = None) -> Outcome:
        """:meth:`execute` from synchronous code (the CLI); not inside a running loop."""
        return asyncio.run(self.execute(query, variables, operation_name))


def _close_quietly(stack: ExitStack) -> None:
    """Close a request's session from a loop callback, where an exception would reach only
    asyncio's handler: log it (the request has been answered)."""
    try:
        stack.close()
    except Exception:
        log.exception("closing a request's database session failed")


def _checked(query: object, variables: object,
             operation_name: object) -> tuple[str, dict[str, Any] | None, str | None]:
    if not isinstance(query, str) or not query.strip():
        raise BadInputError("the request needs a non-empty string `query`.")
    if variables is not None and not isinstance(variables, dict):
        raise BadInputError("`variables` must be a JSON object (name: value).")
    if operation_name is not None and not isinstance(operation_name, str):
        raise BadInputError("`operationName` must be a string.")
    _check_strings(variables)
    return query, variables, operation_name


def _check_strings(variables: dict[str, Any] | None) -> None:
    """Refuse variables holding a string that :func:`~headgraph.api.limits.unsafe_string`
    flags (walked without recursion: JSON nesting depth is the client's)."""
    stack: list[Any] = [variables]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            if unsafe_string(value):
                raise BadInputError(f"variables: {NUL_MESSAGE}")
        elif isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
