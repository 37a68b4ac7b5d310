"""PostgreSQL as a lab's shared database: ingest while a real server answers.

Readers never wait for the writer, and a model appears whole at its commit: while the
ingest runs, every request succeeds, and whenever the new model is visible at all it has
every one of its edges.
"""

from __future__ import annotations

import threading
import time

import pytest
from support import Server

from headgraph.ingest.pipeline import ingest
from headgraph.server import create_app

FEEDERS = '{ node(model: "toy", name: "L1H2") { feeders(kind: K, top: 3) { source { name } } } }'
NEW = '{ model(name: "late") { nEdges edges(first: 1) { totalCount } } }'


def test_ingest_while_serving_over_http(pg_url: str):
    ingest("toy", pg_url)
    server = Server(create_app(pg_url))
    failures: list[str] = []
    seen: list[tuple[int, int]] = []  # (nEdges, totalCount) whenever the model was visible
    answered = 0
    stop = threading.Event()

    def client() -> None:
        nonlocal answered
        while not stop.is_set():
            for query in (FEEDERS, NEW):
                r = server.client.post("/graphql", json={"query": query})
                body = r.json()
                if r.status_code != 200 or (query is FEEDERS and body.get("errors")):
                    failures.append(f"{r.status_code} {body}")
                elif query is NEW and body["data"]["model"] is not None:
                    m = body["data"]["model"]
                    seen.append((m["nEdges"], m["edges"]["totalCount"]))
                answered += 1

    threads = [threading.Thread(target=client) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        time.sleep(0.3)
        before = answered
        report = ingest("random:L6H8D128V500,ctx=64", pg_url, name="late")
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        server.stop()
    assert not failures, failures[:3]
    assert answered - before > 10  # requests were answered while the ingest ran
    assert seen, "the new model never became visible"
    assert all(n == total == report.n_edges for n, total in seen)


def test_a_request_reads_one_snapshot_while_its_model_is_replaced(pg_url: str):
    """A unit of work (one GraphQL request) reads one snapshot (REPEATABLE READ): a
    replace committed after its first statement changes none of its answers (under READ
    COMMITTED its edges would come back empty: the rows are deleted). The sweep that
    drops the old partition waits for it, though it had not touched ``edges`` yet."""
    from headgraph.queries.models import get_model
    from headgraph.queries.nodes import feeders
    from headgraph.queries.session import open_reader

    def pairs(s, model, target):  # noqa: ANN001, ANN202
        return {(e.source, e.score) for e in feeders(s, model, target, "K", top=5)}

    ingest("random:L2H4D32V50,ctx=16", pg_url, name="m")
    reader = open_reader(pg_url)
    try:
        with reader.session() as s:
            expected = {t: pairs(s, get_model(s, "m"), t) for t in ("L1H0", "L1H3")}
        with reader.session() as s:
            old = get_model(s, "m")
            ingest("random:L2H4D32V50,ctx=16,seed=7", pg_url, name="m", replace=True)
            assert pairs(s, old, "L1H0") == expected["L1H0"]
            assert pairs(s, old, "L1H3") == expected["L1H3"]
            assert get_model(s, "m") == old
        with reader.session() as s:
            new = get_model(s, "m")
            assert new.model_id != old.model_id
            assert pairs(s, old, "L1H3") == set()
            assert pairs(s, new, "L1H3") != expected["L1H3"]
    finally:
        reader.close()


def test_a_reader_replaces_a_pooled_connection_closed_while_idle(pg_url: str, monkeypatch):
    """Readers ping only connections idle over PING_AFTER_S (a ping on every request is
    one more round trip): one the server closed meanwhile is replaced, unseen."""
    import psycopg
    from sqlalchemy import text

    from headgraph.queries.session import open_reader
    from headgraph.schema import database

    monkeypatch.setattr(database, "PING_AFTER_S", 0.05)
    ingest("random:L2H4D32V50,ctx=16", pg_url, name="m")
    reader = open_reader(pg_url)
    pid = text("SELECT pg_backend_pid() AS pid")
    try:
        with reader.session() as s:
            first = s.rows(pid)[0]["pid"]
        with psycopg.connect(pg_url.replace("+psycopg", ""), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (first,))
        time.sleep(0.1)
        with reader.session() as s:
            assert s.rows(pid)[0]["pid"] != first
    finally:
        reader.close()


def test_a_reader_gives_up_on_a_table_lock_within_a_second(pg_url: str):
    """Another tool's DDL (ACCESS EXCLUSIVE) makes a reader's lookup fail within about a
    second (READER_LOCK_TIMEOUT), not wait: the API runs lookups on its event loop."""
    import psycopg

    from headgraph.errors import DatabaseError
    from headgraph.queries.models import get_model
    from headgraph.queries.session import open_reader

    ingest("random:L2H4D32V50,ctx=16", pg_url, name="m")
    reader = open_reader(pg_url)
    try:
        with psycopg.connect(pg_url.replace("+psycopg", "")) as ddl:
            ddl.execute("LOCK TABLE models IN ACCESS EXCLUSIVE MODE")
            start = time.monotonic()
            with pytest.raises(DatabaseError), reader.session() as s:
                get_model(s, "m")
            assert time.monotonic() - start < 5
            ddl.rollback()
        with reader.session() as s:  # and the connection goes on serving
            assert get_model(s, "m").name == "m"
    finally:
        reader.close()
