"""Evidence from running the model, over GraphQL: ``Node.roles``, ``Model.heads(role:)``,
``Edge.evidence`` and ``Node.scores``, on the toy model ingested with the default probes
(L0H2 is the previous-token head, L1H0-L1H3 are induction heads, and the K edges
L0H2 -> L1Hx carry path-patching evidence). Answers are checked against the queries layer
and plain SQL; nested evidence fields must batch (counted statements)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import Server, count_statements, sql

from headgraph.api.execute import Service
from headgraph.api.types import f32
from headgraph.queries import evidence as ev
from headgraph.queries import scores
from headgraph.queries.models import get_model
from headgraph.queries.records import ScoreRow
from headgraph.queries.session import open_reader

INDUCTION = ["L1H0", "L1H1", "L1H2", "L1H3"]


def codes(body: dict) -> list[str]:
    return [e["extensions"]["code"] for e in body.get("errors", [])]


def test_one_score_record_and_one_reader():
    assert ev.node_scores_of is scores.node_scores_of
    assert not hasattr(ev, "ScoreRecord") and "ScoreRow" in ev.__all__


def test_queries_layer_returns_score_rows(probed_toy_db: Path):
    with open_reader(probed_toy_db, release=True) as reader, reader.session() as db:
        model = get_model(db, "toy")
        rows = ev.node_scores(db, model, "L0H2")
        top = ev.top_scores(db, model, "previous_token_share", top=1)
    assert rows and all(isinstance(r, ScoreRow) and r.node == "L0H2" for r in rows)
    assert [(r.metric, r.probe) for r in rows] == sorted((r.metric, r.probe) for r in rows)
    assert isinstance(top[0], ScoreRow) and top[0].node == "L0H2"
    assert top[0].model_id == model.model_id


def test_node_roles_name_the_mechanism(probed_server: Server, probed_toy_db: Path):
    body = probed_server.gql('{ model(name: "toy") { heads { name roles } } '
                      'prev: node(model: "toy", name: "L0H2") { roles } '
                      'embed: node(model: "toy", name: "EMBED") { roles } }')
    assert "errors" not in body, body
    got = {h["name"]: h["roles"] for h in body["data"]["model"]["heads"]}
    assert "previous_token" in body["data"]["prev"]["roles"]
    assert all("induction" in got[h] for h in INDUCTION)
    assert body["data"]["embed"]["roles"] == []
    with open_reader(probed_toy_db, release=True) as reader, reader.session() as db:
        model = get_model(db, "toy")
        want = ev.roles_of(db, model.model_id, list(got))
    assert got == {n: [r.role for r in rs] for n, rs in want.items()}


def test_roles_of_one_probe(probed_server: Server):
    body = probed_server.gql('{ node(model: "toy", name: "L0H2") { '
                      'r: roles(probe: "repeat(seq=20,batch=32,seed=0)") none: roles(probe: "x") } }')
    node = body["data"]["node"]
    assert "previous_token" in node["r"]
    assert "previous_token" not in node["none"]  # pattern roles need that probe's evidence


def test_heads_filtered_by_role_combine_with_order_and_first(probed_server: Server, probed_toy_db: Path):
    body = probed_server.gql('{ model(name: "toy") { ind: heads(role: "induction") { name roles } '
                      'prev: heads(role: "previous_token") { name } '
                      'top2: heads(role: "induction", orderBy: COPYING_RATIO, first: 2) { name } '
                      'asc: heads(role: "induction", orderBy: COPYING_RATIO, descending: false) '
                      '{ name } none: heads(role: "induction", first: 0) { name } } }')
    assert "errors" not in body, body
    m = body["data"]["model"]
    assert [h["name"] for h in m["ind"]] == INDUCTION  # LAYER order by default
    assert all("induction" in h["roles"] for h in m["ind"])
    assert [h["name"] for h in m["prev"]] == ["L0H2"]
    by_ratio = [r[0] for r in sql(probed_toy_db, "SELECT node FROM nodes WHERE node IN "
                                             "('L1H0','L1H1','L1H2','L1H3') "
                                             "ORDER BY copying_ratio DESC, layer, head")]
    assert [h["name"] for h in m["top2"]] == by_ratio[:2]
    assert [h["name"] for h in m["asc"]] == by_ratio[::-1]
    assert m["none"] == []


def test_an_unknown_role_is_bad_input(probed_server: Server):
    body = probed_server.gql('{ model(name: "toy") { heads(role: "name_mover") { name } } }')
    assert codes(body) == ["BAD_INPUT"] and body["errors"][0]["path"] == ["model", "heads"]
    assert "induction" in body["errors"][0]["message"]  # it lists the roles
    body = probed_server.gql('{ model(name: "toy") { heads(role: "copying") { name } } }')
    assert "errors" not in body  # weight roles filter too (maybe to nothing)


def test_edge_evidence_is_the_stored_path_patching(probed_server: Server, probed_toy_db: Path):
    body = probed_server.gql('{ node(model: "toy", name: "L1H1") { feeders(kind: K, top: 20) '
                      '{ source { name } evidence { metric probe value } '
                      'repeat: evidence(probe: "repeat(seq=20,batch=32,seed=0)") { metric } '
                      'none: evidence(probe: "nope") { metric } } } }')
    assert "errors" not in body, body
    by_source = {f["source"]["name"]: f for f in body["data"]["node"]["feeders"]}
    want = sql(probed_toy_db, "SELECT metric, probe, value FROM edge_scores WHERE source='L0H2' "
                          "AND target='L1H1' AND kind='K' ORDER BY metric, probe")
    assert want, "the toy ingest stores path patching on L0H2 -K-> L1H1"
    got = by_source["L0H2"]["evidence"]
    assert [(e["metric"], e["probe"]) for e in got] == [(m, p) for m, p, _ in want]
    assert [e["value"] for e in got] == [f32(v) for _, _, v in want]
    assert {e["metric"] for e in got} >= {"path_zero_dloss", "path_mean_dloss"}
    assert len(by_source["L0H2"]["repeat"]) == len(want)
    assert by_source["L0H2"]["none"] == []
    measured = {r[0] for r in sql(probed_toy_db, "SELECT DISTINCT source FROM edge_scores "
                                             "WHERE target='L1H1' AND kind='K'")}
    for name, f in by_source.items():
        assert bool(f["evidence"]) == (name in measured), name


def test_node_scores_match_sql(probed_server: Server, probed_toy_db: Path):
    body = probed_server.gql('{ node(model: "toy", name: "L0H2") { scores { metric probe value } } }')
    want = sql(probed_toy_db, "SELECT metric, probe, value FROM node_scores WHERE node='L0H2' "
                          "ORDER BY metric, probe")
    assert body["data"]["node"]["scores"] == [
        {"metric": m, "probe": p, "value": f32(v)} for m, p, v in want]


EVIDENCE = """{{ model(name: "toy") {{ heads{args} {{ name roles scores {{ value }}
    feeders(kind: K, top: 3) {{ evidence {{ metric value }} source {{ roles }} }} }} }} }}"""


def test_roles_scores_and_edge_evidence_batch_per_level(probed_toy_db: Path):
    service = Service(probed_toy_db)
    try:
        one, n_one = count_statements(service, EVIDENCE.format(args="(first: 1)"))
        every, n_every = count_statements(service, EVIDENCE.format(args=""))
    finally:
        service.close()
    heads = every["data"]["model"]["heads"]
    assert len(one["data"]["model"]["heads"]) == 1 and len(heads) == 8
    assert any(f["evidence"] for h in heads for f in h["feeders"])
    # model, heads, roles (2: shares + copying ratios), scores, feeders, edge evidence,
    # then for the feeder sources: their node rows (when not listed already) and roles (2).
    # The count depends on the depth of the query, not on the number of heads.
    assert n_one == n_every <= 10, (n_one, n_every)


@pytest.mark.parametrize("fmt", ["json", "cyjs", "graphml", "dot"])
def test_every_export_format_carries_the_roles_graphql_answers(probed_toy_db: Path, fmt: str):
    """Exports read roles as ``Node.roles`` does (they once read metrics no longer stored
    and wrote ``"roles": ""`` everywhere), and carry every promised field."""
    import io
    import json
    import xml.etree.ElementTree as ET

    import pydot

    from headgraph.graph.export import EDGE_FIELDS, NODE_FIELDS, write_export
    from headgraph.queries.evidence import roles_of
    from headgraph.queries.models import get_model

    with open_reader(probed_toy_db, release=True) as reader, reader.session() as db:
        model = get_model(db, "toy")
        want = {n: ",".join(r.role for r in rs) for n, rs in roles_of(
            db, model.model_id, ["L0H2", "L1H0", "L1H1", "L1H2", "L1H3", "EMBED"]).items()}
        buf = io.StringIO()
        write_export(db, "toy", fmt, buf)
    text = buf.getvalue()
    assert "induction" in want["L1H2"] and want["EMBED"] == ""
    if fmt in ("json", "cyjs"):
        doc = json.loads(text)
        nodes = doc["nodes"] if fmt == "json" else [n["data"] for n in doc["elements"]["nodes"]]
        edges = doc["edges"] if fmt == "json" else [e["data"] for e in doc["elements"]["edges"]]
        got = {n["id"]: n["roles"] for n in nodes}
        node = next(n for n in nodes if n["id"] == "L1H2")
        edge = edges[0]
    elif fmt == "graphml":
        ns = {"g": "http://graphml.graphdrawing.org/xmlns"}
        root = ET.fromstring(text)
        keys = {k.get("id"): k.get("attr.name") for k in root.findall("g:key", ns)}

        def data(el):
            return {keys[d.get("key")]: d.text for d in el.findall("g:data", ns)}

        nodes = {n.get("id"): data(n) for n in root.iter(f"{{{ns['g']}}}node")}
        got = {k: v.get("roles", "") for k, v in nodes.items()}
        node = nodes["L1H2"]
        edge = data(next(root.iter(f"{{{ns['g']}}}edge")))
    else:
        graph = pydot.graph_from_dot_data(text)[0]
        nodes = {n.get_name().strip('"'): {k: v.strip('"') for k, v in n.get_attributes().items()}
                 for n in graph.get_nodes()}
        got = {k: v.get("roles", "") for k, v in nodes.items() if k not in ("node", "edge")}
        node = nodes["L1H2"]
        edge = {k: v.strip('"') for k, v in graph.get_edges()[0].get_attributes().items()}
    for name, roles in want.items():
        assert got[name] == roles, (fmt, name)
    assert set(NODE_FIELDS) - {"in_norm", "out_norm"} <= set(node), (fmt, node)
    assert set(EDGE_FIELDS) <= set(edge), (fmt, edge)
