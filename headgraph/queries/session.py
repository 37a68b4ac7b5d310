"""A read-only handle on a headgraph database, shared by the API, the CLI and notebooks.

The DuckDB file is opened read-only, so any number of readers (several servers, a
notebook) can share it; only an ingest takes it read-write, briefly. Each call checks
out a pooled connection for one statement.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine, Executable, RowMapping
from sqlalchemy.exc import DBAPIError

from headgraph.errors import DatabaseError
from headgraph.schema.database import (
    DatabaseTarget,
    check_version,
    connect_error,
    create_db_engine,
    resolve_target,
    schema_state,
)


class GraphDB:
    """Read-only access: ``rows(statement)`` returns mappings; errors become
    :class:`~headgraph.errors.DatabaseError` with a clear message."""

    def __init__(self, target: DatabaseTarget, engine: Engine) -> None:
        self.target = target
        self.engine = engine

    def rows(self, statement: Executable, params: dict[str, Any] | None = None) -> Sequence[RowMapping]:
        try:
            with self.engine.connect() as conn:
                return conn.execute(statement, params or {}).mappings().all()
        except DBAPIError as exc:
            raise connect_error(self.target, exc.orig or exc, read_only=True) from None

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> GraphDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_reader(db: str | os.PathLike[str] | None = None) -> GraphDB:
    """Open ``db`` (DuckDB path or URL; default ``$HEADGRAPH_DB`` / ``headgraph.duckdb``)
    read-only and check its schema version."""
    target = resolve_target(db)
    engine = create_db_engine(target, read_only=True)
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
