"""The queries layer against a real ingested database: every batched query equals the
plain SQL it stands for, pages walk the whole order, and budgets and refusals hold."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import text

from headgraph.errors import BadInputError, DatabaseLockedError, LimitExceededError
from headgraph.queries.edges import EdgeKey, count_edges, edge_page
from headgraph.queries.models import get_model, models_by_id
from headgraph.queries.nodes import (
    EDGE_KINDS,
    feeders,
    feeders_of,
    list_nodes,
    nodes_named,
    readers,
    readers_of,
    top_heads,
)
from headgraph.queries.scores import node_scores_of
from headgraph.queries.session import GraphDB, open_reader


@pytest.fixture(scope="module")
def db(toy_store: str):
    """One session (one connection) for the module's read-only checks, on each backend."""
    reader = open_reader(toy_store, release=True)
    with reader.session() as session:
        yield session
    reader.close()


def sql(db: GraphDB, query: str, **params: Any) -> list[tuple]:
    """The plain-SQL reference answer, on the same connection."""
    return [tuple(r.values()) for r in db.rows(text(query), params)]


def keyed(rows) -> list[tuple]:
    return [(e.source, e.target, e.kind) for e in rows]


@pytest.mark.parametrize("kind", EDGE_KINDS)
def test_feeders_of_all_targets_equal_per_target_sql(db: GraphDB, kind: str):
    model = get_model(db, "toy")
    names = [n.node for n in list_nodes(db, model)]
    got = feeders_of(db, model.model_id, names, kind, top=3)
    for name in names:
        want = sql(db, "SELECT source, target, kind FROM edges WHERE target=:n AND kind=:k "
                       "ORDER BY score DESC, source LIMIT 3", n=name, k=kind)
        assert keyed(got[name]) == want, name
        assert [e.rank for e in got[name]] == list(range(1, len(want) + 1))


@pytest.mark.parametrize("kind", EDGE_KINDS)
def test_readers_of_all_sources_equal_per_source_sql(db: GraphDB, kind: str):
    model = get_model(db, "toy")
    names = [n.node for n in list_nodes(db, model)]
    got = readers_of(db, model.model_id, names, kind, top=4)
    for name in names:
        want = sql(db, "SELECT source, target, kind FROM edges WHERE source=:n AND kind=:k "
                       "ORDER BY score DESC, target LIMIT 4", n=name, k=kind)
        assert keyed(got[name]) == want, name
        assert got[name] == readers(db, model, name, kind, top=4)


def test_min_score_and_top_zero(db: GraphDB):
    model = get_model(db, "toy")
    every = feeders(db, model, "L1H2", "Q", top=100)
    cut = every[len(every) // 2].score
    assert feeders(db, model, "L1H2", "Q", top=100, min_score=cut) == [
        e for e in every if e.score >= cut]
    assert feeders(db, model, "L1H2", "Q", top=0) == []
    with pytest.raises(BadInputError, match="top"):
        feeders(db, model, "L1H2", "Q", top=-1)
    with pytest.raises(BadInputError, match="edge kind"):
        feeders(db, model, "L1H2", "q")


@pytest.mark.parametrize(("kind", "min_score", "first"), [
    ("K", None, 1), ("K", None, 5), (None, None, 37), ("V", 0.1, 4), (None, None, 10_000)])
def test_edge_pages_walk_the_whole_order(db: GraphDB, kind: str | None,
                                         min_score: float | None, first: int):
    where = " AND ".join(c for c in ("kind = :k" if kind else "",
                                     "score >= :m" if min_score is not None else "") if c)
    want = sql(db, f"SELECT source, target, kind FROM edges {'WHERE ' + where if where else ''}"
                   " ORDER BY score DESC, source, target, kind", k=kind, m=min_score)
    model_id = get_model(db, "toy").model_id
    got, after = [], None
    while True:
        page = edge_page(db, model_id, kind=kind, min_score=min_score, first=first, after=after)
        assert len(page.rows) <= first
        got += keyed(page.rows)
        if not page.has_next:
            break
        after = EdgeKey.decode(page.end.encode())
    assert got == want
    assert count_edges(db, model_id, kind=kind, min_score=min_score) == len(want)


@given(st.floats(allow_nan=False, allow_infinity=False), st.text(), st.text(), st.text())
def test_cursors_round_trip(score: float, source: str, target: str, kind: str):
    key = EdgeKey(score, source, target, kind)
    assert EdgeKey.decode(key.encode()) == key


@pytest.mark.parametrize("cursor", ["", "!!", "bm90IGpzb24", "WzEsIDJd", "WyJhIiwgImIiLCAiYyIsICJkIl0",
                                    "W251bGwsICJhIiwgImIiLCAiYyJd"])
def test_foreign_cursors_are_bad_input(cursor: str):
    with pytest.raises(BadInputError, match="cursor"):
        EdgeKey.decode(cursor)


def test_nodes_and_heads(db: GraphDB):
    model = get_model(db, "toy")
    assert [n.node for n in list_nodes(db, model, kind="mlp")] == [
        r[0] for r in sql(db, "SELECT node FROM nodes WHERE kind='mlp' ORDER BY layer")]
    assert [n.node for n in list_nodes(db, model, layer=0, kind="head")] == [
        f"L0H{h}" for h in range(model.n_heads)]
    with pytest.raises(BadInputError, match="node kind"):
        list_nodes(db, model, kind="HEAD")
    want = [r[0] for r in sql(db, "SELECT node FROM nodes WHERE kind='head' "
                                  "ORDER BY ov_norm, layer, head")]
    assert [n.node for n in top_heads(db, model, "ov_norm", descending=False, first=None)] == want
    assert [n.node for n in top_heads(db, model, "layer", descending=True, first=2)] == [
        f"L{model.n_layers - 1}H{model.n_heads - 1}", f"L{model.n_layers - 1}H{model.n_heads - 2}"]
    assert set(nodes_named(db, model.model_id, ["L0H0", "nope", "UNEMBED"])) == {"L0H0", "UNEMBED"}
    assert models_by_id(db, [model.model_id, 999]) == {model.model_id: model}


def test_node_scores_once_they_exist(toy_db: Path, tmp_path: Path):
    path = tmp_path / "scored.duckdb"
    shutil.copy(toy_db, path)
    with duckdb.connect(str(path)) as con:
        con.execute("INSERT INTO node_scores SELECT model_id, 'L1H2', m, p, v FROM models, "
                    "(VALUES ('induction', 'repeat', 0.9), ('prev_token', 'repeat', 0.1), "
                    "('induction', 'natural', 0.5)) t(m, p, v)")
    with open_reader(path, release=True) as reader, reader.session() as db:
        model_id = get_model(db, "toy").model_id
        got = node_scores_of(db, model_id, ["L1H2", "L0H0"])
        assert [(s.metric, s.probe) for s in got["L1H2"]] == [
            ("induction", "natural"), ("induction", "repeat"), ("prev_token", "repeat")]
        assert got["L0H0"] == []
        only = node_scores_of(db, model_id, ["L1H2"], probe="natural")["L1H2"]
        assert [s.value for s in only] == pytest.approx([0.5])


def test_a_session_row_budget_covers_all_its_statements(toy_db: Path):
    reader = open_reader(toy_db, release=True)
    with reader.session(max_rows=10) as db:
        model = get_model(db, "toy")
        feeders(db, model, "L1H2", "K", top=5)
        with pytest.raises(LimitExceededError, match="max_rows"):
            feeders(db, model, "L1H3", "K", top=5)
    reader.close()


def try_write(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "import duckdb, sys; "
                           "duckdb.connect(sys.argv[1]).close()", str(path)],
                          capture_output=True, text=True, timeout=60)


