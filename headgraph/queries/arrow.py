"""Edges in bulk as Arrow: the filter every bulk reader shares, and the fetch itself.

Graph views (millions of edges for a path search) and exports read far more rows than a
GraphQL page, so they skip row objects: DuckDB hands Arrow over directly (millions of rows
in tenths of a second, or batch by batch); other dialects stream rows in chunks.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
from sqlalchemy import ColumnElement, Select, and_

from headgraph.queries.session import GraphDB
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


def _duckdb_sql(db: GraphDB, stmt: Select) -> tuple[str, list]:
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


def fetch_arrow(db: GraphDB, stmt: Select) -> pa.Table:
    """All rows of ``stmt`` as one Arrow table."""
    if db.target.dialect == "duckdb":
        query, params = _duckdb_sql(db, stmt)
        with db.engine.connect() as conn:
            return conn.connection.dbapi_connection.sql(query, params=params).to_arrow_table()
    batches = list(arrow_batches(db, stmt))
    if batches:
        return pa.Table.from_batches(batches)
    return pa.table({c.name: pa.array([]) for c in stmt.selected_columns})
