"""The shipped toy model's induction circuit, read back from the database.

The heads' roles come from running the model (attention patterns on repeated random
sequences), not from hand-written names; the database must then show the mechanism in the
weights: the previous-token head is the top K-feeder of every induction head, and the
induction heads copy.
"""

from __future__ import annotations

import duckdb
import pytest
import torch

from headgraph.toy import checkpoint_dir, checkpoint_steps


@pytest.fixture(scope="module")
def roles() -> tuple[str, list[str]]:
    """(previous-token head, induction heads) from attention patterns of the final model."""
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel.from_pretrained(checkpoint_dir(), attn_implementation="eager")
    model.eval()
    g = torch.Generator().manual_seed(123)
    span = 24
    x = torch.randint(1, model.config.vocab_size, (32, span), generator=g)
    tokens = torch.cat([x, x], dim=1)  # (batch, 2 span)
    with torch.no_grad():
        attn = model(tokens, output_attentions=True).attentions  # per layer (B, H, T, T)
    prev, induction = {}, {}
    pos = torch.arange(span + 1, 2 * span)
    for layer, a in enumerate(attn):
        for head in range(a.shape[1]):
            name = f"L{layer}H{head}"
            prev[name] = float(a[:, head, pos, pos - 1].mean())
            induction[name] = float(a[:, head, pos, pos - span + 1].mean())
    prev_head = max(prev, key=prev.get)
    ind_heads = [h for h, s in induction.items() if s > 0.5]
    assert prev[prev_head] > 0.3 and ind_heads, (prev, induction)
    return prev_head, ind_heads


def test_shipped_checkpoints_span_training(roles):
    steps = checkpoint_steps()
    assert len(steps) >= 6 and steps[0] == 0


def test_previous_token_head_is_top_k_feeder_of_each_induction_head(toy_db, roles):
    prev_head, ind_heads = roles
    con = duckdb.connect(str(toy_db), read_only=True)
    for head in ind_heads:
        (top,) = con.execute("SELECT edges.source FROM edges JOIN models USING (model_id) "
                             "WHERE name = 'toy' AND target = ? AND kind = 'K' AND rank = 1",
                             [head]).fetchone()
        assert top == prev_head, head


def test_induction_heads_copy(toy_db, roles):
    _, ind_heads = roles
    con = duckdb.connect(str(toy_db), read_only=True)
    for head in ind_heads:
        (ratio,) = con.execute("SELECT copying_ratio FROM nodes JOIN models USING (model_id) "
                               "WHERE name = 'toy' AND node = ?", [head]).fetchone()
        assert ratio > 0.9, (head, ratio)


def test_toy_model_row_is_a_checkpoint_of_its_family(toy_db):
    con = duckdb.connect(str(toy_db), read_only=True)
    family, step, arch = con.execute("SELECT family, step, architecture FROM models "
                                     "WHERE name = 'toy'").fetchone()
    assert (family, step, arch) == ("toy", checkpoint_steps()[-1], "GPT2LMHeadModel")
