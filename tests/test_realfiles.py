"""Attribution graphs and circuits as the real tools write them (tests/data/README.md has
where each file comes from): imported, exported back unchanged, and viewed as Neuronpedia
and circuit-tracer show them. Expectations are computed from the files themselves, with
the tools' rules written out here, never from headgraph's reader.

``HEADGRAPH_REALFILES`` (a folder with ``graphs/real/*.json``) adds slow checks on the whole
set of real graphs."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import duckdb
import numpy as np
import pytest
from test_attribution_prune import dense_reference

from headgraph.attribution import pruning as P
from headgraph.attribution.export import view_header, write_graph
from headgraph.attribution.format import role_of
from headgraph.attribution.graphs import (
    GraphAmbiguousError,
    get_graph,
    graph_nodes,
    list_graphs,
)
from headgraph.attribution.importer import import_graph
from headgraph.attribution.neighbourhood import neighbourhood
from headgraph.attribution.views import ViewAsk, graph_view
from headgraph.errors import BadInputError, GraphExistsError
from headgraph.queries.session import open_reader

DATA = Path(__file__).parent / "data"
GRAPHS = DATA / "graphs"
REALFILES = os.environ.get("HEADGRAPH_REALFILES")


def load(name: str) -> dict:
    return json.loads((GRAPHS / name).read_text(encoding="utf-8"))


def exported(db: Path | str, slug: str, model: str | None = None) -> dict:
    with open_reader(db) as reader:
        out = io.StringIO()
        write_graph(reader, slug, out, model)
    return json.loads(out.getvalue())


def neuronpedia_shows(doc: dict, threshold: float | None, pinned=(), clicked=None) -> set[int]:
    """Neuronpedia's ``filterNodes`` / ``shouldShowNodeForInfluenceThreshold`` (utils.ts
    592-626, 672-690) on the file's nodes: positions shown."""
    shown = set()
    for i, n in enumerate(doc["nodes"]):
        influence = n.get("influence")
        if (threshold is None or n.get("feature_type") in ("embedding", "logit")
                or n["node_id"] in pinned or n["node_id"] == clicked or influence is None
                or influence <= threshold):
            shown.add(i)
    return shown


def keys_of(doc: dict) -> list[str]:
    """Each node's key: its id, or id@position where two nodes share it."""
    ids = [n["node_id"] for n in doc["nodes"]]
    return [x if ids.count(x) == 1 else f"{x}@{i}" for i, x in enumerate(ids)]


def arrays(doc: dict) -> tuple:
    """A file without shared ids as circuit-tracer's arrays: ids, link sources, targets and
    weights by position, roles, logit weights (what the dense reference takes)."""
    ids = [n["node_id"] for n in doc["nodes"]]
    pos = {x: i for i, x in enumerate(ids)}
    s = np.array([pos[x["source"]] for x in doc["links"]])
    t = np.array([pos[x["target"]] for x in doc["links"]])
    w = np.array([x["weight"] for x in doc["links"]])
    roles = np.array([role_of(n["feature_type"]) for n in doc["nodes"]])
    lw = P.logit_weights(roles, np.array([n.get("token_prob", np.nan) for n in doc["nodes"]]))
    return ids, s, t, w, roles, lw


def view_sets(view) -> tuple[set[str], set[tuple[str, str, float]]]:
    return ({n.key for n in view.nodes},
            {(x.source, x.target, x.weight) for x in view.link_records(keys=True)})


# --- graphs ---------------------------------------------------------------------------

def test_a_featured_graph_whose_ids_collide_imports_exports_and_places_its_links(db_path):
    """gemma-dollar: node 0 (layer-0 feature 2 at position 1) and node 717 (the MLP error of
    layer 2 at position 1) are both ``0_2_1``. Links into it come from tokens (the feature:
    circuit-tracer's errors have no in-links); links out of it to layers 0-2 can only be the
    feature's (an error of layer 2 writes above it); the rest the file cannot tell, and
    they go to the last node of the id, as Neuronpedia draws them."""
    doc = load("gemma-dollar.reduced.json")
    ids = [n["node_id"] for n in doc["nodes"]]
    assert [i for i, x in enumerate(ids) if x == "0_2_1"] == [0, 717]
    report = import_graph(GRAPHS / "gemma-dollar.reduced.json", db_path)
    assert report.name == "gemma-2-2b/gemma-dollar" and report.rows["shared node ids"] == 1
    assert exported(db_path, "gemma-dollar") == doc  # the file's ids, both nodes

    layer = {n["node_id"]: n["layer"] for n in doc["nodes"]}
    want_in, want_out = set(), set()
    for x in doc["links"]:
        if x["target"] == "0_2_1":
            assert layer[x["source"]] == "E"
            want_in.add((x["source"], "0_2_1@0", x["weight"]))
        if x["source"] == "0_2_1":
            low = layer[x["target"]] != "E" and int(layer[x["target"]]) <= 2
            want_out.add(("0_2_1@0" if low else "0_2_1@717", x["target"], x["weight"]))
    got = set()
    with open_reader(db_path) as db:
        for key in ("0_2_1@0", "0_2_1@717"):
            near = neighbourhood(db, "gemma-dollar", key, top=100, direction="both")
            got |= view_sets(near)[1]
        with pytest.raises(BadInputError, match="0_2_1@0 .*0_2_1@717"):
            neighbourhood(db, "gemma-dollar", "0_2_1")
    assert got == want_in | want_out
    assert sum(1 for x in want_out if x[0] == "0_2_1@0") == 10 and len(want_out) == 79


