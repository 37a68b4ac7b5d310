"""Read-side speed on a GPT-2-XL-sized database (issues: query layer; PostgreSQL backend).

Prints, in one run, for ``random:gpt2-xl`` (1,200 heads, ~2.2M edges):

* DuckDB: the per-query floor (``SELECT 1``), "feeders of a head's keys, top 10" through
  ``headgraph.queries`` (p50/p99 over random heads) and the same as a plain scan without
  the rank column, over HTTP (p50; requests/s with 8 concurrent clients), server start
  time; the same question in Kùzu (an embedded graph database, installed only here);
* PostgreSQL (a throwaway cluster): bulk write rows/s (``headgraph copy``), feeders p50
  in-process and over HTTP, and p50/p99 with 8 concurrent HTTP clients while an ingest
  runs, on every core and on one (``--threads 1``), counted over the requests due while
  it ran (and, for contrast, what DuckDB clients see during an ingest).

Run: ``.venv/bin/python benchmarks/bench_api.py --db /tmp/xl.duckdb`` (the database is
made by an ingest if missing; ``--skip-kuzu``, ``--skip-pg`` to leave parts out;
``--only pg`` for just the PostgreSQL bulk write and in-process feeders, ``--write-runs N``
to time the write N times).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
QUERY = ('query($t: String!) { node(model: "xl", name: $t) '
         '{ feeders(kind: K, top: 10) { source { name } score } } }')


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


def heads(n: int = 200) -> list[str]:
    rng = random.Random(0)
    return [f"L{rng.randrange(1, 48)}H{rng.randrange(25)}" for _ in range(n)]


def in_process(db: str, label: str) -> None:
    from sqlalchemy import text

    from headgraph.queries.models import get_model
    from headgraph.queries.nodes import feeders
    from headgraph.queries.session import open_reader

    reader = open_reader(db)
    with reader.session() as s:
        model = get_model(s, "xl")
        floor, ranked = [], []
        for t in heads():
            start = time.perf_counter()
            s.rows(text("SELECT 1"))
            floor.append(time.perf_counter() - start)
            start = time.perf_counter()
            feeders(s, model, t, "K", top=10)
            ranked.append(time.perf_counter() - start)
        scan = []
        for t in heads(50):
            start = time.perf_counter()
            s.rows(text("SELECT source, score FROM edges WHERE model_id = :m AND target = :t "
                        "AND kind = 'K' ORDER BY score DESC LIMIT 10"),
                   {"m": model.model_id, "t": t})
            scan.append(time.perf_counter() - start)
    reader.close()
    print(f"{label} in-process: floor SELECT 1 p50 {pct(floor, .5):.3f} ms; feeders top-10 "
          f"p50 {pct(ranked, .5):.3f} ms, p99 {pct(ranked, .99):.3f} ms; plain scan (no rank "
          f"column) p50 {pct(scan, .5):.3f} ms")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    def __init__(self, db: str) -> None:
        self.port = free_port()
        start = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-m", "headgraph.cli", "serve", "--db", db,
                                      "--port", str(self.port)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{self.port}"
        while True:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.01)
        self.start_s = time.perf_counter() - start

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class Client:
    """A keep-alive HTTP/1.1 client on the standard library's ``http.client``: it adds
    ~0.1 ms per request where httpx added ~1.6 ms (measured here), which on 2 cores is
    time taken from the server being measured."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=30)

    def feeders(self, target: str) -> bool:
        """Ask for ``target``'s top-10 K-feeders; whether a full answer came back."""
        body = json.dumps({"query": QUERY, "variables": {"t": target}})
        try:
            self.conn.request("POST", "/graphql", body, {"content-type": "application/json"})
            r = self.conn.getresponse()
            data = r.read()
        except (http.client.HTTPException, OSError):
            self.conn.close()  # reconnects on the next request
            return False
        return r.status == 200 and b'"errors"' not in data

    def close(self) -> None:
        self.conn.close()


