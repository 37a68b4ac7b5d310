"""Attribution graphs: streaming import, export back unchanged, pruned and neighbourhood
views from the database against references, refusals that write nothing. Real DuckDB files
in temp dirs, graphs generated in circuit-tracer's shape."""

from __future__ import annotations

import io
import json
from pathlib import Path

import duckdb
import jsonschema
import numpy as np
import pytest
from typer.testing import CliRunner

from headgraph.attribution import pruning as P
from headgraph.attribution.export import write_graph as export_graph
from headgraph.attribution.export import write_view
from headgraph.attribution.format import role_of
from headgraph.attribution.graphs import GraphNotFoundError, list_graphs
from headgraph.attribution.importer import GraphExistsError, import_graph
from headgraph.attribution.neighbourhood import neighbourhood
from headgraph.attribution.pruned import pruned_view
from headgraph.attribution.synth import SynthSpec, graph_document, write_graph
from headgraph.cli import app
from headgraph.cli.importing import detect_format
from headgraph.errors import BadInputError, NodeNotFoundError
from headgraph.queries.session import open_reader

SCHEMA = json.loads((Path(__file__).parent / "neuronpedia_graph_schema.json").read_text())


def exported(db: Path, slug: str) -> dict:
    with open_reader(db) as reader:
        out = io.StringIO()
        export_graph(reader, slug, out)
    return json.loads(out.getvalue())


def save(doc: dict, path: Path, **dump) -> Path:
    path.write_text(json.dumps(doc, **dump), encoding="utf-8")
    return path


def test_a_generated_graph_round_trips_and_validates(tmp_path: Path, db_path: Path):
    doc = graph_document(SynthSpec(n_links=3000, seed=1))
    report = import_graph(save(doc, tmp_path / "g.json", indent=1), db_path, chunk=4096)
    assert report.rows == {"nodes": len(doc["nodes"]), "links": 3000}
    back = exported(db_path, "synthetic")
    assert back == doc
    jsonschema.validate(back, SCHEMA)


@pytest.mark.parametrize("workers", [0, 2])  # proven cuts; guessed cuts parsed in threads
def test_odd_but_valid_files_round_trip(tmp_path: Path, db_path: Path, workers: int):
    doc = graph_document(SynthSpec(n_links=400, n_features=30, seed=2))
    doc["nodes"][3]["clerp"] = 'says "}, {" and \\ and é ✓}'
    doc["nodes"][4]["layer"] = 4  # the schema allows integer layers
    doc["nodes"][5]["feature"] = "not-a-number"  # kept verbatim, in extra
    doc["nodes"][6]["extra"] = {"nested": {"x": [1, "}"]}}
    del doc["nodes"][7]["clerp"]
    doc["nodes"][8]["activation"] = None
    doc["links"][0]["weight"] = 3  # an integer weight
    doc["links"][1]["note"] = {"why": "} ,{"}
    doc["links"][2]["weight"] = 1e-300
    doc["extra_top_level"] = [1, 2]
    # links before nodes, compact separators, and tiny windows: every kind of cut
    reordered = {"metadata": doc["metadata"], "links": doc["links"], "qParams": doc["qParams"],
                 "nodes": doc["nodes"], "extra_top_level": doc["extra_top_level"]}
    path = save(reordered, tmp_path / "odd.json", separators=(",", ":"), ensure_ascii=False)
    import_graph(path, db_path, chunk=257, workers=workers)
    assert exported(db_path, "synthetic") == doc


def _reference(doc: dict, node_threshold: float, edge_threshold: float):
    ids = [n["node_id"] for n in doc["nodes"]]
    pos = {x: i for i, x in enumerate(ids)}
    s = np.array([pos[x["source"]] for x in doc["links"]])
    t = np.array([pos[x["target"]] for x in doc["links"]])
    w = np.array([x["weight"] for x in doc["links"]], float)
    roles = np.array([role_of(n.get("feature_type")) for n in doc["nodes"]])
    probs = np.array([n.get("token_prob", np.nan) for n in doc["nodes"]], float)
    pr = P.prune(len(ids), s, t, w, roles, P.logit_weights(roles, probs), node_threshold,
                 edge_threshold)
    nodes = {ids[i] for i in np.flatnonzero(pr.nodes)}
    links = {(ids[s[i]], ids[t[i]], w[i]) for i in pr.links}
    return nodes, links


