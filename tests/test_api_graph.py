"""The graph side over the API, on a real uvicorn with real ingests of the shipped toy
model: paths, virtual heads, circuits, comparison and series over GraphQL; exports and plots
over HTTP; every error code (downloads' spools themselves: test_api_delivery.py)."""

from __future__ import annotations

import io
import json
import math
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import networkx as nx
import pytest
from support import BACKENDS, Server, hold_for_writing, new_pg_database, sql, write_briefly

from headgraph.api.settings import Settings
from headgraph.ingest.pipeline import ingest
from headgraph.server import create_app
from headgraph.toy import CHECKPOINTS

SNAPSHOT = Path(__file__).resolve().parents[1] / "headgraph" / "api" / "schema.graphql"
MANIFEST = json.loads((CHECKPOINTS / "manifest.json").read_text())
PREVIOUS_TOKEN = MANIFEST["heads"]["previous_token"]
INDUCTION = MANIFEST["heads"]["induction"]
README_PATHS = ('{ model(name: "toy") { paths(target: "L1H2", kinds: [K], maxLength: 1, top: 1) '
                '{ nodes { name } score } } }')
ODD_NAME = "run:toy@2000"  # ':' and '@' in a model name


def _fill(store) -> None:
    """The final toy checkpoint as 'toy' plus two earlier checkpoints of its family."""
    ingest("toy", store)
    ingest("toy@1000", store)
    ingest("toy@2000", store, name=ODD_NAME)


