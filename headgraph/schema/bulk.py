"""Bulk writes of Arrow tables inside the caller's transaction, per dialect.

Row-by-row inserts run at ~35k rows/s through SQLAlchemy; a registered Arrow table goes
into DuckDB at 15-26M rows/s, and binary COPY into PostgreSQL at ~3M rows/s into a table
without indexes (docs/engines.md). Both paths keep the caller's transaction, so a failed
ingest rolls back everything.
"""

from __future__ import annotations

import contextlib
import itertools

import pyarrow as pa
from sqlalchemy import Connection, Table

from headgraph.schema.database import driver_connection

_names = itertools.count()


def copy_arrow(conn: Connection, name: str, table: Table, data: pa.Table, *,
               freeze: bool = False) -> int:
    """PostgreSQL: binary COPY of ``data`` into table ``name`` (its columns typed as
    ``table``'s), chunk by chunk as the buffer is built. ``freeze`` writes the rows frozen
    and all-visible; PostgreSQL allows it only for a table created (or truncated) in this
    transaction. A writer thread sends each chunk while numpy builds the next."""
    from psycopg.copy import QueuedLibpqWriter

    from headgraph.schema.pgcopy import binary_copy_chunks

    cols = ", ".join(f'"{c}"' for c in data.column_names)
    options = "FORMAT BINARY, FREEZE" if freeze else "FORMAT BINARY"
    raw = driver_connection(conn)
    with raw.cursor() as cur, cur.copy(f'COPY "{name}" ({cols}) FROM STDIN ({options})',
                                       writer=QueuedLibpqWriter(cur)) as copy:
        for chunk in binary_copy_chunks(table, data):
            copy.write(chunk)
    return data.num_rows


def bulk_insert(conn: Connection, table: str, data: pa.Table) -> int:
    """Insert ``data`` (columns named as the table's) into ``table``; returns rows written."""
    if data.num_rows == 0:
        return 0
    dialect = conn.dialect.name
    if dialect == "duckdb":
        raw = driver_connection(conn)
        view = f"_headgraph_bulk_{next(_names)}"
        raw.register(view, data)
        try:
            cols = ", ".join(f'"{c}"' for c in data.column_names)
            raw.execute(f'INSERT INTO "{table}" ({cols}) SELECT {cols} FROM "{view}"')
        except BaseException:
            with contextlib.suppress(Exception):  # the transaction is aborted: only the
                raw.unregister(view)  # first error says what went wrong (a full disk...)
            raise
        raw.unregister(view)
        return data.num_rows
    if dialect == "postgresql":
        from headgraph.schema.tables import metadata

        return copy_arrow(conn, table, metadata.tables[table], data)
    raise NotImplementedError(f"bulk insert is not implemented for {dialect}")
