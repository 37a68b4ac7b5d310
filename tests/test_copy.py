"""`headgraph copy` moves models between DuckDB and PostgreSQL with identical rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from headgraph.cli import app
from headgraph.errors import ModelExistsError, ModelNotFoundError
from headgraph.ingest.pipeline import ingest
from headgraph.maintenance import copy_models

TABLES = {
    "models": "name, family, step, source, architecture, n_layers, n_heads, n_kv_heads, d_model, "
              "d_head, d_mlp, d_vocab, n_ctx, weights_digest, processing, n_nodes, n_edges, "
              "null_bands",
    "nodes": "node, kind, layer, head, kv_head, qk_norm, ov_norm, copying_positive_fraction, "
             "copying_ratio, in_norm, out_norm",
    "edges": "source, target, kind, score, baseline, null_std, rank, z",
    "node_scores": "node, metric, probe, value",
    "edge_scores": "source, target, kind, metric, probe, value",
    "virtual_heads": "heads, length, score, heuristic, copying_ratio",
    "null_calibration": "kind, family, edges, delta, phi, basis",
    "baselines": "key, mean, std, samples, seed",
}


def rows(url_or_path) -> dict[str, list]:
    url = url_or_path if "://" in str(url_or_path) else f"duckdb:///{url_or_path}"
    engine = create_engine(url, connect_args={"read_only": True} if "duckdb" in url else {})
    out = {}
    with engine.connect() as conn:
        for table, cols in TABLES.items():
            joined = "JOIN models m USING (model_id)" if table not in ("models", "baselines") \
                else ""
            name = ", m.name" if joined else ""
            own = ", ".join(f"{table}.{c.strip()}" for c in cols.split(","))  # models has some
            q = f"SELECT {own}{name} FROM {table} {joined} ORDER BY {own}{name}"
            # REAL is float4 on both backends; drivers widen it differently, so compare as float4
            out[table] = [tuple(float(np.float32(v)) if isinstance(v, float) else v for v in r)
                          for r in conn.execute(text(q))]
    engine.dispose()
    return out


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("copy") / "home.duckdb"
    ingest("toy", db)
    ingest("toy@1600", db)
    return db


def test_duckdb_to_postgres_to_duckdb_round_trip(home: Path, pg_url: str, tmp_path: Path):
    copy_models(home, pg_url)
    back = tmp_path / "back.duckdb"
    copy_models(pg_url, back)
    original = rows(home)
    assert original["edges"] and original["virtual_heads"]
    assert rows(pg_url) == original
    assert rows(back) == original


def test_copy_refuses_a_clash_unless_replace(home: Path, tmp_path: Path):
    dest = tmp_path / "d.duckdb"
    copy_models(home, dest, ["toy"])
    before = rows(dest)
    with pytest.raises(ModelExistsError, match="--replace"):
        copy_models(home, dest, ["toy"])
    assert rows(dest) == before
    [result] = copy_models(home, dest, ["toy"], replace=True)
    assert result.replaced and rows(dest) == before
    with pytest.raises(ModelNotFoundError):
        copy_models(home, dest, ["nope"])


def test_cli_copy(home: Path, tmp_path: Path):
    dest = tmp_path / "cli.duckdb"
    result = CliRunner().invoke(app, ["copy", "--from", str(home), "--to", str(dest),
                                      "--model", "toy@1600"])
    assert result.exit_code == 0, result.output
    assert [r[0] for r in rows(dest)["models"]] == ["toy@1600"]


def test_copy_carries_circuits_and_attribution_graphs(home: Path, pg_url: str, tmp_path: Path):
    """A model travels with its circuits and the attribution graphs that explain it (by
    name), DuckDB -> PostgreSQL -> DuckDB, exact; a name with graphs and no model copies
    its graphs; a stored slug is refused unless replace; check passes on every copy."""
    import json
    import shutil

    from test_circuits import eap_ig_graph

    from headgraph.attribution.export import write_graph
    from headgraph.attribution.graphs import list_graphs
    from headgraph.attribution.importer import import_graph
    from headgraph.attribution.pruned import pruned_view
    from headgraph.attribution.synth import SynthSpec, graph_document
    from headgraph.circuits.importer import import_circuit
    from headgraph.errors import GraphExistsError
    from headgraph.maintenance import check_database
    from headgraph.queries.session import open_reader

    src = tmp_path / "src.duckdb"
    shutil.copy(home, src)
    ours = graph_document(SynthSpec(n_links=3000, n_features=150, seed=2, slug="toy-graph",
                                    scan="toy"))
    ours["links"][0]["note"] = {"why": "an extra field travels"}
    theirs = graph_document(SynthSpec(n_links=800, n_features=40, seed=3, slug="gemma-graph",
                                      scan="gemma"))
    for doc in (ours, theirs):
        (tmp_path / "g.json").write_text(json.dumps(doc))
        import_graph(tmp_path / "g.json", src)
    (tmp_path / "c.json").write_text(json.dumps(eap_ig_graph(2, 4, out=("a0.h2->a1.h2<k>",))))
    import_circuit(tmp_path / "c.json", src, model="toy", task="induction")

    def exported(db, slug: str) -> dict:
        import io

        out = io.StringIO()
        with open_reader(db) as reader:
            write_graph(reader, slug, out)
        return json.loads(out.getvalue())

    def circuits(db) -> list[tuple]:
        return sql(db, "SELECT m.name, c.tool, c.task, c.probe, c.header, c.n_edges "
                       "FROM circuits c JOIN models m USING (model_id) ORDER BY 1, 2, 3")

    def view(db) -> set:
        with open_reader(db) as reader:
            v = pruned_view(reader, "toy-graph", 0.8, 0.98, cache=False)
        return {(x.source, x.target, x.weight) for x in v.link_records()}

    [result] = copy_models(src, pg_url, ["toy"])
    assert result.rows["attribution_graphs"] == 1 and result.rows["circuits"] == 1
    back = tmp_path / "back.duckdb"
    copy_models(pg_url, back)
    for db in (pg_url, back):
        with open_reader(db) as reader:
            assert [g.slug for g in list_graphs(reader)] == ["toy-graph"]
        assert exported(db, "toy-graph") == ours
        assert circuits(db) == circuits(src)
        assert view(db) == view(src)
        report = check_database(db)
        assert report.ok, report.problems
    [result] = copy_models(src, back, ["gemma"])
    assert result.rows["attribution_graphs"] == 1 and exported(back, "gemma-graph") == theirs
    with pytest.raises(GraphExistsError):
        copy_models(src, back, ["gemma"])
    copy_models(src, back, ["gemma"], replace=True)
    assert exported(back, "gemma-graph") == theirs and check_database(back).ok


def sql(db, query: str) -> list[tuple]:
    url = db if "://" in str(db) else f"duckdb:///{db}"
    engine = create_engine(url, connect_args={"read_only": True} if "duckdb" in url else {})
    with engine.connect() as conn:
        found = [tuple(r) for r in conn.execute(text(query))]
    engine.dispose()
    return found


# --- failures: one coded line, the destination as it was -------------------------------

def _copy_with_file_limit(source: Path, dest: Path, limit_bytes: int):
    """`headgraph copy` in a process whose files may not grow past ``limit_bytes`` (as on a
    full disk: writes fail with EFBIG, SIGXFSZ ignored)."""
    import resource
    import signal
    import subprocess
    import sys

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run([sys.executable, "-m", "headgraph.cli", "copy", "--from", str(source),
                           "--to", str(dest), "--model", "toy@1600"], capture_output=True,
                          text=True, timeout=300, preexec_fn=limit)


@pytest.mark.slow
def test_a_copy_onto_a_full_disk_fails_with_one_line_and_writes_nothing(home: Path,
                                                                          tmp_path: Path):
    dest = tmp_path / "full.duckdb"
    copied = tmp_path / "first.duckdb"
    copy_models(home, copied, ["toy"])  # a destination holding one model already
    before = rows(copied)
    import shutil

    shutil.copy(copied, dest)
    result = _copy_with_file_limit(home, dest, 1024)  # no file may grow past 1 KB
    output = result.stdout + result.stderr
    assert result.returncode == 5 and "Traceback" not in output, output[-2000:]
    (line,) = [x for x in output.splitlines() if x.strip()]
    assert line.startswith("error [DATABASE_ERROR]") and "ran out of space" in line, line
    assert "wrote nothing of it" in line
    assert rows(dest) == before  # the model already there, whole; nothing of the new one
    check = CliRunner().invoke(app, ["check", "--db", str(dest)])
    assert check.exit_code == 0, check.output


def test_a_name_postgresql_cannot_store_fails_the_copy_with_one_line(home: Path,
                                                                       tmp_path: Path,
                                                                       pg_url: str):
    import duckdb

    source = tmp_path / "nul.duckdb"
    copy_models(home, source, ["toy"])
    with duckdb.connect(str(source)) as con:  # DuckDB stores a NUL; PostgreSQL cannot
        con.execute("UPDATE models SET source = 'to' || chr(0) || 'y'")
    result = CliRunner().invoke(app, ["copy", "--from", str(source), "--to", pg_url])
    assert result.exit_code == 5 and "Traceback" not in result.output, result.output
    assert "[DATABASE_ERROR]" in result.output and "NUL" in result.output
    engine = create_engine(pg_url)
    with engine.connect() as conn:  # the copy's one transaction left nothing behind
        tables = conn.execute(text("SELECT count(*) FROM information_schema.tables WHERE "
                                   "table_schema = 'public'")).scalar_one()
    engine.dispose()
    assert tables == 0
