"""Crash safety: SIGKILL an ingest, a replace or a copy at random moments; the database
always opens, passes ``headgraph check``, and holds only whole models.

Quick by default (2 kills per case); the long run for RELIABILITY.md is

    HEADGRAPH_CRASH_RUNS=50 .venv/bin/python -m pytest tests/test_crash.py -q

(``HEADGRAPH_CRASH_REPORT=FILE`` appends one JSON line per case with the counts.)
Kill moments are drawn uniformly over the measured length of an uninterrupted run, so
they land in loading, composing and writing alike.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from headgraph.ingest.pipeline import ingest
from headgraph.maintenance import check_database

pytestmark = pytest.mark.slow  # SIGKILLs real ingests and copies: seconds each

RUNS = int(os.environ.get("HEADGRAPH_CRASH_RUNS", "2"))
SOURCE = "random:L4H8D128V500,ctx=64"
CLI = [sys.executable, "-m", "headgraph.cli"]


def _models(db: str) -> dict[str, tuple[int, str]]:
    """name -> (n_edges, weights digest) of every stored model."""
    url = db if "://" in db else f"duckdb:///{db}"
    engine = create_engine(url, connect_args={"read_only": True} if "://" not in db else {})
    try:
        with engine.connect() as conn:
            if "models" not in inspect(conn).get_table_names():
                return {}  # killed before the first commit: an empty database
            rows = conn.execute(text("SELECT name, n_edges, weights_digest FROM models")).all()
    finally:
        engine.dispose()
    return {r[0]: (r[1], r[2]) for r in rows}


def _run_killed(args: list[str], delay: float) -> int:
    proc = subprocess.Popen(CLI + args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    return proc.returncode


@pytest.fixture(params=["duckdb", "postgresql"])
def store(request, tmp_path: Path) -> str:
    if request.param == "duckdb":
        return str(tmp_path / "crash.duckdb")
    return request.getfixturevalue("pg_url")


def _timed(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(CLI + args, check=True, capture_output=True)
    return time.perf_counter() - start


def _report(case: str, store: str, tried: int, survived: int, killed: int) -> None:
    path = os.environ.get("HEADGRAPH_CRASH_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"case": case, "backend": store.split(":")[0] if "://" in store
                                else "duckdb", "tried": tried, "survived": survived,
                                "killed_mid_run": killed}) + "\n")


@pytest.mark.parametrize("mode", ["ingest", "replace"])
def test_killed_ingests_leave_only_whole_models(store: str, mode: str):
    ingest(SOURCE, store, name="base")
    base = _models(store)["base"]
    full = _timed(["ingest", SOURCE + ",seed=1", "--db", store, "--name", "timing"])
    committed = _models(store)
    rng = random.Random(7)
    survived = killed = 0
    for i in range(RUNS):
        name = "base" if mode == "replace" else f"run{i}"
        args = ["ingest", f"{SOURCE},seed={i + 2}", "--db", store, "--name", name]
        if mode == "replace":
            args.append("--replace")
        code = _run_killed(args, rng.uniform(0.0, full * 1.1))
        killed += code == -signal.SIGKILL
        report = check_database(store)
        assert report.ok, report.problems
        now = _models(store)
        if mode == "replace":
            assert "base" in now  # never missing: old until the new one commits
            if now["base"] != base:  # the replacement committed, whole (check passed)
                base = now["base"]
        else:
            assert set(now) - set(committed) <= {name}
            if code == 0:
                assert name in now
        committed = now
        survived += 1
    _report(f"kill {mode}", store, RUNS, survived, killed)


def test_killed_copies_leave_only_whole_models(store: str, tmp_path: Path):
    home = tmp_path / "home.duckdb"
    for i in range(3):
        ingest(f"{SOURCE},seed={i}", home, name=f"m{i}")
    dest = store if "://" in store else str(tmp_path / "dest.duckdb")
    full = _timed(["copy", "--from", str(home), "--to", str(tmp_path / "timing.duckdb")])
    rng = random.Random(11)
    survived = killed = 0
    for _ in range(RUNS):
        code = _run_killed(["copy", "--from", str(home), "--to", dest, "--replace"],
                           rng.uniform(0.0, full * 1.1))
        killed += code == -signal.SIGKILL
        if "://" not in dest and not Path(dest).exists():
            survived += 1
            continue
        report = check_database(dest)
        assert report.ok or report.problems == ("the database is empty (no schema)",), \
            report.problems
        assert set(_models(dest)) <= {"m0", "m1", "m2"}
        survived += 1
    _report("kill copy", store, RUNS, survived, killed)
