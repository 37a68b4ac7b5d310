"""Rows in bulk as Arrow: the edge filter every bulk reader shares, and the fetch itself.

Graph views (millions of edges for a path search), exports and attribution-graph views
read far more rows than a GraphQL page, so they skip row objects: DuckDB hands Arrow over
directly (millions of rows in tenths of a second, or batch by batch); other dialects give
rows, turned into columns at once.

:func:`fetch_arrow` runs on the unit of work's connection when ``db`` is a
:meth:`GraphDB.session <headgraph.queries.session.GraphDB.session>` (the DuckDB file is
then opened once per request, not once per statement), on a new one otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import duckdb
import pyarrow as pa
from sqlalchemy import ColumnElement, Connection, Select, TextClause, and_, inspect
from sqlalchemy.exc import DBAPIError

from headgraph.queries.session import GraphDB
from headgraph.schema.database import connect_error, driver_connection
from headgraph.schema.tables import edges, score_at_least


def edge_filter(model_id: int, kinds: tuple[str, ...], min_score: float | None = None,
                top_per_target: int | None = None) -> ColumnElement[bool]:
    """Edges of one model, of some kinds, above a score, among each target's top-k."""
    cond = [edges.c.model_id == model_id, edges.c.kind.in_(kinds)]
    if min_score is not None:
        cond.append(score_at_least(min_score))
    if top_per_target is not None:
        cond.append(edges.c.rank <= top_per_target)
    return and_(*cond)


def _duckdb_sql(db: GraphDB, stmt: Select | TextClause) -> tuple[str, list]:
    compiled = stmt.compile(dialect=db.engine.dialect,
                            compile_kwargs={"render_postcompile": True})
    return str(compiled), [compiled.params[k] for k in compiled.positiontup or []]


def arrow_batches(db: GraphDB, stmt: Select, size: int = 65536) -> Iterator[pa.RecordBatch]:
    """The rows of ``stmt`` in Arrow batches of about ``size`` rows, streamed."""
    names = [c.name for c in stmt.selected_columns]
    if db.target.dialect == "duckdb":
        query, params = _duckdb_sql(db, stmt)
        with db.engine.connect() as conn:
            reader = conn.connection.dbapi_connection.sql(query, params=params
                                                         ).to_arrow_reader(size)
            try:
                yield from reader
            finally:  # a consumer that stops early must not leave the result open
                reader.close()
        return
    with db.engine.connect().execution_options(stream_results=True) as conn:
        result = conn.execute(stmt)
        while chunk := result.fetchmany(size):
            cols = list(zip(*chunk, strict=True))
            yield pa.record_batch([pa.array(c) for c in cols], names=names)


@contextmanager
def connection(db: GraphDB) -> Iterator[Connection]:
    """The connection of ``db``'s unit of work (a :meth:`GraphDB.session`), else a new one
    for this statement."""
    conn = db.connection
    if conn is not None:
        yield conn
        return
    with db.engine.connect() as conn:
        yield conn


def fetch_arrow(db: GraphDB, stmt: Select | TextClause) -> pa.Table:
    """All rows of ``stmt`` as one Arrow table (on the session's connection, if any);
    driver errors become :class:`~headgraph.errors.DatabaseError`."""
    try:
        with connection(db) as conn:
            if conn.dialect.name == "duckdb":
                query, params = _duckdb_sql(db, stmt)
                return driver_connection(conn).sql(query, params=params).to_arrow_table()
            result = conn.execute(stmt)
            names = list(result.keys())
            rows = result.fetchall()
    except DBAPIError as exc:
        raise connect_error(db.target, exc.orig or exc, read_only=True) from None
    except duckdb.Error as exc:  # the driver's own call, outside SQLAlchemy's wrapping
        raise connect_error(db.target, exc, read_only=True) from None
    cols = list(zip(*rows, strict=True)) if rows else [[] for _ in names]
    return pa.table({n: pa.array(c) for n, c in zip(names, cols, strict=True)})


def has_table(db: GraphDB, name: str) -> bool:
    """Whether the database has table ``name`` (files older than the attribution and
    circuit tables do not have them)."""
    try:
        with connection(db) as conn:
            return bool(inspect(conn).has_table(name))
    except DBAPIError as exc:
        raise connect_error(db.target, exc.orig or exc, read_only=True) from None
