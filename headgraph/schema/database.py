"""Opening a headgraph database: DuckDB file or SQLAlchemy URL, schema creation and the
version check, and the raw driver connection for bulk writes.

DuckDB locking (docs/engines.md): while one process holds the file read-write no other
process can open it at all; several read-only processes can share it. headgraph opens
the file read-write only for the length of one write transaction (an ingest), and the
server opens it read-only; see README "Ingest while serving".
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
from sqlalchemy import Connection, Engine, create_engine, event, inspect, select
from sqlalchemy.exc import DBAPIError, DisconnectionError

from headgraph.errors import DatabaseError, DatabaseLockedError, SchemaVersionError
from headgraph.schema.pending import PendingMarker
from headgraph.schema.tables import SCHEMA_VERSION, add_missing_columns, meta, metadata

DEFAULT_DB = "headgraph.duckdb"


@dataclass(frozen=True)
class DatabaseTarget:
    """Where a database lives: a SQLAlchemy URL plus, for DuckDB, the file path."""

    url: str
    path: Path | None  # DuckDB file, None for server databases

    @property
    def dialect(self) -> str:
        return self.url.split(":", 1)[0].split("+", 1)[0]

    def __str__(self) -> str:
        return str(self.path) if self.path is not None else _redact(self.url)


def _redact(url: str) -> str:
    """Hide a password in a URL for messages."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}@{host}"
    return url


def resolve_target(db: str | os.PathLike[str] | None) -> DatabaseTarget:
    """A DuckDB path or a SQLAlchemy URL (``postgresql+psycopg://...``); ``None`` reads
    ``HEADGRAPH_DB`` and falls back to ``headgraph.duckdb`` in the working directory."""
    raw = os.fspath(db) if db is not None else os.environ.get("HEADGRAPH_DB", DEFAULT_DB)
    if "://" in raw:
        if raw.startswith("duckdb:///"):
            path = Path(raw[len("duckdb:///") :])
            return DatabaseTarget(url=raw, path=path)
        return DatabaseTarget(url=raw, path=None)
    path = Path(raw).expanduser().resolve()
    return DatabaseTarget(url=f"duckdb:///{path}", path=path)


def _is_lock_error(exc: BaseException) -> bool:
    text = str(exc)
    return "Could not set lock" in text or "Conflicting lock" in text


def create_db_engine(target: DatabaseTarget, *, read_only: bool,
                     statement_timeout_s: float | None = None) -> Engine:
    """An engine for ``target``; DuckDB read-only opens share the file with other readers.

    A PostgreSQL reader gives up connecting after :data:`CONNECT_TIMEOUT_S` rather than
    hang on a server that does not answer, and with ``statement_timeout_s`` the server
    ends any statement running longer (the API passes its ``max_query_seconds``)."""
    if target.dialect == "duckdb":
        if target.path is not None and read_only and not target.path.exists():
            raise DatabaseError(
                f"{target}: no database file there. Create one with "
                f"`headgraph ingest SOURCE --db {target}`."
            )
        if target.path is not None and not target.path.parent.exists():
            raise DatabaseError(f"{target}: the folder {target.path.parent} does not exist.")
        if read_only or target.path is None:
            return cache_statements(create_engine(target.url,
                                                  connect_args={"read_only": read_only}))
        return _duckdb_writer_engine(target.path)
    if read_only and target.dialect == "postgresql":
        # every transaction of a reader is READ ONLY: the server cannot write, by construction;
        # and REPEATABLE READ: all statements of a unit of work (a GraphQL request) read one
        # snapshot, so a model replaced between its "models" and "edges" statements is
        # seen whole, old or new (READ COMMITTED takes a snapshot per statement)
        return ping_when_idle(wait_briefly_for_locks(create_engine(
            target.url, isolation_level="REPEATABLE READ", pool_timeout=POOL_TIMEOUT_S,
            connect_args={"connect_timeout": CONNECT_TIMEOUT_S},
            execution_options={"postgresql_readonly": True}), statement_timeout_s))
    return create_engine(target.url, pool_pre_ping=True)


READER_LOCK_TIMEOUT = "1s"
"""How long a reader's statement waits for a table lock before failing (PostgreSQL)."""