def over_http(db: str, label: str) -> None:
    srv = Served(db)
    try:
        client = Client(srv.url)
        lat = []
        for t in heads() + heads():  # the first pass warms the server's caches
            start = time.perf_counter()
            assert client.feeders(t)
            lat.append(time.perf_counter() - start)
        client.close()
        lat = lat[len(lat) // 2:]
        print(f"{label} HTTP: server start {srv.start_s:.2f} s; feeders p50 {pct(lat, .5):.2f} ms, "
              f"p99 {pct(lat, .99):.2f} ms (one client, keep-alive)", flush=True)
        for rate in (0.0, 10.0):
            done, errors = load(srv.url, 8, 10.0, rate)
            how = f"{rate:.0f} req/s each" if rate else "closed loop"
            print(f"{label} HTTP, 8 concurrent clients ({how}): {len(done) / 10.0:.0f} req/s, "
                  f"p50 {pct(done, .5):.2f} ms, p99 {pct(done, .99):.2f} ms, {errors} errors",
                  flush=True)
    finally:
        srv.stop()


def load(url: str, clients: int, seconds: float, rate: float = 0.0,
         sent: list[float] | None = None) -> tuple[list[float], int]:
    """``clients`` threads asking feeders questions for ``seconds``; the latencies of the
    answers (and, into ``sent`` if given, when each was due, in ``time.perf_counter()``).

    ``rate=0``: a closed loop, each client sends its next request when the last is answered
    (on 2 cores shared with the server this measures queueing as much as the server).
    ``rate>0``: each client sends ``rate`` requests/s on a fixed schedule, and latency is
    counted from the scheduled send, so an answer that comes late and delays the next
    request is counted in full (no coordinated omission).
    """
    lat: list[float] = []
    errors = [0]
    end = time.monotonic() + seconds

    def run(seed: int) -> None:
        rng = random.Random(seed)
        due = time.perf_counter() + rng.random() / rate if rate else 0.0
        client = Client(url)
        try:
            while time.monotonic() < end:
                if rate:
                    time.sleep(max(0.0, due - time.perf_counter()))
                    start, due = due, due + 1.0 / rate
                else:
                    start = time.perf_counter()
                if client.feeders(f"L{rng.randrange(1, 48)}H{rng.randrange(25)}"):
                    lat.append(time.perf_counter() - start)
                    if sent is not None:
                        sent.append(start)
                else:
                    errors[0] += 1
        finally:
            client.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return lat, errors[0]


def during_ingest(db: str, label: str, *, rate: float = 0.0, nice: int = 0,
                  threads: int | None = None) -> None:
    """8 HTTP clients (closed loop, or ``rate`` requests/s each) for 25 s while ``headgraph
    ingest random:gpt2-small`` (at CPU priority ``nice``, on ``threads`` torch threads;
    default one per core) writes a model into ``db``. Prints the whole run and, apart, the
    requests due while the ingest ran: the figure that the goal is about."""
    srv = Served(db)
    try:
        result: dict = {}
        sent: list[float] = []

        def clients() -> None:
            result["lat"], result["errors"] = load(srv.url, 8, 25.0, rate, sent)

        th = threading.Thread(target=clients)
        th.start()
        time.sleep(1)
        t = time.perf_counter()
        subprocess.run(["nice", "-n", str(nice), sys.executable, "-m", "headgraph.cli",
                        "ingest", "random:gpt2-small", "--db", db, "--name", "late",
                        "--replace", *(["--threads", str(threads)] if threads else [])],
                       check=True, capture_output=True)
        end = time.perf_counter()
        th.join()
        lat = result["lat"]
        during = [x for x, due in zip(lat, sent, strict=True) if t <= due <= end]
        how = f"{rate:.0f} req/s each" if rate else "closed loop"
        cores = f"--threads {threads}" if threads else "every core"
        print(f"{label} 8 HTTP clients ({how}) while an ingest (random:gpt2-small, nice "
              f"{nice}, {cores}, {end - t:.1f} s) writes: while it ran {len(during)} "
              f"answered, p50 {pct(during, .5):.2f} ms, p99 {pct(during, .99):.2f} ms; all 25 "
              f"s: {len(lat)} answered, p50 {pct(lat, .5):.2f} ms, p99 {pct(lat, .99):.2f} ms, "
              f"{result['errors']} refused/failed", flush=True)
    finally:
        srv.stop()


def kuzu_bench(db: str) -> None:
    try:
        import kuzu
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "kuzu==0.11.3"], check=True)
        import kuzu
    import duckdb

    con = duckdb.connect(db, read_only=True)
    with tempfile.TemporaryDirectory() as tmp:
        nodes = Path(tmp) / "nodes.parquet"
        rels = Path(tmp) / "rels.parquet"
        con.execute(f"COPY (SELECT DISTINCT node AS name FROM nodes JOIN models USING (model_id)"
                    f" WHERE models.name = 'xl') TO '{nodes}' (FORMAT parquet)")
        con.execute(f"COPY (SELECT e.source AS src, e.target AS dst, kind, score FROM edges e "
                    f"JOIN models m USING (model_id) WHERE m.name = 'xl') TO '{rels}' "
                    "(FORMAT parquet)")
        k = kuzu.Connection(kuzu.Database(str(Path(tmp) / "kz")))
        k.execute("CREATE NODE TABLE Node(name STRING, PRIMARY KEY(name))")
        k.execute("CREATE REL TABLE Feeds(FROM Node TO Node, kind STRING, score FLOAT)")
        start = time.perf_counter()
        k.execute(f"COPY Node FROM '{nodes}'")
        k.execute(f"COPY Feeds FROM '{rels}'")
        load_s = time.perf_counter() - start
        q = ("MATCH (s:Node)-[e:Feeds]->(t:Node {name: $t}) WHERE e.kind = 'K' "
             "RETURN s.name, e.score ORDER BY e.score DESC LIMIT 10")
        lat = []
        for t in heads(100):
            start = time.perf_counter()
            k.execute(q, {"t": t}).get_all()
            lat.append(time.perf_counter() - start)
        print(f"Kùzu 0.11.3 (same edges, loaded in {load_s:.1f} s): feeders top-10 p50 "
              f"{pct(lat, .5):.2f} ms, p99 {pct(lat, .99):.2f} ms")


