"""Discovered circuits (EAP-IG JSON, ACDC and auto-circuit edge lists) as evidence on the
shipped toy model's edges: names land on the right edges, files export back unchanged,
circuits for another model are refused whole, and evidenceGaps finds a planted
disagreement."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pytest

from headgraph.circuits.export import export_circuit
from headgraph.circuits.formats import CircuitError, parse_edge
from headgraph.circuits.importer import CircuitExistsError, import_circuit
from headgraph.queries.gaps import evidence_gaps
from headgraph.queries.models import get_model
from headgraph.queries.session import open_reader


def eap_ig_graph(n_layers: int, n_heads: int, seed: int = 0, out=()) -> dict:
    """What EAP-IG's ``Graph.from_model(...).to_json`` holds for a sequential model: every
    edge input/heads/MLPs -> later heads (q, k, v), MLPs and logits, float32 scores;
    edges named in ``out`` are not in the graph."""
    rng = np.random.default_rng(seed)
    nodes, edges, stream = {"input": {"in_graph": True}}, [], ["input"]
    for layer in range(n_layers):
        heads = [f"a{layer}.h{h}" for h in range(n_heads)]
        edges += [f"{s}->{h}<{q}>" for s in stream for h in heads for q in "qkv"]
        stream += heads
        edges += [f"{s}->m{layer}" for s in stream]
        stream.append(f"m{layer}")
        nodes.update({n: {"in_graph": True} for n in [*heads, f"m{layer}"]})
    edges += [f"{s}->logits" for s in stream]
    nodes["logits"] = {"in_graph": True}
    return {"cfg": {"n_layers": n_layers, "n_heads": n_heads, "parallel_attn_mlp": False,
                    "d_model": 64},
            "nodes": nodes,
            "edges": {e: {"score": float(np.float32(rng.standard_normal())),
                          "in_graph": e not in out} for e in edges}}


@pytest.fixture
def toy_copy(toy_db: Path, tmp_path: Path) -> Path:
    path = tmp_path / "toy.duckdb"
    shutil.copy(toy_db, path)
    return path


def test_names_of_every_tool_map_onto_headgraph_edges():
    cases = {
        "a0.h1->a1.h2<k>": ("eap", "L0H1", "L1H2", "K"),
        "input->a0.h3<q>": ("eap", "EMBED", "L0H3", "Q"),
        "m0->logits": ("eap", "MLP0", "UNEMBED", "UNEMBED"),
        "a1.h0->m1": ("eap", "L1H0", "MLP1", "MLP"),
        "blocks.0.attn.hook_result[:, :, 1]->blocks.1.hook_v_input[:, :, 2]":
            ("acdc", "L0H1", "L1H2", "V"),
        "blocks.0.hook_resid_pre->blocks.1.attn.hook_q[COL, COL, 0]":
            ("acdc", "EMBED", "L1H0", "Q"),
        "blocks.0.hook_mlp_out->blocks.1.hook_resid_post": ("acdc", "MLP0", "UNEMBED", "UNEMBED"),
        "A0.2->A1.3.K": ("auto-circuit", "L0H2", "L1H3", "K"),
        "Resid Start->MLP 1": ("auto-circuit", "EMBED", "MLP1", "MLP"),
        "A1.1->Resid End": ("auto-circuit", "L1H1", "UNEMBED", "UNEMBED"),
    }
    for name, (naming, source, target, kind) in cases.items():
        got = parse_edge(name, resid_post_layer=1)
        assert got is not None, name
        assert (got[0], got[1].node, got[2].node, got[2].kind) == (naming, source, target, kind)
    for bad in ("a0.h1->a1.h2", "logits->a1.h2<q>", "a0.h1->input", "A0.1.Q->A1.1.K",
                "blocks.0.hook_mlp_in->blocks.1.hook_mlp_in", "x->y"):
        assert parse_edge(bad, resid_post_layer=1) is None, bad
    assert parse_edge("blocks.0.hook_resid_pre->blocks.5.hook_resid_post", 1) is None


def test_an_eap_ig_circuit_lands_on_the_toy_models_edges_and_exports_back(toy_copy, tmp_path):
    doc = eap_ig_graph(2, 4, out=("a0.h2->a1.h2<k>",))
    path = tmp_path / "induction.json"
    path.write_text(json.dumps(doc))
    report = import_circuit(path, toy_copy, model="toy")
    assert report.name == "toy/eap-ig/induction"
    con = duckdb.connect(str(toy_copy), read_only=True)
    rows = dict(((s, t, k, m), v) for s, t, k, m, v in con.execute(
        "SELECT source, target, kind, metric, value FROM edge_scores WHERE probe = "
        "'task:induction'").fetchall())
    con.close()
    assert rows[("L0H2", "L1H2", "K", "eap-ig:in_graph")] == 0.0
    assert rows[("L0H2", "L1H2", "K", "eap-ig:score")] == doc["edges"]["a0.h2->a1.h2<k>"]["score"]
    assert rows[("EMBED", "L0H3", "V", "eap-ig:in_graph")] == 1.0
    assert rows[("MLP1", "UNEMBED", "UNEMBED", "eap-ig:in_graph")] == 1.0
    assert rows[("L0H1", "MLP0", "MLP", "eap-ig:in_graph")] == 1.0
    assert len(rows) == 2 * len(doc["edges"])
    with open_reader(toy_copy) as db:
        assert json.loads(export_circuit(db, "toy", "eap-ig", "induction")) == doc
    with pytest.raises(CircuitExistsError):
        import_circuit(path, toy_copy, model="toy")
    assert import_circuit(path, toy_copy, model="toy", replace=True).replaced


@pytest.mark.parametrize("lines", [
    ["# ACDC on induction, threshold 0.1",
     "blocks.0.attn.hook_result[:, :, 2]->blocks.1.hook_k_input[:, :, 2]\t0.5",
     "blocks.0.hook_resid_pre->blocks.1.hook_q_input[:, :, 1]\t0.25",
     "blocks.1.attn.hook_result[:, :, 2]->blocks.1.hook_resid_post\t1.5",
     "blocks.0.attn.hook_result[:, :, 1]->blocks.1.hook_mlp_in\t-0.125"],
    ["A0.2->A1.2.K\t0.5", "Resid Start->A0.1.Q\t2", "A0.1->MLP 1\t3", "A1.2->Resid End\t0.001"],
    ["a0.h2->a1.h2<k>", "input->a1.h1<v>", "a1.h2->logits"],
])
def test_edge_lists_round_trip(toy_copy, tmp_path, lines):
    path = tmp_path / "circuit.txt"
    path.write_text("\n".join(lines) + "\n")
    report = import_circuit(path, toy_copy, model="toy", task="t")
    with open_reader(toy_copy) as db:
        back = export_circuit(db, "toy", report.name.split("/")[1], "t")
    comments = [x for x in lines if x.startswith("#")]
    assert back.splitlines()[:len(comments)] == comments
    assert sorted(back.splitlines()[len(comments):]) == sorted(x for x in lines if x[0] != "#")


def test_a_circuit_for_another_model_is_refused_whole(toy_copy, tmp_path):
    con = duckdb.connect(str(toy_copy), read_only=True)
    before = con.execute("SELECT count(*) FROM edge_scores").fetchone()
    con.close()
    doc = eap_ig_graph(3, 4)
    path = tmp_path / "big.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(CircuitError, match="n_layers=3"):
        import_circuit(path, toy_copy, model="toy")
    del doc["cfg"]
    path.write_text(json.dumps(doc))
    with pytest.raises(CircuitError, match="L2H0") as err:
        import_circuit(path, toy_copy, model="toy")
    assert err.value.code == "BAD_CIRCUIT"
    path = tmp_path / "heads.txt"
    path.write_text("a0.h1->a1.h7<k> 0.5\n")
    with pytest.raises(CircuitError, match="L1H7"):
        import_circuit(path, toy_copy, model="toy")
    con = duckdb.connect(str(toy_copy), read_only=True)
    assert con.execute("SELECT count(*) FROM edge_scores").fetchone() == before
    con.close()


def test_evidence_gaps_find_a_planted_disagreement(toy_copy, tmp_path):
    # The toy model's strongest K edge by z is L0H2 -> L1H2 (previous-token head into the
    # induction head); leave it out of the circuit. And put in an edge whose weight
    # composition is below chance: L0H2 -> L1H2 through Q.
    doc = eap_ig_graph(2, 4, out=("a0.h2->a1.h2<k>",))
    for name in doc["edges"]:
        doc["edges"][name]["in_graph"] = name in ("a0.h2->a1.h2<q>", "a0.h3->a1.h2<k>")
    path = tmp_path / "induction.json"
    path.write_text(json.dumps(doc))
    import_circuit(path, toy_copy, model="toy")
    with open_reader(toy_copy) as db:
        toy = get_model(db, "toy")
        k_gaps = evidence_gaps(db, toy, "K", top=3)
        q_gaps = evidence_gaps(db, toy, "Q", top=3)
        every = evidence_gaps(db, toy, top=100)
        loose = evidence_gaps(db, toy, "K", top=1, max_z=10.0)
    absent = [g for g in k_gaps if g.gap == "absent"]
    top = absent[0].edge
    assert (top.source, top.target, top.kind) == ("L0H2", "L1H2", "K")
    assert top.z > 5 and not absent[0].in_circuit
    assert absent[0].circuit_score == doc["edges"]["a0.h2->a1.h2<k>"]["score"]
    # L0H3 -> L1H2 K stood 3.2 Gaussian null sds above chance, but that much is what the
    # toy's structure explains: its z is 0.2, so the circuit's edge is weak in weights
    assert [(g.edge.source, g.edge.target) for g in k_gaps if g.gap == "weak"] == [
        ("L0H3", "L1H2")]
    weak = [g for g in q_gaps if g.gap == "weak"]
    assert [(g.edge.source, g.edge.target, g.edge.kind) for g in weak] == [("L0H2", "L1H2", "Q")]
    assert weak[0].edge.z < 1 and weak[0].in_circuit
    assert all(g.edge.z >= 3 for g in every if g.gap == "absent")
    assert ("L0H2", "L1H2", "K") in {(g.edge.source, g.edge.target, g.edge.kind) for g in every}
    assert [(g.gap, g.edge.source) for g in loose] == [("absent", "L0H2"), ("weak", "L0H3")]


def test_a_database_older_than_these_tables_gets_them_on_first_import(toy_copy, tmp_path):
    from headgraph.attribution.graphs import GraphNotFoundError, get_graph, list_graphs

    con = duckdb.connect(str(toy_copy))
    for table in ("attribution_graphs", "attribution_nodes", "attribution_links",
                  "attribution_out_links", "circuits"):
        con.execute(f"DROP TABLE {table}")
    con.close()
    with open_reader(toy_copy) as db:
        assert list_graphs(db) == [] and evidence_gaps(db, get_model(db, "toy")) == []
        with pytest.raises(GraphNotFoundError):
            get_graph(db, "any")
    path = tmp_path / "c.txt"
    path.write_text("a0.h2->a1.h2<k> 0.5\n")
    import_circuit(path, toy_copy, model="toy", task="t")
    with open_reader(toy_copy) as db:
        absent = {(g.edge.source, g.edge.target) for g in evidence_gaps(
            db, get_model(db, "toy"), "K", top=100) if g.gap == "absent"}
    assert absent and ("L0H2", "L1H2") not in absent


def test_the_cli_imports_a_circuit_onto_a_stored_model(toy_copy, tmp_path):
    from typer.testing import CliRunner

    from headgraph.cli import app

    path = tmp_path / "ioi.json"
    path.write_text(json.dumps(eap_ig_graph(2, 4)))
    result = CliRunner().invoke(app, ["import", "--db", str(toy_copy), str(path),
                                      "--model", "toy", "--task", "ioi"])
    assert result.exit_code == 0, result.output
    assert "eap-ig-json" in result.output and "toy/eap-ig/ioi" in result.output
    result = CliRunner().invoke(app, ["import", "--db", str(toy_copy), str(path),
                                      "--model", "toy", "--task", "ioi"])
    assert result.exit_code == 4 and "CIRCUIT_EXISTS" in result.output
