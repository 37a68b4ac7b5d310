"""PostgreSQL: ``edges`` as one LIST partition per model, built beside the table and
attached whole; removing a model without blocking a reader.

Why: COPY of 2.24M edges into ``edges`` with its two covering indexes in place took
10.8 s (every row is a random B-tree insert); into a bare table 0.76 s, and building
each index afterwards from sorted input is a fraction of that. Building indexes after
the load on the shared table would lock readers out; on a table of its own nobody else
can see, nothing waits.

Writing a model's edges (:func:`insert_model_edges`), inside the writer's one
transaction per model:

1. ``CREATE TABLE edges_m{id}`` with the columns of ``edges`` and ``CHECK (model_id =
   id)``: a standalone table, invisible to every other session until commit;
2. binary ``COPY ... FREEZE`` into it: rows land frozen and the visibility map
   all-visible, so index-only scans never visit the heap and no vacuum is owed (FREEZE is
   allowed because the table was created in this transaction);
3. the covering indexes of :data:`~headgraph.schema.tables.EDGE_INDEXES` on it;
4. ``ALTER TABLE edges ATTACH PARTITION``: the CHECK constraint proves the partition
   bound, so there is no validation scan (``edges`` itself has no indexes to match).

Locks (PostgreSQL 12+): ATTACH takes SHARE UPDATE EXCLUSIVE on ``edges``, which does not
conflict with readers' ACCESS SHARE; only a second writer's ATTACH queues behind it until
commit. ``tests/test_pg_partitions.py`` checks this with a second connection and a
``lock_timeout``.

Removing a model (:func:`delete_model`, used by ``--replace``) is a transactional DELETE
(ROW EXCLUSIVE: readers go on and see the old rows until commit, and after it if their
REPEATABLE READ snapshot began before). TRUNCATE, a plain DETACH or DROP of an attached
partition would take ACCESS EXCLUSIVE on ``edges`` and stall every reader, so none is
used in a write transaction. The partition left empty is removed after commit by
:func:`sweep_partitions`, once the transactions that began before it have ended (a
snapshot of theirs may still read it): ``DETACH PARTITION ... CONCURRENTLY`` (SHARE
UPDATE EXCLUSIVE; it waits for transactions that may still use the partition, readers do
not wait for it), then ``DROP TABLE`` of what is then a standalone table. A sweep that
times out (a long reader still uses the partition) or is killed leaves an empty
partition, pending detach or detached, that the next sweep finishes (FINALIZE
first: while one detach is pending PostgreSQL refuses another).

Databases made before partitioning (``edges`` a plain table) keep working: writes fall
back to COPY into ``edges`` with its indexes in place (correct, about 10x slower), with a
logged note on how to move to the fast layout (``headgraph copy`` into a new database).
"""

from __future__ import annotations

import logging
import re
import time

import pyarrow as pa
from sqlalchemy import CheckConstraint, Column, Connection, Engine, MetaData, Table, delete, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.schema import CreateIndex, CreateTable

from headgraph.schema import tables as t
from headgraph.schema.bulk import bulk_insert, copy_arrow

log = logging.getLogger("headgraph.schema")

MODEL_TABLES = (t.edges, t.nodes, t.node_scores, t.edge_scores, t.evidence_agreement,
                t.virtual_heads, t.circuits, t.null_calibration)
"""Every table with rows that belong to one model (``models`` itself aside)."""

_PARTITION = re.compile(r"edges_m(\d+)")
_noted: set[str] = set()


def partition_name(model_id: int) -> str:
    """The partition of ``edges`` that holds model ``model_id``."""
    return f"edges_m{int(model_id)}"


def edges_partitioned(conn: Connection) -> bool:
    """Whether ``edges`` is a partitioned table (PostgreSQL, schema made by this version)."""
    if conn.dialect.name != "postgresql":
        return False
    kind = conn.execute(text("SELECT relkind FROM pg_class WHERE oid = to_regclass('edges')")
                        ).scalar()
    return kind == "p"


def _note_unpartitioned(conn: Connection) -> None:
    url = conn.engine.url.render_as_string(hide_password=True)
    if url not in _noted:
        _noted.add(url)
        log.warning("%s: table 'edges' predates per-model partitions, so each model's edges "
                    "go in through its indexes (about 10x slower, still correct). To get the "
                    "fast layout, `headgraph copy --from THIS --to NEW` into a new database.",
                    url)


def partition_table(model_id: int) -> Table:
    """A standalone table shaped like ``edges`` for one model, with the CHECK constraint
    that lets ATTACH skip its validation scan, and the covering indexes."""
    name = partition_name(model_id)
    table = Table(name, MetaData(),
                  *[Column(c.name, c.type, nullable=c.nullable, info=c.info)
                    for c in t.edges.columns],
                  CheckConstraint(f"model_id = {int(model_id)}", name=f"{name}_model"))
    t.edge_indexes(table)
    return table


