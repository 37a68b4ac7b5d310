"""Head matching and graph diffs between stored models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from headgraph.graph.compare import diff_edges, match_heads
from headgraph.ingest.pipeline import ingest
from headgraph.queries.series import series
from headgraph.queries.session import open_reader


def permute_heads(src: Path, dst: Path, perms: dict[int, list[int]]) -> None:
    """Copy an HF GPT-2 checkpoint with the heads of each layer reordered: new head ``i``
    of layer ``l`` is old head ``perms[l][i]``."""
    import json
    import shutil

    shutil.copytree(src, dst)
    config = json.loads((src / "config.json").read_text())
    d, n_heads = config["n_embd"], config["n_head"]
    dh = d // n_heads
    state = load_file(src / "model.safetensors")
    for key in list(state):
        for layer, perm in perms.items():
            index = torch.cat([torch.arange(p * dh, (p + 1) * dh) for p in perm])
            if key.endswith(f"h.{layer}.attn.c_attn.weight"):
                w = state[key]
                state[key] = torch.cat([w[:, i * d:(i + 1) * d][:, index] for i in range(3)], 1)
            elif key.endswith(f"h.{layer}.attn.c_attn.bias"):
                b = state[key]
                state[key] = torch.cat([b[i * d:(i + 1) * d][index] for i in range(3)])
            elif key.endswith(f"h.{layer}.attn.c_proj.weight"):
                state[key] = state[key][index, :]
    save_file({k: v.contiguous() for k, v in state.items()}, dst / "model.safetensors",
              metadata={"format": "pt"})


def _checkpoint(tmp: Path) -> Path:
    from headgraph.toy import checkpoint_dir, checkpoint_steps

    if checkpoint_steps():
        return checkpoint_dir()
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=3, n_head=4, n_embd=32, vocab_size=40,
                                       n_positions=16))
    model.save_pretrained(tmp / "base")
    return tmp / "base"


@pytest.fixture(scope="module")
def pair_db(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("compare")
    base = _checkpoint(tmp)
    perms = {0: [2, 0, 3, 1], 1: [1, 3, 0, 2]}
    permute_heads(base, tmp / "perm", perms)
    db = tmp / "cmp.duckdb"
    ingest(str(base), db, name="base")
    ingest(str(tmp / "perm"), db, name="perm")
    ingest("random:L3H2D16V40,ctx=16", db, name="other-shape")
    return db, perms


def test_matching_a_model_with_itself_is_the_identity(pair_db):
    db, _ = pair_db
    with open_reader(db) as r:
        cmp = match_heads(r, "base", "base")
    assert cmp.matches and all(m.a == m.b for m in cmp.matches)
    assert all(m.similarity == pytest.approx(1.0) for m in cmp.matches)
    assert not cmp.unmatched_a and not cmp.unmatched_b


def test_matching_recovers_a_permutation_of_heads(pair_db):
    db, perms = pair_db
    with open_reader(db) as r:
        cmp = match_heads(r, "base", "perm")
    got = {m.a: m.b for m in cmp.matches}
    for layer, perm in perms.items():
        for new, old in enumerate(perm):
            assert got[f"L{layer}H{old}"] == f"L{layer}H{new}"
    assert min(m.similarity for m in cmp.matches) > 0.999
    with open_reader(db) as r:
        changes = diff_edges(r, cmp, top=5)
    assert all(abs(c.change) < 1e-4 for c in changes)  # same circuit under the matching


def test_different_shapes_compare_and_say_so(pair_db):
    db, _ = pair_db
    with open_reader(db) as r:
        cmp = match_heads(r, "base", "other-shape")
        changes = diff_edges(r, cmp, top=10)
    assert not cmp.same_shape and "different shapes" in cmp.note
    n_a = len(cmp.matches) + len(cmp.unmatched_a)
    assert len(cmp.matches) == 6 and len(cmp.unmatched_a) == n_a - 6 and not cmp.unmatched_b
    assert changes == sorted(changes, key=lambda c: -abs(c.change))


def test_diff_ranks_largest_changes_first(pair_db):
    db, _ = pair_db
    with open_reader(db) as r:
        cmp = match_heads(r, "base", "other-shape")
        changes = diff_edges(r, cmp, top=50)
    values = np.abs([c.change for c in changes])
    assert (np.diff(values) <= 1e-12).all()
    assert {c.status for c in changes} <= {"appeared", "vanished", "changed"}


def test_series_over_a_family(tmp_path: Path):
    db = tmp_path / "s.duckdb"
    for step, seed in ((100, 1), (200, 2), (50, 3)):
        ingest(f"random:L2H2D16V20,ctx=8,seed={seed}", db, name=f"run@{step}", family="run",
               step=step)
    with open_reader(db) as r:
        pts = series(r, "run", source="L0H1", target="L1H0", kind="K")
        node_pts = series(r, "run", node="L1H1", metric="copying_ratio")
    assert [p.step for p in pts] == [50, 100, 200]
    assert [p.model for p in pts] == ["run@50", "run@100", "run@200"]
    assert len(node_pts) == 3 and all(-1 <= p.value <= 1 for p in node_pts)


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from headgraph.toy import checkpoint_steps

    db = tmp_path_factory.mktemp("run") / "run.duckdb"
    for step in checkpoint_steps():
        ingest(f"toy@{step}", db)
    return db


def test_induction_k_composition_rises_across_the_phase_change(toy_run):
    import json

    from headgraph.toy import CHECKPOINTS

    manifest = json.loads((CHECKPOINTS / "manifest.json").read_text())
    prev = manifest["heads"]["previous_token"][0]
    with open_reader(toy_run) as r:
        for head in manifest["heads"]["induction"]:
            pts = series(r, "toy", source=prev, target=head, kind="K")
            values = [p.value for p in pts]
            assert values[-1] > values[0] + 0.08  # it jumps at the phase change ...
            before = [p.value for p in pts if p.step <= 1000]
            assert max(before) < min(p.value for p in pts if p.step >= 2000)  # ... and stays


def test_diff_between_first_and_last_checkpoint_ranks_the_induction_edges_first(toy_run):
    import json

    from headgraph.toy import CHECKPOINTS, checkpoint_steps

    manifest = json.loads((CHECKPOINTS / "manifest.json").read_text())
    prev, induction = manifest["heads"]["previous_token"][0], manifest["heads"]["induction"]
    steps = checkpoint_steps()
    with open_reader(toy_run) as r:
        cmp = match_heads(r, f"toy@{steps[0]}", f"toy@{steps[-1]}")
        changes = diff_edges(r, cmp, top=len(induction), kinds=("K",))
    assert all(m.a == m.b for m in cmp.matches)  # one run: heads keep their names
    assert {(c.source_b, c.target_b) for c in changes} == {(prev, h) for h in induction}
    assert all(c.change > 0 and c.status == "appeared" for c in changes)


@pytest.mark.slow
def test_minilm_against_the_toy_model_says_the_shapes_differ(tmp_path: Path, minilm_dir):
    db = tmp_path / "mixed.duckdb"
    ingest("toy", db)
    ingest(str(minilm_dir), db, name="minilm")
    with open_reader(db) as r:
        cmp = match_heads(r, "minilm", "toy")
        changes = diff_edges(r, cmp, top=5)
    assert not cmp.same_shape and "different shapes (6x12 vs 2x4)" in cmp.note
    assert len(cmp.matches) == 8 and len(cmp.unmatched_a) == 72 - 8
    assert changes and all(c.kind in ("Q", "K", "V") for c in changes)