@pytest.fixture(scope="module")
def duck(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("api-graph") / "graph.duckdb"
    _fill(path)
    return path


@pytest.fixture(scope="module", params=BACKENDS)
def db(request, duck: Path) -> str:
    """The same three models on each backend (DuckDB file or PostgreSQL URL)."""
    if request.param == "duckdb":
        return str(duck)
    url = new_pg_database(request.getfixturevalue("pg_server"), "hg_api_graph")
    _fill(url)
    return url


@pytest.fixture(scope="module")
def server(db: str) -> Iterator[Server]:
    s = Server(create_app(db))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def tight(db: str) -> Iterator[Server]:
    """A server with small export and circuit caps."""
    s = Server(create_app(db, Settings(max_export_edges=10, max_circuit_edges=3)))
    yield s
    s.stop()


def codes(body: dict) -> list[str]:
    return [e["extensions"]["code"] for e in body.get("errors", [])]


def names(nodes: list[dict]) -> list[str]:
    return [n["name"] for n in nodes]


def edge_set(path: str, model: str, where: str = "TRUE") -> set[tuple[str, str, str, float]]:
    rows = sql(path, "SELECT e.source, target, kind, score FROM edges e JOIN models m USING "
                     f"(model_id) WHERE name = ? AND {where}", model)
    return {(s, t, k, round(x, 6)) for s, t, k, x in rows}


# --- paths ------------------------------------------------------------------------------

def test_readme_paths_example_is_the_strongest_key_feeder(server: Server, db: str):
    body = server.gql(README_PATHS)
    assert "errors" not in body
    ((path,),) = [body["data"]["model"]["paths"]]
    ((source, score),) = sql(db, "SELECT e.source, score FROM edges e JOIN models "
                                 "USING (model_id) WHERE name='toy' AND target='L1H2' AND kind='K' AND rank=1")
    assert names(path["nodes"]) == [source, "L1H2"]
    assert path["score"] == pytest.approx(score, rel=1e-6)


def test_top_key_path_into_each_induction_head_starts_at_the_previous_token_head(
        server: Server):
    fields = " ".join(f'h{i}: paths(target: "{h}", kinds: [K], top: 1) {{ nodes {{ name }} }} '
                      f'd{i}: paths(target: "{h}", kinds: [K], maxLength: 1, top: 1) '
                      f'{{ nodes {{ name }} }}' for i, h in enumerate(INDUCTION))
    body = server.gql(f'{{ model(name: "toy") {{ {fields} }} }}')
    assert "errors" not in body
    for i, head in enumerate(INDUCTION):
        for alias in (f"h{i}", f"d{i}"):
            (path,) = body["data"]["model"][alias]
            assert names(path["nodes"])[0] in PREVIOUS_TOKEN
            assert names(path["nodes"])[-1] == head


def test_one_hop_paths_are_exactly_the_feeders_by_score(server: Server, db: str):
    body = server.gql('{ model(name: "toy") { paths(target: "L1H3", kinds: [K], maxLength: 1, '
                      'top: 100) { nodes { name } kinds score product edgeScores length } } }')
    paths = body["data"]["model"]["paths"]
    want = sql(db, "SELECT e.source, score FROM edges e JOIN models USING (model_id) WHERE "
                   "name='toy' AND target='L1H3' AND kind='K' ORDER BY score DESC, source")
    assert [names(p["nodes"]) for p in paths] == [[s, "L1H3"] for s, _ in want]
    for p, (_, score) in zip(paths, want, strict=True):
        assert p["kinds"] == ["K"] and p["length"] == 1
        assert p["score"] == pytest.approx(score) and p["edgeScores"] == [pytest.approx(score)]


def test_path_fields_agree_with_the_stored_edges(server: Server, db: str):
    body = server.gql('{ model(name: "toy") { '
                      'all: paths(target: "L1H2", maxLength: 2, top: 8, minScore: 0.1) '
                      '{ nodes { name } kinds score product edgeScores length } '
                      'hop: paths(target: "L1H2", maxLength: 2, top: 8, rankBy: PER_HOP) '
                      '{ score product length } '
                      'ratio: paths(target: "L1H2", maxLength: 2, top: 3, weight: RATIO) '
                      '{ nodes { name } kinds product } '
                      'vk: paths(target: "L1H2", pattern: [V, K], top: 5) { kinds } '
                      'from: paths(source: "EMBED", target: "L1H2", top: 5) { nodes { name } } '
                      '} }')
    assert "errors" not in body
    m = body["data"]["model"]
    stored = {(s, t, k): (x, b) for s, t, k, x, b in sql(
        db, "SELECT e.source, target, kind, score, baseline FROM edges e JOIN models "
            "USING (model_id) WHERE name='toy'")}
    assert [p["score"] for p in m["all"]] == sorted((p["score"] for p in m["all"]), reverse=True)
    for p in m["all"]:
        hops = list(zip(names(p["nodes"]), names(p["nodes"])[1:], p["kinds"], strict=False))
        assert p["length"] == len(hops) == len(p["edgeScores"]) and 1 <= p["length"] <= 2
        assert p["edgeScores"] == pytest.approx([stored[h][0] for h in hops], rel=1e-6)
        assert min(p["edgeScores"]) >= 0.1 * (1 - 1e-6)
        assert p["score"] == pytest.approx(p["product"])
        assert p["product"] == pytest.approx(math.prod(p["edgeScores"]), rel=1e-5)
    for p in m["hop"]:
        assert p["score"] == pytest.approx(p["product"] ** (1 / p["length"]))
    for p in m["ratio"]:
        hops = zip(names(p["nodes"]), names(p["nodes"])[1:], p["kinds"], strict=False)
        want = math.prod(stored[h][0] / stored[h][1] for h in hops)
        assert p["product"] == pytest.approx(want, rel=1e-5) and p["product"] > 1
    assert m["vk"] and all(p["kinds"] == ["V", "K"] for p in m["vk"])
    assert m["from"] and all(names(p["nodes"])[0] == "EMBED" for p in m["from"])


# --- virtual heads and circuits ---------------------------------------------------------

def test_virtual_heads_match_the_virtual_heads_table(server: Server, db: str):
    body = server.gql('{ model(name: "toy") { top: virtualHeads(top: 5) { heads { name } } '
                      'pairs: virtualHeads(length: 2, top: 1000) { heads { name } length score '
                      'heuristic copying { ratio positiveFraction } } '
                      'none: virtualHeads(length: 3) { score } } }')
    assert "errors" not in body
    m = body["data"]["model"]
    want = sql(db, "SELECT heads, length, score, heuristic, copying_ratio, "
                   "copying_positive_fraction FROM virtual_heads JOIN models USING (model_id) "
                   "WHERE name='toy' ORDER BY score DESC, heads")
    assert want, "the ingest stored no virtual heads"
    assert [",".join(names(v["heads"])) for v in m["top"]] == [w[0] for w in want[:5]]
    pairs = [w for w in want if w[1] == 2]
    assert [",".join(names(v["heads"])) for v in m["pairs"]] == [w[0] for w in pairs]
    for v, (_, length, score, heuristic, ratio, fraction) in zip(m["pairs"], pairs, strict=True):
        assert v["length"] == length == 2
        assert [v["score"], v["heuristic"], v["copying"]["ratio"],
                v["copying"]["positiveFraction"]] == pytest.approx(
            [score, heuristic, ratio, fraction], rel=1e-6)
    assert m["none"] == [w for w in want if w[1] == 3]  # the 2-layer toy has no chains of 3


def test_circuit_is_the_upstream_edges_within_depth(server: Server, db: str):
    body = server.gql('{ node(model: "toy", name: "L1H2") { '
                      'one: circuit(depth: 1, kinds: [K]) { truncated nodes { name } '
                      'edges { source { name } target { name } kind score rank z } } '
                      'two: circuit(kinds: [K, V], minScore: 0.2) { nodes { name } '
                      'edges { source { name } target { name } kind score } } } }')
    assert "errors" not in body
    one, two = body["data"]["node"]["one"], body["data"]["node"]["two"]
    want = edge_set(db, "toy", "target='L1H2' AND kind='K'")
    got = {(e["source"]["name"], e["target"]["name"], e["kind"], round(e["score"], 6))
           for e in one["edges"]}
    assert got == want and one["truncated"] is False
    assert set(names(one["nodes"])) == {s for s, *_ in want} | {"L1H2"}
    assert names(one["nodes"])[:2] == ["EMBED", "POS_EMBED"]  # residual-stream order
    assert [e["score"] for e in one["edges"]] == sorted((e["score"] for e in one["edges"]),
                                                        reverse=True)
    assert all(e["rank"] >= 1 and e["z"] is not None for e in one["edges"])
    hop1 = edge_set(db, "toy", "target='L1H2' AND kind IN ('K','V') AND score >= 0.2")
    sources = {s for s, *_ in hop1}
    hop2 = {e for e in edge_set(db, "toy", "kind IN ('K','V') AND score >= 0.2")
            if e[1] in sources}
    got = {(e["source"]["name"], e["target"]["name"], e["kind"], round(e["score"], 6))
           for e in two["edges"]}
    assert got == hop1 | hop2 and hop2


def test_circuit_cap_keeps_the_strongest_edges_and_says_so(tight: Server, db: str):
    body = tight.gql('{ node(model: "toy", name: "L1H2") { circuit(depth: 1) { truncated '
                     'edges { score } } } }')
    circuit = body["data"]["node"]["circuit"]
    want = [s for (s,) in sql(db, "SELECT score FROM edges WHERE target='L1H2' AND model_id = "
                                  "(SELECT model_id FROM models WHERE name='toy') "
                                  "ORDER BY score DESC LIMIT 3")]
    assert circuit["truncated"] is True
    assert [e["score"] for e in circuit["edges"]] == pytest.approx(want, rel=1e-6)


# --- comparison and series --------------------------------------------------------------

COMPARE = """query($a: String!, $b: String!, $m: Float, $by: HeadMatching) { compare(a: $a,
    b: $b, minSimilarity: $m, matchBy: $by) { sameShape note features a { name } b { name }
    matches { a { name layer } b { name layer } similarity } unmatchedA { name }
    unmatchedB { name } changedEdges(top: 6) { sourceA { name } targetA { name }
    sourceB { name } targetB { name } kind scoreA scoreB change status } } }"""


def test_compare_checkpoints_matches_heads_and_ranks_changed_edges(server: Server, db: str):
    body = server.gql(COMPARE, {"a": "toy@1000", "b": "toy"})
    assert "errors" not in body
    c = body["data"]["compare"]
    heads = {r[0] for r in sql(db, "SELECT node FROM nodes JOIN models USING (model_id) "
                                   "WHERE name='toy' AND kind='head'")}
    assert c["sameShape"] is True and c["a"] == {"name": "toy@1000"} and c["b"] == {"name": "toy"}
    assert "depth" in c["features"] and c["note"].startswith("same shape")
    assert all(m["a"]["name"] == m["b"]["name"] for m in c["matches"])  # one run: by name
    assert {m["a"]["name"] for m in c["matches"]} == {m["b"]["name"] for m in c["matches"]} \
        == heads
    assert c["unmatchedA"] == c["unmatchedB"] == []
    sims = [m["similarity"] for m in c["matches"]]
    assert sims == sorted(sims, reverse=True) and all(0 < s <= 1 for s in sims)
    mapping = {m["a"]["name"]: m["b"]["name"] for m in c["matches"]}
    scores_a = {(s, t, k): x for s, t, k, x in edge_set(db, "toy@1000")}
    scores_b = {(s, t, k): x for s, t, k, x in edge_set(db, "toy")}
    changes = [abs(e["change"]) for e in c["changedEdges"]]
    assert len(changes) == 6 and changes == sorted(changes, reverse=True)
    for e in c["changedEdges"]:
        a = (e["sourceA"]["name"], e["targetA"]["name"], e["kind"])
        b = (e["sourceB"]["name"], e["targetB"]["name"], e["kind"])
        assert mapping.get(a[0], a[0]) == b[0] and mapping.get(a[1], a[1]) == b[1]
        assert e["scoreA"] == pytest.approx(scores_a.get(a), abs=1e-6)
        assert e["scoreB"] == pytest.approx(scores_b.get(b), abs=1e-6)
        assert e["change"] == pytest.approx((e["scoreB"] or 0) - (e["scoreA"] or 0), abs=1e-6)
        assert e["status"] in ("APPEARED", "VANISHED", "CHANGED")


def test_compare_with_itself_and_a_similarity_floor(server: Server):
    c = server.gql(COMPARE, {"a": "toy", "b": "toy"})["data"]["compare"]
    assert all(m["a"] == m["b"] and m["similarity"] == pytest.approx(1.0) for m in c["matches"])
    assert all(e["change"] == 0 for e in c["changedEdges"])
    c = server.gql(COMPARE, {"a": "toy@1000", "b": "toy", "m": 0.5})["data"]["compare"]
    assert all(m["similarity"] >= 0.5 for m in c["matches"])
    assert len(c["matches"]) + len(c["unmatchedA"]) == 8 and c["unmatchedA"]
    c = server.gql(COMPARE, {"a": "toy@1000", "b": "toy", "by": "SIGNATURE"})["data"]["compare"]
    assert "signature" in c["note"] and len(c["matches"]) == 8
    assert len({m["b"]["name"] for m in c["matches"]}) == 8  # one-to-one
    body = server.gql('{ compare(a: "toy@1000", b: "toy") { changedEdges(top: 50, '
                      'headsOnly: false) { sourceA { name } } } }')
    sources = {e["sourceA"]["name"] for e in body["data"]["compare"]["changedEdges"]}
    assert "POS_EMBED" in sources or "EMBED" in sources


def test_series_across_checkpoints(server: Server, db: str):
    body = server.gql('{ edge: series(family: "toy", source: "L0H2", target: "L1H2", kind: K) '
                      '{ step model value } z: series(family: "toy", source: "L0H2", '
                      'target: "L1H2", kind: K, metric: "z") { value } '
                      'node: series(family: "toy", node: "L1H2") { step value } }')
    assert "errors" not in body
    want = sql(db, "SELECT step, name, score FROM edges e JOIN models USING (model_id) WHERE "
                   "family='toy' AND e.source='L0H2' AND target='L1H2' AND kind='K' ORDER BY step")
    got = body["data"]["edge"]
    assert [(p["step"], p["model"]) for p in got] == [(1000, "toy@1000"), (2000, ODD_NAME),
                                                      (5000, "toy")]
    assert [p["value"] for p in got] == pytest.approx([w[2] for w in want], rel=1e-6)
    assert got[-1]["value"] > got[0]["value"]  # the induction circuit forms during training
    assert len(body["data"]["z"]) == 3 and body["data"]["z"][-1]["value"] > 3
    want = sql(db, "SELECT step, copying_ratio FROM nodes JOIN models USING (model_id) "
                   "WHERE family='toy' AND node='L1H2' ORDER BY step")
    assert [(p["step"], p["value"]) for p in body["data"]["node"]] == [
        (s, pytest.approx(v, rel=1e-6)) for s, v in want]


# --- errors -----------------------------------------------------------------------------

def _paths(args: str) -> str:
    return f'{{ model(name: "toy") {{ paths({args}) {{ score }} }} }}'


@pytest.mark.parametrize(("query", "code"), [
    (_paths('target: "L9H9"'), "NODE_NOT_FOUND"),
    (_paths('source: "L9H9", target: "L1H2"'), "NODE_NOT_FOUND"),
    (_paths('source: "L1H2", target: "L0H2"'), "BAD_INPUT"),
    (_paths('source: "L1H2", target: "L1H2"'), "BAD_INPUT"),
    (_paths('target: "L1H2", maxLength: 0'), "BAD_INPUT"),
    (_paths('target: "L1H2", maxLength: 7'), "LIMIT_EXCEEDED"),
    (_paths('target: "L1H2", top: -1'), "BAD_INPUT"),
    (_paths('target: "L1H2", top: 101'), "LIMIT_EXCEEDED"),
    (_paths('target: "L1H2", top: 1001'), "LIMIT_EXCEEDED"),
    (_paths('target: "L1H2", kinds: [K], pattern: [V, K]'), "BAD_INPUT"),
    (_paths('target: "L1H2", pattern: [V, V, V, V, V, V, K]'), "LIMIT_EXCEEDED"),
    (_paths('target: "L1H2", pattern: []'), "BAD_INPUT"),
    (_paths('target: "L1H2", kinds: [X]'), "BAD_INPUT"),
    (_paths('target: "L1H2", kinds: []'), "BAD_INPUT"),
    ('{ model(name: "nope") { paths(target: "L1H2") { score } } }', "MODEL_NOT_FOUND"),
    ('{ model(name: "toy") { virtualHeads(length: 1) { score } } }', "BAD_INPUT"),
    ('{ model(name: "toy") { virtualHeads(top: 5000) { score } } }', "LIMIT_EXCEEDED"),
    ('{ node(model: "toy", name: "L1H2") { circuit(depth: 0) { truncated } } }', "BAD_INPUT"),
    ('{ node(model: "toy", name: "L1H2") { circuit(depth: 7) { truncated } } }',
     "LIMIT_EXCEEDED"),
    ('{ node(model: "toy", name: "L9H9") { circuit { truncated } } }', "NODE_NOT_FOUND"),
    ('{ compare(a: "nope", b: "toy") { note } }', "MODEL_NOT_FOUND"),
    ('{ compare(a: "toy", b: "toy", minSimilarity: 2) { note } }', "BAD_INPUT"),
    ('{ compare(a: "toy", b: "toy", matchBy: NAME) { note } }', "BAD_INPUT"),
    ('{ compare(a: "toy", b: "toy") { changedEdges(top: 5000) { change } } }',
     "LIMIT_EXCEEDED"),
    ('{ series(family: "nope", node: "L1H2") { value } }', "MODEL_NOT_FOUND"),
    ('{ series(family: "toy", node: "L9H9") { value } }', "NODE_NOT_FOUND"),
    ('{ series(family: "toy", source: "L0H2", target: "L7H7", kind: K) { value } }',
     "NODE_NOT_FOUND"),
    ('{ series(family: "toy") { value } }', "BAD_INPUT"),
    ('{ series(family: "toy", node: "L1H2", source: "L0H2") { value } }', "BAD_INPUT"),
    ('{ series(family: "toy", source: "L0H2", target: "L1H2", kind: K, metric: "x") '
     '{ value } }', "BAD_INPUT"),
])
def test_graph_fields_refuse_with_a_code(server: Server, query: str, code: str):
    r = server.client.post("/graphql", json={"query": query})
    assert r.status_code == 200 and codes(r.json()) == [code], r.text
    assert "Traceback" not in r.text


def test_snapshot_has_the_graph_contract():
    sdl = SNAPSHOT.read_text()
    for line in ("paths(source: String = null, target: String!, kinds: [EdgeKind!] = null, "
                 "maxLength: Int = 3, top: Int = 10, minScore: Float = null",
                 "virtualHeads(length: Int = null, top: Int = 10): [VirtualHead!]!",
                 "circuit(depth: Int = 2, kinds: [EdgeKind!] = null, minScore: Float = null): "
                 "Subgraph!",
                 "compare(a: String!, b: String!, minSimilarity: Float = null, matchBy: "
                 "HeadMatching = AUTO): Comparison!",
                 "series(family: String!, node: String = null, source: String = null, target: "
                 "String = null, kind: EdgeKind = null, metric: String = null): [SeriesPoint!]!",
                 "changedEdges(top: Int = 20", "edgeScores: [Float!]!", "copying: Copying!",
                 "unmatchedA: [Node!]!", "sourceA: Node", "similarity: Float!"):
        assert line in sdl, line


# --- exports ----------------------------------------------------------------------------

def test_json_export_has_its_length_and_round_trips_through_networkx(server: Server, db: str):
    with server.client.stream("GET", "/export/toy.json") as r:  # sent from its spool
        assert r.status_code == 200 and "transfer-encoding" not in r.headers
        body = r.read()
        assert int(r.headers["content-length"]) == len(body)
    assert r.headers["content-type"] == "application/json"
    assert r.headers["content-disposition"].startswith('attachment; filename="toy.json"')
    g = nx.node_link_graph(json.loads(body), directed=True, multigraph=True)
    got = {(u, v, d["kind"], round(d["score"], 6)) for u, v, d in g.edges(data=True)}
    assert got == edge_set(db, "toy", "kind IN ('Q','K','V')")
    assert int(r.headers["x-headgraph-edges"]) == len(got)
    assert g.nodes["L1H2"]["kind"] == "head" and g.graph["model"] == "toy"


@pytest.mark.parametrize("path", ["/export/toy%401000.graphml", "/export/toy@1000.graphml"])
def test_graphml_export_with_filters_round_trips(server: Server, db: str, path: str):
    r = server.client.get(path, params={"kinds": "K,V", "min_score": "0.12"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/graphml+xml")
    g = nx.read_graphml(io.BytesIO(r.content), force_multigraph=True)
    got = {(u, v, d["kind"], round(d["score"], 6)) for u, v, d in g.edges(data=True)}
    assert got == edge_set(db, "toy@1000", "kind IN ('K','V') AND score >= 0.12") and got


def test_cytoscape_and_dot_exports(server: Server, db: str):
    r = server.client.get("/export/toy.cyjs", params={"top_per_target": 1})
    data = r.json()["elements"]
    assert {(e["data"]["source"], e["data"]["target"], e["data"]["kind"])
            for e in data["edges"]} == {e[:3] for e in edge_set(
                db, "toy", "kind IN ('Q','K','V') AND rank = 1")}
    r = server.client.get("/export/toy.dot", params={"kinds": "K", "circuit": "L1H2",
                                                     "depth": 1})
    assert r.headers["content-type"].startswith("text/vnd.graphviz")
    assert r.text.startswith('digraph "toy"')
    assert r.headers["content-disposition"].startswith(
        'attachment; filename="toy.circuit-L1H2.dot"')
    assert r.text.count(" -> ") == len(edge_set(db, "toy", "target='L1H2' AND kind='K'"))


def test_circuit_export_and_odd_model_names(server: Server, db: str):
    bodies = [server.client.get(p, params={"circuit": "L1H0", "depth": 2, "kinds": "K"})
              for p in (f"/export/{ODD_NAME}.json", "/export/run%3Atoy%402000.json")]
    assert [b.status_code for b in bodies] == [200, 200] and bodies[0].content == bodies[1].content
    assert bodies[0].headers["content-disposition"] == (
        "attachment; filename=\"run_toy@2000.circuit-L1H0.json\"; "
        "filename*=UTF-8''run%3Atoy%402000.circuit-L1H0.json")
    g = nx.node_link_graph(bodies[0].json(), directed=True, multigraph=True)
    hop1 = {s for s, *_ in edge_set(db, ODD_NAME, "target='L1H0' AND kind='K'")}
    want = {(s, t, k) for s, t, k, _ in edge_set(db, ODD_NAME, "kind='K'")
            if t == "L1H0" or t in hop1}
    assert set(g.edges(keys=True)) == want
    assert bodies[0].headers["x-headgraph-truncated"] == "false"


@pytest.mark.parametrize("path", [
    "/export/a%2Fb.json", "/export/%2E%2E.json", "/export/..%2F..%2Fetc%2Fpasswd.json",
    "/export/a%00b.json", "/export/a%5Cb.json", "/export/x/y.json", "/export/%0A.json",
    "/export/%FF.json", "/export/.json", "/plot/a%2Fb/copying.png", "/plot/%2E%2E/copying.png",
    "/plot/a/b/copying.png",
])
def test_path_like_model_names_are_refused(server: Server, path: str):
    r = server.client.get(path)
    assert r.status_code == 400 and codes(r.json()) == ["BAD_INPUT"], r.text


@pytest.mark.parametrize(("path", "params", "status", "code"), [
    ("/export/nope.json", {}, 404, "MODEL_NOT_FOUND"),
    ("/export/toy.xlsx", {}, 400, "BAD_INPUT"),
    ("/export/toy", {}, 400, "BAD_INPUT"),
    ("/export/toy.json", {"bogus": "1"}, 400, "BAD_INPUT"),
    ("/export/toy.json", {"min_score": "nan"}, 400, "BAD_INPUT"),
    ("/export/toy.json", {"kinds": "K,X"}, 400, "BAD_INPUT"),
    ("/export/toy.json", {"top_per_target": "0"}, 400, "BAD_INPUT"),
    ("/export/toy.json", {"depth": "2"}, 400, "BAD_INPUT"),
    ("/export/toy.json", {"circuit": "L9H9"}, 404, "NODE_NOT_FOUND"),
    ("/export/toy.json", {"circuit": "L1H2", "depth": "9"}, 400, "LIMIT_EXCEEDED"),
    ("/plot/nope/copying.png", {}, 404, "MODEL_NOT_FOUND"),
    ("/plot/toy/heat.png", {}, 404, "BAD_INPUT"),
    ("/plot/toy/composition.png", {"kind": "MLP"}, 400, "BAD_INPUT"),
    ("/plot/toy/copying.png", {"kind": "K"}, 400, "BAD_INPUT"),
    ("/plot/series.png", {"source": "L0H2"}, 400, "BAD_INPUT"),
    ("/plot/series.png", {"family": "nope", "node": "L1H2"}, 404, "MODEL_NOT_FOUND"),
    ("/plot/series.png", {"family": "toy", "node": "L9H9"}, 404, "NODE_NOT_FOUND"),
])
def test_route_refusals_use_the_api_error_shape(server: Server, path: str, params: dict,
                                                status: int, code: str):
    r = server.client.get(path, params=params)
    assert (r.status_code, codes(r.json())) == (status, [code]), r.text
    assert "Traceback" not in r.text


def test_routes_take_only_get(server: Server):
    r = server.client.post("/export/toy.json")
    assert r.status_code == 405 and r.headers["allow"] == "GET"


def test_exports_over_the_edge_cap_are_refused_before_sending(tight: Server):
    r = tight.client.get("/export/toy.json")
    assert r.status_code == 400 and codes(r.json()) == ["LIMIT_EXCEEDED"]
    assert "max_export_edges" in r.json()["errors"][0]["message"]
    r = tight.client.get("/export/toy.json", params={"kinds": "K", "top_per_target": 1})
    assert r.status_code == 200 and len(r.json()["edges"]) == 8
    r = tight.client.get("/export/toy.json", params={"circuit": "L1H2", "depth": 1})
    assert r.headers["x-headgraph-truncated"] == "true" and len(r.json()["edges"]) == 3


# --- plots ------------------------------------------------------------------------------

def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize(("path", "params", "size"), [
    ("/plot/toy/composition.png", {}, (800, 700)),
    ("/plot/run%3Atoy%402000/composition.png", {"kind": "v"}, (800, 700)),
    ("/plot/toy/copying.png", {}, (800, 400)),
    ("/plot/series.png", {"family": "toy", "source": "L0H2", "target": "L1H2", "kind": "K"},
     (700, 400)),
    ("/plot/series.png", {"family": "toy", "node": "L1H2", "metric": "ov_norm"}, (700, 400)),
])
def test_plots_are_real_pngs(server: Server, path: str, params: dict, size: tuple[int, int]):
    r = server.client.get(path, params=params)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png", r.text
    assert png_size(r.content) == size and int(r.headers["content-length"]) == len(r.content)


# --- the database held by a writer ------------------------------------------------------

def test_routes_answer_database_locked_while_a_writer_holds_the_file(duck: Path, tmp_path: Path):
    copy = tmp_path / "locked.duckdb"
    shutil.copy(duck, copy)
    s = Server(create_app(copy))
    writer = None
    try:
        assert s.client.get("/export/toy.dot").status_code == 200
        writer = hold_for_writing(copy)  # the server lets go of the file for it
        for path in ("/export/toy.json", "/plot/toy/copying.png"):
            r = s.client.get(path)
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            assert r.json()["errors"][0]["extensions"] == {"code": "DATABASE_LOCKED",
                                                           "retryable": True}
        body = s.gql(README_PATHS.replace("top: 1", "top: 2"))
        assert codes(body) == ["DATABASE_LOCKED"]
        writer.stdin.close()
        writer.wait(10)
        assert s.client.get("/export/toy.json").status_code == 200
        assert "errors" not in s.gql(README_PATHS)
    finally:
        if writer is not None and writer.poll() is None:
            writer.kill()
        s.stop()


def test_a_client_that_does_not_read_its_download_holds_no_database(
        duck: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture):
    """An export is written whole into a spool, and the database let go, before its first
    byte leaves: a client that keeps the download open without reading it (or leaves)
    keeps no writer out."""
    copy = tmp_path / "left.duckdb"
    shutil.copy(duck, copy)
    s = Server(create_app(copy))
    try:
        with s.client.stream("GET", "/export/toy.json") as r:
            assert r.status_code == 200 and next(r.iter_raw())
            assert int(r.headers["content-length"]) > 10_000
            # still connected, not reading: the file is free for a writer all the same
            assert write_briefly(copy, wait_s=10) == 0
        assert write_briefly(copy, wait_s=10) == 0
        assert s.client.get("/export/toy.json").status_code == 200
    finally:
        s.stop()
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def test_the_graph_side_of_the_api_imports_without_torch():
    code = ("import sys; import headgraph.api.export_routes, headgraph.api.compare_types, "
            "headgraph.graph.paths, headgraph.graph.upstream, headgraph.graph.compare, "
            "headgraph.graph.export, headgraph.graph.plot, headgraph.queries.virtual; "
            "print(sorted({'torch', 'transformer_lens', 'transformers'} & set(sys.modules)))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout.strip()) == (0, "[]"), r.stderr
