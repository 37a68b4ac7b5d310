"""Ingest end to end into real DuckDB files: what is stored, and every refusal.

Each refusal must name the problem, and leave the database exactly as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from headgraph.cli import app
from headgraph.errors import (
    BadWeightsError,
    DatabaseLockedError,
    ModelExistsError,
    SchemaVersionError,
    SourceError,
    UnsupportedArchitectureError,
)
from headgraph.ingest.pipeline import ingest

SMALL = "random:L3H4D32V50,ctx=16"


def snapshot(path: Path) -> str:
    """A digest of every row of every table (or 'absent'): equal digests, equal databases."""
    if not path.exists():
        return "absent"
    con = duckdb.connect(str(path), read_only=True)
    try:
        h = hashlib.sha256()
        for (table,) in con.execute("SELECT table_name FROM information_schema.tables "
                                    "ORDER BY table_name").fetchall():
            h.update(table.encode())
            rows = con.execute(f'SELECT * FROM "{table}" ORDER BY ALL').fetchall()
            h.update(repr(rows).encode())
        return h.hexdigest()
    finally:
        con.close()


@pytest.fixture
def small_db(db_path: Path) -> Path:
    ingest(SMALL, db_path, name="small")
    return db_path


def test_stores_every_node_and_edge_of_the_block_structure(small_db: Path):
    con = duckdb.connect(str(small_db), read_only=True)
    (n_models, ) = con.execute("SELECT count(*) FROM models").fetchone()
    assert n_models == 1
    nodes = dict(con.execute("SELECT kind, count(*) FROM nodes GROUP BY kind").fetchall())
    assert nodes == {"embed": 1, "pos_embed": 1, "head": 12, "mlp": 3, "unembed": 1}
    kinds = dict(con.execute("SELECT kind, count(*) FROM edges GROUP BY kind").fetchall())
    L, H = 3, 4
    head_pairs = H * H * L * (L - 1) // 2
    mlp_into_heads = sum(H * (L - 1 - m) for m in range(L))  # MLP m feeds layers > m
    into_heads = head_pairs + mlp_into_heads + 2 * L * H  # + EMBED, POS_EMBED
    assert kinds["Q"] == kinds["K"] == kinds["V"] == into_heads
    heads_into_mlps = sum(H * (m + 1) for m in range(L))  # a sequential MLP reads its layer
    assert kinds["MLP"] == heads_into_mlps + L * (L - 1) // 2 + 2 * L
    assert kinds["UNEMBED"] == L * H + L + 2
    # head -> head edges only go forward in depth
    (backwards,) = con.execute("""
        SELECT count(*) FROM edges e JOIN nodes s ON s.node = e.source AND s.model_id = e.model_id
        JOIN nodes t ON t.node = e.target AND t.model_id = e.model_id
        WHERE s.kind = 'head' AND t.kind = 'head' AND s.layer >= t.layer""").fetchone()
    assert backwards == 0


def test_rank_one_is_the_strongest_feeder(small_db: Path):
    con = duckdb.connect(str(small_db), read_only=True)
    bad = con.execute("""
        SELECT count(*) FROM (
          SELECT target, kind, max(score) AS best,
                 max(score) FILTER (WHERE rank = 1) AS first,
                 count(*) AS n, max(rank) AS max_rank, count(DISTINCT rank) AS ranks
          FROM edges GROUP BY target, kind)
        WHERE best <> first OR n <> max_rank OR n <> ranks""").fetchone()[0]
    assert bad == 0


def test_scores_sit_on_their_null_for_random_weights(small_db: Path):
    """Random weights compose like the Gaussian null: mean score ~ baseline. (EMBED ->
    UNEMBED is left out: GPT-2 ties W_U to W_E, which is structure, not noise.)"""
    con = duckdb.connect(str(small_db), read_only=True)
    for kind, score, baseline, z in con.execute(
        "SELECT kind, avg(score), avg(baseline), avg((score - baseline) / null_std) "
        "FROM edges WHERE NOT (source = 'EMBED' AND target = 'UNEMBED') GROUP BY kind"
    ).fetchall():
        assert abs(score - baseline) / baseline < 0.1, kind
        assert abs(z) < 1.0, kind


def test_model_row_records_shape_and_processing(small_db: Path):
    con = duckdb.connect(str(small_db), read_only=True)
    row = con.execute("SELECT name, n_layers, n_heads, n_kv_heads, d_model, d_head, d_mlp, "
                      "d_vocab, n_ctx, processing, weights_digest, n_edges FROM models").fetchone()
    name, L, H, kv, d, dh, d_mlp, vocab, ctx, processing, digest, n_edges = row
    assert (name, L, H, kv, d, dh, d_mlp, vocab, ctx) == ("small", 3, 4, 4, 32, 8, 128, 50, 16)
    assert "fold_ln" in processing and len(digest) == 64
    assert n_edges == con.execute("SELECT count(*) FROM edges").fetchone()[0]


def test_reingest_needs_replace_and_replace_swaps_the_model(small_db: Path):
    before = snapshot(small_db)
    with pytest.raises(ModelExistsError, match="--replace"):
        ingest(SMALL, small_db, name="small")
    assert snapshot(small_db) == before
    report = ingest(SMALL + ",seed=9", small_db, name="small", replace=True)
    assert report.replaced
    con = duckdb.connect(str(small_db), read_only=True)
    assert con.execute("SELECT count(*), max(source) FROM models").fetchone() == (
        1, SMALL + ",seed=9")
    assert con.execute("SELECT count(DISTINCT model_id) FROM edges").fetchone()[0] == 1


def _write_gpt2(path: Path, *, arch: str = "GPT2LMHeadModel", poison: bool = False) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(n_layer=2, n_head=2, n_embd=16, vocab_size=20, n_positions=8)
    model = GPT2LMHeadModel(cfg)
    if poison:
        with torch.no_grad():
            model.transformer.h[1].attn.c_attn.weight[3, 5] = float("nan")
    model.save_pretrained(path)
    if arch != "GPT2LMHeadModel":
        config = json.loads((path / "config.json").read_text())
        config["architectures"] = [arch]
        (path / "config.json").write_text(json.dumps(config))
    return path


@pytest.mark.parametrize(
    ("make", "error", "words"),
    [
        (lambda tmp: tmp / "missing", SourceError, "no such file"),
        (lambda tmp: (tmp / "empty").mkdir() or tmp / "empty", SourceError, "no config.json"),
        (lambda tmp: _write_gpt2(tmp / "m", arch="FooForCausalLM"),
         UnsupportedArchitectureError, "FooForCausalLM"),
        (lambda tmp: _write_gpt2(tmp / "m", poison=True), BadWeightsError, "NaN"),
        (lambda tmp: "not/a-real-model", SourceError, "HF_HUB_OFFLINE"),
    ],
    ids=["missing-path", "not-a-model", "unsupported-arch", "nan-weights", "offline-hub-name"],
)
def test_bad_sources_are_refused_and_change_nothing(small_db: Path, tmp_path: Path, make, error,
                                                   words):
    before = snapshot(small_db)
    with pytest.raises(error, match=words):
        ingest(str(make(tmp_path)), small_db, name="other")
    assert snapshot(small_db) == before


def test_nan_weights_never_create_a_database(tmp_path: Path):
    db = tmp_path / "new.duckdb"
    with pytest.raises(BadWeightsError):
        ingest(str(_write_gpt2(tmp_path / "m", poison=True)), db)
    assert snapshot(db) == "absent"


def test_another_schema_version_is_refused(small_db: Path):
    con = duckdb.connect(str(small_db))
    con.execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    con.close()
    before = snapshot(small_db)
    with pytest.raises(SchemaVersionError, match="999"):
        ingest(SMALL, small_db, name="other")
    assert snapshot(small_db) == before


def test_a_foreign_duckdb_file_is_refused(tmp_path: Path):
    db = tmp_path / "foreign.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE users (id INTEGER)")
    con.close()
    before = snapshot(db)
    with pytest.raises(SchemaVersionError, match="not a headgraph database"):
        ingest(SMALL, db)
    assert snapshot(db) == before


def test_a_database_held_by_another_writer_is_refused(small_db: Path, monkeypatch):
    monkeypatch.setenv("HEADGRAPH_LOCK_WAIT", "0.5")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
         "print('held', flush=True); time.sleep(60)", str(small_db)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(DatabaseLockedError, match="another process"):
            ingest(SMALL, small_db, name="other")
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.slow
def test_ingest_waits_for_a_briefly_held_database(small_db: Path):
    """A server holds the file for one request at a time: the writer waits its turn."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1], "
         "read_only=True); print('held', flush=True); time.sleep(1.5)", str(small_db)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        ingest(SMALL, small_db, name="after-wait")
    finally:
        holder.kill()
        holder.wait()
    con = duckdb.connect(str(small_db), read_only=True)
    assert con.execute("SELECT count(*) FROM models WHERE name = 'after-wait'").fetchone() == (1,)


