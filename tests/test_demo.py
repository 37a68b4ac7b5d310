"""`headgraph demo` ingests the shipped toy model and reads its induction circuit back."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from headgraph.cli import app


def test_demo_shows_the_induction_circuit(tmp_path: Path):
    db = tmp_path / "demo.duckdb"
    result = CliRunner().invoke(app, ["demo", "--db", str(db), "--no-serve"])
    assert result.exit_code == 0, result.output
    assert "13 nodes" in result.output
    rows = [line for line in result.output.splitlines() if line.startswith("│ L1H")]
    assert len(rows) == 4 and all("L0H2" in r.split("│")[3] for r in rows)
    assert "headgraph query" in result.output and db.exists()
