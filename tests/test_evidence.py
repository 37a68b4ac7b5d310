"""Evidence from running the shipped toy model, read back from a real DuckDB file.

The assertions are the mechanism itself (Olsson et al. 2022), with every head found from
the data: the head with the largest previous-token share is the previous-token head; the
heads with the largest induction shares sit in a later layer; removing the previous-token
head costs the most induction loss; and the route from it into an induction head's keys
is the causal K-edge that costs most.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
import torch

from headgraph.ingest.pipeline import ingest
from headgraph.queries import evidence as ev
from headgraph.queries.models import get_model
from headgraph.queries.session import open_reader

REPEAT = "repeat(seq=20,batch=32,seed=0)"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small models run fastest on one thread on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def toy_ev(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy model ingested with the default probes."""
    path = tmp_path_factory.mktemp("toy-ev") / "toy.duckdb"
    ingest("toy", path, probes="default")
    return path


@pytest.fixture(scope="module")
def reader(toy_ev: Path):
    db = open_reader(toy_ev, release=True)
    yield db, get_model(db, "toy")
    db.close()


def _layer(node: str) -> int:
    return int(node[1:].split("H")[0])


def test_default_probes_are_stored_with_their_parameters(reader):
    db, model = reader
    assert ev.probes_of(db, model) == [
        "duplicate(seq=40,batch=32,seed=0,pool=20)",
        "random(seq=40,batch=32,seed=0)",
        REPEAT,
    ]
    heads = model.n_layers * model.n_heads
    for metric in ("previous_token_score", "induction_score", "duplicate_token_score",
                   "first_token_score", "ablation_zero_dloss", "ablation_mean_dloss"):
        assert len(ev.top_scores(db, model, metric, probe=REPEAT, top=None)) == heads


def test_the_previous_token_head_has_the_top_previous_token_score(reader):
    db, model = reader
    best_score = ev.top_scores(db, model, "previous_token_score", probe=REPEAT, top=1)[0]
    best_share = ev.top_scores(db, model, "previous_token_share", probe=REPEAT, top=1)[0]
    role = ev.heads_with_role(db, model, "previous_token", probe=REPEAT)
    assert best_score.node == best_share.node == role[0].node
    assert role[0].value >= 0.5


def test_the_induction_heads_have_the_top_induction_scores_in_a_later_layer(reader):
    db, model = reader
    prev = ev.top_scores(db, model, "previous_token_share", probe=REPEAT, top=1)[0].node
    induction = ev.heads_with_role(db, model, "induction", probe=REPEAT)
    assert induction, "no head reaches the induction threshold"
    names = {r.node for r in induction}
    ranked = ev.top_scores(db, model, "induction_score", probe=REPEAT, top=None)
    assert {s.node for s in ranked[: len(names)]} == names  # they lead the raw score too
    assert all(_layer(n) > _layer(prev) for n in names)
    assert prev not in names


def test_ablating_the_previous_token_head_costs_the_most_induction_loss(reader):
    db, model = reader
    prev = ev.top_scores(db, model, "previous_token_share", probe=REPEAT, top=1)[0].node
    for metric in ("ablation_zero_dloss", "ablation_mean_dloss"):
        top = ev.top_scores(db, model, metric, probe=REPEAT, top=2)
        assert top[0].node == prev, metric
        assert top[0].value > top[1].value
    clean = ev.node_scores(db, model, "UNEMBED", probe=REPEAT)
    assert [s.metric for s in clean] == ["loss"] and 0 < clean[0].value < 4.2  # < ln(64)


def test_the_k_route_from_the_previous_token_head_is_the_largest_causal_k_edge(reader):
    db, model = reader
    prev = ev.top_scores(db, model, "previous_token_share", probe=REPEAT, top=1)[0].node
    induction = {r.node for r in ev.heads_with_role(db, model, "induction", probe=REPEAT)}
    for metric in ("path_zero_dloss", "path_mean_dloss"):
        top = ev.top_edge_evidence(db, model, metric, kind="K", probe=REPEAT, top=1)[0]
        assert (top.source, top.kind) == (prev, "K") and top.target in induction, metric
        assert top.value > 0.05
        rows = ev.edge_evidence(db, model, prev, top.target, "K", probe=REPEAT)
        assert metric in {r.metric for r in rows}


def test_roles_read_back_per_node(reader):
    db, model = reader
    prev = ev.heads_with_role(db, model, "previous_token", probe=REPEAT)[0].node
    got = ev.roles(db, model, prev, probe=REPEAT)
    assert got[0].role == "previous_token" and got[0].probe == REPEAT
    assert got[0].metric == "previous_token_share" and got[0].threshold == ev.ROLE_MARGIN
    assert got[0].calibrated and got[0].strength == got[0].value - got[0].null
    for r in ev.heads_with_role(db, model, "copying"):
        assert r.value >= 0.7 and r.probe is None
    with pytest.raises(Exception, match="unknown role"):
        ev.heads_with_role(db, model, "name_mover")
    with pytest.raises(Exception, match="no node"):
        ev.roles(db, model, "L9H9")


def test_evidence_rows_are_in_the_public_tables(toy_ev: Path):
    con = duckdb.connect(str(toy_ev), read_only=True)
    try:
        kinds = dict(con.execute("SELECT kind, count(*) FROM edge_scores GROUP BY kind")
                     .fetchall())
        metrics = {m for (m,) in con.execute("SELECT DISTINCT metric FROM edge_scores")
                   .fetchall()}
    finally:
        con.close()
    assert set(kinds) == {"Q", "K", "V"}
    # exact path patching on the top edges, attribution (EAP) on every Q/K/V edge
    assert metrics == {"path_zero_dloss", "path_mean_dloss", "attrib_path_zero_dloss",
                       "attrib_path_mean_dloss"}


def test_roles_agree_with_the_heads_named_by_the_training_manifest(reader):
    """The toy's manifest names its heads from the training script's own measurement."""
    import json

    from headgraph.toy import CHECKPOINTS

    named = json.loads((CHECKPOINTS / "manifest.json").read_text())["heads"]
    db, model = reader
    assert [r.node for r in ev.heads_with_role(db, model, "previous_token", probe=REPEAT)] \
        == named["previous_token"]
    assert {r.node for r in ev.heads_with_role(db, model, "induction", probe=REPEAT)} \
        == set(named["induction"])