@pytest.mark.slow
def test_a_killed_ingest_leaves_the_database_as_it_was(small_db: Path):
    """SIGKILL inside the write transaction, after every row was inserted: nothing lands."""
    before = snapshot(small_db)
    env = dict(os.environ, HEADGRAPH_FAULT="before_commit")
    code = ("from headgraph.ingest.pipeline import ingest; import sys; "
            "ingest(sys.argv[1], sys.argv[2], name='killed')")
    proc = subprocess.run([sys.executable, "-c", code, SMALL, str(small_db)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr
    time.sleep(0.1)
    assert snapshot(small_db) == before
    ingest(SMALL, small_db, name="after-crash")  # and the file is fully usable afterwards
    con = duckdb.connect(str(small_db), read_only=True)
    names = {n for (n,) in con.execute("SELECT name FROM models").fetchall()}
    assert names == {"small", "after-crash"}


def test_cli_prints_one_clear_line_and_exits_4_when_the_model_exists(small_db: Path):
    before = snapshot(small_db)
    result = CliRunner().invoke(app, ["ingest", SMALL, "--db", str(small_db), "--name", "small"])
    assert result.exit_code == 4  # exists: --replace overwrites it (headgraph.errors)
    out = result.output.strip()
    assert out.startswith("error [MODEL_EXISTS]") and "Traceback" not in out
    assert snapshot(small_db) == before


def test_cli_ingest_and_models_list(db_path: Path):
    runner = CliRunner()
    result = runner.invoke(app, ["ingest", SMALL, "--db", str(db_path), "--name", "s1",
                                 "--family", "runs", "--step", "100"])
    assert result.exit_code == 0, result.output
    assert "edges" in result.output
    result = runner.invoke(app, ["models", "--db", str(db_path)])
    assert result.exit_code == 0 and "s1" in result.output and "runs" in result.output


def test_edges_are_stored_sorted_for_feeder_lookups(small_db: Path):
    con = duckdb.connect(str(small_db), read_only=True)
    rows = con.execute("SELECT target, kind, rank FROM edges").fetchall()
    assert rows == sorted(rows)
    scores = np.asarray(con.execute("SELECT score FROM edges").fetchall()).ravel()
    assert np.isfinite(scores).all() and (scores >= 0).all() and (scores <= 1).all()


def test_ingest_threads_option_sets_torch_threads_and_refuses_zero(tmp_path: Path):
    """``--threads N`` (to leave a serving machine's other cores to the API) reaches torch
    before any matrix work; 0 is refused before the database is touched."""
    db = tmp_path / "t.duckdb"
    before = torch.get_num_threads()
    try:
        bad = CliRunner().invoke(app, ["ingest", "random:L2H4D32V50,ctx=16", "--db", str(db),
                                       "--threads", "0"])
        assert bad.exit_code == 2 and "--threads must be at least 1" in bad.output
        assert not db.exists()
        ok = CliRunner().invoke(app, ["ingest", "random:L2H4D32V50,ctx=16", "--db", str(db),
                                      "--threads", "1"])
        assert ok.exit_code == 0, ok.output
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