CONNECT_TIMEOUT_S = 10
"""Seconds a PostgreSQL reader waits for a new connection to be made."""
POOL_TIMEOUT_S = 10
"""Seconds a PostgreSQL reader waits for a pooled connection (the API's turns keep its
sessions below the pool's size, so this is a backstop)."""


def wait_briefly_for_locks(engine: Engine, statement_timeout_s: float | None = None
                           ) -> Engine:
    """Set :data:`READER_LOCK_TIMEOUT` on each new connection of a PostgreSQL reader.

    headgraph's writers never take a lock that makes a reader wait (schema/partitions.py),
    but another tool's DDL can (``ALTER TABLE``, ``VACUUM FULL``: ACCESS EXCLUSIVE), and
    a statement waiting for minutes would hold one of the API's few database turns. With
    the timeout the statement fails within a second instead (``lock_timeout``; set once
    per connection and committed, so the pool's rollbacks keep it). ``statement_timeout_s``
    is set the same way (``statement_timeout``, whole milliseconds)."""
    timeout_ms = math.ceil(statement_timeout_s * 1000) if statement_timeout_s else 0

    @event.listens_for(engine, "connect")
    def _lock_timeout(dbapi_connection: Any, record: Any) -> None:
        with dbapi_connection.cursor() as cursor:
            cursor.execute(f"SET lock_timeout = '{READER_LOCK_TIMEOUT}'")
            if timeout_ms:
                cursor.execute(f"SET statement_timeout = {timeout_ms}")
        dbapi_connection.commit()

    return engine


PING_AFTER_S = 1.0
"""A pooled PostgreSQL connection of a reader idle longer than this is pinged before use."""


def ping_when_idle(engine: Engine) -> Engine:
    """``pool_pre_ping`` for connections that sat idle over :data:`PING_AFTER_S` only.

    Why: a ping is one more round trip (PostgreSQL wakes, then the server) on every
    request; under load it cost ~0.1 ms of a 1.7 ms request and more at the tail. A
    connection used moments ago is almost surely alive; one idle for a while may have
    been closed by the server, a restart or a firewall, and is pinged and, if dead,
    replaced before the request sees it (the pool retries on ``DisconnectionError``). A
    connection that dies while busy fails its one request, and SQLAlchemy then drops the
    pool's older connections.
    """
    @event.listens_for(engine, "checkin")
    def _idle_from(dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        since = record.info.pop("idle_since", None)
        if since is None or time.monotonic() - since < PING_AFTER_S:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error:
            alive = False
        if not alive:
            raise DisconnectionError("a pooled connection was closed while idle")

    return engine


ROW_GROUP_SIZE = 16_384
"""Rows per DuckDB row group in what headgraph writes (DuckDB's default is 122,880).

A lookup such as "feeders of L30H3" reads the one row group whose min/max brackets the
target: a smaller group is fewer rows to scan (gpt2-xl feeders top-10: 0.77 ms instead of
1.0 ms in DuckDB), at ~3% more file. DuckDB takes the size when a file is ATTACHed, not
from the file, so writers attach it to an in-memory database with the option and ``USE``
it (same tables, same names)."""


def cache_statements(engine: Engine) -> Engine:
    """Let SQLAlchemy cache compiled statements on a DuckDB engine.

    duckdb-engine does not opt in to SQLAlchemy's statement cache (it has not audited its
    compiler for it), so every execution compiled its statement again: ~0.2 ms of a 1 ms
    feeders lookup. Its compiler is PostgreSQL's, which caches; headgraph's statements are
    plain Core selects and inserts (the whole test suite runs with the cache on)."""
    engine.dialect._supports_statement_cache = True  # the memoized property's value
    return engine


def _duckdb_writer_engine(path: Path) -> Engine:
    engine = cache_statements(create_engine("duckdb:///:memory:"))
    quoted = str(path).replace("'", "''")

    @event.listens_for(engine, "connect", insert=True)
    def attach(dbapi_connection: Any, _record: Any) -> None:
        try:
            dbapi_connection.execute(
                f"ATTACH '{quoted}' AS headgraph (ROW_GROUP_SIZE {ROW_GROUP_SIZE})")
            dbapi_connection.execute("USE headgraph")
        except duckdb.Error as exc:  # the pool wraps driver errors raised while connecting
            dbapi_connection.close()
            raise DBAPIError(None, None, exc) from exc

    return engine


def connect_error(target: DatabaseTarget, exc: BaseException, *, read_only: bool) -> DatabaseError:
    """Turn a driver error on connect into one clear message."""
    if _is_lock_error(exc):
        mode = "read" if read_only else "write to"
        return DatabaseLockedError(
            f"{target}: cannot {mode} the database: another process has it open for writing "
            "(an ingest, or a Python session). Wait for it to finish, or stop it, and retry."
        )
    return DatabaseError(f"{target}: the database refused the operation ({exc}).")


def schema_state(conn: Connection) -> int | None:
    """The stored schema version, ``None`` for an empty database; refuses foreign files."""
    names = set(inspect(conn).get_table_names())
    if not names:
        return None
    if "meta" not in names:
        raise SchemaVersionError(
            "this database has tables but no headgraph 'meta' table: it is not a headgraph "
            "database. Use a new file."
        )
    row = conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).first()
    if row is None:
        raise SchemaVersionError("this headgraph database has no schema_version; it is damaged.")
    return int(row[0])


