"""``headgraph.open(db)``: the notebook API over the queries layer."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
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
    first = toy.edges(kind="K").page(5)
    second = toy.edges(kind="K").page(5, after=first.end)
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


def test_everything_graphql_answers_is_reachable_as_frames_graphs_and_figures(
        toy_db: Path, tmp_path: Path):
    from matplotlib.figure import Figure

    with headgraph.open(toy_db) as g:
        toy = g.model("toy")
        feeders = toy.node("L1H2").feeders("K", top=3)
        frame = feeders.to_pandas()
        assert list(frame["source"]) == ["L0H2", "L0H3", "POS_EMBED"]
        assert frame.loc[0, "z"] == pytest.approx(feeders[0].z) and frame.loc[0, "z"] > 5
        assert "z" in pd.DataFrame(feeders).columns  # a field, so pandas sees it too

        edges = toy.edges(kind="K", page_size=7)
        every = list(edges)
        assert len(every) == len(edges) == len({(e.source, e.target) for e in every})
        assert [e.score for e in every] == sorted((e.score for e in every), reverse=True)
        assert sum(len(p) for p in edges.pages()) == len(every)

        paths = toy.paths("L1H2", kinds=("V", "K"), top=3)
        assert paths[0].nodes == ("L0H2", "L1H2") and "product" in paths.to_pandas()
        assert len(toy.virtual_heads(top=2)) == 2

        circuit = toy.node("L1H2").circuit(depth=2, kinds=("K", "V"))
        graph = circuit.to_networkx()
        assert "L0H2" in graph and graph.has_edge("L0H2", "L1H2", key="K")
        assert graph.edges["L0H2", "L1H2", "K"]["z"] == pytest.approx(feeders[0].z)

        model_graph = toy.to_networkx(kinds=("K",))
        assert model_graph.nodes["L1H2"]["x"] == 2 and model_graph.nodes["EMBED"]["x"] == 0
        assert all(d["kind"] == "K" for *_, d in model_graph.edges(data=True))

        for fig in (toy.plot("K"), toy.plot("COPYING")):
            assert isinstance(fig, Figure) and "toy" in fig.axes[0].get_title()
        fig = toy.plot("COPYING")
        assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == [
            "layer 0", "layer 1"]
        heat = toy.plot("V")
        assert "z above what the model's structure" in heat.axes[0].get_title() and len(heat.axes) == 2
        heat.savefig(tmp_path / "v.png")
        assert (tmp_path / "v.png").read_bytes()[:4] == b"\x89PNG"


def test_comparisons_and_series_from_python(tmp_path: Path):
    from headgraph.ingest.pipeline import ingest

    db = tmp_path / "two.duckdb"
    ingest("toy@1000", db)
    ingest("toy", db)
    with headgraph.open(db) as g:
        cmp = g.compare("toy@1000", "toy")
        assert len(cmp.matches) == 8 and "names" in cmp.note
        changes = cmp.changed_edges(top=3).to_pandas()
        assert list(changes.columns[:2]) == ["source_a", "target_a"] and len(changes) == 3
        series = g.series("toy", source="L0H2", target="L1H2", kind="K")
        assert [p.step for p in series] == [1000, 5000] and series[1].value > series[0].value
        fig = series.plot()
        assert fig.axes[0].get_title() == "toy: K score L0H2 -> L1H2, by training step"
