"""Attention roles read against their null (headgraph.ingest.evidence.controls and the
rules of headgraph.queries.evidence).

The controls must take away exactly what they say: moving positions is the same as
feeding the model permuted position ids (rotary) or permuted position embeddings (learned),
with the causal mask untouched; redrawing tokens keeps the BOS. The rules are checked on
a real DuckDB file holding the toy's evidence plus rows written for the cases a toy does
not show: a head whose share its null explains plays no role, one whose share its null does
not explain plays it, and evidence stored before nulls existed keeps the old thresholds.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest
import torch
from gguf_files import write_llama_gguf

from headgraph.ingest.evidence.causal import ProbeRunner
from headgraph.ingest.evidence.controls import (
    CONTROLS,
    generators,
    permutations,
    position_hooks,
    redrawn_tokens,
)
from headgraph.ingest.evidence.probes import ProbeSpec, build_probe
from headgraph.ingest.evidence.roles import ROLE_SCORES
from headgraph.ingest.evidence.runnable import load_runnable
from headgraph.queries import evidence as ev
from headgraph.queries.models import get_model
from headgraph.queries.session import open_reader

REPEAT = "repeat(seq=20,batch=32,seed=0)"


def _permuted(bridge, T: int) -> tuple[list, torch.Tensor]:
    """Hooks that move positions, and their two sequences' (different) permutations."""
    perms = permutations(T, generators(5, 2, "positions"))
    assert not torch.equal(perms[0], perms[1])
    hooks = position_hooks(bridge.hook_dict, bridge.cfg.positional_embedding_type, perms)
    assert hooks is not None
    return hooks, perms


def test_every_role_has_a_control():
    assert set(CONTROLS) == set(ROLE_SCORES)
    assert {r.role: r.null_metric for r in ev.ROLE_RULES if not r.from_weights} == {
        role: f"{role}_null_share" for role in ROLE_SCORES}


def test_shuffled_positions_are_permuted_rotary_positions(tmp_path: Path):
    """Rotary (Llama): the control equals transformers' own run with position ids
    ``perm`` (one per sequence), so query ``i`` and key ``j`` are rotated as positions
    ``perm[i], perm[j]``."""
    pytest.importorskip("gguf")
    path = tmp_path / "tiny-llama.Q8_0.gguf"
    write_llama_gguf(path)
    model = load_runnable(str(path))
    bridge, T = model.bridge, 9
    tokens = model.vocab.ordinary[:T][None].repeat(2, 1)
    hooks, perm = _permuted(bridge, T)
    with torch.inference_mode():
        moved = bridge.run_with_hooks(tokens, fwd_hooks=hooks)
        plain = bridge(tokens)
        # an explicit mask: without one, transformers may read non-monotonic position ids
        # as packed sequences and change the mask
        want = bridge.original_model(tokens, position_ids=perm,
                                     attention_mask=torch.ones_like(tokens)).logits
    assert torch.allclose(moved, want, atol=1e-4)
    assert not torch.allclose(moved, plain, atol=1e-3)


def test_shuffled_positions_are_permuted_learned_positions():
    """Learned positions (GPT-2, the toy): token ``i`` gets position embedding
    ``perm[i]``; nothing else changes (the causal mask stays by index)."""
    model = load_runnable("toy")
    bridge, T = model.bridge, 9
    tokens = model.vocab.ordinary[:T][None].repeat(2, 1)
    hooks, perm = _permuted(bridge, T)
    hf = bridge.original_model
    wpe = hf.transformer.wpe.weight
    with torch.inference_mode():
        moved = bridge.run_with_hooks(tokens, fwd_hooks=hooks)
        # transformers adds wpe[0..T-1] itself; hand it the difference to wpe[perm]
        embeds = hf.transformer.wte(tokens) + wpe[perm] - wpe[:T][None]
        want = hf(inputs_embeds=embeds).logits
    assert torch.allclose(moved, want, atol=1e-4)