def check_version(version: int | None, target: DatabaseTarget) -> None:
    if version is not None and version != SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{target}: database schema version {version}, but this headgraph reads version "
            f"{SCHEMA_VERSION}. Use the headgraph release that wrote it, or re-ingest into a "
            "new file."
        )


def ensure_schema(conn: Connection, target: DatabaseTarget) -> None:
    """Create the schema in an empty database (inside the caller's transaction) or check
    that an existing one has this version."""
    version = schema_state(conn)
    if version is None:
        metadata.create_all(conn)
        conn.execute(meta.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
        return
    check_version(version, target)
    metadata.create_all(conn)  # tables added within this version (checkfirst: only missing)
    add_missing_columns(conn)  # and columns (ADDED_COLUMNS): NULL in the rows stored before


def driver_connection(conn: Connection) -> Any:
    """The raw DBAPI connection under a SQLAlchemy connection, in its transaction."""
    return conn.connection.dbapi_connection


def raise_db_error(target: DatabaseTarget, exc: DBAPIError, *, read_only: bool) -> None:
    raise connect_error(target, exc.orig or exc, read_only=read_only) from None


def _holder(exc: BaseException) -> str:
    """Who holds a DuckDB file, from its lock error ("... held in /usr/bin/python3 (PID
    123) ..."), or ``""``."""
    text = str(exc)
    if "(PID" not in text:
        return ""
    try:
        return "PID " + text.split("(PID", 1)[1].split(")", 1)[0].strip()
    except IndexError:
        return ""


@contextmanager
def begin_writing(engine: Engine, target: DatabaseTarget, *, wait_s: float | None = None
                  ) -> Iterator[Connection]:
    """``engine.begin()``, retrying for up to ``wait_s`` seconds (default
    ``$HEADGRAPH_LOCK_WAIT`` or 10) while another process holds a DuckDB file (a server
    answering a request holds it for milliseconds), then failing with
    :class:`DatabaseLockedError`. While it waits and writes it leaves
    ``<file>.write-pending`` (:class:`PendingMarker`): a headgraph server then answers new
    requests 503 + Retry-After and lets the ones in flight finish, so a writer gets in
    even under back-to-back load."""
    if wait_s is None:
        wait_s = float(os.environ.get("HEADGRAPH_LOCK_WAIT", "10"))
    deadline = time.monotonic() + wait_s
    delay = 0.02
    marker = PendingMarker(target.path) if target.path is not None else None
    try:
        while True:
            try:
                conn = engine.connect()
                break
            except DBAPIError as exc:
                reason = exc.orig or exc
                if not _is_lock_error(reason):
                    raise connect_error(target, reason, read_only=False) from None
                if time.monotonic() + delay > deadline:
                    holder = _holder(reason)
                    raise DatabaseLockedError(
                        f"{target}: waited {wait_s:g} s to write the database, but another "
                        f"process kept it open{f' ({holder})' if holder else ''}: a "
                        "headgraph server still answering a request or a download, a "
                        "notebook (headgraph.open), another ingest, or the duckdb CLI. "
                        "Retry when it is done, stop it, or wait longer with "
                        "$HEADGRAPH_LOCK_WAIT.") from None
                if marker is not None:
                    marker.take()  # ask a busy server to pause new requests
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
        with conn, conn.begin():
            yield conn
    finally:
        if marker is not None:
            marker.release()