def test_the_influence_view_is_neuronpedias_slider_on_the_stored_influence(db_path):
    """bee-insect, a whole real file: already prune_graph output with each node's
    cumulative influence. The default view is Neuronpedia's (influence <= t, embeddings and
    logits always) at metadata.node_threshold, with every file link between shown nodes."""
    doc = load("bee-insect-clt.json")
    import_graph(GRAPHS / "bee-insect-clt.json", db_path)
    slug = doc["metadata"]["slug"]
    links = [(x["source"], x["target"], x["weight"]) for x in doc["links"]]
    with open_reader(db_path) as db:
        for t in (None, 0.8, 0.5, 0.3):
            view = graph_view(db, slug, ViewAsk(node_threshold=t))
            assert view.params["prune"] == "influence"
            assert view.params["node_threshold"] == (0.8 if t is None else t)
            shown = {doc["nodes"][i]["node_id"]
                     for i in neuronpedia_shows(doc, view.params["node_threshold"])}
            nodes, got = view_sets(view)
            assert nodes == shown
            assert got == {x for x in links if x[0] in shown and x[1] in shown}
        default = graph_view(db, slug)
        assert len(default.nodes) == 265  # of 266: one boundary node has influence 0.801
        cut = graph_view(db, slug, max_links=50)
        assert cut.truncated and view_sets(cut)[0] == view_sets(default)[0]
        assert sorted(abs(x[2]) for x in view_sets(cut)[1]) == sorted(
            abs(x[2]) for x in view_sets(default)[1])[-50:]
        header = view_header(graph_view(db, slug, ViewAsk(node_threshold=0.5)))
        assert header["metadata"]["node_threshold"] == 0.5


def test_the_recompute_view_equals_circuit_tracers_prune_graph(db_path):
    """prune=recompute runs prune_graph again on the stored links, as before, equal to
    circuit-tracer's dense definitions on the same file."""
    doc = load("bee-insect-clt.json")
    import_graph(GRAPHS / "bee-insect-clt.json", db_path)
    ids, s, t, w, roles, lw = arrays(doc)
    with open_reader(db_path) as db:
        for nt, et in ((0.8, 0.98), (0.5, 0.9)):
            _, node_mask, edge_mask = dense_reference(len(ids), s, t, w, roles, lw, nt, et)
            view = graph_view(db, doc["metadata"]["slug"],
                              ViewAsk(prune="recompute", node_threshold=nt, edge_threshold=et))
            nodes, links = view_sets(view)
            assert nodes == {ids[i] for i in np.flatnonzero(node_mask)}
            assert links == {(ids[a], ids[b], c) for a, b, c in zip(s, t, w, strict=True)
                             if edge_mask[b, a]}
            assert all(x.edge_score is not None for x in view.link_records())
            header = view_header(view)
            assert header["metadata"]["node_threshold"] == 0  # Neuronpedia: no refilter
            assert header["metadata"]["pruning_settings"] == {"node_threshold": nt,
                                                              "edge_threshold": et}


def test_pinned_nodes_are_kept_in_every_view(db_path):
    """gemma-small-big-en, saved from Neuronpedia with 17 pinned nodes: recomputed pruning
    drops some of them; every view keeps them all, and their links to the view."""
    doc = load("gemma-small-big-en.reduced.json")
    pinned = set(doc["qParams"]["pinnedIds"])
    assert len(pinned) == 17
    import_graph(GRAPHS / "gemma-small-big-en.reduced.json", db_path)
    with open_reader(db_path) as db:
        plain = graph_view(db, "gemma-small-big-en",
                           ViewAsk(prune="recompute", node_threshold=0.5))
        from headgraph.attribution.pruned import pruned_view

        bare = {n.node_id for n in pruned_view(db, "gemma-small-big-en", 0.5, 0.98).nodes}
        assert pinned - bare, "the recomputed pruning alone keeps every pinned node"
        assert pinned <= {n.node_id for n in plain.nodes}
        added = pinned - bare
        extra = {(x.source, x.target) for x in plain.link_records() if x.edge_score is None}
        assert extra and all(a in added or b in added for a, b in extra)
        for t in (0.7, 0.2):
            view = graph_view(db, "gemma-small-big-en", ViewAsk(node_threshold=t))
            assert {n.node_id for n in view.nodes} == {
                doc["nodes"][i]["node_id"] for i in neuronpedia_shows(doc, t, pinned)}
        extra_pin = next(n["node_id"] for n in doc["nodes"]
                         if n["feature_type"] == "cross layer transcoder"
                         and n["influence"] > 0.6 and n["node_id"] not in pinned)
        view = graph_view(db, "gemma-small-big-en",
                          ViewAsk(node_threshold=0.2, pinned=(extra_pin,)))
        assert extra_pin in {n.node_id for n in view.nodes}
        assert extra_pin in view_header(view)["qParams"]["pinnedIds"]