def test_redrawn_tokens_keep_special_tokens_and_draw_ordinary_ids():
    model = load_runnable("toy")
    vocab = model.vocab
    special = [t for t in range(vocab.d_vocab) if not torch.isin(torch.tensor(t), vocab.ordinary)]
    assert special, "the toy has a BOS outside its ordinary ids"
    tokens = torch.stack([vocab.ordinary[:12], vocab.ordinary[12:24]])
    tokens[:, 0] = tokens[1, 7] = special[0]
    out = redrawn_tokens(tokens, vocab, generators(0, 2, "tokens"))
    kept = ~torch.isin(tokens, vocab.ordinary)
    assert int(kept.sum()) == 3 and torch.equal(out[kept], tokens[kept])
    assert torch.isin(out[~kept], vocab.ordinary).all()
    assert (out[~kept] != tokens[~kept]).float().mean() > 0.5
    again = redrawn_tokens(tokens, vocab, generators(0, 2, "tokens"))
    assert torch.equal(out, again)  # seeded


def test_the_toys_roles_stand_far_above_their_nulls(probed_toy_db: Path):
    """Every stored share has its null on the same probe; the previous-token head's
    attention to ``i - 1`` falls to near chance with positions moved, the induction heads'
    attention to the token after a copy falls with the copies gone."""
    db = open_reader(probed_toy_db, release=True)
    try:
        model = get_model(db, "toy")
        prev = ev.heads_with_role(db, model, "previous_token", probe=REPEAT)
        ind = ev.heads_with_role(db, model, "induction", probe=REPEAT)
        assert [r.node for r in prev] == ["L0H2"]
        assert sorted(r.node for r in ind) == ["L1H0", "L1H1", "L1H2", "L1H3"]
        for r in (*prev, *ind):
            assert r.calibrated and r.value > 0.5 and r.null < 0.15, r
        assert prev[0].rival < 0.2
        values = {(s.node, s.metric): s.value for s in ev.top_scores(
            db, model, "induction_share", probe=REPEAT, top=None)}
        nulls = {s.node: s.value for s in ev.top_scores(
            db, model, "induction_null_share", probe=REPEAT, top=None)}
        for node in ("L0H0", "L0H1", "L0H2", "L0H3"):  # no induction: the null is the share
            assert abs(values[node, "induction_share"] - nulls[node]) < 0.05
        for node in ("L1H1", "L1H2", "L1H3"):  # their first-token rest is partly positional
            null = ev.node_scores(db, model, node, probe=REPEAT)
            first = {s.metric: s.value for s in null}
            assert 0.1 < first["first_token_null_share"] < first["first_token_share"]
        rows = ev.node_scores(db, model, "L1H0")
        shares = {(s.metric, s.probe) for s in rows if s.metric.endswith("_share")}
        for metric, probe in shares:
            if not metric.endswith(("_null_share", "_rival_share")):
                assert (metric.replace("_share", "_null_share"), probe) in shares
    finally:
        db.close()


def _with_rows(src: Path, dst: Path, rows: list[tuple[str, str, str, float]]) -> None:
    shutil.copy(src, dst)
    con = duckdb.connect(str(dst))
    try:
        (model_id,) = con.execute("SELECT model_id FROM models WHERE name = 'toy'").fetchone()
        con.executemany("INSERT INTO node_scores VALUES (?, ?, ?, ?, ?)",
                        [(model_id, *r) for r in rows])
    finally:
        con.close()


