"""PostgreSQL's per-model partitions of ``edges`` (headgraph.schema.partitions).

A model's edges are built in a table of their own and attached in the writer's one
transaction: readers never wait on a lock (checked with a second, real connection whose
``lock_timeout`` would turn any wait into an error), never see part of a model, and a
replaced model's partition goes away after commit. Databases made before partitioning
keep working.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import psycopg
import pyarrow as pa
import pytest
from sqlalchemy import insert, select, text

from headgraph.ingest.pipeline import ingest
from headgraph.maintenance import check_database, copy_models
from headgraph.queries.models import get_model
from headgraph.queries.nodes import feeders, readers
from headgraph.queries.session import open_reader
from headgraph.schema import tables as t
from headgraph.schema.bulk import bulk_insert, copy_arrow
from headgraph.schema.database import create_db_engine, ensure_schema, resolve_target
from headgraph.schema.partitions import (
    delete_model,
    edges_partitioned,
    insert_model_edges,
    partition_name,
    sweep_partitions,
)
from headgraph.schema.transfer import read_arrow

WAIT = "SET lock_timeout = '300ms'"  # a reader that would wait for a lock fails instead


def _raw(url: str, **kw) -> psycopg.Connection:
    return psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), **kw)


def _partitions(url: str) -> list[str]:
    with _raw(url) as con:
        return sorted(r[0] for r in con.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'edges'::regclass"))


def _model_row(conn, name: str) -> dict:
    row = conn.execute(select(t.models).where(t.models.c.name == name)).mappings().one()
    return {k: v for k, v in row.items() if k != "model_id"}


@pytest.fixture
def toy_pg(pg_url: str) -> str:
    ingest("toy", pg_url)
    return pg_url


def test_fresh_database_is_partitioned_one_partition_per_model(toy_pg: str):
    engine = create_db_engine(resolve_target(toy_pg), read_only=True)
    with engine.connect() as conn:
        assert edges_partitioned(conn)
        model_id = conn.execute(select(t.models.c.model_id)).scalar_one()
    engine.dispose()
    assert _partitions(toy_pg) == [partition_name(model_id)]
    with _raw(toy_pg) as con:  # rows were written frozen: index-only scans skip the heap
        con.execute("SET enable_seqscan = off")  # the toy model is small
        plan = "\n".join(r[0] for r in con.execute(
            "EXPLAIN (ANALYZE, COSTS OFF) SELECT source, score FROM edges WHERE model_id = %s "
            "AND target = 'L1H2' AND kind = 'K' AND rank <= 3", (model_id,)))
    assert "Index Only Scan" in plan and "Heap Fetches: 0" in plan
    assert check_database(toy_pg).ok


def test_model_appears_whole_at_commit_and_no_reader_waits(toy_pg: str):
    target = resolve_target(toy_pg)
    engine = create_db_engine(target, read_only=False)
    with engine.connect() as conn:
        row = _model_row(conn, "toy")
        old_id = conn.execute(select(t.models.c.model_id)).scalar_one()
        data = read_arrow(conn, t.edges, old_id)
        nodes = read_arrow(conn, t.nodes, old_id)
        calibration = read_arrow(conn, t.null_calibration, old_id)  # the z of its edges
        total = data.num_rows
    # a reader inside a transaction that has already read edges (holds ACCESS SHARE)
    early = _raw(toy_pg)
    assert early.execute("SELECT count(*) FROM edges").fetchone()[0] == total
    reader = _raw(toy_pg, autocommit=True)
    reader.execute(WAIT)
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL lock_timeout = '2s'"))  # the writer does not wait either
        ensure_schema(conn, target)
        new_id = conn.execute(insert(t.models).values(**{**row, "name": "late"})
                              .returning(t.models.c.model_id)).scalar_one()
        ids = pa.array(np.full(total, new_id, np.int32))
        assert insert_model_edges(conn, new_id, data.append_column("model_id", ids)) == total
        bulk_insert(conn, "nodes", nodes.append_column(
            "model_id", pa.array(np.full(nodes.num_rows, new_id, np.int32))))
        bulk_insert(conn, "null_calibration", calibration.append_column(
            "model_id", pa.array(np.full(calibration.num_rows, new_id, np.int32))))
        # attached, not committed: readers go on and see none of it
        for query in ("SELECT count(*) FROM edges",
                      f"SELECT count(*) FROM edges WHERE model_id = {old_id}",
                      "SELECT count(*) FROM edges e JOIN models m USING (model_id)"):
            assert reader.execute(query).fetchone()[0] == total, query
        assert reader.execute(f"SELECT count(*) FROM edges WHERE model_id = {new_id}"
                              ).fetchone()[0] == 0
        assert reader.execute("SELECT count(*) FROM models WHERE name = 'late'"
                              ).fetchone()[0] == 0
        with open_reader(toy_pg) as db:
            assert [e.source for e in feeders(db, get_model(db, "toy"), "L1H2", "K", top=3)]
    early.close()
    assert reader.execute(f"SELECT count(*) FROM edges WHERE model_id = {new_id}"
                          ).fetchone()[0] == total
    reader.close()
    engine.dispose()
    assert _partitions(toy_pg) == sorted([partition_name(old_id), partition_name(new_id)])
    assert check_database(toy_pg).ok


def test_replace_deletes_without_blocking_and_the_sweep_drops_the_old_partition(toy_pg: str):
    target = resolve_target(toy_pg)
    engine = create_db_engine(target, read_only=False)
    with engine.connect() as conn:
        old_id = conn.execute(select(t.models.c.model_id)).scalar_one()
        total = conn.execute(text("SELECT count(*) FROM edges")).scalar_one()
    reader = _raw(toy_pg, autocommit=True)
    reader.execute(WAIT)
    with engine.begin() as conn:
        delete_model(conn, old_id)
        # deleted, not committed: the old model is still whole for everyone else
        assert reader.execute(f"SELECT count(*) FROM edges WHERE model_id = {old_id}"
                              ).fetchone()[0] == total
        with open_reader(toy_pg) as db:
            model = get_model(db, "toy")
            assert len(readers(db, model, "L0H0", "V", top=2)) == 2
    assert reader.execute("SELECT count(*) FROM edges").fetchone()[0] == 0
    assert _partitions(toy_pg) == [partition_name(old_id)]  # empty, still attached

    # DETACH ... CONCURRENTLY waits for a transaction that read edges; readers do not wait
    holder = _raw(toy_pg)
    holder.execute("SELECT count(*) FROM edges").fetchone()
    swept: list[str] = []
    sweeper = threading.Thread(target=lambda: swept.extend(sweep_partitions(engine)))
    sweeper.start()
    for _ in range(20):
        assert reader.execute("SELECT count(*) FROM edges").fetchone()[0] == 0
    holder.close()
    sweeper.join(30)
    assert swept == [partition_name(old_id)]
    assert _partitions(toy_pg) == []
    with _raw(toy_pg) as con:
        assert con.execute("SELECT to_regclass(%s)", (partition_name(old_id),)
                           ).fetchone()[0] is None
    reader.close()
    engine.dispose()


def test_ingest_replace_and_copy_keep_one_partition_per_model(toy_pg: str, tmp_path: Path):
    ingest("toy", toy_pg, replace=True)
    ingest("toy@1600", toy_pg, name="early")
    with _raw(toy_pg) as con:
        ids = sorted(r[0] for r in con.execute("SELECT model_id FROM models"))
    assert _partitions(toy_pg) == sorted(partition_name(i) for i in ids)
    assert check_database(toy_pg).ok
    back = tmp_path / "back.duckdb"
    copy_models(toy_pg, back)
    [again] = copy_models(back, toy_pg, ["early"], replace=True)
    assert again.replaced and again.rows["edges"] > 0
    assert len(_partitions(toy_pg)) == 2 and check_database(toy_pg).ok


def test_a_sweep_cut_short_is_finished_by_the_next(toy_pg: str):
    engine = create_db_engine(resolve_target(toy_pg), read_only=False)
    with engine.begin() as conn:
        old_id = conn.execute(select(t.models.c.model_id)).scalar_one()
        delete_model(conn, old_id)
    holder = _raw(toy_pg)  # a long reader: its snapshot may still read the old partition
    holder.execute("SELECT count(*) FROM edges").fetchone()
    pending = ("SELECT inhdetachpending FROM pg_inherits WHERE inhrelid = to_regclass(%s)",
               (partition_name(old_id),))
    assert sweep_partitions(engine, timeout_s=0.3) == []  # waited for it, then left it
    with _raw(toy_pg) as con:
        assert con.execute(*pending).fetchone() == (False,)  # still attached
    with _raw(toy_pg, autocommit=True) as con:  # a detach cut short midway stays pending
        con.execute("SET statement_timeout = '300ms'")
        with pytest.raises(psycopg.errors.QueryCanceled):
            con.execute(f'ALTER TABLE edges DETACH PARTITION "{partition_name(old_id)}" '
                        "CONCURRENTLY")
        assert con.execute(*pending).fetchone() == (True,)
    holder.close()
    ingest("toy@1600", toy_pg, name="early")  # writes go on meanwhile; its sweep finishes
    assert _partitions(toy_pg) == [partition_name(old_id + 1)]
    with _raw(toy_pg) as con:
        assert con.execute("SELECT to_regclass(%s)", (partition_name(old_id),)
                           ).fetchone()[0] is None
    engine.dispose()
    assert check_database(toy_pg).ok


def test_sweep_drops_a_detached_leftover(toy_pg: str):
    with _raw(toy_pg, autocommit=True) as con:  # as a sweep cut short between its steps
        con.execute("CREATE TABLE edges_m999 (LIKE edges)")
    engine = create_db_engine(resolve_target(toy_pg), read_only=False)
    assert sweep_partitions(engine) == ["edges_m999"]
    engine.dispose()
    assert check_database(toy_pg).ok


def test_database_made_before_partitions_still_works(pg_url: str, monkeypatch, caplog,
                                                     tmp_path: Path):
    # the schema as the previous version made it: plain edges, model_id-first indexes
    monkeypatch.delitem(t.edges.info, "postgresql_partition_by")
    monkeypatch.delitem(t.BYTE_ORDER, "postgresql_collation")
    target = resolve_target(pg_url)
    engine = create_db_engine(target, read_only=False)
    with engine.begin() as conn:
        ensure_schema(conn, target)
        conn.execute(text("CREATE INDEX edges_feeders ON edges (model_id, target, kind, rank) "
                          "INCLUDE (source, score, baseline, null_std)"))
        conn.execute(text("CREATE INDEX edges_readers ON edges (model_id, source, kind, "
                          "score DESC) INCLUDE (target, baseline, null_std, rank)"))
    engine.dispose()
    monkeypatch.undo()
    with caplog.at_level("WARNING", logger="headgraph.schema"):
        ingest("toy", pg_url)
    assert "predates per-model partitions" in caplog.text
    ingest("toy", pg_url, replace=True)
    assert _partitions(pg_url) == [] and check_database(pg_url).ok
    home = tmp_path / "home.duckdb"
    copy_models(pg_url, home)
    copy_models(home, pg_url, replace=True)
    with open_reader(pg_url) as db, open_reader(home) as local:
        got = feeders(db, get_model(db, "toy"), "L1H2", "K", top=3)
        want = feeders(local, get_model(local, "toy"), "L1H2", "K", top=3)
        assert [e.source for e in got] == [e.source for e in want]
    with _raw(pg_url) as con:  # and the lookups still use the old indexes
        con.execute("SET enable_seqscan = off")
        plan = "\n".join(r[0] for r in con.execute(
            "EXPLAIN SELECT * FROM edges WHERE model_id = 1 AND target = %s AND kind = %s "
            "AND rank <= 3", ("L1H2", "K")))
    assert "edges_feeders" in plan
    assert check_database(pg_url).ok


def test_binary_copy_round_trips_nulls_and_unicode(pg_url: str):
    target = resolve_target(pg_url)
    engine = create_db_engine(target, read_only=False)
    names = ["L0H0", "é→ü", "", None, "MLP10"]
    data = pa.table({
        "model_id": pa.array([7] * 5, pa.int32()),
        "source": pa.array(names, pa.string()),
        "target": pa.array(["x"] * 5).dictionary_encode(),
        "kind": pa.array(["K"] * 5),
        "score": pa.array([0.5, 0.25, 1.0, 0.0, 0.125], pa.float32()),
        "baseline": pa.array([0.1] * 5, pa.float32()),
        "null_std": pa.array([0.01, None, 0.02, None, 0.03], pa.float32()),
        "rank": pa.array([1, 2, None, 4, 5], pa.int32()),
    })
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE scratch (model_id int, source text, target text, "
                          "kind text, score real, baseline real, null_std real, rank int)"))
        copy_arrow(conn, "scratch", t.edges, data)
        rows = conn.execute(text("SELECT source, target, null_std, rank FROM scratch "
                                 "ORDER BY score DESC")).all()
    engine.dispose()
    by_score = sorted(zip(data.column("score").to_pylist(), names, strict=True), reverse=True)
    assert [r[0] for r in rows] == [n for _, n in by_score]
    assert {r[1] for r in rows} == {"x"}
    assert sorted(r[2] is None for r in rows) == [False, False, False, True, True]
    assert sum(r[3] is None for r in rows) == 1


def test_binary_copy_round_trips_a_nullable_boolean(pg_url: str):
    from sqlalchemy import Boolean, Column, Integer, MetaData, Table

    target = resolve_target(pg_url)
    engine = create_db_engine(target, read_only=False)
    table = Table("flags", MetaData(), Column("i", Integer), Column("flag", Boolean))
    data = pa.table({"i": pa.array([1, 2, 3], pa.int32()),
                     "flag": pa.array([True, None, False], pa.bool_())})
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE flags (i int, flag boolean)"))
        copy_arrow(conn, "flags", table, data)
        rows = conn.execute(text("SELECT i, flag FROM flags ORDER BY i")).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [(1, True), (2, None), (3, False)]
