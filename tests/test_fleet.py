"""Fleets on the local executor (no Ray): labels, manifests, one transaction per model,
failures reported while the rest commit, and the CLI's fleet summary."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from headgraph.cli import app
from headgraph.errors import BadInputError, ModelExistsError
from headgraph.ingest.manifest import fleet_items, read_manifest
from headgraph.ingest.pipeline import ingest, ingest_fleet
from headgraph.ingest.sources import step_from_name
from headgraph.ingest.writer import ModelLabel
from headgraph.toy import checkpoint_dir


def stored(db: Path) -> dict[str, tuple]:
    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute("SELECT name, family, step, n_edges FROM models").fetchall()
    con.close()
    return {r[0]: r[1:] for r in rows}


def counts_of(db: Path, name: str) -> dict[str, int]:
    """Rows a model has in every per-model table (0 everywhere when it is absent)."""
    con = duckdb.connect(str(db), read_only=True)
    out = {}
    for table in ("nodes", "edges", "virtual_heads"):
        out[table] = con.execute(
            f"SELECT count(*) FROM {table} t JOIN models m USING (model_id) WHERE m.name = ?",
            [name]).fetchone()[0]
    out["models"] = con.execute("SELECT count(*) FROM models WHERE name = ?",
                                [name]).fetchone()[0]
    con.close()
    return out


@pytest.mark.parametrize("name, step", [
    ("checkpoint-1500", 1500), ("step1500", 1500), ("step-01500", 1500), ("ckpt_20", 20),
    ("global_step300", 300), ("step=7", 7), ("iter_0001500", 1500), ("final", None),
    ("checkpoint-1500-merged", None), ("twitter5", None),
])
def test_steps_are_read_from_checkpoint_directory_names(name: str, step: int | None):
    assert step_from_name(name) == step


def test_fleet_labels_take_family_and_steps_from_names(tmp_path: Path):
    run = tmp_path / "run"
    for step in (1000, 1400):
        shutil.copytree(checkpoint_dir(step), run / f"checkpoint-{step}")
    items = fleet_items([str(run / "checkpoint-1000"), str(run / "checkpoint-1400"), "toy@0"],
                        family="mine")
    assert [i.label for i in items] == [ModelLabel("checkpoint-1000", "mine", 1000),
                                        ModelLabel("checkpoint-1400", "mine", 1400),
                                        ModelLabel("toy@0", "mine", 0)]


def test_manifest_rows_fill_defaults_and_resolve_relative_dirs(tmp_path: Path):
    shutil.copytree(checkpoint_dir(1000), tmp_path / "ckpts" / "step1000")
    manifest = tmp_path / "fleet.csv"
    manifest.write_text("source,name,family,step\n"
                        "ckpts/step1000,,run-a,\n"
                        "toy@0,first,,\n"
                        "toy,last,run-a,9999\n")
    items = read_manifest(manifest, family="default-family")
    assert items[0].source == str(tmp_path / "ckpts" / "step1000")
    assert [i.label for i in items] == [ModelLabel("step1000", "run-a", 1000),
                                        ModelLabel("first", "default-family", 0),
                                        ModelLabel("last", "run-a", 9999)]


@pytest.mark.parametrize("text, message", [
    ("src,name\ntoy,a\n", "header"),
    ("source,name,colour\ntoy,a,red\n", "header"),
    ("source,step\ntoy,soon\n", "not an integer"),
    ("source,name\n,a\n", "source is empty"),
])
def test_bad_manifests_are_refused_with_the_line(tmp_path: Path, text: str, message: str):
    manifest = tmp_path / "m.csv"
    manifest.write_text(text)
    with pytest.raises(BadInputError, match=message):
        read_manifest(manifest)


def test_a_failing_model_is_reported_and_the_rest_commit(tmp_path: Path):
    db = tmp_path / "fleet.duckdb"
    items = fleet_items(["toy@0", str(tmp_path / "missing-checkpoint"), "toy@1000"])
    report = ingest_fleet(items, db)
    assert [o.name for o in report.stored] == ["toy@0", "toy@1000"]
    (failed,) = report.failed
    assert failed.source.endswith("missing-checkpoint") and "BAD_SOURCE" in failed.error
    assert set(stored(db)) == {"toy@0", "toy@1000"}
    assert counts_of(db, failed.name) == {"nodes": 0, "edges": 0, "virtual_heads": 0,
                                                   "models": 0}


def test_fleet_writes_what_single_ingests_write(tmp_path: Path):
    one, fleet = tmp_path / "one.duckdb", tmp_path / "fleet.duckdb"
    for source in ("toy@0", "toy"):
        ingest(source, one)
    ingest_fleet(fleet_items(["toy@0", "toy"]), fleet)
    assert stored(one) == stored(fleet)
    for name in ("toy@0", "toy"):
        assert counts_of(one, name) == counts_of(fleet, name)


def test_clashing_and_repeated_names_are_refused_before_any_work(tmp_path: Path):
    db = tmp_path / "f.duckdb"
    ingest("toy@0", db)
    with pytest.raises(ModelExistsError, match="'toy@0'"):
        ingest_fleet(fleet_items(["toy@1000", "toy@0"]), db)
    assert set(stored(db)) == {"toy@0"}  # toy@1000 was not written either
    with pytest.raises(BadInputError, match="manifest"):
        ingest_fleet(fleet_items(["toy@1000", "toy@1000"]), db)


def test_cli_fleet_prints_each_model_and_exits_1_on_a_failure(tmp_path: Path):
    db = tmp_path / "cli.duckdb"
    result = CliRunner().invoke(app, ["ingest", "toy@0", "toy@1000", "nowhere/checkpoint-9",
                                      "--db", str(db), "--family", "toy-run"])
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert "2 stored, 1 failed" in text
    assert "failed nowhere/checkpoint-9" in text
    assert stored(db) == {"toy@0": ("toy-run", 0, 106), "toy@1000": ("toy-run", 1000, 106)}


def test_cli_manifest_fleet(tmp_path: Path):
    db, manifest = tmp_path / "m.duckdb", tmp_path / "fleet.csv"
    manifest.write_text("source,name,family,step\ntoy@0,early,run,\ntoy,late,run,\n")
    result = CliRunner().invoke(app, ["ingest", "--manifest", str(manifest), "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert stored(db) == {"early": ("run", 0, 106), "late": ("run", 5000, 106)}


@pytest.mark.parametrize("args, message", [
    (["toy@0", "toy", "--name", "x"], "--name and --step"),
    (["toy", "--ray-address", "127.0.0.1:1"], "need --executor ray"),
    (["toy", "--executor", "spark"], "not an executor"),
    ([], "give a SOURCE"),
])
def test_cli_refuses_inconsistent_options(tmp_path: Path, args: list[str], message: str):
    result = CliRunner().invoke(app, ["ingest", *args, "--db", str(tmp_path / "x.duckdb")])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "x.duckdb").exists()


@pytest.mark.slow
def test_the_local_executor_never_imports_ray(tmp_path: Path):
    code = ("import sys; from typer.testing import CliRunner; from headgraph.cli import app; "
            "r = CliRunner().invoke(app, ['ingest', 'toy@0', 'toy', '--db', sys.argv[1]]); "
            "assert r.exit_code == 0, r.output; "
            "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "l.duckdb")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