def insert_model_edges(conn: Connection, model_id: int, data: pa.Table) -> int:
    """Write model ``model_id``'s edges (``data``: columns named as ``edges``'s, all of
    this model) in the caller's transaction; returns rows written.

    Rows sorted by (target, kind, rank), as ingest and DuckDB hand them over, make the
    feeders index the cheap one to build.
    """
    if not edges_partitioned(conn):
        if conn.dialect.name == "postgresql":
            _note_unpartitioned(conn)
        return bulk_insert(conn, "edges", data)
    if data.num_rows == 0:
        return 0  # no partition: a model without edges has no rows to find
    part = partition_table(model_id)
    phases: dict[str, float] = {}
    start = time.perf_counter()
    conn.execute(CreateTable(part))
    copy_arrow(conn, part.name, part, data, freeze=True)
    phases["copy"] = time.perf_counter() - start
    for index in sorted(part.indexes, key=lambda i: i.name):  # feeders: sorted input, first
        start = time.perf_counter()
        conn.execute(CreateIndex(index))
        phases[index.name.removeprefix(f"{part.name}_") + " index"] = time.perf_counter() - start
    conn.execute(text(f'ALTER TABLE edges ATTACH PARTITION "{part.name}" '
                      f"FOR VALUES IN ({int(model_id)})"))
    log.debug("%s: %d rows; %s", part.name, data.num_rows,
              ", ".join(f"{k} {v:.2f} s" for k, v in phases.items()),
              extra={"rows": data.num_rows, "phases": phases})
    return data.num_rows


def delete_model(conn: Connection, model_id: int) -> None:
    """Remove a model and every row of it, in the caller's transaction, without taking a
    lock that would make a reader wait (see the module docstring)."""
    for table in MODEL_TABLES:
        conn.execute(delete(table).where(table.c.model_id == model_id))
    conn.execute(delete(t.models).where(t.models.c.model_id == model_id))


def sweep_partitions(engine: Engine, *, timeout_s: float = 5.0) -> list[str]:
    """After a commit: detach and drop the partitions (and detached leftovers) of models
    no longer stored; returns their names. Never makes a reader wait; gives up quietly
    (the next sweep finishes) if the partition stays in use past ``timeout_s``."""
    if engine.dialect.name != "postgresql":
        return []
    dropped: list[str] = []
    try:
        with engine.connect() as conn:
            _sweep(conn.execution_options(isolation_level="AUTOCOMMIT"), timeout_s, dropped)
    except DBAPIError as exc:  # the write has committed: a sweep never fails it
        log.info("partition sweep stopped, the next write retries it: %s", exc.orig or exc)
    return dropped


def _older_transactions_end(conn: Connection, timeout_s: float) -> bool:
    """Wait (up to ``timeout_s``) until every client transaction of this database that
    began before now has ended; whether they all did.

    Why: a reader's REPEATABLE READ snapshot taken before the replace committed still
    sees the old model's row in ``models``; if it reads ``edges`` only after the sweep
    has detached and dropped the partition, it finds that model without edges. DETACH
    CONCURRENTLY waits only for transactions that have already touched ``edges``, so the
    sweep first waits for those that began earlier (API requests last milliseconds).
    Transactions of other roles show no start time without ``pg_read_all_stats`` and are
    not waited for."""
    deadline = time.monotonic() + timeout_s
    since = conn.execute(text("SELECT clock_timestamp()")).scalar()
    older = text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                 "AND backend_type = 'client backend' AND pid <> pg_backend_pid() "
                 "AND xact_start < :since")
    while conn.execute(older, {"since": since}).scalar():
        if time.monotonic() > deadline:
            log.info("partition sweep left for the next write: a transaction older than "
                     "the replace is still open")
            return False
        time.sleep(0.01)
    return True


def _sweep(conn: Connection, timeout_s: float, dropped: list[str]) -> None:
    if not edges_partitioned(conn):
        return
    stored = {r[0] for r in conn.execute(text("SELECT model_id FROM models"))}
    found = conn.execute(text(
        "SELECT c.relname, i.inhdetachpending FROM pg_class c "
        "LEFT JOIN pg_inherits i ON i.inhrelid = c.oid "
        "WHERE c.relkind = 'r' AND c.relname LIKE 'edges\\_m%' AND c.relnamespace = "
        "(SELECT relnamespace FROM pg_class WHERE oid = to_regclass('edges')) "
        "AND (i.inhparent IS NULL OR i.inhparent = to_regclass('edges'))")).all()
    stale = sorted(((name, pending) for name, pending in found
                    if (m := _PARTITION.fullmatch(name)) and int(m.group(1)) not in stored),
                   key=lambda p: p[1] is not True)  # a pending detach blocks any other
    if not stale or not _older_transactions_end(conn, timeout_s):
        return
    conn.execute(text(f"SET lock_timeout = '{int(timeout_s * 1000)}ms'"))
    conn.execute(text(f"SET statement_timeout = '{int(timeout_s * 1000)}ms'"))
    try:
        for name, pending in stale:
            if pending is not None:  # still attached (pending: an earlier detach was cut short)
                how = "FINALIZE" if pending else "CONCURRENTLY"
                conn.execute(text(f'ALTER TABLE edges DETACH PARTITION "{name}" {how}'))
            conn.execute(text(f'DROP TABLE IF EXISTS "{name}"'))
            dropped.append(name)
    finally:  # the connection goes back to a pool
        conn.execute(text("RESET lock_timeout"))
        conn.execute(text("RESET statement_timeout"))
