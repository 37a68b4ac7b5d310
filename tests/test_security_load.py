"""The load test's quick version (``benchmarks/load_test.py``): a real ``headgraph serve``
subprocess, 4 concurrent clients for 3 seconds of the realistic mix on the toy model;
every answer clean, the server's memory flat. The long run (32 clients, 60 s, GPT-2-small
sized, optionally during an ingest) is ``python benchmarks/load_test.py``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from support import benchmark_module

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_four_clients_for_a_few_seconds_get_only_clean_answers(toy_db: Path):
    lt = benchmark_module("load_test")
    with lt.ServerProcess(toy_db) as server:
        result = lt.run_load(server, clients=4, seconds=3.0, max_requests=5000, model="toy")
        assert server.alive()
    print(f"quick load: {result.line()}")
    assert result.errors == 0 and result.locked == 0, result.error_samples
    assert result.ok >= 20 and result.ok == result.requests
    assert len(result.by_kind) >= 5, result.by_kind  # the mix was exercised
    assert result.p99_ms < 5000
    assert (result.rss_end - result.rss_start) / 1024 / 1024 < 64  # after the warm-up


WRITER = """
import duckdb, os, sys, time
from pathlib import Path
from headgraph.schema.pending import PendingMarker
db = sys.argv[1]
t = time.monotonic()
marker = PendingMarker(Path(db))
assert marker.take()
try:
    while True:
        try:
            con = duckdb.connect(db)
            break
        except duckdb.Error:
            if time.monotonic() - t > 30:
                print("starved", flush=True)
                sys.exit(1)
            time.sleep(0.02)
    con.execute("CREATE TABLE written_by_the_test (i INTEGER)")
    time.sleep(0.3)
    con.close()
finally:
    marker.release()
print(f"wrote after {time.monotonic() - t:.2f} s", flush=True)
"""


@pytest.mark.slow
def test_a_waiting_writers_marker_makes_the_server_step_aside(toy_db: Path, tmp_path: Path):
    """Back-to-back clients keep a DuckDB file held without a break; a writer that holds
    its ``<db>.write-pending`` marker gets its gap: new requests are refused with 503 +
    Retry-After while it waits and writes, and answered again after. A marker nobody
    holds (a killed writer's, whatever PID it names) changes nothing."""
    import shutil
    import subprocess
    import threading
    import time

    import duckdb
    import httpx
    from support import Server

    from headgraph.server import create_app

    db = tmp_path / "served.duckdb"
    shutil.copy(toy_db, db)
    marker = tmp_path / "served.duckdb.write-pending"
    s = Server(create_app(db))
    seen: list[tuple[int, str]] = []
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=s.url, timeout=30) as c:
            while not stop.is_set():
                r = c.post("/graphql", json={"query": "{ models { name } }"})
                code = (r.json().get("errors") or [{}])[0].get("extensions", {}).get("code", "")
                seen.append((r.status_code, code))

    try:
        from headgraph.schema.pending import PendingMarker

        for pid in ("999999999", "1", str(os.getpid())):  # a PID that is dead, PID 1, ours
            marker.write_text(f"{pid} 0\n")  # but no process holds the marker: ignored
            r = s.client.post("/graphql", json={"query": "{ models { name } }"})
            assert r.status_code == 200, (pid, r.text)
        marker.unlink()
        held = PendingMarker(db)  # held by a live writer: the server steps aside
        assert held.take()
        r = s.client.post("/graphql", json={"query": "{ models { name } }"})
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.json()["errors"][0]["extensions"]["code"] == "DATABASE_LOCKED"
        assert s.client.get("/healthz").json()["database"] == "locked"
        assert s.client.get("/export/toy.dot").status_code == 503
        held.release()
        assert not marker.exists()

        threads = [threading.Thread(target=client) for _ in range(8)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        writer = subprocess.run([sys.executable, "-c", WRITER, str(db)], capture_output=True,
                                text=True, timeout=60)
        time.sleep(1.0)
        stop.set()
        for t in threads:
            t.join(30)
        assert writer.returncode == 0 and "wrote after" in writer.stdout, writer.stdout
        assert {st for st, _ in seen} <= {200, 503}
        assert {code for st, code in seen if st == 503} <= {"DATABASE_LOCKED"}
        assert any(st == 503 for st, _ in seen)  # refused while the writer waited and wrote
        assert seen[-1][0] == 200 and sum(st == 200 for st, _ in seen) > 10
    finally:
        stop.set()
        s.stop()
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM written_by_the_test").fetchone() == (0,)


def test_more_clients_than_postgresql_connections_all_get_answers(pg_server: str):
    """Regression: with more concurrent requests than the connection pool holds (5 + 10),
    sessions opened from every worker thread blocked each other until the pool's 30 s
    timeout and ended in 500s. Requests now wait for a turn on the event loop."""
    import threading
    import time

    import httpx
    import psycopg

    from headgraph.ingest.pipeline import ingest

    admin = pg_server.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as con:
        con.execute('DROP DATABASE IF EXISTS "hg_pool" WITH (FORCE)')
        con.execute('CREATE DATABASE "hg_pool"')
    url = pg_server.rsplit("/", 1)[0] + "/hg_pool"
    ingest("toy", url)
    lt = benchmark_module("load_test")
    statuses: list[int] = []
    slowest = [0.0]
    query = {"query": '{ model(name: "toy") { heads { name feeders(kind: K, top: 3) '
                      '{ source { name } } } } }'}

    def client() -> None:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            for _ in range(5):
                t = time.perf_counter()
                statuses.append(c.post("/graphql", json=query).status_code)
                slowest[0] = max(slowest[0], time.perf_counter() - t)

    try:
        with lt.ServerProcess(url) as server:
            threads = [threading.Thread(target=client) for _ in range(24)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            assert server.alive()
    finally:
        with psycopg.connect(admin, autocommit=True) as con:
            con.execute('DROP DATABASE IF EXISTS "hg_pool" WITH (FORCE)')
    assert statuses == [200] * 120
    assert slowest[0] < 10, slowest[0]  # was 30 s (the pool's timeout), then a 500