def test_a_releasing_reader_holds_the_file_only_inside_a_session(toy_db: Path, tmp_path: Path):
    path = tmp_path / "shared.duckdb"
    shutil.copy(toy_db, path)
    reader = open_reader(path, release=True)
    with reader.session() as db:
        get_model(db, "toy")
        assert try_write(path).returncode != 0  # held while the unit of work runs
    assert try_write(path).returncode == 0  # free between units
    pooled = open_reader(path)
    get_model(pooled, "toy")
    assert "lock" in try_write(path).stderr.lower()  # a pooled reader keeps holding it
    pooled.close()
    writer = subprocess.Popen([sys.executable, "-c", "import duckdb, sys; c = duckdb.connect("
                               "sys.argv[1]); print('locked', flush=True); sys.stdin.read()",
                               str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert writer.stdout.readline().strip() == "locked"
        with pytest.raises(DatabaseLockedError), reader.session():
            pass
    finally:
        writer.stdin.close()
        writer.wait(10)
    reader.close()


def test_a_reader_keeps_a_models_nodes_until_its_id_names_another_model(tmp_path: Path):
    """Nodes are read once per model (GraphDB.lasting), and a database made again under a
    running reader (model ids counted from 1 again) never serves the old model's nodes."""
    from headgraph.ingest.pipeline import ingest

    path = tmp_path / "again.duckdb"
    ingest("random:L3H2D32V50,ctx=16", path, name="first")
    reader = open_reader(path, release=True)
    try:
        with reader.session() as s:
            first = get_model(s, "first")
            assert set(nodes_named(s, first.model_id, ["L2H1", "L0H3"])) == {"L2H1"}
        path.unlink()  # the reader holds no file between sessions
        ingest("random:L2H4D32V50,ctx=16", path, name="second")
        with reader.session() as s:
            second = get_model(s, "second")
            assert second.model_id == first.model_id  # the same id names another model
            found = nodes_named(s, second.model_id, ["L2H1", "L0H3"])
            assert set(found) == {"L0H3"} and found["L0H3"].model_id == second.model_id
            # kept now: a lookup in the next session sends no statement
            statements: list[str] = []
            from sqlalchemy import event

            event.listen(reader.engine, "before_cursor_execute",
                         lambda *a: statements.append(a[2]))
        with reader.session() as s:
            assert set(nodes_named(s, second.model_id, ["L0H0", "UNEMBED"])) == {
                "L0H0", "UNEMBED"}
        assert statements == []
    finally:
        reader.close()
