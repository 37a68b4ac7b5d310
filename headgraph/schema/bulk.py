"""Bulk writes of Arrow tables inside the caller's transaction, per dialect.

Row-by-row inserts run at ~35k rows/s through SQLAlchemy; a registered Arrow table goes
into DuckDB at 15-26M rows/s, and binary COPY into PostgreSQL at ~2M rows/s
(STACK-NOTES.md). Both paths keep the caller's transaction, so a failed ingest rolls
back everything.
"""

from __future__ import annotations

import itertools

import pyarrow as pa
from sqlalchemy import Connection

from headgraph.schema.database import driver_connection

_names = itertools.count()


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
        finally:
            raw.unregister(view)
        return data.num_rows
    if dialect == "postgresql":
        from headgraph.schema.pgcopy import binary_copy_buffer
        from headgraph.schema.tables import metadata

        payload = binary_copy_buffer(metadata.tables[table], data)
        raw = driver_connection(conn)
        cols = ", ".join(f'"{c}"' for c in data.column_names)
        with raw.cursor() as cur, cur.copy(
                f'COPY "{table}" ({cols}) FROM STDIN (FORMAT BINARY)') as copy:
            for start in range(0, len(payload), 1 << 24):
                copy.write(payload[start : start + (1 << 24)])
        return data.num_rows
    raise NotImplementedError(f"bulk insert is not implemented for {dialect}")
