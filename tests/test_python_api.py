"""``headgraph.open(db)``: the notebook API over the queries layer."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import headgraph
from headgraph.errors import BadInputError, ModelNotFoundError, NodeNotFoundError
from headgraph.queries.models import get_model
from headgraph.queries.nodes import feeders
from headgraph.queries.session import open_reader


def test_the_readme_line_gives_the_stored_feeders(toy_db: Path):
    with headgraph.open(toy_db) as g:
        got = g.node("toy", "L1H2").feeders("K")
    with open_reader(toy_db) as db:
        want = feeders(db, get_model(db, "toy"), "L1H2", "K")
    assert got == want and len(got) > 0
    assert got[0].target == "L1H2" and got[0].rank == 1 and got[0].z is not None


def test_models_nodes_heads_edges_readers_scores(toy_db: Path):
    g = headgraph.open(str(toy_db))
    assert [m.name for m in g.models()] == ["toy"] and g.models(family="none") == []
    toy = g.model("toy")
    assert toy.row.n_heads * toy.row.n_layers == len(toy.heads())
    ratios = [h.copying_ratio for h in toy.heads("copying_ratio")]
    assert ratios == sorted(ratios, reverse=True)
    assert [n.node for n in toy.nodes(kind="head", layer=0)] == [
        f"L0H{h}" for h in range(toy.row.n_heads)]
    node = toy.node("L0H1")
    assert node.name == "L0H1" and all(e.source == "L0H1" for e in node.readers("V", top=3))
    assert node.scores() == []
    first = toy.edges(kind="K", first=5)
    second = toy.edges(kind="K", first=5, after=first.end)
    assert first.has_next and len(first.rows) == 5
    assert first.rows[-1].score >= second.rows[0].score
    assert not {(e.source, e.target) for e in first.rows} & {(e.source, e.target)
                                                            for e in second.rows}
    assert "Graph(" in repr(g)
    g.close()


def test_refusals_are_headgraph_errors(toy_db: Path):
    with headgraph.open(toy_db) as g:
        with pytest.raises(ModelNotFoundError):
            g.model("nope")
        with pytest.raises(NodeNotFoundError):
            g.node("toy", "L9H9")
        with pytest.raises(BadInputError, match="edge kind"):
            g.node("toy", "L1H2").feeders("X")


def test_an_open_graph_lets_an_ingest_write_between_calls(toy_db: Path, tmp_path: Path):
    path = tmp_path / "notebook.duckdb"
    shutil.copy(toy_db, path)
    with headgraph.open(path) as g:
        node = g.node("toy", "L1H2")
        r = subprocess.run([sys.executable, "-c", "import duckdb, sys; c = duckdb.connect("
                            "sys.argv[1]); c.execute('CREATE TABLE scratch(x INT)'); c.close()",
                            str(path)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert node.feeders("K", top=1)
