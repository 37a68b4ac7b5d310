"""The GraphQL API over real HTTP: a real uvicorn server on 127.0.0.1 answering from a
database made by a real ingest, on both backends (DuckDB file, PostgreSQL) for the
contract; the DuckDB-specific locking tests use the file. Covers the contract's fields, pagination, every error
code and limit, hostile requests, the side routes, and serving beside a writer."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from graphql import get_introspection_query
from support import Server, hold_for_writing, sql

from headgraph.api.settings import Settings
from headgraph.server import create_app

SNAPSHOT = Path(__file__).resolve().parents[1] / "headgraph" / "api" / "schema.graphql"
README_QUERY = ('{ node(model: "toy", name: "L1H2") { feeders(kind: K, top: 3) '
                '{ source { name } score } } }')


@pytest.fixture(scope="module")
def server(toy_store: str) -> Iterator[Server]:
    s = Server(create_app(toy_store))
    yield s
    s.stop()


def codes(body: dict) -> list[str]:
    return [e["extensions"]["code"] for e in body.get("errors", [])]


# --- the contract -------------------------------------------------------------------

def test_readme_example_returns_the_top_k_feeders_in_rank_order(server: Server, toy_store: str):
    body = server.gql(README_QUERY)
    assert "errors" not in body
    got = [(f["source"]["name"], f["score"]) for f in body["data"]["node"]["feeders"]]
    want = sql(toy_store, "SELECT source, score FROM edges WHERE target='L1H2' AND kind='K' "
                       "ORDER BY rank LIMIT 3")
    assert [s for s, _ in got] == [s for s, _ in want]
    assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-6)


def test_model_fields_match_the_stored_row(server: Server, toy_store: str):
    body = server.gql("""{ model(name: "toy") { name family step architecture nLayers nHeads
        nKvHeads dModel dHead dMlp dVocab nCtx processing source nNodes nEdges ingestedAt } }""")
    m = body["data"]["model"]
    (row,) = sql(toy_store, "SELECT name, family, step, architecture, n_layers, n_heads, "
                         "n_kv_heads, d_model, d_head, d_mlp, d_vocab, n_ctx, processing, "
                         "source, n_nodes, n_edges FROM models WHERE name='toy'")
    assert tuple(m[k] for k in ("name", "family", "step", "architecture", "nLayers", "nHeads",
                                "nKvHeads", "dModel", "dHead", "dMlp", "dVocab", "nCtx",
                                "processing", "source", "nNodes", "nEdges")) == row
    assert m["ingestedAt"][:4].isdigit()
    assert server.gql('{ models { name } }')["data"]["models"] == [{"name": "toy"}]
    assert server.gql('{ models(family: "no-such-family") { name } }')["data"]["models"] == []


def test_nodes_filter_by_kind_and_layer_in_stream_order(server: Server, toy_store: str):
    body = server.gql('{ model(name: "toy") { all: nodes { name kind layer head } '
                      'heads: nodes(kind: HEAD, layer: 1) { name } mlps: nodes(kind: MLP) '
                      '{ name } } }')
    m = body["data"]["model"]
    names = [n["name"] for n in m["all"]]
    assert names[:2] == ["EMBED", "POS_EMBED"] and names[-1] == "UNEMBED"
    assert sorted(names) == sorted(r[0] for r in sql(toy_store, "SELECT node FROM nodes"))
    n_heads = sql(toy_store, "SELECT n_heads FROM models")[0][0]
    assert [n["name"] for n in m["heads"]] == [f"L1H{h}" for h in range(n_heads)]
    assert [n["name"] for n in m["mlps"]] == [
        r[0] for r in sql(toy_store, "SELECT node FROM nodes WHERE kind='mlp' ORDER BY layer")]
    assert {n["kind"] for n in m["all"]} <= {"HEAD", "MLP", "EMBED", "POS_EMBED", "UNEMBED"}


def test_heads_by_copying_ratio_descending(server: Server, toy_store: str):
    body = server.gql('{ model(name: "toy") { heads(orderBy: COPYING_RATIO, first: 3) '
                      '{ name copying { ratio positiveFraction } } '
                      'last: heads(orderBy: COPYING_RATIO, descending: false, first: 1) '
                      '{ name } all: heads { name } } }')
    m = body["data"]["model"]
    want = sql(toy_store, "SELECT node, copying_ratio FROM nodes WHERE kind='head' "
                       "ORDER BY copying_ratio DESC, layer, head")
    assert [h["name"] for h in m["heads"]] == [r[0] for r in want[:3]]
    assert [h["copying"]["ratio"] for h in m["heads"]] == pytest.approx([r[1] for r in want[:3]])
    assert m["last"] == [{"name": want[-1][0]}]
    assert len(m["all"]) == len(want) and m["all"][0]["name"] == "L0H0"


def test_node_fields_and_links_back_to_its_model(server: Server, toy_store: str):
    body = server.gql('{ node(model: "toy", name: "L1H2") { name kind layer head kvHead qkNorm '
                      'ovNorm inNorm copying { ratio positiveFraction } model { name } '
                      'scores { metric probe value } } '
                      'out: node(model: "toy", name: "UNEMBED") { kind layer copying { ratio } } }')
    n = body["data"]["node"]
    (row,) = sql(toy_store, "SELECT qk_norm, ov_norm, copying_ratio, copying_positive_fraction "
                         "FROM nodes WHERE node='L1H2'")
    assert (n["name"], n["kind"], n["layer"], n["head"]) == ("L1H2", "HEAD", 1, 2)
    assert [n["qkNorm"], n["ovNorm"], n["copying"]["ratio"], n["copying"]["positiveFraction"]] \
        == pytest.approx(list(row), rel=1e-6)
    assert n["model"] == {"name": "toy"} and n["scores"] == [] and n["inNorm"] is None
    assert body["data"]["out"] == {"kind": "UNEMBED", "layer": None, "copying": None}


def test_edge_fields_and_readers(server: Server, toy_store: str):
    body = server.gql('{ node(model: "toy", name: "L0H1") { readers(kind: V, top: 2, '
                      'minScore: 0) { source { name } target { name layer } kind score baseline '
                      'nullStd z gaussianZ rank readerRank } } }')
    got = body["data"]["node"]["readers"]
    want = sql(toy_store, "SELECT target, score, baseline, null_std, rank, z FROM edges "
                       "WHERE source='L0H1' AND kind='V' ORDER BY score DESC, target LIMIT 2")
    assert [e["target"]["name"] for e in got] == [w[0] for w in want]
    for i, (e, (_, score, baseline, null_std, rank, z)) in enumerate(zip(got, want,
                                                                         strict=True)):
        assert e["source"]["name"] == "L0H1" and e["kind"] == "V" and e["rank"] == rank
        assert [e["score"], e["baseline"], e["nullStd"]] == pytest.approx([score, baseline,
                                                                           null_std], rel=1e-6)
        assert e["gaussianZ"] == pytest.approx((score - baseline) / null_std, rel=1e-5)
        assert e["z"] == pytest.approx(z, rel=1e-6) and e["readerRank"] == i + 1


def test_min_score_filters_feeders(server: Server, toy_store: str):
    scores = sorted(r[0] for r in sql(toy_store, "SELECT score FROM edges "
                                      "WHERE target='L1H2' AND kind='Q'"))
    cut = scores[len(scores) // 2]
    body = server.gql('query($m: Float) { node(model: "toy", name: "L1H2") { '
                      'feeders(kind: Q, top: 100, minScore: $m) { score } } }', {"m": cut})
    scores = [f["score"] for f in body["data"]["node"]["feeders"]]
    assert scores and all(s >= cut * (1 - 1e-6) for s in scores)
    assert scores == sorted(scores, reverse=True)


def test_walking_all_pages_of_k_edges_equals_one_sql_query(server: Server, toy_store: str):
    want = sql(toy_store, "SELECT source, target, kind FROM edges WHERE kind='K' "
                       "ORDER BY score DESC, source, target, kind")
    query = """query($after: String) { model(name: "toy") { edges(kind: K, first: 7,
        after: $after) { totalCount pageInfo { hasNextPage hasPreviousPage endCursor
        startCursor } edges { cursor node { source { name } target { name } kind } } } } }"""
    got, after, pages = [], None, 0
    while True:
        conn = server.gql(query, {"after": after})["data"]["model"]["edges"]
        pages += 1
        assert conn["totalCount"] == len(want)
        assert conn["pageInfo"]["hasPreviousPage"] is (after is not None)
        got += [(e["node"]["source"]["name"], e["node"]["target"]["name"], e["node"]["kind"])
                for e in conn["edges"]]
        if conn["edges"]:
            assert conn["pageInfo"]["endCursor"] == conn["edges"][-1]["cursor"]
            assert conn["pageInfo"]["startCursor"] == conn["edges"][0]["cursor"]
        if not conn["pageInfo"]["hasNextPage"]:
            break
        after = conn["pageInfo"]["endCursor"]
    assert got == [tuple(r) for r in want]
    assert pages == -(-len(want) // 7)


def test_edges_default_page_size_and_all_kinds(server: Server, toy_store: str):
    body = server.gql('{ model(name: "toy") { edges { totalCount edges { node { kind } } } } }')
    conn = body["data"]["model"]["edges"]
    ((total,),) = sql(toy_store, "SELECT count(*) FROM edges")
    assert conn["totalCount"] == total
    assert len(conn["edges"]) == min(total, Settings().default_first)


def test_get_requests_run_queries(server: Server):
    r = server.client.get("/graphql", params={"query": 'query($n: String!) { model(name: $n) '
                                              '{ name } }', "variables": '{"n": "toy"}'})
    assert r.status_code == 200 and r.json() == {"data": {"model": {"name": "toy"}}}


def test_introspection_passes_the_limits(server: Server):
    body = server.gql(get_introspection_query(descriptions=True))
    assert "errors" not in body and body["data"]["__schema"]["queryType"]["name"] == "Query"


def test_parallel_requests_each_get_their_answer(server: Server):
    results: list[dict] = []

    def ask(i: int) -> None:
        with httpx.Client(base_url=server.url, timeout=20) as c:
            results.append(c.post("/graphql", json={"query": '{ node(model: "toy", name: '
                                  f'"L0H{i % 4}") {{ name feeders(kind: V) {{ score }} }} }}'})
                           .json())

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 12 and all("errors" not in r for r in results)


# --- errors: every code, no stack traces -------------------------------------------

@pytest.mark.parametrize(("query", "code", "path"), [
    ('{ model(name: "nope") { name } }', "MODEL_NOT_FOUND", ["model"]),
    ('{ node(model: "nope", name: "L0H0") { name } }', "MODEL_NOT_FOUND", ["node"]),
    ('{ node(model: "toy", name: "L9H9") { name } }', "NODE_NOT_FOUND", ["node"]),
    ('{ node(model: "toy", name: "L1H2") { feeders(kind: X) { score } } }', "BAD_INPUT", None),
    ('{ model(name: "toy") { nodes(kind: ATTENTION) { name } } }', "BAD_INPUT", None),
    ('{ model(name: "toy") { nosuchfield } }', "BAD_INPUT", None),
    ('{ model(name: "toy") { ', "BAD_INPUT", None),
    ('{ model(name: "toy") { edges(after: "bm90IGEgY3Vyc29y") { totalCount } } }', "BAD_INPUT",
     ["model", "edges"]),
    ('{ node(model: "toy", name: "L1H2") { feeders(kind: K, top: -1) { score } } }',
     "BAD_INPUT", ["node", "feeders"]),
    ('{ node(model: "toy", name: "L1H2") { feeders(kind: K, top: 1001) { score } } }',
     "LIMIT_EXCEEDED", ["node", "feeders"]),
    ('{ model(name: "toy") { edges(first: 100000) { totalCount } } }', "LIMIT_EXCEEDED",
     ["model", "edges"]),
    ('{ model(name: "toy") { heads(first: 5000) { name } } }', "LIMIT_EXCEEDED",
     ["model", "heads"]),
])
def test_errors_carry_a_stable_code(server: Server, query: str, code: str, path: list | None):
    r = server.client.post("/graphql", json={"query": query})
    assert r.status_code == 200
    body = r.json()
    assert codes(body) == [code], body
    assert body["errors"][0].get("path") == path
    assert "Traceback" not in r.text and ".py" not in r.text


def test_unknown_model_is_an_error_not_a_silent_null(server: Server):
    body = server.gql('{ model(name: "nope") { name } models { name } }')
    assert body["data"] == {"model": None, "models": [{"name": "toy"}]}
    assert "nope" in body["errors"][0]["message"] and "toy" in body["errors"][0]["message"]


def test_bad_variable_values_are_bad_input(server: Server):
    body = server.gql('query($t: Int) { node(model: "toy", name: "L1H2") '
                      '{ feeders(kind: K, top: $t) { score } } }', {"t": "three"})
    assert codes(body) == ["BAD_INPUT"]


# --- limits and hostile requests ----------------------------------------------------

def nested_feeders(depth: int) -> str:
    inner = "name"
    for _ in range(depth):
        inner = f"feeders(kind: V) {{ source {{ {inner} }} }}"
    return f'{{ node(model: "toy", name: "L1H0") {{ {inner} }} }}'


def test_deep_nesting_is_refused_before_it_runs(server: Server):
    assert "errors" not in server.gql(nested_feeders(4))  # depth 9: allowed
    body = server.gql(nested_feeders(5))  # depth 11
    assert codes(body) == ["LIMIT_EXCEEDED"] and body["data"] is None
    assert "depth" in body["errors"][0]["message"]


def test_cached_documents_answer_each_request_on_its_own(server: Server):
    """Parsed and validated documents are cached by query text: a refused document is
    refused again, a malformed one keeps its code, and the same text with other variables
    gets its own answer."""
    for _ in range(3):
        assert codes(server.gql(nested_feeders(5))) == ["LIMIT_EXCEEDED"]
        assert codes(server.gql("{ models { name ")) == ["BAD_INPUT"]
    q = 'query($t: String!) { node(model: "toy", name: $t) { name layer } }'
    got = [server.gql(q, {"t": t})["data"]["node"] for t in ("L0H1", "L1H2", "L0H1")]
    assert got == [{"name": "L0H1", "layer": 0}, {"name": "L1H2", "layer": 1},
                   {"name": "L0H1", "layer": 0}]


def test_alias_floods_are_refused(server: Server):
    flood = " ".join(f'a{i}: model(name: "toy") {{ name }}' for i in range(31))
    body = server.gql("{ " + flood + " }")
    assert codes(body) == ["LIMIT_EXCEEDED"] and "aliases" in body["errors"][0]["message"]
    ok = " ".join(f'a{i}: model(name: "toy") {{ name }}' for i in range(30))
    assert "errors" not in server.gql("{ " + ok + " }")


def test_token_floods_are_refused(server: Server):
    body = server.gql("{ models { " + "name " * 2100 + "} }")
    assert codes(body) == ["LIMIT_EXCEEDED"] and "tokens" in body["errors"][0]["message"]


def test_oversized_bodies_are_refused_with_413(server: Server):
    r = server.client.post("/graphql", content=b'{"query": "' + b" " * 100_001 + b'{ models '
                           b'{ name } }"}', headers={"content-type": "application/json"})
    assert r.status_code == 413 and codes(r.json()) == ["LIMIT_EXCEEDED"]


def test_row_budget_bounds_a_wide_query(toy_db: Path):
    s = Server(create_app(toy_db, Settings(max_rows=20)))
    try:
        body = s.gql('{ model(name: "toy") { nodes { name feeders(kind: V, top: 100) '
                     '{ score } } } }')
        assert "LIMIT_EXCEEDED" in codes(body) and "max_rows" in body["errors"][0]["message"]
        assert "errors" not in s.gql(README_QUERY)
    finally:
        s.stop()


def test_limits_are_configurable_per_server(toy_db: Path):
    s = Server(create_app(toy_db, Settings(max_depth=3, max_first=2)))
    try:
        assert codes(s.gql(README_QUERY)) == ["LIMIT_EXCEEDED"]  # depth 4
        body = s.gql('{ node(model: "toy", name: "L1H2") { feeders(kind: K, top: 3) '
                     '{ score } } }')
        assert codes(body) == ["LIMIT_EXCEEDED"] and "max_first" in body["errors"][0]["message"]
    finally:
        s.stop()


@pytest.mark.parametrize(("content", "status"), [
    (b"{not json", 400),
    (b"", 400),
    (b"[1, 2]", 400),
    (b'[{"query": "{ models { name } }"}]', 400),
    (b'"{ models { name } }"', 400),
    (b'{"variables": {}}', 400),
    (b'{"query": 42}', 400),
    (b'{"query": "{ models { name } }", "variables": [1]}', 400),
    (b'{"query": "{ models { name } }", "operationName": 3}', 400),
    (b'{"query": "query A { models { name } }", "operationName": "B"}', 400),
    (b'{"query": "mutation { x }"}', 200),
    (b'{"query": "subscription { x }"}', 200),
    (b"\xff\xfe\x00garbage", 400),
    (b'{"query": "{ models { name } }", "variables": {"a": ' + b"[" * 40_000 + b"]" * 40_000
     + b"}}", 400),
    (b'{"query": "' + b"{" * 5000 + b'"}', 200),
])
def test_malformed_bodies_are_bad_input(server: Server, content: bytes, status: int):
    r = server.client.post("/graphql", content=content,
                           headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert codes(r.json()) == ["BAD_INPUT"]
    assert "Traceback" not in r.text


def test_mutations_over_get_and_wrong_methods_are_refused(server: Server):
    r = server.client.get("/graphql", params={"query": "mutation { x }"})
    assert r.status_code == 405 and codes(r.json()) == ["BAD_INPUT"]
    r = server.client.put("/graphql", content=b"{}")
    assert r.status_code == 405 and r.headers["allow"] == "GET, POST"
    assert server.client.post("/healthz").status_code == 405
    r = server.client.get("/nope")
    assert r.status_code == 404 and codes(r.json()) == ["BAD_INPUT"]


# --- side routes ----------------------------------------------------------------------

def test_healthz(server: Server):
    r = server.client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok", "database": "ok", "models": 1}


def test_served_schema_equals_the_committed_snapshot(server: Server):
    served = server.client.get("/schema.graphql")
    assert served.status_code == 200 and served.headers["content-type"].startswith("text/plain")
    assert served.text == SNAPSHOT.read_text(), (
        "headgraph/api/schema.graphql is out of date with the schema. If the change is "
        "intended, regenerate it with\n  .venv/bin/python -m headgraph.server > "
        "headgraph/api/schema.graphql\nand commit it (API clients diff it)."
    )


def test_snapshot_keeps_the_issue_contract():
    sdl = SNAPSHOT.read_text()
    for line in ("model(name: String!): Model", "node(model: String!, name: String!): Node",
                 "models(family: String = null): [Model!]!",
                 "feeders(kind: EdgeKind!, top: Int! = 10, minScore: Float = null): [Edge!]!",
                 "readers(kind: EdgeKind!, top: Int! = 10, minScore: Float = null): [Edge!]!",
                 "scores(probe: String = null): [Score!]!", "source: Node!", "rank: Int!",
                 "baseline: Float!", "copying: Copying", "architecture: String!"):
        assert line in sdl, line


def test_graphiql_is_served_to_browsers(server: Server):
    r = server.client.get("/graphql", headers={"accept": "text/html,application/xhtml+xml"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "graphiql" in r.text.lower()
    r = server.client.get("/", follow_redirects=False)
    assert r.status_code == 200 and "headgraph viewer" in r.text  # / is the viewer


# --- serving beside a writer ----------------------------------------------------------

def test_a_concurrent_writer_gets_coded_retryable_errors_then_normal_answers(
        toy_db: Path, tmp_path: Path):
    """The server holds the file between requests; a headgraph writer (which leaves the
    write-pending marker while it waits) still gets in, even while the server is idle,
    requests meanwhile get 503 DATABASE_LOCKED, and afterwards normal answers."""
    db = tmp_path / "served.duckdb"
    shutil.copy(toy_db, db)
    s = Server(create_app(db))
    try:
        assert "errors" not in s.gql(README_QUERY)  # the server now holds the file
        writer = hold_for_writing(db)
        try:
            r = s.client.post("/graphql", json={"query": README_QUERY})
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            assert r.json()["errors"][0]["extensions"] == {"code": "DATABASE_LOCKED",
                                                           "retryable": True}
            assert s.client.get("/healthz").json()["database"] == "locked"
        finally:
            writer.stdin.close()
            assert writer.wait(30) == 0
        body = s.gql(README_QUERY)
        assert "errors" not in body and len(body["data"]["node"]["feeders"]) == 3
        assert s.client.get("/healthz").json()["database"] == "ok"
        # a writer that does not leave the marker (plain duckdb) finds the file held
        plain = subprocess.run([sys.executable, "-c", "import duckdb, sys; "
                                "duckdb.connect(sys.argv[1])", str(db)],
                               capture_output=True, text=True, timeout=30)
        assert plain.returncode != 0 and "lock" in plain.stderr.lower()
    finally:
        s.stop()


def test_probe_adds_evidence_beside_a_serving_server(toy_db: Path, tmp_path: Path):
    """`headgraph probe` in a second terminal while `make demo` serves the file: the
    server steps aside for its write, and then answers with the new roles."""
    db = tmp_path / "probed.duckdb"
    shutil.copy(toy_db, db)
    s = Server(create_app(db))
    query = '{ model(name: "toy") { heads(role: "previous_token") { name } } }'
    try:
        assert s.gql(query)["data"]["model"]["heads"] == []  # the server now holds the file
        done = subprocess.run([sys.executable, "-m", "headgraph.cli", "probe", "--model", "toy",
                               "--db", str(db), "--probes", "repeat(seq=10,batch=4)",
                               "--attribution", "none", "--exact-heads", "0",
                               "--exact-edges", "0"],
                              capture_output=True, text=True, timeout=300,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})
        assert done.returncode == 0, done.stdout + done.stderr
        assert s.gql(query)["data"]["model"]["heads"] == [{"name": "L0H2"}]
    finally:
        s.stop()


def test_a_server_started_during_a_write_recovers(toy_db: Path, tmp_path: Path):
    db = tmp_path / "late.duckdb"
    shutil.copy(toy_db, db)
    writer = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys; c = duckdb.connect(sys.argv[1]); "
         "print('locked', flush=True); sys.stdin.read()", str(db)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "locked"
    s = Server(create_app(db))
    try:
        assert codes(s.gql(README_QUERY)) == ["DATABASE_LOCKED"]
        writer.stdin.close()
        writer.wait(10)
        assert "errors" not in s.gql(README_QUERY)
    finally:
        s.stop()