def pg_bulk_write(db: str, url: str, runs: int) -> None:
    """``headgraph copy`` of xl into PostgreSQL (the first run into ``url``, later ones into
    new databases on the same server), one transaction each, timed whole."""
    import logging

    import psycopg

    from headgraph.maintenance import copy_models

    phases: list[logging.LogRecord] = []
    catch = logging.Handler(logging.DEBUG)
    catch.emit = phases.append  # type: ignore[method-assign]
    schema_log = logging.getLogger("headgraph.schema")
    schema_log.addHandler(catch)
    schema_log.setLevel(logging.DEBUG)
    for run in range(runs):
        dest = url
        if run:
            dest = f"{url.rsplit('/', 1)[0]}/bench_write_{run}"
            with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as con:
                con.execute(f"CREATE DATABASE bench_write_{run}")
        start = time.perf_counter()
        [result] = copy_models(db, dest, ["xl"])
        seconds = time.perf_counter() - start
        rows = sum(result.rows.values())
        print(f"PostgreSQL bulk write (headgraph copy of xl: {rows:,} rows incl. "
              f"{result.rows['edges']:,} edges, one transaction): {seconds:.2f} s, "
              f"{rows / seconds / 1e6:.2f} M rows/s (read from DuckDB included; load average "
              f"{os.getloadavg()[0]:.2f})", flush=True)
        for record in phases:
            if hasattr(record, "phases"):
                edges, took = record.rows, record.phases  # type: ignore[attr-defined]
                print(f"  edges partition: {edges:,} rows; " + ", ".join(
                    f"{k} {v:.2f} s" for k, v in took.items()) + f"; COPY alone "
                    f"{edges / took['copy'] / 1e6:.2f} M rows/s, COPY and feeders index "
                    f"{edges / (took['copy'] + took['feeders index']) / 1e6:.2f} M rows/s",
                    flush=True)
        phases.clear()
    schema_log.removeHandler(catch)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", default="/tmp/headgraph-xl.duckdb")
    parser.add_argument("--skip-kuzu", action="store_true")
    parser.add_argument("--skip-pg", action="store_true")
    parser.add_argument("--only", choices=["pg"], help="pg: only the PostgreSQL bulk write "
                        "and in-process feeders (no DuckDB, HTTP, Kuzu or ingest parts)")
    parser.add_argument("--write-runs", type=int, default=1,
                        help="bulk writes to time, each into a new database (default 1)")
    args = parser.parse_args()
    print(f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
    if not Path(args.db).exists():
        print(f"making {args.db}: ingest random:gpt2-xl ...", flush=True)
        from headgraph.ingest.pipeline import ingest

        ingest("random:gpt2-xl", args.db, name="xl")
    if args.only is None:
        in_process(args.db, "DuckDB")
        over_http(args.db, "DuckDB")
        if not args.skip_kuzu:
            kuzu_bench(args.db)
    if args.skip_pg:
        return
    work = Path(tempfile.mkdtemp(prefix="headgraph-pg-bench-"))
    url = subprocess.run([str(ROOT / "scripts" / "pg-cluster"), "start", str(work)],
                         check=True, capture_output=True, text=True).stdout.strip()
    try:
        pg_bulk_write(args.db, url, args.write_runs)
        in_process(url, "PostgreSQL")
        if args.only == "pg":
            return
        over_http(url, "PostgreSQL")
        during_ingest(url, "PostgreSQL")
        for threads in (None, 1, None, 1):  # twice each: the tail moves by ~1 ms run to run
            during_ingest(url, "PostgreSQL", rate=10.0, nice=10, threads=threads)
        copy = Path(work) / "during.duckdb"
        import shutil

        shutil.copy(args.db, copy)
        during_ingest(str(copy), "DuckDB")
        during_ingest(str(copy), "DuckDB", rate=10.0, nice=10, threads=1)
    finally:
        subprocess.run([str(ROOT / "scripts" / "pg-cluster"), "stop", str(work)])
        import shutil

        shutil.rmtree(work, ignore_errors=True)  # ~2 GB of cluster per run otherwise


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