@pytest.fixture
def synth_db(tmp_path: Path, db_path: Path) -> tuple[Path, dict]:
    doc = graph_document(SynthSpec(n_links=6000, n_features=300, seed=3))
    import_graph(save(doc, tmp_path / "s.json"), db_path)
    return db_path, doc


@pytest.mark.parametrize(("nt", "et"), [(0.8, 0.98), (0.5, 0.9), (0.95, 0.6), (1.0, 1.0)])
def test_the_pruned_view_in_the_database_matches_pruning_the_whole_graph(synth_db, nt, et):
    path, doc = synth_db
    nodes, links = _reference(doc, nt, et)
    with open_reader(path) as db:
        view = pruned_view(db, "synthetic", nt, et)
    assert {n.node_id for n in view.nodes} == nodes
    assert {(x.source, x.target, x.weight) for x in view.link_records()} == links
    assert 0 < len(view.link_records()) and not view.truncated
    out = io.StringIO()
    write_view(view, out)
    jsonschema.validate(json.loads(out.getvalue()), SCHEMA)


def test_truncated_views_keep_the_strongest_links(synth_db):
    path, _ = synth_db
    with open_reader(path) as db:
        full = pruned_view(db, "synthetic", 0.8, 0.98)
        cut = pruned_view(db, "synthetic", 0.8, 0.98, max_links=5)
    assert cut.truncated and cut.links.num_rows == 5
    assert sorted(x.edge_score for x in cut.link_records()) == sorted(
        x.edge_score for x in full.link_records())[-5:]


def test_the_neighbourhood_is_the_strongest_links_around_a_node(synth_db):
    path, doc = synth_db
    center = doc["nodes"][40]["node_id"]
    links = [(x["source"], x["target"], x["weight"]) for x in doc["links"]]
    expected = set()
    for inward in (True, False):
        frontier, seen = [center], {center}
        for _ in range(2):
            nxt = []
            for node in frontier:
                mine = [x for x in links if (x[1] if inward else x[0]) == node]
                for x in sorted(mine, key=lambda x: -abs(x[2]))[:3]:
                    expected.add(x)
                    other = x[0] if inward else x[1]
                    if other not in seen:
                        seen.add(other)
                        nxt.append(other)
            frontier = nxt
    with open_reader(path) as db:
        view = neighbourhood(db, "synthetic", center, top=3, depth=2)
        with pytest.raises(NodeNotFoundError):
            neighbourhood(db, "synthetic", "no-such-node")
        with pytest.raises(GraphNotFoundError):
            neighbourhood(db, "nope", center)
    assert {(x.source, x.target, x.weight) for x in view.link_records()} == expected
    assert {n.node_id for n in view.nodes} == {center} | {e for x in expected for e in x[:2]}
    out = io.StringIO()
    write_view(view, out)
    written = json.loads(out.getvalue())
    jsonschema.validate(written, SCHEMA)
    assert written["qParams"]["clickedId"] == center


def test_refusals_write_nothing(tmp_path: Path, db_path: Path):
    doc = graph_document(SynthSpec(n_links=50, n_features=10))
    import_graph(save(doc, tmp_path / "g.json"), db_path)
    with pytest.raises(GraphExistsError):
        import_graph(tmp_path / "g.json", db_path)
    bad = dict(doc, links=doc["links"] + [{"source": "ghost", "target": "x", "weight": 1.0}])
    bad["metadata"] = dict(doc["metadata"], slug="bad")
    with pytest.raises(BadInputError, match="ghost"):
        import_graph(save(bad, tmp_path / "bad.json"), db_path)
    bad = dict(doc, nodes=doc["nodes"] + doc["nodes"][:1], metadata=bad["metadata"])
    with pytest.raises(BadInputError, match="repeat"):
        import_graph(save(bad, tmp_path / "bad.json"), db_path)
    (tmp_path / "trunc.json").write_text(json.dumps(dict(doc, metadata=bad["metadata"]))[:-40])
    with pytest.raises(BadInputError, match="JSON"):
        import_graph(tmp_path / "trunc.json", db_path)
    con = duckdb.connect(str(db_path), read_only=True)
    assert con.execute("SELECT slug FROM attribution_graphs").fetchall() == [("synthetic",)]
    assert con.execute("SELECT count(*) FROM attribution_links").fetchone() == (50,)
    con.close()
    doc["metadata"]["prompt"] = "a new prompt"
    assert import_graph(save(doc, tmp_path / "g.json"), db_path, replace=True).replaced
    with open_reader(db_path) as db:
        assert [g.prompt for g in list_graphs(db, model="synthetic-model")] == ["a new prompt"]
        assert list_graphs(db, prompt="NEW PROMPT")[0].slug == "synthetic"
        assert list_graphs(db, model="other") == []


