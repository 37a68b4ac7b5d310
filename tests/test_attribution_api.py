"""Evidence from other tools over the API: attribution graphs and their views in GraphQL
and as Neuronpedia JSON at /graphs/{slug}.json, and Model.evidenceGaps, against a real
uvicorn server on loopback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import pytest
from support import Server
from test_circuits import eap_ig_graph

from headgraph.attribution.importer import import_graph
from headgraph.attribution.pruned import pruned_view
from headgraph.attribution.synth import SynthSpec, graph_document
from headgraph.circuits.importer import import_circuit
from headgraph.queries.session import open_reader
from headgraph.server import create_app

SCHEMA = json.loads((Path(__file__).parent / "neuronpedia_graph_schema.json").read_text())


@pytest.fixture(scope="module")
def served(toy_db: Path, tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("attribution_api")
    db = folder / "hg.duckdb"
    shutil.copy(toy_db, db)
    doc = graph_document(SynthSpec(n_links=4000, n_features=200, seed=5, slug="g-1",
                                   scan="gemma-2-2b"))
    (folder / "g.json").write_text(json.dumps(doc))
    import_graph(folder / "g.json", db)
    circuit = eap_ig_graph(2, 4, out=("a0.h2->a1.h2<k>",))
    (folder / "induction.json").write_text(json.dumps(circuit))
    import_circuit(folder / "induction.json", db, model="toy")
    server = Server(create_app(db))
    yield server, doc, db
    server.stop()


def test_graphs_are_listed_by_model_and_prompt(served):
    server, doc, _ = served
    q = "query($m: String, $p: String) { attributionGraphs(model: $m, prompt: $p) { slug model " \
        "nodeCount linkCount metadata } }"
    found = server.gql(q, {"m": "gemma-2-2b", "p": doc["metadata"]["prompt"][3:12].upper()})
    assert found["data"]["attributionGraphs"] == [{
        "slug": "g-1", "model": "gemma-2-2b", "nodeCount": len(doc["nodes"]),
        "linkCount": 4000, "metadata": doc["metadata"]}]
    assert server.gql(q, {"m": "other"})["data"]["attributionGraphs"] == []
    missing = server.gql('{ attributionGraph(slug: "nope") { slug } }')
    assert missing["errors"][0]["extensions"]["code"] == "GRAPH_NOT_FOUND"


def test_pruned_and_neighbourhood_views_in_graphql(served):
    server, doc, db = served
    q = """{ attributionGraph(slug: "g-1") { defaultPrune nodeThreshold pinnedIds
      pruned(prune: RECOMPUTE, nodeThreshold: 0.7, edgeThreshold: 0.9, first: 1000) {
        truncated prune nodeThreshold edgeThreshold
        nodes { nodeId key role influence recomputedInfluence recomputedCumulativeInfluence
                feature fields pinned }
        links { source target sourceKey weight edgeInfluence } }
      cut: pruned(prune: RECOMPUTE, first: 3) { truncated links { edgeInfluence } }
      slider: pruned(nodeThreshold: 0.3) { prune nodeThreshold nodes { nodeId influence }
        links { edgeInfluence } } } }"""
    got = server.gql(q)["data"]["attributionGraph"]
    assert (got["defaultPrune"], got["nodeThreshold"], got["pinnedIds"]) == ("INFLUENCE", 0.8, [])
    with open_reader(db) as reader:
        view = pruned_view(reader, "g-1", 0.7, 0.9)
    assert {n["nodeId"] for n in got["pruned"]["nodes"]} == {n.node_id for n in view.nodes}
    assert len(got["pruned"]["links"]) == view.links.num_rows and not got["pruned"]["truncated"]
    assert (got["pruned"]["prune"], got["pruned"]["nodeThreshold"],
            got["pruned"]["edgeThreshold"]) == ("RECOMPUTE", 0.7, 0.9)
    assert got["cut"]["truncated"] and len(got["cut"]["links"]) == 3
    by_id = {n["node_id"]: n for n in doc["nodes"]}
    for node in got["pruned"]["nodes"]:
        assert node["fields"] == by_id[node["nodeId"]] and node["key"] == node["nodeId"]
        assert node["influence"] == by_id[node["nodeId"]].get("influence")
        assert not node["pinned"]
    shown = {n["node_id"] for n in doc["nodes"] if n["feature_type"] in ("embedding", "logit")
             or n.get("influence") is None or n["influence"] <= 0.3}
    assert got["slider"]["prune"] == "INFLUENCE" and got["slider"]["nodeThreshold"] == 0.3
    assert {n["nodeId"] for n in got["slider"]["nodes"]} == shown
    assert all(x["edgeInfluence"] is None for x in got["slider"]["links"])
    center = got["pruned"]["nodes"][-1]["nodeId"]
    q = """query($n: String!) { attributionGraph(slug: "g-1") {
      neighbourhood(node: $n, top: 2, depth: 1, direction: IN) { nodes { nodeId }
        links { source target } } } }"""
    near = server.gql(q, {"n": center})["data"]["attributionGraph"]["neighbourhood"]
    assert 0 < len(near["links"]) <= 2 and all(x["target"] == center for x in near["links"])
    bad = server.gql(q, {"n": "ghost"})
    assert bad["errors"][0]["extensions"]["code"] == "NODE_NOT_FOUND"
    for bad_args in ("nodeThreshold: 2", "edgeThreshold: 0.5", "prune: INFLUENCE, "
                     "edgeThreshold: 0.5", 'pinned: ["ghost"]'):
        bad = server.gql(f'{{ attributionGraph(slug: "g-1") {{ pruned({bad_args}) '
                         '{ truncated } } }')
        assert bad["errors"][0]["extensions"]["code"] in ("BAD_INPUT", "NODE_NOT_FOUND"), bad


def test_neuronpedia_json_whole_and_in_views(served):
    server, doc, _ = served
    whole = server.client.get("/graphs/g-1.json")
    assert whole.status_code == 200 and whole.headers["x-headgraph-links"] == "4000"
    assert whole.json() == doc
    pruned = server.client.get("/graphs/g-1.json", params={"node_threshold": "0.6",
                                                            "prune": "recompute"})
    body = pruned.json()
    jsonschema.validate(body, SCHEMA)
    assert body["metadata"]["pruning_settings"] == {"node_threshold": 0.6,
                                                    "edge_threshold": 0.98}
    assert body["metadata"]["node_threshold"] == 0
    assert 0 < len(body["links"]) < 4000
    slider = server.client.get("/graphs/gemma-2-2b/g-1.json", params={"node_threshold": "0.4"})
    shown = {n["node_id"] for n in doc["nodes"] if n["feature_type"] in ("embedding", "logit")
             or n.get("influence") is None or n["influence"] <= 0.4}
    assert {n["node_id"] for n in slider.json()["nodes"]} == shown
    assert slider.json()["metadata"]["node_threshold"] == 0.4
    assert {(x["source"], x["target"]) for x in slider.json()["links"]} == {
        (x["source"], x["target"]) for x in doc["links"]
        if x["source"] in shown and x["target"] in shown}
    ids = {n["node_id"] for n in body["nodes"]}
    assert all(x["source"] in ids and x["target"] in ids for x in body["links"])
    around = server.client.get("/graphs/g-1.json",
                               params={"around": body["nodes"][-1]["node_id"], "depth": "2"})
    jsonschema.validate(around.json(), SCHEMA)
    assert around.json()["qParams"]["clickedId"] == body["nodes"][-1]["node_id"]
    for params, status, code in (({"around": "ghost"}, 404, "NODE_NOT_FOUND"),
                                 ({"node_threshold": "x"}, 400, "BAD_INPUT"),
                                 ({"depth": "2"}, 400, "BAD_INPUT"),
                                 ({"bogus": "1"}, 400, "BAD_INPUT"),
                                 ({"prune": "neither"}, 400, "BAD_INPUT"),
                                 ({"edge_threshold": "0.5"}, 400, "BAD_INPUT"),
                                 ({"pinned": "ghost"}, 404, "NODE_NOT_FOUND")):
        r = server.client.get("/graphs/g-1.json", params=params)
        assert (r.status_code, r.json()["errors"][0]["extensions"]["code"]) == (status, code)
    r = server.client.get("/graphs/nope.json")
    assert (r.status_code, r.json()["errors"][0]["extensions"]["code"]) == (
        404, "GRAPH_NOT_FOUND")
    assert server.client.post("/graphs/g-1.json").status_code == 405


def test_evidence_gaps_in_graphql_carry_z(served):
    server, _, _ = served
    q = """{ model(name: "toy") { evidenceGaps(kind: K, top: 1) { gap inCircuit circuitScore
      circuit { tool task probe format edgeCount inGraphCount }
      edge { source { name } target { name } kind score baseline nullStd z gaussianZ } } } }"""
    gaps = server.gql(q)["data"]["model"]["evidenceGaps"]
    assert [g["gap"] for g in gaps] == ["ABSENT_FROM_CIRCUIT", "WEAK_IN_WEIGHTS"]
    absent = gaps[0]
    assert (absent["edge"]["source"]["name"], absent["edge"]["target"]["name"]) == (
        "L0H2", "L1H2")
    e = absent["edge"]
    assert e["gaussianZ"] == pytest.approx((e["score"] - e["baseline"]) / e["nullStd"],
                                           rel=1e-5)
    assert e["z"] > 5  # the structural z, as stored
    assert absent["circuit"] == {"tool": "eap-ig", "task": "induction",
                                 "probe": "task:induction", "format": "eap-ig-json",
                                 "edgeCount": 110, "inGraphCount": 109}


def test_graph_route_errors_name_no_database_and_are_cut(served):
    server, _, db = served
    r = server.client.get("/graphs/nope.json")
    message = r.json()["errors"][0]["message"]
    assert r.status_code == 404 and "the database" in message
    assert str(Path(db).resolve()) not in message and ".duckdb" not in message
    r = server.client.get("/graphs/" + "x" * 3000 + ".json")
    assert r.status_code == 404
    message = r.json()["errors"][0]["message"]
    assert message.endswith("... (cut)") and len(message) == 1000 + len("... (cut)")


def test_graph_route_waits_for_a_download_slot_and_not_for_ever(served):
    """With every download slot taken, a /graphs/ request opens no session and sends
    nothing; it is answered once a slot is free, and 503 SERVER_BUSY (with Retry-After)
    when none frees up within max_wait_s. GraphQL's database turns are not its."""
    import asyncio
    from contextlib import AsyncExitStack

    from headgraph.api.settings import Settings
    from headgraph.api.turns import MAX_DOWNLOADS

    _, _, db = served
    app = create_app(db, Settings(max_wait_s=1))
    sent: list[dict] = []
    refused: list[dict] = []

    async def receive() -> dict:
        await asyncio.Event().wait()  # the client never goes away
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    async def send_refused(message: dict) -> None:
        refused.append(message)

    async def scenario() -> None:
        scope = {"type": "http", "method": "GET", "path": "/graphs/g-1.json",
                 "raw_path": b"/graphs/g-1.json", "query_string": b"node_threshold=0.5",
                 "headers": []}
        async with AsyncExitStack() as turns:  # GraphQL's turns taken: no matter
            for _ in range(6):
                await turns.enter_async_context(app.service.session_gate())
            async with AsyncExitStack() as slots:
                for _ in range(MAX_DOWNLOADS):
                    await slots.enter_async_context(app.service.downloads.hold(1))
                request = asyncio.create_task(app(scope, receive, send))
                await asyncio.sleep(0.3)
                assert sent == [] and not request.done()
            await asyncio.wait_for(request, 30)  # a slot came free: answered
            async with AsyncExitStack() as slots:
                for _ in range(MAX_DOWNLOADS):
                    await slots.enter_async_context(app.service.downloads.hold(1))
                await app(scope, receive, send_refused)  # waits max_wait_s, then 503

    try:
        asyncio.run(scenario())
    finally:
        app.service.close()
    assert sent[0]["status"] == 200
    body = json.loads(b"".join(m.get("body", b"") for m in sent[1:]))
    assert body["metadata"]["node_threshold"] == 0.5  # the influence view, by default
    assert refused[0]["status"] == 503 and (b"retry-after", b"1") in refused[0]["headers"]
    assert json.loads(refused[1]["body"])["errors"][0]["extensions"]["code"] == "SERVER_BUSY"


