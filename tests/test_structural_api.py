"""The structural z on the read side: GraphQL fields (z, gaussianZ, readerRank, kvHead,
structuralNull, summary, heads(orderBy: ROLE_SCORE)), the Python API and the CLI summary,
paths by z, exports; and a database written before the structural null existed (no
``edges.z``, ``models.null_bands`` or ``null_calibration``): it still reads, says why its
edges have no z, and gains them when a newer headgraph writes to it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import pytest
from support import Server, sql
from test_circuits import eap_ig_graph
from typer.testing import CliRunner

import headgraph
from headgraph.cli import app
from headgraph.server import create_app

INDUCTION = ["L1H0", "L1H1", "L1H2", "L1H3"]


def test_edge_z_is_the_stored_structural_z(probed_server: Server, probed_toy_db: Path):
    body = probed_server.gql('{ node(model: "toy", name: "L1H2") { feeders(kind: K, top: 6) { '
                      'source { name } score baseline nullStd z gaussianZ rank readerRank '
                      'kvHead } } }')
    got = body["data"]["node"]["feeders"]
    want = dict((s, (z, score, base, std)) for s, z, score, base, std in sql(
        str(probed_toy_db), "SELECT source, z, score, baseline, null_std FROM edges WHERE "
        "target='L1H2' AND kind='K'"))
    assert [e["source"]["name"] for e in got][0] == "L0H2"
    for e in got:
        z, score, base, std = want[e["source"]["name"]]
        assert e["z"] == pytest.approx(z, rel=1e-6)
        assert e["gaussianZ"] == pytest.approx((score - base) / std, rel=1e-5)
        assert e["readerRank"] is None and e["kvHead"] == 2
    assert got[0]["z"] > 5 and got[0]["gaussianZ"] > got[0]["z"]


def test_readers_carry_their_rank_among_the_sources_readers(probed_server: Server):
    body = probed_server.gql('{ node(model: "toy", name: "L0H2") { readers(kind: K, top: 4) { '
                      'target { name } rank readerRank z kvHead } } '
                      'q: node(model: "toy", name: "L0H2") { readers(kind: Q, top: 2) { '
                      'kvHead } } }')
    got = body["data"]["node"]["readers"]
    assert [e["readerRank"] for e in got] == [1, 2, 3, 4]
    assert {e["target"]["name"] for e in got} == set(INDUCTION)
    assert all(e["rank"] == 1 for e in got)  # L0H2 is each induction head's top K-feeder
    assert [e["kvHead"] for e in body["data"]["q"]["readers"]] == [None, None]


def test_edges_filtered_by_z(probed_server: Server, probed_toy_db: Path):
    body = probed_server.gql('{ model(name: "toy") { edges(kind: K, minZ: 3) { totalCount edges { '
                      'node { source { name } target { name } z } } } } }')
    page = body["data"]["model"]["edges"]
    want = sql(str(probed_toy_db), "SELECT count(*) FROM edges WHERE kind = 'K' AND z >= 3")[0][0]
    assert page["totalCount"] == len(page["edges"]) == want
    pairs = {(e["node"]["source"]["name"], e["node"]["target"]["name"]) for e in page["edges"]}
    assert {("L0H2", t) for t in INDUCTION} <= pairs
    assert all(e["node"]["z"] >= 3 for e in page["edges"])
    with headgraph.open(probed_toy_db) as g:
        assert len(g.model("toy").edges("K", min_z=3)) == want


def test_structural_null_and_role_score_order(probed_server: Server):
    body = probed_server.gql('{ model(name: "toy") { structuralNull { bands bandSizes calibration '
                      '{ kind family edges delta phi basis } } heads(role: "induction", '
                      'orderBy: ROLE_SCORE) { name } weakest: heads(role: "induction", '
                      'orderBy: ROLE_SCORE, descending: false, first: 1) { name } } }')
    m = body["data"]["model"]
    null = m["structuralNull"]
    assert sum(null["bandSizes"]) == 64 and null["bands"].endswith("+1")
    k = next(c for c in null["calibration"] if (c["kind"], c["family"]) == ("K", "head->head"))
    assert k["basis"] == "own" and k["edges"] == 16 and k["phi"] > 1
    shares = probed_server.gql('{ model(name: "toy") { nodes(kind: HEAD, layer: 1) { name '
                        'scores { metric value } } } }')["data"]["model"]["nodes"]
    best = {n["name"]: max(s["value"] for s in n["scores"] if s["metric"] == "induction_share")
            for n in shares}
    assert [h["name"] for h in m["heads"]] == sorted(best, key=lambda n: -best[n])
    assert m["weakest"] == [{"name": min(best, key=best.get)}]
    bad = probed_server.gql('{ model(name: "toy") { heads(orderBy: ROLE_SCORE) { name } } }')
    assert bad["errors"][0]["extensions"]["code"] == "BAD_INPUT"


def test_summary_names_the_induction_circuit(probed_server: Server, probed_toy_db: Path):
    body = probed_server.gql('{ model(name: "toy") { summary { previousToken { node value probe '
                      'null } induction { node value null } inductionKeys { source target z zRank evidence { '
                      'metric value } } copying { node } roleCounts { role heads } '
                      'disagreements { subject weights evidence } notes text } } }')
    s = body["data"]["model"]["summary"]
    assert [h["node"] for h in s["previousToken"]] == ["L0H2"]
    assert sorted(h["node"] for h in s["induction"]) == INDUCTION
    # each role's share beside its null (positions shuffled / tokens redrawn)
    assert all(h["value"] - h["null"] >= 0.5 and h["null"] > 0
               for h in (*s["previousToken"], *s["induction"]))
    keys = s["inductionKeys"]
    assert sorted(e["target"] for e in keys) == INDUCTION
    assert all(e["source"] == "L0H2" and e["z"] > 5 and e["zRank"] == 1 for e in keys)
    assert all(any(x["metric"] == "path_zero_dloss" for x in e["evidence"]) for e in keys)
    assert s["notes"] == []
    for name in ("L0H2", *INDUCTION):
        assert name in s["text"]
    # the toy's strongest Q-composition effects run through edges at z < 1: said, with both
    assert all("z " in d["weights"] and "nats" in d["evidence"] for d in s["disagreements"])
    with headgraph.open(probed_toy_db) as g:
        record = g.model("toy").summary()
    assert str(record) == s["text"]
    assert [e.target for e in record.induction_keys] == [e["target"] for e in keys]
    out = CliRunner().invoke(app, ["summary", "toy", "--db", str(probed_toy_db)])
    assert out.exit_code == 0 and out.output.strip() == s["text"].strip()


def test_paths_by_z_and_exports_carry_z(probed_toy_db: Path, tmp_path: Path):
    with headgraph.open(probed_toy_db) as g:
        toy = g.model("toy")
        paths = toy.paths("L1H2", kinds=("K",), max_length=1, top=3, weight="z",
                          rank_by="per_hop")
        assert paths[0].nodes == ("L0H2", "L1H2") and paths[0].weights[0] > 5
        assert all(p.weights[0] > 0 for p in paths)
        graph = toy.to_networkx(kinds=("K", "V"))
    feeders = {e.source: e for e in headgraph.open(probed_toy_db).model("toy").node(
        "L1H2").feeders("K", top=10)}
    edge = graph.edges["L0H2", "L1H2", "K"]
    assert edge["z"] == pytest.approx(feeders["L0H2"].z, rel=1e-6)
    assert edge["gaussian_z"] == pytest.approx(feeders["L0H2"].gaussian_z, rel=1e-5)
    assert edge["kv_head"] == 2 and graph.edges["L0H2", "L1H2", "V"]["kv_head"] == 2


def test_random_gqa_model_names_the_kv_head(tmp_path: Path):
    from headgraph.ingest.pipeline import ingest

    db = tmp_path / "gqa.duckdb"
    ingest("random:llama,layers=2,heads=4,kv_heads=2", db, name="gqa")
    s = Server(create_app(db))
    try:
        body = s.gql('{ node(model: "gqa", name: "L0H0") { k: readers(kind: K, top: 4) { '
                     'target { name kvHead } kvHead readerRank } q: readers(kind: Q, top: 1) '
                     '{ kvHead } } model(name: "gqa") { structuralNull { bands } } }')
    finally:
        s.stop()
    k = body["data"]["node"]["k"]
    assert sorted(e["target"]["name"] for e in k) == [f"L1H{h}" for h in range(4)]
    assert all(e["kvHead"] == e["target"]["kvHead"] == int(e["target"]["name"][-1]) // 2
               for e in k)
    assert [e["readerRank"] for e in k] == [1, 2, 3, 4]
    assert body["data"]["node"]["q"] == [{"kvHead": None}]
    assert body["data"]["model"]["structuralNull"]["bands"]


def _make_old(src: Path, dst: Path) -> None:
    """A copy of ``src`` as a headgraph without the structural null would have left it."""
    shutil.copy(src, dst)
    con = duckdb.connect(str(dst))
    con.execute("ALTER TABLE edges DROP COLUMN z")
    con.execute("ALTER TABLE models DROP COLUMN null_bands")
    con.execute("DROP TABLE null_calibration")
    con.close()


@pytest.mark.slow
def test_database_written_before_the_structural_null(probed_toy_db: Path, tmp_path: Path):
    from headgraph.circuits.importer import import_circuit
    from headgraph.errors import BadInputError
    from headgraph.ingest.pipeline import ingest
    from headgraph.maintenance import copy_models

    old = tmp_path / "old.duckdb"
    _make_old(probed_toy_db, old)
    s = Server(create_app(old))
    try:
        body = s.gql('{ model(name: "toy") { structuralNull { bands } edges(kind: K, first: 3) '
                     '{ edges { node { z gaussianZ } } } summary { notes } } node(model: "toy", '
                     'name: "L0H2") { readers(kind: K, top: 2) { z gaussianZ readerRank } } }')
        assert "errors" not in body, body
        m = body["data"]["model"]
        assert m["structuralNull"] is None
        assert all(e["node"]["z"] is None and e["node"]["gaussianZ"] > 3
                   for e in m["edges"]["edges"])
        assert any("re-ingest" in n for n in m["summary"]["notes"])
        readers = body["data"]["node"]["readers"]
        assert [r["readerRank"] for r in readers] == [1, 2] and readers[0]["z"] is None
        filtered = s.gql('{ model(name: "toy") { edges(minZ: 3) { totalCount } } }')
        assert filtered["errors"][0]["extensions"]["code"] == "BAD_INPUT"
        paths = s.gql('{ model(name: "toy") { paths(target: "L1H2", weight: Z) { score } } }')
        assert paths["errors"][0]["extensions"]["code"] == "BAD_INPUT"
        assert "re-ingest" in paths["errors"][0]["message"]
        assert s.client.get("/plot/toy/composition.png").status_code == 200
        assert s.client.get("/export/toy.json").status_code == 200
    finally:
        s.stop()
    with headgraph.open(old) as g:
        toy = g.model("toy")
        assert toy.node("L1H2").feeders("K", top=1)[0].z is None
        assert "Gaussian z" in toy.plot("K").axes[0].get_title()
    (tmp_path / "c.json").write_text(json.dumps(eap_ig_graph(2, 4)))
    copied = tmp_path / "copied.duckdb"
    copy_models(old, copied)  # a copy of the old file reads, and lands without z
    import_circuit(tmp_path / "c.json", copied, model="toy")
    with headgraph.open(copied) as g, pytest.raises(BadInputError, match="re-ingest"):
        g.model("toy").evidence_gaps()
    ingest("toy@1000", old)  # a newer headgraph writes: the columns are added
    with headgraph.open(old) as g:
        assert g.model("toy@1000").structural_null() is not None
        assert g.model("toy@1000").node("L1H2").feeders("K", top=1)[0].z is not None
        assert g.model("toy").node("L1H2").feeders("K", top=1)[0].z is None
        cmp = g.compare("toy@1000", "toy")
        assert "Gaussian z" in cmp.note and "toy was ingested before" in cmp.note
    con = duckdb.connect(str(old), read_only=True)
    n_null = con.execute("SELECT count(*) FROM edges e JOIN models m USING (model_id) "
                         "WHERE m.name = 'toy' AND e.z IS NOT NULL").fetchone()[0]
    con.close()
    assert n_null == 0


def test_postgres_database_written_before_the_structural_null(pg_url: str):
    """On PostgreSQL too: a model stored without z (columns dropped from the partitioned
    ``edges``, as an older headgraph made it) reads with z null; the next ingest adds the
    columns and attaches its partition, whose edges have z."""
    from sqlalchemy import create_engine, text

    from headgraph.ingest.pipeline import ingest
    from headgraph.schema.check import check_database

    ingest("toy", pg_url)
    engine = create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE edges DROP COLUMN z"))
        conn.execute(text("ALTER TABLE models DROP COLUMN null_bands"))
        conn.execute(text("DROP TABLE null_calibration"))
    engine.dispose()
    with headgraph.open(pg_url) as g:
        old = g.model("toy")
        assert old.structural_null() is None
        feeders = old.node("L1H2").feeders("K", top=2)
        assert feeders[0].z is None and feeders[0].gaussian_z > 10
        assert old.node("L0H2").readers("K", top=1)[0].reader_rank == 1
    ingest("toy@1000", pg_url)
    with headgraph.open(pg_url) as g:
        assert g.model("toy").node("L1H2").feeders("K", top=1)[0].z is None
        new = g.model("toy@1000")
        assert new.structural_null() is not None
        assert new.node("L1H2").feeders("K", top=1)[0].z is not None
    assert check_database(pg_url).ok


def test_check_finds_a_structural_null_without_its_calibration(probed_toy_db: Path,
                                                               tmp_path: Path):
    from headgraph.schema.check import check_database

    copy = tmp_path / "damaged.duckdb"
    shutil.copy(probed_toy_db, copy)
    assert check_database(copy).ok
    con = duckdb.connect(str(copy))
    con.execute("DELETE FROM null_calibration")
    con.close()
    report = check_database(copy)
    assert report.problems == ("model 'toy' has a structural null but no null_calibration rows",)
    old = tmp_path / "old.duckdb"
    _make_old(probed_toy_db, old)
    assert check_database(old).ok  # written before the structural null: nothing to check
