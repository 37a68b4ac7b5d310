"""PostgreSQL as a lab's shared database: ingest while a real server answers.

Readers never wait for the writer, and a model appears whole at its commit: while the
ingest runs, every request succeeds, and whenever the new model is visible at all it has
every one of its edges.
"""

from __future__ import annotations

import threading
import time

from support import Server

from headgraph.api.app import create_app
from headgraph.ingest.pipeline import ingest

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
