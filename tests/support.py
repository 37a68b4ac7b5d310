"""Shared test helpers: a real uvicorn server in a thread on a free loopback port, SQL on
either backend, fresh PostgreSQL databases."""

from __future__ import annotations

import importlib.util
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import uvicorn

from headgraph.server import uvicorn_config

BACKENDS = ("duckdb", "postgresql")
ROOT = Path(__file__).resolve().parents[1]


PROGRESS_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d  ")
"""A stage's progress line, as the CLI logs it on stderr when that is not a terminal."""


def said(output: str) -> list[str]:
    """The non-blank lines of a command's output other than its progress log lines."""
    return [x for x in output.splitlines() if x.strip() and not PROGRESS_LINE.match(x)]


def benchmark_module(name: str) -> ModuleType:
    """A script of benchmarks/ as a module (``load_test``: ``ServerProcess``,
    ``run_load``; ``hostile_load``: the fan-out document), loaded once."""
    key = f"headgraph_{name}"
    if key in sys.modules:
        return sys.modules[key]
    folder = str(ROOT / "benchmarks")
    if folder not in sys.path:  # load_test imports hostile_load by name when asked
        sys.path.append(folder)
    spec = importlib.util.spec_from_file_location(key, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def sql(store: Any, query: str, *params: Any) -> list[tuple]:
    """Run ``query`` (``?`` placeholders) read-only on a DuckDB file or a PostgreSQL URL."""
    text = str(store)
    if "://" not in text:
        from headgraph.schema.database import create_db_engine, resolve_target

        # through the same driver settings as headgraph's readers, so that it shares the
        # open database with a server of this process that holds the file
        engine = create_db_engine(resolve_target(text), read_only=True)
        try:
            with engine.connect() as conn:
                cursor = conn.connection.driver_connection.cursor()
                cursor.execute(query, list(params))
                return cursor.fetchall()
        finally:
            engine.dispose()
    import psycopg

    url = text.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as con:
        return [tuple(r) for r in con.execute(query.replace("?", "%s"), params).fetchall()]


_WRITER = ("import sys; from headgraph.schema.database import begin_writing, "
           "create_db_engine, resolve_target; t = resolve_target(sys.argv[1]); "
           "e = create_db_engine(t, read_only=False)\n"
           "with begin_writing(e, t, wait_s=float(sys.argv[2])):\n"
           "    print('locked', flush=True); sys.stdin.read()")


def hold_for_writing(db: Path, wait_s: float = 20.0) -> subprocess.Popen:
    """A process that takes ``db`` for writing as headgraph's writers do (leaving the
    write-pending marker while it waits, so a server lets go) and holds it until its stdin
    closes. Returns once it holds the file."""
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(db), str(wait_s)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    if line != "locked":
        proc.kill()
        raise AssertionError(f"the writer did not get {db} (exit {proc.wait()})")
    return proc


def waiting_writer(db: Path, wait_s: float = 60.0) -> subprocess.Popen:
    """A process that asks for ``db`` for writing as headgraph's writers do, without
    waiting for it to get it: while another process holds the file it waits, leaving the
    write-pending marker (then it holds the file until its stdin closes)."""
    return subprocess.Popen([sys.executable, "-c", _WRITER, str(db), str(wait_s)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def write_briefly(db: Path, wait_s: float = 20.0) -> int:
    """Take ``db`` for writing as headgraph does and let go at once; the exit status."""
    proc = subprocess.run([sys.executable, "-c", _WRITER, str(db), str(wait_s)], input="",
                          capture_output=True, text=True, timeout=wait_s + 30)
    return proc.returncode


def count_statements(executor: Any, query: str) -> tuple[dict, int]:
    """Run ``query`` on a :class:`~headgraph.api.execute.Executor`; its body and the number
    of SQL statements it sent. Starts cold: lookups remembered while the file was held
    (``GraphDB.memo``) and models' nodes the reader kept (``GraphDB.lasting``) are dropped
    first, so counts do not depend on earlier requests (the database's sizes, which the
    cost estimate reads every 10 s, are read before)."""
    from sqlalchemy import event

    from headgraph.queries.lasting import Lasting

    statements: list[str] = []
    executor.execute_sync("{ models { name } }")  # the database's sizes are read every
    reader = executor.reader()  # 10 s for the cost estimate, not per request: read them now
    reader.unhold()
    reader.lasting = Lasting()
    engine = reader.engine

    def record(conn, cursor, statement, *args) -> None:  # noqa: ANN001
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        outcome = executor.execute_sync(query)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert outcome.ok, outcome.body
    return outcome.body, len(statements)


def new_pg_database(server_url: str, name: str) -> str:
    """Create (or re-create) database ``name`` on the server and return its URL."""
    import psycopg

    admin = server_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as con:
        con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        con.execute(f'CREATE DATABASE "{name}"')
    return server_url.rsplit("/", 1)[0] + "/" + name


class Server:
    """uvicorn serving an app in a thread, on a free loopback port, configured as
    ``headgraph serve`` does."""

    def __init__(self, app: Any) -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        # as `headgraph serve` configures uvicorn (connection guards, keep-alive)
        self.server = uvicorn.Server(uvicorn_config(app, log_level="warning",
                                                    configure_logging=False))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]},
                                       daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        self.client = httpx.Client(base_url=self.url, timeout=10)

    def gql(self, query: str, variables: dict | None = None, **kw: Any) -> dict:
        r = self.client.post("/graphql", json={"query": query, "variables": variables}, **kw)
        assert r.headers["content-type"] == "application/json"
        return r.json()

    def stop(self) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(10)
