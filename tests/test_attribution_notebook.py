"""Attribution graphs from Python: ``headgraph.open(db).graph(slug, model=...)`` with views
as pandas DataFrames and networkx graphs, on real graph files (tests/data/graphs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import headgraph
from headgraph.attribution.graphs import GraphAmbiguousError
from headgraph.attribution.importer import import_graph

GRAPHS = Path(__file__).parent / "data" / "graphs"


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("nb") / "g.duckdb"
    import_graph(GRAPHS / "gemma-dollar.reduced.json", path)
    import_graph(GRAPHS / "war_ea.json", path)
    import_graph(GRAPHS / "war_ea.json", path, model="other-model")
    with headgraph.open(path) as g:
        yield g


def test_a_view_as_dataframes_carries_every_field(db):
    doc = json.loads((GRAPHS / "gemma-dollar.reduced.json").read_text())
    graph = db.graph("gemma-dollar")
    assert (graph.model, graph.default_prune, graph.node_threshold) == ("gemma-2-2b",
                                                                        "influence", 0.7)
    view = graph.view(node_threshold=0.5)
    nodes, links = view.nodes(), view.links()
    want = {i for i, n in enumerate(doc["nodes"]) if n["feature_type"] in ("embedding", "logit")
            or n["influence"] <= 0.5}
    assert len(nodes) == len(want)
    file_influence = {(n["node_id"], n["layer"]): n.get("influence") for n in doc["nodes"]}
    for row in nodes.itertuples():
        assert (row.influence == file_influence[(row.node_id, row.layer)]
                or row.influence != row.influence)  # NaN where the file has none (logits)
    ids = [n["node_id"] for n in doc["nodes"]]
    keys = [x if ids.count(x) == 1 else f"{x}@{i}" for i, x in enumerate(ids)]
    assert list(nodes["key"]) == [keys[i] for i in sorted(want)]  # file order
    assert set(links["source_key"]) <= set(nodes["key"])
    assert links["edge_influence"].isna().all()
    recomputed = graph.view(prune="recompute").links()
    assert recomputed["edge_influence"].notna().all()


def test_neighbourhoods_to_networkx_and_back_to_json(db):
    doc = json.loads((GRAPHS / "gemma-dollar.reduced.json").read_text())
    graph = db.graph("gemma-dollar", model="gemma-2-2b")
    g = graph.neighbourhood("0_2_1@717", top=5, depth=1, direction="out").to_networkx()
    assert "0_2_1@717" in g and g.out_degree("0_2_1@717") == 5
    assert g.nodes["0_2_1@717"]["feature_type"] == "mlp reconstruction error"
    assert all("weight" in d for *_, d in g.edges(data=True))
    assert json.loads(graph.to_json()) == doc


def test_a_slug_of_two_models_needs_the_model(db):
    with pytest.raises(GraphAmbiguousError):
        db.graph("war_ea")
    assert db.graph("war_ea", model="other-model").model == "other-model"
    assert [(g.model, g.slug) for g in db.graphs(model="other-model")] == [("other-model",
                                                                           "war_ea")]