def test_graphs_are_scoped_by_model_in_routes_and_graphql(tmp_path: Path):
    """Neuronpedia keys graphs by (model, slug): /graphs/{model}/{slug}.json (a model name
    with '/' percent-encoded), /graphs/{slug}.json while the slug is unique, GraphQL's
    model argument; a slug of two models asked alone is GRAPH_AMBIGUOUS."""
    from urllib.parse import quote

    db = tmp_path / "two.duckdb"
    doc = graph_document(SynthSpec(n_links=300, n_features=40, seed=6, slug="same"))
    (tmp_path / "g.json").write_text(json.dumps(doc))
    import_graph(tmp_path / "g.json", db, model="gemma-2-2b")
    import_graph(tmp_path / "g.json", db, model="google/gemma-2-2b-it")
    doc2 = graph_document(SynthSpec(n_links=200, n_features=30, seed=7, slug="only"))
    (tmp_path / "h.json").write_text(json.dumps(doc2))
    import_graph(tmp_path / "h.json", db, model="gemma-2-2b")
    server = Server(create_app(db))
    try:
        r = server.client.get("/graphs/same.json")
        assert (r.status_code, r.json()["errors"][0]["extensions"]["code"]) == (
            400, "GRAPH_AMBIGUOUS")
        assert "gemma-2-2b, google/gemma-2-2b-it" in r.json()["errors"][0]["message"]
        for model in ("gemma-2-2b", "google/gemma-2-2b-it"):
            r = server.client.get(f"/graphs/{quote(model, safe='')}/same.json")
            assert r.status_code == 200 and r.json() == doc
        assert server.client.get("/graphs/only.json").json() == doc2
        assert server.client.get("/graphs/gemma-2-2b/only.json").json() == doc2
        r = server.client.get("/graphs/google%2Fgemma-2-2b-it/only.json")
        assert r.status_code == 404 and "of model 'google/gemma-2-2b-it'" in r.text
        for bad in ("/graphs/a/b/c.json", "/graphs/..%2F..%2Fetc/x.json", "/graphs/m/%2E%2E.json"):
            assert server.client.get(bad).status_code in (400, 404), bad
        q = 'query($m: String) { attributionGraph(slug: "same", model: $m) { model linkCount } }'
        assert server.gql(q, {"m": "google/gemma-2-2b-it"})["data"]["attributionGraph"] == {
            "model": "google/gemma-2-2b-it", "linkCount": 300}
        assert server.gql(q)["errors"][0]["extensions"]["code"] == "GRAPH_AMBIGUOUS"
        listed = server.gql('{ attributionGraphs(slug: "same") { model } }')
        assert [g["model"] for g in listed["data"]["attributionGraphs"]] == [
            "gemma-2-2b", "google/gemma-2-2b-it"]
    finally:
        server.stop()
