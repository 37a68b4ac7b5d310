"""What a new user meets in the first hour: repeated commands lose nothing, the command line
says what happened (help, version, exit status, progress without a terminal), and the demo
finds a free port."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from support import sql
from typer.testing import CliRunner

from headgraph.cli import app
from headgraph.cli.demo import free_port
from headgraph.ingest.pipeline import ingest
from headgraph.version import __version__

runner = CliRunner()
PROBE = "repeat(seq=8,batch=4,seed=0)"


@pytest.fixture(scope="module")
def probed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy model with evidence from one small probe and an imported circuit."""
    db = tmp_path_factory.mktemp("probed") / "toy.duckdb"
    ingest("toy", db, probes=PROBE)
    circuit = tmp_path_factory.mktemp("circuit") / "induction.txt"
    circuit.write_text("a0.h2->a1.h2<k>\t0.5\na0.h2->a1.h0<k>\t0.25\n")
    result = runner.invoke(app, ["import", "--db", str(db), str(circuit), "--model", "toy"])
    assert result.exit_code == 0, result.output
    return db


def _attached(db: Path) -> dict[str, int]:
    counts = {}
    for table in ("node_scores", "edge_scores", "circuits"):
        (n,), = sql(db, f"SELECT count(*) FROM {table} t JOIN models m "
                        f"ON m.model_id = t.model_id WHERE m.name = 'toy'")
        counts[table] = n
    return counts


def test_a_replace_with_the_same_weights_keeps_evidence_and_circuits(probed: Path,
                                                                      tmp_path: Path):
    db = tmp_path / "same.duckdb"
    shutil.copy(probed, db)
    before = _attached(db)
    assert all(before.values()), before
    report = ingest("toy", db, replace=True)
    assert report.replaced and report.kept == {k: v for k, v in before.items() if v}
    assert report.dropped == {}
    assert _attached(db) == before
    (old_id,), = sql(probed, "SELECT model_id FROM models WHERE name = 'toy'")
    (new_id,), = sql(db, "SELECT model_id FROM models WHERE name = 'toy'")
    assert new_id != old_id  # a new model row, the evidence moved to it
    assert sql(db, "SELECT count(*) FROM node_scores WHERE model_id <> ?", new_id) == [(0,)]


def test_evidence_rerun_in_a_replace_supersedes_the_kept_rows(probed: Path, tmp_path: Path):
    db = tmp_path / "rerun.duckdb"
    shutil.copy(probed, db)
    before = _attached(db)
    ingest("toy", db, replace=True, probes=PROBE)
    assert _attached(db) == before  # the same probe's rows replaced, not doubled
    assert sql(db, "SELECT count(DISTINCT probe) FROM node_scores")[0][0] == 1


def test_a_replace_with_other_weights_says_what_it_drops_and_needs_replace(probed: Path,
                                                                           tmp_path: Path):
    db = tmp_path / "other.duckdb"
    shutil.copy(probed, db)
    before = _attached(db)
    refused = runner.invoke(app, ["ingest", "toy@1000", "--name", "toy", "--db", str(db)])
    assert refused.exit_code == 4, refused.output
    assert "node_scores rows" in refused.output and "1 circuit" in refused.output
    assert _attached(db) == before
    replaced = runner.invoke(app, ["ingest", "toy@1000", "--name", "toy", "--db", str(db),
                                   "--replace"])
    assert replaced.exit_code == 0, replaced.output
    assert re.search(r"dropped \d+ node_scores rows.* weights differ", replaced.output)
    assert _attached(db) == {"node_scores": 0, "edge_scores": 0, "circuits": 0}


def test_the_demo_run_twice_keeps_the_model_and_its_evidence(probed: Path, tmp_path: Path):
    db = tmp_path / "demo.duckdb"
    shutil.copy(probed, db)
    before = _attached(db)
    (ingested_at,), = sql(db, "SELECT ingested_at FROM models WHERE name = 'toy'")
    result = runner.invoke(app, ["demo", "--db", str(db), "--no-serve"])
    assert result.exit_code == 0, result.output
    assert "already stored" in result.output and "L0H2" in result.output
    assert _attached(db) == before
    assert sql(db, "SELECT ingested_at FROM models WHERE name = 'toy'") == [(ingested_at,)]


def test_the_demo_never_replaces_another_model_named_toy(tmp_path: Path):
    db = tmp_path / "mine.duckdb"
    ingest("toy@1000", db, name="toy")
    result = runner.invoke(app, ["demo", "--db", str(db), "--no-serve"])
    assert result.exit_code == 4 and "will not replace it" in result.output
    assert sql(db, "SELECT step FROM models WHERE name = 'toy'") == [(1000,)]


def test_the_demo_moves_off_a_taken_port():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        chosen = free_port(taken)
        assert chosen != taken
        with socket.socket() as s:
            s.bind(("127.0.0.1", chosen))  # it is really free


def test_version_and_short_help():
    assert runner.invoke(app, ["--version"]).output.strip() == f"headgraph {__version__}"
    assert "Usage" in runner.invoke(app, ["-h"]).output
    assert "Usage" in runner.invoke(app, ["ingest", "-h"]).output


def _commands() -> list[str]:
    import typer.main

    return sorted(typer.main.get_command(app).commands)


@pytest.mark.parametrize("command", _commands())
def test_help_shows_names_not_python_types(command: str):
    out = runner.invoke(app, [command, "--help"], terminal_width=120).output
    assert "Usage" in out
    assert not re.search(r"<(str|int|bool|float|path|list\[[a-z]+\])>", out), out


def test_a_series_of_a_node_that_does_not_exist_is_not_found(probed: Path):
    result = runner.invoke(app, ["series", "toy", "--db", str(probed), "--node", "L9H9"])
    assert result.exit_code == 3 and "NODE_NOT_FOUND" in result.output


def test_without_a_terminal_an_ingest_logs_timestamped_lines_and_errors_stand_apart(
        tmp_path: Path):
    db = tmp_path / "log.duckdb"
    cmd = [sys.executable, "-m", "headgraph.cli", "ingest", "random:L2H2D16V20,ctx=8",
           "--db", str(db), "--name", "m"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.strip().splitlines()
    stamp = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d  ")
    assert lines and all(stamp.match(line) for line in lines), lines
    assert any("composition scores: done, 2 layers" in line for line in lines)
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 4
    assert again.stderr.strip().splitlines()[-1].startswith("error [MODEL_EXISTS]")
    assert "Traceback" not in again.stderr
