"""``headgraph copy``: move models between databases of either kind, whole and exact.

Each model travels with its nodes, edges, evidence (``node_scores``, ``edge_scores``),
virtual heads, the null baselines its edges use, its imported circuits, and what each
feature's :class:`Carrier` holds for its name (the attribution graphs that explain it:
:class:`headgraph.attribution.transfer.GraphCarrier`; :mod:`headgraph.maintenance` passes
every feature's), and lands in the destination in one transaction (a new ``model_id``
there), so a reader of the destination sees all of it or none. A name that exists in the
destination is refused unless ``replace``; then the old model is removed in the same
transaction. A name that only a carrier holds data for (no stored model) copies that.

Circuits (``circuits``) hang on a ``model_id`` and get the new one; their edges are
``edge_scores`` rows, which travel with the model already.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import pyarrow as pa
from sqlalchemy import Connection, insert, inspect, select
from sqlalchemy.exc import DBAPIError

from headgraph.errors import DatabaseError, ModelExistsError, ModelNotFoundError
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

CHILD_TABLES = (t.nodes, t.edges, t.node_scores, t.edge_scores, t.evidence_agreement,
                t.virtual_heads, t.null_calibration)
LATER_TABLES = ("evidence_agreement", "null_calibration")
"""Child tables added within schema version 1: an older source may not have them."""


class Carrier(Protocol):
    """What a feature adds to a copy: rows tied to a model *name*, read from the source
    and written in the model's transaction in the destination."""

    def names(self, conn: Connection) -> set[str]:
        """Model names this feature holds rows for (with or without a stored model)."""
        ...

    def read(self, conn: Connection, name: str) -> Any:
        """Everything it holds for ``name`` in the source."""
        ...

    def write(self, conn: Connection, target: DatabaseTarget, payload: Any,
              replace: bool) -> dict[str, int]:
        """Insert ``payload`` in the caller's transaction; row counts by table."""
        ...


@dataclass(frozen=True)
class CopyResult:
    name: str
    rows: dict[str, int]
    replaced: bool


def present_columns(conn: Connection, table: t.Table) -> list[str]:
    """The columns of ``table`` the database has (all but an :data:`~headgraph.schema.tables.
    ADDED_COLUMNS` column a file written before it lacks; none if the table is missing)."""
    seen = inspect(conn)
    if not seen.has_table(table.name):
        return []
    have = {c["name"] for c in seen.get_columns(table.name)}
    return [c.name for c in table.columns if c.name in have]


def read_arrow(conn: Connection, table: t.Table, model_id: int) -> pa.Table:
    """One model's rows of a child table as Arrow (DuckDB natively, others via rows); the
    columns the source has (a column it lacks is left out, and lands NULL in the copy)."""
    cols = [c for c in present_columns(conn, table) if c != "model_id"]
    if not cols:
        return pa.table({})
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
    from sqlalchemy import REAL, BigInteger, Double, Integer, SmallInteger

    for cls, typ in ((SmallInteger, pa.int16()), (BigInteger, pa.int64()),
                     (Integer, pa.int32()), (REAL, pa.float32()), (Double, pa.float64())):
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
    carriers: Sequence[Carrier] = (),
) -> list[CopyResult]:
    """Copy ``names`` (default: every model, and every model name a carrier holds rows
    for) from ``source`` to ``dest``."""
    src_t, dst_t = resolve_target(source), resolve_target(dest)
    if src_t.url == dst_t.url:
        raise ModelExistsError("source and destination are the same database.")
    src = create_db_engine(src_t, read_only=True)
    dst = create_db_engine(dst_t, read_only=False)
    results = []
    try:
        with src.connect() as sconn:
            check_version(schema_state(sconn), src_t)
            models_cols = [t.models.c[c] for c in present_columns(sconn, t.models)]
            stored = {r.name: r for r in sconn.execute(select(*models_cols)).mappings()}
            explained = set().union(*(c.names(sconn) for c in carriers))
            wanted = names or sorted(set(stored) | explained)
            missing = [n for n in wanted if n not in stored and n not in explained]
            if missing:
                raise ModelNotFoundError(f"{src_t}: no model named {', '.join(map(repr, missing))}; "
                                         f"stored: {', '.join(sorted(stored)) or 'none'}.")
            nulls = [dict(r) for r in sconn.execute(select(t.baselines)).mappings()]
            for name in wanted:
                extras = [(c, c.read(sconn, name)) for c in carriers]
                try:
                    if name not in stored:
                        results.append(_write_extras(dst, dst_t, name, extras, replace))
                        continue
                    row = dict(stored[name])
                    have = set(inspect(sconn).get_table_names())
                    data = {tb.name: read_arrow(sconn, tb, row["model_id"])
                            for tb in CHILD_TABLES
                            if tb.name in have or tb.name not in LATER_TABLES}
                    circuits = read_circuits(sconn, row["model_id"])
                    results.append(_write(dst, dst_t, row, data, nulls, replace, circuits,
                                          extras))
                except _WRITE_ERRORS as exc:
                    raise copy_failure(exc, dst_t, name, [r.name for r in results]) from None
                if progress:
                    progress(name)
    except DBAPIError as exc:
        raise_db_error(dst_t, exc, read_only=False)
    finally:
        src.dispose()
        dst.dispose()
    return results