def test_a_share_its_null_explains_is_no_role(toy_db: Path, tmp_path: Path):
    """Rows on a real database, for the cases the toy does not show:

    * L0H0 pays 0.9 of its attention to the first token and still 0.85 with positions
      moved: a sink that comes from being first, not from the position encoding (no role);
    * L0H1 pays 0.34 to ``i - 1`` against a null of 0.04 and rivals of 0.14: a
      previous-token head the old fixed 0.5 missed; L0H3 pays 0.55 (null 0.02) but more
      to itself (0.60): a local head, not a previous-token head; L0H2 pays 0.80: the
      clearer previous-token head, listed first;
    * L1H1's 0.6 comes from a probe stored before nulls existed (the fixed threshold,
      flagged uncalibrated); L1H2's calibrated probe is judged, its uncalibrated 0.95 not;
    * L1H3 has a NaN null on one probe and a clear induction share on another.
    """
    path = tmp_path / "rules.duckdb"
    old, new, other = "tokens(path=/old,sha=1)", "tokens(path=/new,sha=2)", "random(x=1)"
    _with_rows(toy_db, path, [
        ("L0H0", "first_token_share", new, 0.90), ("L0H0", "first_token_null_share", new, 0.85),
        ("L0H1", "previous_token_share", new, 0.34),
        ("L0H1", "previous_token_null_share", new, 0.04),
        ("L0H1", "previous_token_rival_share", new, 0.14),
        ("L0H2", "previous_token_share", new, 0.80),
        ("L0H2", "previous_token_null_share", new, 0.05),
        ("L0H2", "previous_token_rival_share", new, 0.05),
        ("L0H3", "previous_token_share", new, 0.55),
        ("L0H3", "previous_token_null_share", new, 0.02),
        ("L0H3", "previous_token_rival_share", new, 0.60),
        ("L1H1", "induction_share", old, 0.60),
        ("L1H2", "induction_share", old, 0.95),
        ("L1H2", "induction_share", new, 0.30), ("L1H2", "induction_null_share", new, 0.20),
        ("L1H3", "induction_share", new, 0.70),
        ("L1H3", "induction_null_share", new, float("nan")),
        ("L1H3", "induction_share", other, 0.50), ("L1H3", "induction_null_share", other, 0.05),
    ])
    db = open_reader(path, release=True)
    try:
        model = get_model(db, "toy")
        heads = ["L0H0", "L0H1", "L0H2", "L0H3", "L1H1", "L1H2", "L1H3"]
        roles = {n: {r.role: r for r in rs}
                 for n, rs in ev.roles_of(db, model.model_id, heads).items()}
        assert "first_token" not in roles["L0H0"]
        prev = roles["L0H1"]["previous_token"]
        assert prev.calibrated and prev.strength == pytest.approx(0.30)
        assert prev.explain() == ("previous_token_share 0.34, null 0.04: +0.30 vs 0.25; "
                                  "rival 0.14")
        assert "previous_token" not in roles["L0H3"]
        ind = roles["L1H1"]["induction"]
        assert not ind.calibrated and ind.threshold == 0.4 and ind.probe == old
        assert "induction" not in roles["L1H2"]  # 0.30 - 0.20 < 0.25; the 0.95 is not judged
        assert roles["L1H3"]["induction"].probe == other
        assert [r.node for r in ev.heads_with_role(db, model, "induction")] == ["L1H3", "L1H1"]
        ordered = ev.heads_in_role(db, model, "previous_token", order_by=ev.ROLE_SCORE,
                                   descending=True)
        assert [h.node for h in ordered] == ["L0H2", "L0H1"]
        ordered = ev.heads_in_role(db, model, "previous_token", order_by=ev.ROLE_SCORE)
        assert [h.node for h in ordered] == ["L0H1", "L0H2"]
    finally:
        db.close()


def test_a_model_without_a_position_table_says_its_roles_have_no_null():
    """GPT-J's bridge exposes no rotary table: the content roles get their null, the
    positional ones none, and the run says so (their roles keep the fixed thresholds)."""
    model = load_runnable("random:gptj")
    probe = build_probe(ProbeSpec("repeat", (("seq", "10"), ("batch", "4"))), model.vocab)
    clean = ProbeRunner(model, probe).clean()
    assert {"induction_null_share", "duplicate_token_null_share"} <= set(clean.role_scores)
    assert "previous_token_null_share" not in clean.role_scores
    assert len(clean.notes) == 1 and "previous_token and first_token have no null" in \
        clean.notes[0]