def test_zero_weight_links_that_close_cycles_are_no_cycle(db_path):
    """dallas_ea lists links of weight 0 explicitly, a self-loop and layer 2 -> layers 0-1
    among them; they carry no influence, so the graph imports, checks whole, and prunes as
    the dense definitions do."""
    from headgraph.maintenance import check_database

    doc = load("dallas_ea.reduced.json")
    zero = [x for x in doc["links"] if x["weight"] == 0]
    assert any(x["source"] == x["target"] for x in zero)
    import_graph(GRAPHS / "dallas_ea.reduced.json", db_path)
    assert exported(db_path, "dallas_ea") == doc
    assert check_database(db_path).ok, check_database(db_path).problems
    ids, s, t, w, roles, lw = arrays(doc)
    _, node_mask, _ = dense_reference(len(ids), s, t, w, roles, lw, 0.8, 0.98)
    with open_reader(db_path) as db:
        view = graph_view(db, "dallas_ea", ViewAsk(prune="recompute"))
    assert {n.node_id for n in view.nodes} == {ids[i] for i in np.flatnonzero(node_mask)}


def test_the_model_of_a_graph_is_what_its_scan_names(db_path, tmp_path):
    """Neuronpedia's scan is the model; circuit-tracer's is the transcoder set (a known one
    gives its model) or, for a list of transcoders, a per-run hash (refused: --model)."""
    assert import_graph(GRAPHS / "war_ea.json", db_path).name == "gemma-2-2b/war_ea"
    doc = load("war_ea.json")
    for slug, scan, message in (("a", "custom-8364419431071427744", "custom-"),
                                ("b", "someone/my-transcoders", "repository of transcoders")):
        doc["metadata"].update(scan=scan, slug=slug)
        path = tmp_path / "w.json"
        path.write_text(json.dumps(doc))
        with pytest.raises(BadInputError, match=message):
            import_graph(path, db_path)
        assert import_graph(path, db_path, model="gemma-2-2b-it").name == f"gemma-2-2b-it/{slug}"


def test_the_same_slug_under_two_models(db_path, tmp_path):
    """Neuronpedia keys graphs by (model, slug): a second model's graph of the slug is
    stored beside the first, a slug alone is ambiguous then, and --replace replaces only
    its own model's graph."""
    src = GRAPHS / "war_ea.json"
    import_graph(src, db_path)
    import_graph(src, db_path, model="llama-3.2-1b")
    with pytest.raises(GraphExistsError):
        import_graph(src, db_path, model="llama-3.2-1b")
    doc = load("war_ea.json")
    with open_reader(db_path) as db:
        assert [g.name for g in list_graphs(db)] == ["gemma-2-2b/war_ea", "llama-3.2-1b/war_ea"]
        with pytest.raises(GraphAmbiguousError, match="gemma-2-2b, llama-3.2-1b"):
            get_graph(db, "war_ea")
        assert get_graph(db, "war_ea", "llama-3.2-1b").model == "llama-3.2-1b"
    changed = dict(doc, links=doc["links"][:100])
    path = tmp_path / "war_ea.json"
    path.write_text(json.dumps(changed))
    assert import_graph(path, db_path, model="llama-3.2-1b", replace=True).replaced
    assert exported(db_path, "war_ea", "llama-3.2-1b") == changed
    assert exported(db_path, "war_ea", "gemma-2-2b") == doc