def _driver_errors() -> tuple[type[BaseException], ...]:
    """The errors a copy's writes can raise: SQLAlchemy's, the drivers' own (bulk writes
    use the raw connection), the system's (a full disk), and text a backend refuses."""
    import duckdb

    found: list[type[BaseException]] = [DBAPIError, duckdb.Error, OSError, UnicodeError,
                                         ValueError]
    try:
        import psycopg

        found.append(psycopg.Error)
    except ImportError:
        pass
    return tuple(found)


_WRITE_ERRORS = _driver_errors()
FULL = ("No space left on device", "File too large", "disk full", "could not extend file",
        "DiskFull")
BAD_TEXT = ("surrogate", "NUL", "0x00", "invalid byte sequence", "can't encode",
            "cannot encode")


def copy_failure(exc: BaseException, target: DatabaseTarget, name: str,
                 done: list[str]) -> DatabaseError:
    """One coded line for a copy that failed while writing ``name``: what happened, that
    nothing of ``name`` was written (one transaction per model) and the models in
    ``done`` are whole, and what to do."""
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:300] \
        if str(exc).strip() else type(exc).__name__
    kept = (f"; {len(done)} model(s) copied before it are whole" if done else "")
    where = f"{target}: copying {name!r} failed and wrote nothing of it{kept}"
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EFBIG) \
            or any(s in reason for s in FULL) or type(exc).__name__ == "DiskFull":
        return DatabaseError(f"{where}: the destination ran out of space ({reason}). Free "
                             "space and run the copy again.")
    if isinstance(exc, UnicodeError) or any(s in reason for s in BAD_TEXT):
        return DatabaseError(f"{where}: a stored name or text holds characters the "
                             f"destination cannot store ({reason}): a NUL or a lone "
                             "surrogate. Rename or delete it in the source, or copy the "
                             "other models by name (--model).")
    return DatabaseError(f"{where}: the destination refused it ({reason}).")


def _write(engine, target: DatabaseTarget, row: dict, data: dict[str, pa.Table],
           nulls: list[dict], replace: bool, circuits: list[dict],
           extras: list[tuple[Carrier, Any]]) -> CopyResult:
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
            if not table.num_columns:
                continue  # a table the source database does not have
            ids = pa.array([model_id] * table.num_rows, pa.int32())
            table = table.append_column("model_id", ids)
            counts[name] = (insert_model_edges(conn, model_id, table) if name == "edges"
                            else bulk_insert(conn, name, table))
        counts["circuits"] = write_circuits(conn, model_id, circuits)
        for carrier, payload in extras:
            counts.update(carrier.write(conn, target, payload, replace))
    sweep_partitions(engine)  # PostgreSQL: drop the partition a replace left empty
    return CopyResult(name=row["name"], rows=counts, replaced=old is not None)


def _write_extras(engine, target: DatabaseTarget, name: str,
                  extras: list[tuple[Carrier, Any]], replace: bool) -> CopyResult:
    """What the carriers hold for a model name that has no stored model, in one
    transaction."""
    counts: dict[str, int] = {}
    with engine.begin() as conn:
        ensure_schema(conn, target)
        for carrier, payload in extras:
            counts.update(carrier.write(conn, target, payload, replace))
    return CopyResult(name=name, rows=counts, replaced=False)


def read_circuits(conn: Connection, model_id: int) -> list[dict[str, Any]]:
    """The ``circuits`` rows of a model (less ``circuit_id`` and ``model_id``)."""
    if not inspect(conn).has_table("circuits"):
        return []
    rows = conn.execute(select(t.circuits).where(t.circuits.c.model_id == model_id)
                        .order_by(t.circuits.c.circuit_id)).mappings().all()
    return [{k: v for k, v in r.items() if k not in ("circuit_id", "model_id")} for r in rows]


def write_circuits(conn: Connection, model_id: int, circuits: list[dict[str, Any]]) -> int:
    """Insert ``circuits`` for ``model_id`` in the caller's transaction."""
    for row in circuits:
        conn.execute(insert(t.circuits).values(model_id=model_id, **row))
    return len(circuits)
