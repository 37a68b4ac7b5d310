"""Load test: many concurrent clients against a real ``headgraph serve`` on loopback.

Builds a GPT-2-small-sized database (``ingest("random:gpt2-small", ...)``, 144 heads) or
takes one with ``--db`` (a DuckDB file or a PostgreSQL URL; a database without models gets
the ingest), starts ``headgraph serve --port 0`` in a subprocess, and runs ``--clients``
concurrent clients for ``--seconds`` (at most ``--max-requests`` requests in all; it stops
by itself) of a realistic mix: feeders and readers of random heads, node fields, pages of
edges (clients walk the cursors), exact top paths, heads by copying ratio, and heads in a
role. It prints whether every answer was clean, p50/p99 latency, requests/s and the
server's RSS at the start and the end (and its peak), and exits 1 on any error.

``--hostile`` runs a second pass with two fan-out clients and six clients that never read
their export mixed in (``benchmarks/hostile_load.py``): the well-behaved clients must get
0 errors, every fan-out a refusal, and their p99 is compared with the clean pass's.

``--during-ingest`` runs a second pass while ``headgraph ingest`` writes a new model
(``load-test-ingest``, replaced on each run; it stays in a ``--db`` you gave) into the
same database: on PostgreSQL every request must still be answered; on DuckDB requests
may instead get HTTP 503 ``DATABASE_LOCKED`` with ``Retry-After`` (counted apart; a client
waits as told) and nothing else, and the new model must be visible once the ingest is done.

Run::

    .venv/bin/python benchmarks/load_test.py                       # 32 clients, 60 s
    .venv/bin/python benchmarks/load_test.py --db /tmp/g.duckdb --during-ingest
    .venv/bin/python benchmarks/load_test.py --db /tmp/g.duckdb --hostile
    .venv/bin/python benchmarks/load_test.py --clients 4 --seconds 3 --db toy.duckdb

:func:`run_load` and :class:`ServerProcess` are what ``tests/test_security_load.py`` runs
(4 clients, a few seconds, on the toy model).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "headgraph.cli"]
PORT_LINE = re.compile(rb"Uvicorn running on http://([0-9.]+):(\d+)")
INGESTED = "load-test-ingest"  # the model --during-ingest writes (replaced on each run)


class ServerProcess:
    """``headgraph serve --db DB --port 0`` in a subprocess (its log in a temp file).

    ``url`` is where it listens (read from uvicorn's start line), ``pid`` its process,
    :meth:`rss` its resident memory in bytes. ``settings`` become ``--setting NAME=VALUE``;
    ``max_files`` limits the process's open files (soft and hard ``RLIMIT_NOFILE``).
    """

    def __init__(self, db: str | os.PathLike[str], settings: dict[str, object] | None = None,
                 *, extra: list[str] | None = None, env: dict[str, str] | None = None,
                 start_timeout: float = 60.0, max_files: int | None = None) -> None:
        self.log_path = Path(tempfile.mkstemp(prefix="headgraph-serve-", suffix=".log")[1])
        args = [*CLI, "serve", "--db", str(db), "--port", "0", *(extra or [])]
        for name, value in (settings or {}).items():
            args += ["--setting", f"{name}={value}"]
        def limit_files() -> None:
            import resource

            resource.setrlimit(resource.RLIMIT_NOFILE, (max_files, max_files))

        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                         env={**os.environ, **(env or {})},
                                         preexec_fn=limit_files if max_files else None)
        self.pid = self.proc.pid
        deadline = time.monotonic() + start_timeout
        while True:
            found = PORT_LINE.search(self.log_path.read_bytes())
            if found:
                self.host, self.port = found.group(1).decode(), int(found.group(2))
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"headgraph serve did not start:\n{self.log()}")
            time.sleep(0.05)
        self.url = f"http://{self.host}:{self.port}"

    def rss(self) -> int:
        return psutil.Process(self.pid).memory_info().rss

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.log_path.unlink(missing_ok=True)


# --- the query mix ----------------------------------------------------------------------

FEEDERS = ("query($m: String!, $n: String!, $k: EdgeKind!) { node(model: $m, name: $n) "
           "{ feeders(kind: $k, top: 10) { source { name layer } score z rank } } }")
READERS = ("query($m: String!, $n: String!, $k: EdgeKind!) { node(model: $m, name: $n) "
           "{ readers(kind: $k, top: 10) { target { name } score baseline } } }")
NODE = ("query($m: String!, $n: String!) { node(model: $m, name: $n) { name kind layer head "
        "qkNorm ovNorm copying { ratio positiveFraction } model { name nLayers } } }")
EDGES = ("query($m: String!, $k: EdgeKind, $after: String) { model(name: $m) { edges(kind: $k, "
         "first: 50, after: $after) { pageInfo { endCursor hasNextPage } edges { cursor "
         "node { source { name } target { name } kind score } } } } }")
PATHS = ("query($m: String!, $t: String!) { model(name: $m) { paths(target: $t, maxLength: 3, "
         "top: 5, kinds: [K, V]) { score kinds nodes { name } } } }")
COPYING = ("query($m: String!) { model(name: $m) { heads(orderBy: COPYING_RATIO, first: 10) "
           "{ name copying { ratio } } } }")
ROLE = ('query($m: String!) { model(name: $m) { heads(role: "copying", first: 10) '
        '{ name roles } } }')
MIX = (("feeders", 30), ("readers", 15), ("node", 15), ("edges", 15), ("paths", 8),
       ("copying", 12), ("role", 5))


@dataclass
class Shape:
    model: str
    n_layers: int
    n_heads: int

    def head(self, rng: random.Random, min_layer: int = 0) -> str:
        layer = rng.randrange(min(min_layer, self.n_layers - 1), self.n_layers)
        return f"L{layer}H{rng.randrange(self.n_heads)}"


@dataclass
class Stats:
    ok: list[float] = field(default_factory=list)
    locked: int = 0
    errors: int = 0
    samples: list[str] = field(default_factory=list)
    by_kind: dict[str, int] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.ok) + self.locked + self.errors

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.samples) < 5:
            self.samples.append(what[:300])


def request_for(kind: str, shape: Shape, rng: random.Random,
                cursors: dict[str, str | None]) -> dict[str, Any]:
    m = shape.model
    k = rng.choice(["Q", "K", "V"])
    if kind == "feeders":
        return {"query": FEEDERS, "variables": {"m": m, "n": shape.head(rng, 1), "k": k}}
    if kind == "readers":
        return {"query": READERS, "variables": {"m": m, "n": shape.head(rng), "k": k}}
    if kind == "node":
        return {"query": NODE, "variables": {"m": m, "n": shape.head(rng)}}
    if kind == "edges":
        return {"query": EDGES, "variables": {"m": m, "k": k, "after": cursors.get(k)}}
    if kind == "paths":
        return {"query": PATHS, "variables": {"m": m, "t": shape.head(rng, shape.n_layers // 2)}}
    return {"query": COPYING if kind == "copying" else ROLE, "variables": {"m": m}}


async def _client(http: httpx.AsyncClient, shape: Shape, seed: int, stop_at: float,
                  max_requests: int, stats: Stats) -> None:
    rng = random.Random(seed)
    kinds = [k for k, w in MIX for _ in range(w)]
    cursors: dict[str, str | None] = {}
    while time.monotonic() < stop_at and stats.count < max_requests:
        kind = rng.choice(kinds)
        payload = request_for(kind, shape, rng, cursors)
        t = time.perf_counter()
        try:
            r = await http.post("/graphql", json=payload)
        except httpx.HTTPError as exc:
            stats.error(f"{kind}: {type(exc).__name__}: {exc}")
            continue
        took = time.perf_counter() - t
        body = _json(r)
        codes = [e.get("extensions", {}).get("code") for e in body.get("errors", [])]
        if r.status_code == 200 and not codes and body.get("data"):
            stats.ok.append(took)
            stats.by_kind[kind] = stats.by_kind.get(kind, 0) + 1
            if kind == "edges":
                page = body["data"]["model"]["edges"]["pageInfo"]
                k = payload["variables"]["k"]
                cursors[k] = page["endCursor"] if page["hasNextPage"] else None
        elif r.status_code == 503 and codes == ["DATABASE_LOCKED"] and r.headers.get(
                "retry-after", "").isdigit():
            stats.locked += 1
            await asyncio.sleep(min(float(r.headers["retry-after"]),
                                    max(0.0, stop_at - time.monotonic())))
        else:
            stats.error(f"{kind}: HTTP {r.status_code} {r.text[:200]}")


def _json(r: httpx.Response) -> dict[str, Any]:
    try:
        body = r.json()
    except ValueError:
        return {"errors": [{"extensions": {"code": "NOT_JSON"}}]}
    return body if isinstance(body, dict) else {"errors": [{"extensions": {"code": "NOT_JSON"}}]}


async def _load(url: str, shape: Shape, clients: int, seconds: float, max_requests: int,
                seed: int, server: ServerProcess | None) -> tuple[Stats, float, int]:
    stats = Stats()
    peak = [server.rss() if server else 0]

    async def sample() -> None:
        while server is not None:
            peak[0] = max(peak[0], server.rss())
            await asyncio.sleep(0.5)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        sampler = asyncio.create_task(sample())
        start = time.monotonic()
        await asyncio.gather(*(_client(http, shape, seed * 1000 + i, start + seconds,
                                       max_requests, stats) for i in range(clients)))
        elapsed = time.monotonic() - start
        sampler.cancel()
    return stats, elapsed, peak[0]


@dataclass
class LoadResult:
    """One pass: counts, latencies of the clean answers, wall time, server RSS (bytes) when
    the pass began (``rss_launch``), after the warm-up requests (``rss_start``), at the
    end and at its peak (sampled every 0.5 s)."""

    requests: int
    ok: int
    locked: int
    errors: int
    error_samples: list[str]
    p50_ms: float
    p99_ms: float
    req_per_s: float
    seconds: float
    rss_launch: int
    rss_start: int
    rss_end: int
    rss_peak: int
    by_kind: dict[str, int]

    def line(self) -> str:
        mb = 1024 * 1024
        return (f"{self.requests} requests in {self.seconds:.1f} s: {self.ok} ok, "
                f"{self.locked} DATABASE_LOCKED, {self.errors} errors; p50 {self.p50_ms:.1f} ms, "
                f"p99 {self.p99_ms:.1f} ms, {self.req_per_s:.0f} req/s; server RSS "
                f"{self.rss_launch / mb:.0f} MB idle, {self.rss_start / mb:.0f} MB warm -> "
                f"{self.rss_end / mb:.0f} MB at the end (peak {self.rss_peak / mb:.0f} MB)")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def shape_of(url: str, model: str | None = None) -> Shape:
    r = httpx.post(f"{url}/graphql", json={"query": "{ models { name nLayers nHeads } }"},
                   timeout=60)
    models = [m for m in r.json()["data"]["models"] if m["name"] != INGESTED]
    if not models:
        raise SystemExit("the database holds no model")
    biggest = max(models, key=lambda m: m["nLayers"] * m["nHeads"])
    chosen = next((m for m in models if m["name"] == model), None) if model else biggest
    if chosen is None:
        raise SystemExit(f"no model {model!r}; stored: {[m['name'] for m in models]}")
    return Shape(chosen["name"], chosen["nLayers"], chosen["nHeads"])


def run_load(server: ServerProcess, *, clients: int = 32, seconds: float = 60.0,
             max_requests: int = 1_000_000, seed: int = 0, model: str | None = None,
             warm: bool = True) -> LoadResult:
    """One pass of the mix against a running server; ``warm`` first asks each kind once
    (the first path search loads the model's graph view)."""
    shape = shape_of(server.url, model)
    rss_launch = server.rss()
    if warm:
        rng = random.Random(seed)
        for kind, _ in MIX:
            httpx.post(f"{server.url}/graphql", json=request_for(kind, shape, rng, {}),
                       timeout=120)
    rss_start = server.rss()
    stats, elapsed, peak = asyncio.run(_load(server.url, shape, clients, seconds,
                                             max_requests, seed, server))
    rss_end = server.rss()
    return LoadResult(requests=stats.count, ok=len(stats.ok), locked=stats.locked,
                      errors=stats.errors, error_samples=stats.samples,
                      p50_ms=percentile(stats.ok, 0.5) * 1000,
                      p99_ms=percentile(stats.ok, 0.99) * 1000,
                      req_per_s=stats.count / elapsed if elapsed else 0.0, seconds=elapsed,
                      rss_launch=rss_launch, rss_start=rss_start, rss_end=rss_end,
                      rss_peak=max(peak, rss_end),
                      by_kind=stats.by_kind)


# --- the database and the ingest pass ---------------------------------------------------

def has_models(db: str) -> bool:
    from headgraph.errors import HeadgraphError
    from headgraph.queries.models import list_models
    from headgraph.queries.session import open_reader

    try:
        with open_reader(db, release=True) as reader, reader.session() as session:
            return bool(list_models(session))
    except HeadgraphError:
        return False


def build(db: str, source: str) -> None:
    from headgraph.ingest.pipeline import ingest

    t = time.perf_counter()
    print(f"building {db}: ingest({source!r}) ...", flush=True)
    ingest(source, db)
    print(f"  built in {time.perf_counter() - t:.0f} s", flush=True)


def during_ingest(server: ServerProcess, db: str, source: str, args: argparse.Namespace
                  ) -> tuple[LoadResult, int, float, bool]:
    """A pass while ``headgraph ingest SOURCE`` writes a new model into ``db``; it lasts
    until the ingest ends (at least ``args.seconds``, at most ``3 * args.seconds + 120``)."""
    name = INGESTED
    t = time.perf_counter()
    cli = CLI  # headgraph's writer leaves <db>.write-pending while it waits (database.py)
    writer = subprocess.Popen([*cli, "ingest", source, "--db", db, "--name", name, "--replace"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT,
                              env={**os.environ, "HEADGRAPH_LOCK_WAIT": "60"})
    import threading

    done = threading.Event()
    ingest_s = [0.0]

    def wait() -> None:
        writer.wait()
        ingest_s[0] = time.perf_counter() - t
        done.set()

    threading.Thread(target=wait, daemon=True).start()
    result: LoadResult | None = None
    passes: list[LoadResult] = []
    budget = time.monotonic() + 3 * args.seconds + 120
    while True:  # passes of `seconds` until the ingest has ended
        result = run_load(server, clients=args.clients, seconds=args.seconds,
                          max_requests=args.max_requests, seed=args.seed + len(passes) + 1,
                          model=args.model, warm=False)
        passes.append(result)
        if done.is_set() or time.monotonic() > budget:
            break
    if not done.wait(max(0.0, budget - time.monotonic())):
        writer.kill()
        writer.wait()
    merged = _merge(passes)
    visible = False
    r = httpx.post(f"{server.url}/graphql", json={"query": "{ models { name } }"}, timeout=60)
    if r.status_code == 200:
        visible = name in {m["name"] for m in r.json()["data"]["models"]}
    if writer.returncode:
        print(f"  ingest failed ({writer.returncode}): "
              f"{writer.stderr.read().decode(errors='replace')[-500:] if writer.stderr else ''}")
    return merged, writer.returncode or 0, ingest_s[0], visible


def _merge(passes: list[LoadResult]) -> LoadResult:
    if len(passes) == 1:
        return passes[0]
    total = sum(p.seconds for p in passes)
    return LoadResult(
        requests=sum(p.requests for p in passes), ok=sum(p.ok for p in passes),
        locked=sum(p.locked for p in passes), errors=sum(p.errors for p in passes),
        error_samples=[s for p in passes for s in p.error_samples][:5],
        p50_ms=max(p.p50_ms for p in passes), p99_ms=max(p.p99_ms for p in passes),
        req_per_s=sum(p.requests for p in passes) / total if total else 0.0, seconds=total,
        rss_launch=passes[0].rss_launch, rss_start=passes[0].rss_start,
        rss_end=passes[-1].rss_end,
        rss_peak=max(p.rss_peak for p in passes),
        by_kind={k: sum(p.by_kind.get(k, 0) for p in passes) for k, _ in MIX})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", help="DuckDB file or PostgreSQL URL (default: a temp file)")
    ap.add_argument("--source", default="random:gpt2-small",
                    help="what to ingest into a database without models")
    ap.add_argument("--model", help="model to query (default: the first stored)")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--max-requests", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--during-ingest", action="store_true",
                    help="then a second pass while an ingest writes into the database")
    ap.add_argument("--ingest-source", default="random:L4H8D128V500,ctx=64",
                    help="what --during-ingest ingests")
    ap.add_argument("--hostile", action="store_true",
                    help="then a second pass with two fan-out clients and six clients that "
                         "never read their export mixed in (benchmarks/hostile_load.py): "
                         "0 errors and p99 within 2x of the clean pass")
    ap.add_argument("--setting", action="append", default=[], metavar="NAME=VALUE",
                    help="a server setting (repeatable)")
    ap.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = ap.parse_args(argv)

    tmp = None
    db = args.db
    if db is None:
        tmp = tempfile.TemporaryDirectory(prefix="headgraph-load-")
        db = str(Path(tmp.name) / "load.duckdb")
    if not has_models(db):
        build(db, args.source)
    settings = dict(pair.split("=", 1) for pair in args.setting)
    failed = False
    out: dict[str, Any] = {}
    try:
        with ServerProcess(db, settings) as server:
            print(f"server pid {server.pid} at {server.url}; {args.clients} clients, "
                  f"{args.seconds:g} s, at most {args.max_requests} requests", flush=True)
            result = run_load(server, clients=args.clients, seconds=args.seconds,
                              max_requests=args.max_requests, seed=args.seed, model=args.model)
            print(f"load: {result.line()}")
            print(f"  mix: {result.by_kind}")
            clean = result.errors == 0 and result.locked == 0
            print(f"  zero errors: {'yes' if clean else 'NO'} {result.error_samples or ''}")
            failed |= not clean
            out["load"] = result.__dict__
            if args.during_ingest:
                server_db = "://" in db
                merged, code, ingest_s, visible = during_ingest(server, db, args.ingest_source,
                                                                args)
                print(f"during ingest ({'PostgreSQL' if server_db else 'DuckDB'}; the ingest "
                      f"took {ingest_s:.1f} s, exit {code}, new model visible after: "
                      f"{visible}): {merged.line()}")
                ok = merged.errors == 0 and code == 0 and visible
                if server_db:
                    ok &= merged.locked == 0  # readers never wait on PostgreSQL
                print(f"  {'held' if ok else 'FAILED'}: {merged.errors} errors, "
                      f"{merged.locked} refused with 503 DATABASE_LOCKED + Retry-After "
                      f"{merged.error_samples or ''}")
                failed |= not ok
                out["during_ingest"] = {**merged.__dict__, "ingest_exit": code,
                                        "ingest_s": ingest_s, "visible": visible}
            if args.hostile:
                sys.path.insert(0, str(Path(__file__).resolve().parent))
                from hostile_load import hostile_pass

                ok, out["hostile"] = hostile_pass(server, result, args, run_load, shape_of)
                failed |= not ok
            if not server.alive():
                print("the server died")
                failed = True
    finally:
        if tmp is not None:
            tmp.cleanup()
    if args.json:
        print(json.dumps(out))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