def test_a_database_with_globally_unique_slugs_is_upgraded_by_its_next_write(db_path):
    """Files made when slugs were unique alone (UNIQUE (slug)) read as before; the next
    import swaps the constraint for UNIQUE (model, slug), keeping ids and rows."""
    import_graph(GRAPHS / "war_ea.json", db_path)
    con = duckdb.connect(str(db_path))
    cols = ", ".join(r[0] for r in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = "
        "'attribution_graphs' ORDER BY ordinal_position").fetchall())
    con.execute("ALTER TABLE attribution_graphs RENAME TO g_old")
    con.execute("CREATE TABLE attribution_graphs (graph_id INTEGER DEFAULT "
                "nextval('attribution_graphs_graph_id_seq') PRIMARY KEY, slug VARCHAR NOT NULL "
                "UNIQUE, model VARCHAR NOT NULL, prompt TEXT, document TEXT NOT NULL, n_nodes "
                "INTEGER NOT NULL, n_links BIGINT NOT NULL, n_pinned INTEGER NOT NULL, "
                "n_link_extras BIGINT NOT NULL, levels INTEGER, pruned_k INTEGER, source TEXT "
                "NOT NULL, imported_at TIMESTAMPTZ NOT NULL, headgraph_version VARCHAR NOT NULL)")
    con.execute(f"INSERT INTO attribution_graphs ({cols}) SELECT {cols} FROM g_old")
    con.execute("DROP TABLE g_old")
    con.close()
    assert exported(db_path, "war_ea") == load("war_ea.json")
    import_graph(GRAPHS / "war_ea.json", db_path, model="other-model")
    con = duckdb.connect(str(db_path), read_only=True)
    unique = con.execute("SELECT constraint_column_names FROM duckdb_constraints() WHERE "
                         "table_name = 'attribution_graphs' AND constraint_type = 'UNIQUE'"
                         ).fetchall()
    con.close()
    assert unique == [(["model", "slug"],)]
    assert exported(db_path, "war_ea", "gemma-2-2b") == exported(db_path, "war_ea", "other-model")


def test_circuit_tracers_own_collisions_and_neuronpedias_crm_format(db_path):
    """create_graph_files on a graph with two collisions, and Neuronpedia's CRM server
    format (lorsa features, integer layers, qk_only_nodes, empty qParams): both export
    unchanged; a link between the two nodes of one id joins the lower to the higher."""
    for name in ("toy-collision-repro.json", "crm-repro.json"):
        import_graph(GRAPHS / name, db_path, model="toy")
        assert exported(db_path, load(name)["metadata"]["slug"]) == load(name)
    with open_reader(db_path) as db:
        near = neighbourhood(db, "toy-collision-repro", "0_2_1@0", direction="out", top=100)
        nodes = graph_nodes(db, get_graph(db, "toy-collision-repro"))
    assert ("0_2_1@0", "0_2_1@5", -1.450477957725525) in view_sets(near)[1]
    assert nodes.nodes[nodes.by_key["0_2_1@5"]].fields["feature_type"] == \
        "mlp reconstruction error"


@pytest.mark.slow
@pytest.mark.skipif(not REALFILES, reason="HEADGRAPH_REALFILES names no folder of real files")
def test_every_real_graph_imports_exports_and_views_as_neuronpedia(tmp_path):
    """The whole set (HEADGRAPH_REALFILES/graphs/real/*.json): every file imports, exports
    unchanged, and its default view is Neuronpedia's at the file's threshold."""
    files = sorted(Path(REALFILES, "graphs", "real").glob("*.json"))
    assert files
    db = tmp_path / "all.duckdb"
    for path in files:
        doc = json.loads(path.read_text(encoding="utf-8"))
        report = import_graph(path, db)
        model, _, slug = report.name.rpartition("/")
        assert exported(db, slug, model) == doc, path.name
        with open_reader(db) as reader:
            view = graph_view(reader, slug, model=model)
        t = view.params["node_threshold"]
        keys = keys_of(doc)
        shown = {keys[i] for i in neuronpedia_shows(doc, t, doc["qParams"].get("pinnedIds", []))}
        assert {n.key for n in view.nodes} == shown, path.name
        assert len(view.nodes) >= 0.99 * len(doc["nodes"]), path.name


def test_postgresql_upgrades_globally_unique_slugs_and_scopes_them(pg_url):
    """The same upgrade on PostgreSQL: the old UNIQUE (slug) constraint is swapped for
    UNIQUE (model, slug) by the next import, in its transaction."""
    import psycopg

    import_graph(GRAPHS / "war_ea.json", pg_url)
    plain = pg_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as con:
        con.execute("ALTER TABLE attribution_graphs DROP CONSTRAINT attribution_graphs_model_slug")
        con.execute("ALTER TABLE attribution_graphs ADD CONSTRAINT attribution_graphs_slug_key "
                    "UNIQUE (slug)")
    assert exported(pg_url, "war_ea") == load("war_ea.json")
    import_graph(GRAPHS / "war_ea.json", pg_url, model="other-model")
    with psycopg.connect(plain) as con:
        found = con.execute("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid "
                            "= 'attribution_graphs'::regclass AND contype = 'u'").fetchall()
    assert found == [("UNIQUE (model, slug)",)]
    with open_reader(pg_url) as db:
        with pytest.raises(GraphAmbiguousError):
            get_graph(db, "war_ea")
