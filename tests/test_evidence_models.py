"""Evidence on models other than the toy: the MiniLM encoder and a random GPT-2 shape.

MiniLM attends both ways and has no trained LM head: role scores use the same
lower-triangular detection patterns, its causal metric is the change of the mean-pooled
sentence embedding (``ablation_*_dembed``), and path patching is skipped (post-LN).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from headgraph.ingest.pipeline import ingest
from headgraph.queries import evidence as ev
from headgraph.queries.models import get_model
from headgraph.queries.session import open_reader

pytestmark = pytest.mark.filterwarnings("ignore:.*does not support fold_ln:UserWarning")
MINILM_PROBES = "repeat(seq=8,batch=2,seed=0),random(seq=16,batch=2,seed=0)"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def minilm(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path):
    path = tmp_path_factory.mktemp("minilm") / "m.duckdb"
    ingest(str(minilm_dir), path, name="minilm", probes=MINILM_PROBES)
    db = open_reader(path, release=True)
    yield db, get_model(db, "minilm")
    db.close()


@pytest.mark.slow
def test_minilm_probes_store_role_scores_for_every_head(minilm):
    db, model = minilm
    assert ev.probes_of(db, model) == sorted(
        ["repeat(seq=8,batch=2,seed=0)", "random(seq=16,batch=2,seed=0)"])
    for metric in ("previous_token_score", "induction_score", "duplicate_token_score",
                   "first_token_score"):
        rows = ev.top_scores(db, model, metric, top=None)
        assert len(rows) == 2 * 6 * 12
        assert all(0.0 <= r.value <= 1.0 for r in rows)
    # bidirectional attention still gives a clear previous-token head (attention to i - 1)
    assert ev.heads_with_role(db, model, "previous_token")


@pytest.mark.slow
def test_minilm_causal_metric_is_the_sentence_embedding_change(minilm):
    db, model = minilm
    for mode in ("zero", "mean"):
        rows = ev.top_scores(db, model, f"ablation_{mode}_dembed", top=None)
        assert {r.probe for r in rows} == {"repeat(seq=8,batch=2,seed=0)"}  # a causal probe
        assert len(rows) == 72 and all(-1e-6 <= r.value <= 2 for r in rows)
        assert rows[0].value > 0
    assert ev.top_scores(db, model, "ablation_zero_dloss", top=None) == []
    assert ev.top_edge_evidence(db, model, top=None) == []  # no path patching on post-LN


def test_random_gpt2_shapes_run_through_the_same_weights(tmp_path: Path):
    """``random:`` sources are run with exactly the tensors the streamed reader scores."""
    path = tmp_path / "r.duckdb"
    ingest("random:L2H4D32V50,ctx=32", path, name="rnd",
           probes="repeat(seq=6,batch=4,seed=0)")
    with open_reader(path) as db:
        model = get_model(db, "rnd")
        assert len(ev.top_scores(db, model, "ablation_mean_dloss", top=None)) == 8
        # attribution patching scores every Q/K/V edge between the heads ...
        estimated = ev.top_edge_evidence(db, model, "attrib_path_zero_dloss", top=None)
        assert {e.kind for e in estimated} == {"Q", "K", "V"}
        heads = {(e.source, e.target, e.kind) for e in estimated
                 if e.source.startswith("L0H") and e.target.startswith("L1H")}
        assert len(heads) == 3 * 4 * 4
        # ... and exact path patching confirms the edges it ranks first
        exact = ev.top_edge_evidence(db, model, "path_zero_dloss", top=None)
        assert exact and {(e.source, e.target, e.kind) for e in exact} <= {
            (e.source, e.target, e.kind) for e in estimated}
        assert len(exact) == 20 and all(e.target.startswith("L1H") for e in exact)


def test_the_read_side_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, headgraph.queries.evidence; "
            "print(sorted(m for m in ('torch', 'transformer_lens') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
