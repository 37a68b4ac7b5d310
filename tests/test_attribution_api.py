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
    q = """{ attributionGraph(slug: "g-1") {
      pruned(nodeThreshold: 0.7, edgeThreshold: 0.9, first: 1000) {
        truncated nodes { nodeId role influence cumulativeInfluence feature fields }
        links { source target weight edgeInfluence } }
      cut: pruned(first: 3) { truncated links { edgeInfluence } } } }"""
    got = server.gql(q)["data"]["attributionGraph"]
    with open_reader(db) as reader:
        view = pruned_view(reader, "g-1", 0.7, 0.9)
    assert {n["nodeId"] for n in got["pruned"]["nodes"]} == {n.node_id for n in view.nodes}
    assert len(got["pruned"]["links"]) == view.links.num_rows and not got["pruned"]["truncated"]
    assert got["cut"]["truncated"] and len(got["cut"]["links"]) == 3
    by_id = {n["node_id"]: n for n in doc["nodes"]}
    for node in got["pruned"]["nodes"]:
        assert node["fields"] == by_id[node["nodeId"]]
    center = got["pruned"]["nodes"][-1]["nodeId"]
    q = """query($n: String!) { attributionGraph(slug: "g-1") {
      neighbourhood(node: $n, top: 2, depth: 1, direction: IN) { nodes { nodeId }
        links { source target } } } }"""
    near = server.gql(q, {"n": center})["data"]["attributionGraph"]["neighbourhood"]
    assert 0 < len(near["links"]) <= 2 and all(x["target"] == center for x in near["links"])
    bad = server.gql(q, {"n": "ghost"})
    assert bad["errors"][0]["extensions"]["code"] == "NODE_NOT_FOUND"
    bad = server.gql('{ attributionGraph(slug: "g-1") { pruned(nodeThreshold: 2) '
                     '{ truncated } } }')
    assert bad["errors"][0]["extensions"]["code"] == "BAD_INPUT"


def test_neuronpedia_json_whole_and_in_views(served):
    server, doc, _ = served
    whole = server.client.get("/graphs/g-1.json")
    assert whole.status_code == 200 and whole.headers["x-headgraph-links"] == "4000"
    assert whole.json() == doc
    pruned = server.client.get("/graphs/g-1.json", params={"node_threshold": "0.6"})
    body = pruned.json()
    jsonschema.validate(body, SCHEMA)
    assert body["metadata"]["pruning_settings"] == {"node_threshold": 0.6,
                                                    "edge_threshold": 0.98}
    assert 0 < len(body["links"]) < 4000
    ids = {n["node_id"] for n in body["nodes"]}
    assert all(x["source"] in ids and x["target"] in ids for x in body["links"])
    around = server.client.get("/graphs/g-1.json",
                               params={"around": body["nodes"][-1]["node_id"], "depth": "2"})
    jsonschema.validate(around.json(), SCHEMA)
    assert around.json()["qParams"]["clickedId"] == body["nodes"][-1]["node_id"]
    for params, status, code in (({"around": "ghost"}, 404, "NODE_NOT_FOUND"),
                                 ({"node_threshold": "x"}, 400, "BAD_INPUT"),
                                 ({"depth": "2"}, 400, "BAD_INPUT"),
                                 ({"bogus": "1"}, 400, "BAD_INPUT")):
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


def test_graph_route_waits_for_a_connection_turn(served):
    """With every turn of the shared gate taken, a /graphs/ request opens no session and
    sends nothing; it is answered once a turn is free."""
    import asyncio
    from contextlib import AsyncExitStack

    from headgraph.api.execute import MAX_OPEN_SESSIONS

    _, _, db = served
    app = create_app(db)
    sent: list[dict] = []

    async def receive() -> dict:
        await asyncio.Event().wait()  # the client never goes away
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    async def scenario() -> None:
        scope = {"type": "http", "method": "GET", "path": "/graphs/g-1.json",
                 "raw_path": b"/graphs/g-1.json", "query_string": b"node_threshold=0.5",
                 "headers": []}
        async with AsyncExitStack() as turns:
            for _ in range(MAX_OPEN_SESSIONS):
                await turns.enter_async_context(app.service.session_gate())
            request = asyncio.create_task(app(scope, receive, send))
            await asyncio.sleep(0.3)
            assert sent == [] and not request.done()
        await asyncio.wait_for(request, 30)

    try:
        asyncio.run(scenario())
    finally:
        app.service.close()
    assert sent[0]["status"] == 200
    body = json.loads(b"".join(m.get("body", b"") for m in sent[1:]))
    assert body["metadata"]["pruning_settings"]["node_threshold"] == 0.5
