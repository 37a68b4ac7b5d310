"""``headgraph copy``: move models between databases of either kind, whole and exact.

Each model travels with its nodes, edges, evidence (``node_scores``, ``edge_scores``),
virtual heads, the null baselines its edges use, its imported circuits and the attribution
graphs that explain it (:mod:`headgraph.schema.transfer_graphs`), and lands in the
destination in one transaction (a new ``model_id`` there), so a reader of the destination
sees all of it or none. A name that exists in the destination is refused unless
``replace``; then the old model is removed in the same transaction. A name that only
attribution graphs carry (no stored model) copies those graphs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa
from sqlalchemy import Connection, insert, select
from sqlalchemy.exc import DBAPIError

from headgraph.errors import ModelExistsError, ModelNotFoundError
from headgraph.schema import tables as t
from headgraph.schema.bulk import bulk_insert
from headgraph.schema.database import (
    DatabaseTarget,
    check_version,
    create_db_engine,
    ensure_schema,
    raise_db_error,
    resolve_target,
    schema_state,
)
from headgraph.schema.partitions import delete_model, insert_model_edges, sweep_partitions
from headgraph.schema.transfer_graphs import (
    StoredGraph,
    graph_models,
    read_circuits,
    read_graphs,
    write_circuits,
    write_graphs,
)

CHILD_TABLES = (t.nodes, t.edges, t.node_scores, t.edge_scores, t.virtual_heads)


@dataclass(frozen=True)
class CopyResult:
    name: str
    rows: dict[str, int]
    replaced: bool


def read_arrow(conn: Connection, table: t.Table, model_id: int) -> pa.Table:
    """One model's rows of a child table as Arrow (DuckDB natively, others via rows)."""
    cols = [c.name for c in table.columns if c.name != "model_id"]
    stmt = select(*[table.c[c] for c in cols]).where(table.c.model_id == model_id)
    if conn.dialect.name == "duckdb":
        compiled = stmt.compile(dialect=conn.dialect)
        params = [compiled.params[k] for k in compiled.positiontup or []]
        return conn.connection.dbapi_connection.sql(str(compiled), params=params
                                                    ).to_arrow_table()
    rows = conn.execute(stmt).all()
    arrays = {c: [r[i] for r in rows] for i, c in enumerate(cols)}
    schema = pa.schema([(c, _arrow_type(table.c[c].type)) for c in cols])
    return pa.table(arrays, schema=schema)


def _arrow_type(sql_type) -> pa.DataType:
    from sqlalchemy import REAL, BigInteger, Integer, SmallInteger

    for cls, typ in ((SmallInteger, pa.int16()), (BigInteger, pa.int64()),
                     (Integer, pa.int32()), (REAL, pa.float32())):
        if isinstance(sql_type, cls):
            return typ
    return pa.string()


def copy_models(
    source: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    names: list[str] | None = None,
    *,
    replace: bool = False,
    progress: Callable[[str], None] | None = None,
) -> list[CopyResult]:
    """Copy ``names`` (default: every model, and every model name attribution graphs
    explain) from ``source`` to ``dest``."""
    src_t, dst_t = resolve_target(source), resolve_target(dest)
    if src_t.url == dst_t.url:
        raise ModelExistsError("source and destination are the same database.")
    src = create_db_engine(src_t, read_only=True)
    dst = create_db_engine(dst_t, read_only=False)
    results = []
    try:
        with src.connect() as sconn:
            check_version(schema_state(sconn), src_t)
            stored = {r.name: r for r in sconn.execute(select(t.models)).mappings()}
            explained = graph_models(sconn)
            wanted = names or sorted(set(stored) | explained)
            missing = [n for n in wanted if n not in stored and n not in explained]
            if missing:
                raise ModelNotFoundError(f"{src_t}: no model named {', '.join(map(repr, missing))}; "
                                         f"stored: {', '.join(sorted(stored)) or 'none'}.")
            nulls = [dict(r) for r in sconn.execute(select(t.baselines)).mappings()]
            for name in wanted:
                graphs = read_graphs(sconn, name)
                if name not in stored:
                    results.append(_write_graphs(dst, dst_t, name, graphs, replace))
                    continue
                row = dict(stored[name])
                data = {tb.name: read_arrow(sconn, tb, row["model_id"]) for tb in CHILD_TABLES}
                circuits = read_circuits(sconn, row["model_id"])
                results.append(_write(dst, dst_t, row, data, nulls, replace, circuits, graphs))
                if progress:
                    progress(name)
    except DBAPIError as exc:
        raise_db_error(dst_t, exc, read_only=False)
    finally:
        src.dispose()
        dst.dispose()
    return results


def _write(engine, target: DatabaseTarget, row: dict, data: dict[str, pa.Table],
           nulls: list[dict], replace: bool, circuits: list[dict],
           graphs: list[StoredGraph]) -> CopyResult:
    with engine.begin() as conn:
        ensure_schema(conn, target)
        old = conn.execute(select(t.models.c.model_id).where(t.models.c.name == row["name"])
                           ).first()
        if old is not None and not replace:
            raise ModelExistsError(f"{target}: a model named {row['name']!r} is already stored; "
                                   "pass --replace to overwrite it.")
        if old is not None:
            delete_model(conn, old[0])
        have = {r[0] for r in conn.execute(select(t.baselines.c.key))}
        fresh = [n for n in nulls if n["key"] not in have]
        if fresh:
            conn.execute(insert(t.baselines), fresh)
        values = {k: v for k, v in row.items() if k != "model_id"}
        model_id = conn.execute(insert(t.models).values(**values)
                                .returning(t.models.c.model_id)).scalar_one()
        counts = {}
        for name, table in data.items():
            ids = pa.array([model_id] * table.num_rows, pa.int32())
            table = table.append_column("model_id", ids)
            counts[name] = (insert_model_edges(conn, model_id, table) if name == "edges"
                            else bulk_insert(conn, name, table))
        counts["circuits"] = write_circuits(conn, model_id, circuits)
        counts.update(write_graphs(conn, target, graphs, replace))
    sweep_partitions(engine)  # PostgreSQL: drop the partition a replace left empty
    return CopyResult(name=row["name"], rows=counts, replaced=old is not None)


def _write_graphs(engine, target: DatabaseTarget, name: str, graphs: list[StoredGraph],
                  replace: bool) -> CopyResult:
    """The attribution graphs of a model name that has no stored model, in one
    transaction."""
    with engine.begin() as conn:
        ensure_schema(conn, target)
        counts = write_graphs(conn, target, graphs, replace)
    return CopyResult(name=name, rows=counts, replaced=False)
