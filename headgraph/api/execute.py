"""Run one GraphQL request against the database: the step that the HTTP app and
``headgraph query`` share.

Each request holds one read-only connection from its start to its end and closes it
before the response leaves, so the file is held only while a request runs.

Serving while an ingest runs (DuckDB)
-------------------------------------
DuckDB lets no process read a file that another holds for writing, and no process write
one that another reads (STACK-NOTES.md). headgraph's server therefore holds the file
only *during* each request (about 10-20 ms to open it, plus the query), never between
requests. What a client sees:

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

On PostgreSQL none of this applies: readers and the writer never wait for each other.
"""

from __future__ import annotations

import asyncio
import os
import threading
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from strawberry.exceptions import MissingQueryError
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.types.graphql import OperationType

from headgraph.api.context import AsyncDB, Context
from headgraph.api.errors import request_error
from headgraph.api.schema import build_schema
from headgraph.api.settings import Settings
from headgraph.errors import BadInputError, DatabaseLockedError, HeadgraphError
from headgraph.queries.session import GraphDB, open_reader
from headgraph.schema.database import resolve_target

QUERY_ONLY = frozenset({OperationType.QUERY})


@dataclass(frozen=True)
class Outcome:
    """A GraphQL response: HTTP status, JSON body, extra headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.body.get("errors")


def refusal(exc: HeadgraphError, status: int, headers: dict[str, str] | None = None) -> Outcome:
    """A request refused before execution, in the GraphQL error shape."""
    return Outcome(status, {"errors": [request_error(exc)]}, headers or {})


class Executor:
    """The schema, its settings and the database, ready to answer requests.

    The database is opened (and its schema version checked) on first use; a database
    locked by a writer at that moment is retried on the next request.
    """

    def __init__(self, db: str | os.PathLike[str] | None, settings: Settings | None = None) -> None:
        self.db = db
        self.target = resolve_target(db)
        self.settings = settings or Settings()
        self.schema = build_schema(self.settings)
        self._reader: GraphDB | None = None
        self._opening = threading.Lock()

    def reader(self) -> GraphDB:
        """The read-only handle (opened once; it holds the file only per request)."""
        with self._opening:
            if self._reader is None:
                self._reader = open_reader(self.db, release=True)
            return self._reader

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()

    async def execute(self, query: object, variables: object = None,
                      operation_name: object = None, *, query_only: bool = False) -> Outcome:
        """Answer one request; never raises for anything a client sent."""
        try:
            query, variables, operation_name = _checked(query, variables, operation_name)
        except BadInputError as exc:
            return refusal(exc, 400)
        stack = ExitStack()
        try:
            session = await asyncio.to_thread(self._open_session, stack)
        except DatabaseLockedError as exc:
            return refusal(exc, 503, {"Retry-After": str(self.settings.retry_after_s)})
        except HeadgraphError as exc:
            return refusal(exc, 500)
        try:
            context = Context(db=AsyncDB(session), settings=self.settings)
            allowed = QUERY_ONLY if query_only else None
            result = await self.schema.execute(query, variable_values=variables,
                                               context_value=context,
                                               operation_name=operation_name,
                                               allowed_operation_types=allowed)
        except MissingQueryError:
            return refusal(BadInputError("the request has no query."), 400)
        except InvalidOperationTypeError as exc:
            return refusal(BadInputError(f"{exc.operation_type.value} operations are not "
                                         "allowed here; this API is read-only."), 405)
        except CannotGetOperationTypeError:
            return refusal(BadInputError(f"no operation named {operation_name!r} in the "
                                         "document."), 400)
        finally:
            await asyncio.to_thread(stack.close)
        body: dict[str, Any] = {"data": result.data}
        if result.errors:
            body["errors"] = [e.formatted for e in result.errors]
        return Outcome(200, body)

    def _open_session(self, stack: ExitStack) -> GraphDB:
        return stack.enter_context(self.reader().session(max_rows=self.settings.max_rows))

    def execute_sync(self, query: object, variables: object = None,
                     operation_name: object = None) -> Outcome:
        """:meth:`execute` from synchronous code (the CLI); not inside a running loop."""
        return asyncio.run(self.execute(query, variables, operation_name))


def _checked(query: object, variables: object,
             operation_name: object) -> tuple[str, dict[str, Any] | None, str | None]:
    if not isinstance(query, str) or not query.strip():
        raise BadInputError("the request needs a non-empty string `query`.")
    if variables is not None and not isinstance(variables, dict):
        raise BadInputError("`variables` must be a JSON object (name: value).")
    if operation_name is not None and not isinstance(operation_name, str):
        raise BadInputError("`operationName` must be a string.")
    return query, variables, operation_name