def test_the_cli_detects_formats_and_imports(tmp_path: Path, db_path: Path):
    write_graph(tmp_path / "g.json", SynthSpec(n_links=500, slug="cli-graph"))
    (tmp_path / "c.json").write_text('{"cfg": {}, "nodes": {}, "edges": {}}')
    (tmp_path / "c.txt").write_text("a0.h1->a1.h2<k> 0.5\n")
    assert detect_format(tmp_path / "g.json") == "attribution-graph"
    assert detect_format(tmp_path / "c.json") == "eap-ig-json"
    assert detect_format(tmp_path / "c.txt") == "edge-list"
    result = CliRunner().invoke(app, ["import", "--db", str(db_path), str(tmp_path / "g.json")])
    assert result.exit_code == 0, result.output
    assert "cli-graph" in result.output
    result = CliRunner().invoke(app, ["import", "--db", str(db_path), str(tmp_path / "c.txt")])
    assert result.exit_code == 2 and "--model" in result.output


def test_postgresql_stores_and_serves_the_same_graph(tmp_path: Path, pg_url: str):
    doc = graph_document(SynthSpec(n_links=2000, n_features=100, seed=4))
    doc["links"][0]["note"] = "extra"
    path = save(doc, tmp_path / "g.json")
    import_graph(path, pg_url)
    assert exported(pg_url, "synthetic") == doc
    nodes, links = _reference(doc, 0.8, 0.98)
    with open_reader(pg_url) as db:
        view = pruned_view(db, "synthetic", 0.8, 0.98)
        near = neighbourhood(db, "synthetic", doc["nodes"][20]["node_id"], top=3)
        assert list_graphs(db, prompt=doc["metadata"]["prompt"][2:9])[0].slug == "synthetic"
    assert {n.node_id for n in view.nodes} == nodes
    assert {(x.source, x.target, x.weight) for x in view.link_records()} == links
    assert near.links.num_rows > 0


@pytest.mark.slow
def test_a_database_from_before_heights_still_serves_and_takes_new_graphs(tmp_path: Path,
                                                                          db_path: Path):
    """A file written before the height columns (dropped here) is read on the slower path
    with the same answers; the next import adds the columns, and only new graphs use
    them."""
    from headgraph.maintenance import check_database
    from headgraph.schema.tables import ADDED_COLUMNS

    doc = graph_document(SynthSpec(n_links=3000, n_features=150, seed=8))
    import_graph(save(doc, tmp_path / "g.json"), db_path)
    con = duckdb.connect(str(db_path))
    for table, columns in ADDED_COLUMNS.items():
        for column in columns:
            con.execute(f'ALTER TABLE {table} DROP COLUMN "{column}"')
    con.execute("DROP TABLE attribution_pruned_links")
    con.close()
    nodes, links = _reference(doc, 0.8, 0.98)
    center = doc["nodes"][30]["node_id"]

    def served() -> None:
        with open_reader(db_path) as db:
            view = pruned_view(db, "synthetic", 0.8, 0.98, cache=False)
            near = neighbourhood(db, "synthetic", center, top=3, depth=2)
        assert {n.node_id for n in view.nodes} == nodes
        assert {(x.source, x.target, x.weight) for x in view.link_records()} == links
        assert near.links.num_rows > 0
        assert exported(db_path, "synthetic") == doc
        assert check_database(db_path).ok, check_database(db_path).problems

    served()
    from headgraph.maintenance import copy_models

    copy_models(db_path, tmp_path / "copy.duckdb")  # copies from the older file too
    assert exported(tmp_path / "copy.duckdb", "synthetic") == doc
    assert check_database(tmp_path / "copy.duckdb").ok
    second = graph_document(SynthSpec(n_links=2000, n_features=100, seed=9, slug="second"))
    import_graph(save(second, tmp_path / "h.json"), db_path)
    with open_reader(db_path) as db:
        assert {g.slug: g.levels for g in list_graphs(db)} == {"second": 8, "synthetic": None}
    served()
    nodes, links = _reference(second, 0.7, 0.9)
    with open_reader(db_path) as db:
        view = pruned_view(db, "second", 0.7, 0.9)
    assert {n.node_id for n in view.nodes} == nodes
    assert {(x.source, x.target, x.weight) for x in view.link_records()} == links


