"""A read-only handle on a headgraph database, shared by the API, the CLI and notebooks.

The DuckDB file is opened read-only, so any number of readers (several servers, a
notebook) can share it. DuckDB lets no writer in while any reader holds the file, and no
reader in while a writer holds it (docs/engines.md), so a reader chooses how long it holds:

* ``open_reader(db)`` pools its connections: fast, but the file stays held (an ingest
  into it fails with ``DATABASE_LOCKED``) until :meth:`GraphDB.close`. Right for a
  short-lived command such as ``headgraph models``.
* ``open_reader(db, release=True)`` holds the file only for one unit of work: one
  :meth:`GraphDB.session` (a GraphQL request) or one ``rows()`` call. Between units the
  file is free, so an ingest can run beside a server or a notebook. Opening costs about
  10-30 ms per unit on this machine.
* A released reader can :meth:`GraphDB.hold` the file between units (an idle anchor
  connection keeps DuckDB's database instance open), so each unit connects in about 0.5 ms;
  :meth:`GraphDB.unhold` lets go, and the file is free once the units in flight end. The API
  server holds while no writer waits and lets go when one does (headgraph.api.execute).
  While held the file cannot change (no writer gets in), so a lookup that every request
  repeats (a model's row by name) is remembered for the hold, in :attr:`GraphDB.memo`,
  and forgotten when it ends. A model's nodes need no hold: they never change while the
  model is stored (:attr:`GraphDB.lasting`, on every backend).

Errors from the driver become :class:`~headgraph.errors.DatabaseError` (a held file
becomes :class:`~headgraph.errors.DatabaseLockedError`, code ``DATABASE_LOCKED``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, Executable, RowMapping, create_engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from headgraph.errors import DatabaseError, LimitExceededError
from headgraph.queries.lasting import Lasting
from headgraph.schema.database import (
    DatabaseTarget,
    cache_statements,
    check_version,
    connect_error,
    create_db_engine,
    resolve_target,
    schema_state,
)


class GraphDB:
    """Read-only access: ``rows(statement)`` returns mappings.

    A handle made by :meth:`session` is bound to one connection and may carry a row
    budget (``max_rows``): the total number of rows its statements may return before
    :class:`~headgraph.errors.LimitExceededError` stops the unit of work. The budget is
    enforced while fetching, so an oversized result is never read whole.
    """

    def __init__(self, target: DatabaseTarget, engine: Engine, *,
                 connection: Connection | None = None, max_rows: int | None = None,
                 memo: dict[Any, Any] | None = None, lasting: Lasting | None = None) -> None:
        self.target = target
        self.engine = engine
        self._conn = connection
        self._max_rows = max_rows
        self._rows_left = max_rows
        self._anchor: Connection | None = None
        self._anchor_lock = threading.Lock()
        self._memo = memo
        self.lasting = lasting if lasting is not None else Lasting()
        """Rows that stay true while their model is stored (a model's nodes), shared by
        this reader's sessions: :class:`~headgraph.queries.lasting.Lasting`."""

    @property
    def connection(self) -> Connection | None:
        """The connection of this unit of work (a :meth:`session`), ``None`` outside one."""
        return self._conn

    @property
    def memo(self) -> dict[Any, Any] | None:
        """A cache for lookups, valid while the DuckDB file is held (``None`` otherwise:
        another process may write between two units of work)."""
        return self._memo

    def rows(self, statement: Executable, params: dict[str, Any] | None = None, *,
             budgeted: bool = True) -> Sequence[RowMapping]:
        """The statement's rows. ``budgeted=False`` leaves them out of the row budget: for
        bounded reads into :attr:`memo` that later requests share."""
        try:
            if self._conn is not None:
                return self._fetch(self._conn, statement, params, budgeted)
            with self.engine.connect() as conn:
                return self._fetch(conn, statement, params, budgeted)
        except DBAPIError as exc:
            raise connect_error(self.target, exc.orig or exc, read_only=True) from None

    def _fetch(self, conn: Connection, statement: Executable,
               params: dict[str, Any] | None, budgeted: bool) -> Sequence[RowMapping]:
        result = conn.execute(statement, params or {}).mappings()
        if self._rows_left is None or not budgeted:
            return result.all()
        rows = result.fetchmany(self._rows_left + 1)
        result.close()
        if len(rows) > self._rows_left:
            raise LimitExceededError(
                f"this request reads more than {self._max_rows} rows from the database "
                "(max_rows). Ask for less: lower top/first, filter by kind or layer, or "
                "select fewer nodes."
            )
        self._rows_left -= len(rows)
        return rows

    @contextmanager
    def session(self, *, max_rows: int | None = None) -> Iterator[GraphDB]:
        """One connection for one unit of work, closed (file released) at the end.

        Raises :class:`~headgraph.errors.DatabaseLockedError` at once when a writer
        holds the file, before any statement runs.
        """
        if self._conn is not None:
            yield self
            return
        try:
            conn = self.engine.connect()
        except DBAPIError as exc:
            raise connect_error(self.target, exc.orig or exc, read_only=True) from None
        try:
            yield GraphDB(self.target, self.engine, connection=conn, max_rows=max_rows,
                          memo=self._memo, lasting=self.lasting)
        finally:
            conn.close()

    def hold(self) -> None:
        """Keep a DuckDB file open between units of work (no-op elsewhere, or when held).

        Raises :class:`~headgraph.errors.DatabaseLockedError` when a writer has the file.
        """
        if self.target.dialect != "duckdb" or self._conn is not None:
            return
        with self._anchor_lock:
            if self._anchor is None:
                try:
                    self._anchor = self.engine.connect()
                except DBAPIError as exc:
                    raise connect_error(self.target, exc.orig or exc, read_only=True) from None
                self._memo = {}

    def unhold(self) -> None:
        """Stop holding the file: it is released when the units in flight end."""
        with self._anchor_lock:
            anchor, self._anchor = self._anchor, None
            self._memo = None
        if anchor is not None:
            anchor.close()

    @property
    def held(self) -> bool:
        return self._anchor is not None

    def idle_connections(self) -> int:
        """Connections waiting in the pool (0 where there is no pool, as on DuckDB)."""
        checkedin = getattr(self.engine.pool, "checkedin", None)
        return checkedin() if callable(checkedin) else 0

    def close(self) -> None:
        self.unhold()
        self.engine.dispose()

    def __enter__(self) -> GraphDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _reader_engine(target: DatabaseTarget, release: bool,
                   statement_timeout_s: float | None = None) -> Engine:
    # also checks that the file exists
    engine = create_db_engine(target, read_only=True, statement_timeout_s=statement_timeout_s)
    if not release or target.dialect != "duckdb":
        return engine  # server databases pool connections; they hold no file lock
    engine.dispose()
    # Same URL and driver options as create_db_engine, without a pool: closing a
    # connection closes the DuckDB database and drops the file lock.
    return cache_statements(create_engine(target.url, connect_args={"read_only": True},
                                          poolclass=NullPool))


def open_reader(db: str | os.PathLike[str] | None = None, *, release: bool = False,
                statement_timeout_s: float | None = None) -> GraphDB:
    """Open ``db`` (DuckDB path or URL; default ``$HEADGRAPH_DB`` / ``headgraph.duckdb``)
    read-only and check its schema version.

    ``release=True`` holds the DuckDB file only during each unit of work (see the module
    docstring); the API server and the Python API use it. ``statement_timeout_s``: on
    PostgreSQL, the server ends a statement that runs longer (the API's
    ``max_query_seconds``); the API interrupts DuckDB statements itself.
    """
    target = resolve_target(db)
    engine = _reader_engine(target, release, statement_timeout_s)
    try:
        with engine.connect() as conn:
            version = schema_state(conn)
    except DBAPIError as exc:
        engine.dispose()
        raise connect_error(target, exc.orig or exc, read_only=True) from None
    except Exception:
        engine.dispose()
        raise
    if version is None:
        engine.dispose()
        raise DatabaseError(
            f"{target}: the database is empty. Ingest a model first: "
            f"`headgraph ingest toy --db {target}`."
        )
    check_version(version, target)
    return GraphDB(target, engine)
