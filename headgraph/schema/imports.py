"""What the importers of other tools' files share: Arrow bulk writes inside the caller's
transaction in a chosen stored order (:func:`insert_arrow`), and the report of what one
import stored (:class:`ImportReport`).

:func:`headgraph.schema.bulk.bulk_insert` writes in the order given; the attribution
tables want rows stored sorted by their lookup key (DuckDB's zone maps then skip every
block a lookup does not need; docs/engines.md, "DuckDB"), and hold 8-byte floats, which
the PostgreSQL binary COPY encoder of ``schema/pgcopy.py`` does not know.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
from sqlalchemy import BigInteger, Column, Connection, Double, MetaData, Table

from headgraph.errors import HeadgraphError
from headgraph.schema.database import driver_connection

_views = itertools.count()

Progress = Callable[[str, int, int], None]
"""Called as ``progress(stage, done, total)`` while an import runs."""


@dataclass(frozen=True)
class ImportReport:
    """What one import stored: ``kind`` (attribution-graph, circuit), its ``name`` (a
    slug, or model/tool/task), row counts and seconds per stage."""

    kind: str
    name: str
    database: str
    rows: dict[str, int]
    timings: dict[str, float] = field(default_factory=dict)
    replaced: bool = False
    notes: tuple[str, ...] = ()  # what a user should know of how the file was read


def insert_arrow(conn: Connection, table: Table, data: pa.Table,
                 order_by: tuple[str, ...] = (), constants: dict[str, int] | None = None
                 ) -> int:
    """Insert ``data`` into ``table`` in the caller's transaction, stored in ``order_by``
    order on DuckDB (zone maps then skip what a lookup does not need), with each column of
    ``constants`` set to its value in every row.

    DuckDB: one ``INSERT ... SELECT ... ORDER BY`` of the registered Arrow table, the
    constants as parameters (a 16M-row table needs no 64 MB column of one graph id).
    PostgreSQL: :func:`~headgraph.schema.bulk.bulk_insert`'s binary COPY; an 8-byte float
    travels as the 8-byte integer of the same bits (binary COPY sends both as 8 bytes in
    network order), since that COPY encoder knows REAL but not DOUBLE PRECISION; a
    nullable boolean travels as 0/1 bytes.
    """
    constants = constants or {}
    if data.num_rows == 0:
        return 0
    if conn.dialect.name == "duckdb":
        raw = driver_connection(conn)
        view = f"_headgraph_import_{next(_views)}"
        raw.register(view, data)
        try:
            cols = ", ".join(f'"{c}"' for c in (*constants, *data.column_names))
            values = ", ".join(["?"] * len(constants) + [f'"{c}"' for c in data.column_names])
            order = f" ORDER BY {', '.join(order_by)}" if order_by else ""
            raw.execute(f'INSERT INTO "{table.name}" ({cols}) SELECT {values} FROM "{view}"'
                        f"{order}", list(constants.values()))
        finally:
            raw.unregister(view)
        return data.num_rows
    if conn.dialect.name == "postgresql":
        for name, value in constants.items():
            data = data.append_column(name, pa.array(np.full(data.num_rows, value, np.int64)
                                                     ).cast(_arrow_int(table.c[name].type)))
        return _copy_postgres(conn, table, data)
    raise HeadgraphError(f"imports are not implemented for {conn.dialect.name}.")


def _arrow_int(sql_type: object) -> pa.DataType:
    return pa.int64() if isinstance(sql_type, BigInteger) else pa.int32()


def _copy_postgres(conn: Connection, table: Table, data: pa.Table) -> int:
    from headgraph.schema.pgcopy import binary_copy_buffer

    stand_in = Table(table.name, MetaData(), *[
        Column(c.name, BigInteger if isinstance(c.type, Double) else c.type)
        for c in table.columns if c.name in data.column_names])
    for i, name in enumerate(data.column_names):
        if isinstance(table.c[name].type, Double):
            bits = data.column(name).combine_chunks()
            values = bits.to_numpy(zero_copy_only=False).astype(np.float64).view(np.int64)
            data = data.set_column(i, name, pa.array(values, mask=bits.is_null().to_numpy(
                zero_copy_only=False)))
    payload = binary_copy_buffer(stand_in, data)
    cols = ", ".join(f'"{c}"' for c in data.column_names)
    raw = driver_connection(conn)
    with raw.cursor() as cur, cur.copy(
            f'COPY "{table.name}" ({cols}) FROM STDIN (FORMAT BINARY)') as copy:
        for start in range(0, len(payload), 1 << 24):
            copy.write(payload[start:start + (1 << 24)])
    return data.num_rows