@pytest.mark.parametrize(("damage", "found"), [
    ("DELETE FROM attribution_links WHERE idx = 7", "rows in attribution_links"),
    ("UPDATE attribution_links SET target_height = target_height + 1 WHERE idx = 3",
     "heights are wrong"),
    ("UPDATE attribution_nodes SET height = 0 WHERE nid = 40", "heights are wrong"),
    ("UPDATE attribution_out_links SET target = (target + 1) % 300 WHERE idx = 5",
     "hold different links"),
    ("UPDATE attribution_nodes SET nid = 5000 WHERE nid = 0", "nid not 0.."),
    ("UPDATE attribution_nodes SET cum = 'nan' WHERE nid = 20", "NaN influence"),
    ("INSERT INTO attribution_out_links SELECT 99, idx, source, target, weight "
     "FROM attribution_out_links WHERE idx = 0", "orphan row(s) in attribution_out_links"),
    ("DELETE FROM attribution_pruned_links WHERE share > 0.5", "stored default view holds"),
    ("UPDATE attribution_pruned_links SET share = 2 WHERE share > 0.5",
     "share outside [0, 1]"),
    ("UPDATE attribution_pruned_links SET edge_score = edge_score * 2 WHERE share > 0.5",
     "shares do not follow"),
])
def test_check_finds_a_damaged_attribution_graph(synth_db, tmp_path: Path, damage: str,
                                                 found: str):
    import shutil

    from headgraph.maintenance import check_database

    path, _ = synth_db
    assert check_database(path).ok, check_database(path).problems
    copy = tmp_path / "damaged.duckdb"
    shutil.copy(path, copy)
    con = duckdb.connect(str(copy))
    con.execute(damage)
    con.close()
    report = check_database(copy)
    assert any(found in p for p in report.problems), report.problems


def test_views_follow_a_graph_replaced_under_the_same_slug(tmp_path: Path, db_path: Path):
    """The process remembers graph rows by slug; a replaced graph (new id) is noticed in
    the statement that uses the remembered row, and the view is read afresh."""
    first = graph_document(SynthSpec(n_links=1500, n_features=80, seed=10))
    second = dict(first, links=[dict(x, weight=x["weight"] * (1 + i % 5))
                                for i, x in enumerate(first["links"])])
    center = first["nodes"][3]["node_id"]

    def near() -> set:
        with open_reader(db_path) as db:
            view = neighbourhood(db, "synthetic", center, top=3, direction="out")
        return {(x.source, x.target, x.weight) for x in view.link_records()}

    def strongest(doc: dict) -> set:
        out = sorted((x for x in doc["links"] if x["source"] == center),
                     key=lambda x: -abs(x["weight"]))
        return {(x["source"], x["target"], x["weight"]) for x in out[:3]}

    import_graph(save(first, tmp_path / "a.json"), db_path)
    assert near() == strongest(first)
    import_graph(save(second, tmp_path / "b.json"), db_path, replace=True)
    assert near() == strongest(second) != strongest(first)


@pytest.mark.parametrize("backend", ["duckdb", "postgresql"])
def test_the_stored_default_view_equals_the_computed_one(tmp_path: Path, backend: str,
                                                         request: pytest.FixtureRequest):
    """At the default node threshold the view reads the edge scores stored at import;
    at every edge threshold it equals the view computed from the links, and both equal
    the reference."""
    from headgraph.attribution.graphs import get_graph
    from headgraph.attribution.pruned import compute_pruned

    db = str(tmp_path / "s.duckdb") if backend == "duckdb" else request.getfixturevalue(
        "pg_url")
    doc = graph_document(SynthSpec(n_links=5000, n_features=250, seed=12))
    import_graph(save(doc, tmp_path / "s.json"), db)
    with open_reader(db) as reader:
        graph = get_graph(reader, "synthetic")
        assert graph.pruned_k is not None
        for et in (0.0, 0.3, 0.9, 0.98, 1.0):
            views = [compute_pruned(reader, graph, 0.8, et, None, stored=s) for s in (1, 0)]
            got = [({n.node_id for n in v.nodes},
                    {(x.source, x.target, x.weight) for x in v.link_records()}) for v in views]
            assert got[0] == got[1] == _reference(doc, 0.8, et), et
            scores = [sorted(v.links.column("edge_score").to_pylist()) for v in views]
            np.testing.assert_allclose(scores[0], scores[1], rtol=1e-12)
