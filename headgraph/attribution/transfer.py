"""What ``headgraph copy`` carries of attribution graphs: :class:`GraphCarrier`, which
:mod:`headgraph.maintenance` hands to :func:`headgraph.schema.transfer.copy_models`.

Attribution graphs are tied to a model by *name* (``attribution_graphs.model``, ``metadata.scan`` at import), so a name
with graphs but no stored model can be copied too: its graphs alone. Each graph goes
with its nodes, both link tables and its stored default view, rows in the order the
importer stored them (links by target height, target and file position; out-links by
source and file position; the default view's by edge score), so zone maps serve the copy
as they serve the original, under a new ``graph_id``. Columns that the
source predates (:data:`~headgraph.schema.tables.ADDED_COLUMNS`) arrive as NULL, and the
copy is read on the slower path the source was. A slug already in the destination is
refused (``GRAPH_EXISTS``) unless ``replace``, which removes the old graph in the same
transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from sqlalchemy import (
    BigInteger,
    Boolean,
    Connection,
    Double,
    Integer,
    SmallInteger,
    delete,
    insert,
    inspect,
    literal_column,
    select,
)

from headgraph.errors import GraphExistsError
from headgraph.schema import tables as t
from headgraph.schema.bulk import bulk_insert
from headgraph.schema.database import DatabaseTarget, driver_connection

GRAPH_PARTS = (
    (t.attribution_nodes, ("nid",)),
    (t.attribution_links, ("target_height", "target", "idx")),
    (t.attribution_out_links, ("source", "idx")),
    (t.attribution_pruned_links, ("-edge_score", "idx")),
)
"""The tables of a graph and the order the importer stores their rows in."""


@dataclass(frozen=True)
class StoredGraph:
    """One graph as read from the source: its row (less ``graph_id``) and its tables."""

    row: dict[str, Any]
    parts: dict[str, pa.Table]


def graph_models(conn: Connection) -> set[str]:
    """The model names that attribution graphs of this database explain."""
    if not inspect(conn).has_table("attribution_graphs"):
        return set()
    return {r[0] for r in conn.execute(select(t.attribution_graphs.c.model).distinct())}


def read_graphs(conn: Connection, model: str) -> list[StoredGraph]:
    """Every attribution graph of ``model``, whole."""
    if not inspect(conn).has_table("attribution_graphs"):
        return []
    g = t.attribution_graphs.c
    rows = conn.execute(select(literal_column("*")).select_from(t.attribution_graphs)
                        .where(g.model == model).order_by(g.slug)).mappings().all()
    seen = inspect(conn)  # an older file may lack a table (the default view's) or columns
    present = {table.name: {c["name"] for c in seen.get_columns(table.name)}
               for table, _ in GRAPH_PARTS if seen.has_table(table.name)}
    out = []
    for row in rows:
        parts = {table.name: _read_part(conn, table, order, present[table.name],
                                        row["graph_id"])
                 for table, order in GRAPH_PARTS if table.name in present}
        out.append(StoredGraph({k: v for k, v in row.items() if k != "graph_id"}, parts))
    return out


def _read_part(conn: Connection, table: t.Table, order: tuple[str, ...], present: set[str],
               graph_id: int) -> pa.Table:
    cols = [c for c in table.columns if c.name != "graph_id" and c.name in present]
    keys = [table.c[k.lstrip("-")].desc() if k.startswith("-") else table.c[k]
            for k in order if k.lstrip("-") in present]
    stmt = select(*cols).where(table.c.graph_id == graph_id).order_by(*keys)
    if conn.dialect.name == "duckdb":
        compiled = stmt.compile(dialect=conn.dialect)
        params = [compiled.params[k] for k in compiled.positiontup or []]
        return driver_connection(conn).sql(str(compiled), params=params).to_arrow_table()
    rows = conn.execute(stmt).all()
    return pa.table({c.name: pa.array([r[i] for r in rows], _arrow_type(c.type))
                     for i, c in enumerate(cols)})


def _arrow_type(sql_type: Any) -> pa.DataType:
    for cls, typ in ((SmallInteger, pa.int16()), (BigInteger, pa.int64()),
                     (Integer, pa.int32()), (Double, pa.float64()), (Boolean, pa.bool_())):
        if isinstance(sql_type, cls):
            return typ
    return pa.string()


def write_graphs(conn: Connection, target: DatabaseTarget, graphs: list[StoredGraph],
                 replace: bool) -> dict[str, int]:
    """Insert ``graphs`` in the caller's transaction (new graph ids); row counts by
    table. A stored (model, slug) is refused unless ``replace``."""
    counts = {"attribution_graphs": 0, **{table.name: 0 for table, _ in GRAPH_PARTS}}
    if not graphs:
        return counts
    t.metadata.create_all(conn, tables=list(t.ATTRIBUTION_TABLES), checkfirst=True)
    t.add_missing_columns(conn)
    g = t.attribution_graphs.c
    for graph in graphs:
        slug, model = graph.row["slug"], graph.row["model"]
        old = conn.execute(select(g.graph_id).where(g.slug == slug, g.model == model)).first()
        if old is not None and not replace:
            raise GraphExistsError(f"{target}: model {model!r} already has an attribution graph "
                                   f"with slug {slug!r}; pass --replace to overwrite it.")
        if old is not None:
            for table in (t.attribution_graphs, *(p for p, _ in GRAPH_PARTS)):
                conn.execute(delete(table).where(table.c.graph_id == old[0]))
        values = {k: v for k, v in graph.row.items() if k in t.attribution_graphs.c}
        graph_id = conn.execute(insert(t.attribution_graphs).values(**values)
                                .returning(g.graph_id)).scalar_one()
        counts["attribution_graphs"] += 1
        for name, part in graph.parts.items():
            ids = pa.array([graph_id] * part.num_rows, pa.int32())
            counts[name] += bulk_insert(conn, name, part.append_column(
                "graph_id", ids))
    return counts


class GraphCarrier:
    """The attribution graphs of a model name, read from the source and written in the
    model's transaction in the destination (a :class:`~headgraph.schema.transfer.Carrier`)."""

    def names(self, conn: Connection) -> set[str]:
        return graph_models(conn)

    def read(self, conn: Connection, name: str) -> list[StoredGraph]:
        return read_graphs(conn, name)

    def write(self, conn: Connection, target: DatabaseTarget, payload: list[StoredGraph],
              replace: bool) -> dict[str, int]:
        return write_graphs(conn, target, payload, replace)
