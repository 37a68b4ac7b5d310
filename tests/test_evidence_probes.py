"""Probes and the ``probe`` command: names, parameters, refusals, replacement, batching.

Also the parity of the role scores with TransformerLens's own ``detect_head`` on the toy
model, and that path patching touches only the route it names.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import duckdb
import pytest
import torch
from typer.testing import CliRunner

from headgraph.cli import app
from headgraph.errors import BadInputError
from headgraph.ingest.evidence.causal import HeadRef, ProbeRunner, split_qkv_inputs
from headgraph.ingest.evidence.probes import Vocab, build_probes, parse_probes
from headgraph.ingest.evidence.runnable import load_runnable
from headgraph.ingest.pipeline import ingest

SMALL = "repeat(seq=8,batch=4,seed=0)"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def toy():
    return load_runnable("toy")


@pytest.fixture
def plain_db(tmp_path: Path) -> Path:
    """The toy model stored without evidence."""
    path = tmp_path / "plain.duckdb"
    ingest("toy", path)
    return path


def snapshot(path: Path) -> str:
    con = duckdb.connect(str(path), read_only=True)
    try:
        h = hashlib.sha256()
        for (table,) in con.execute("SELECT table_name FROM information_schema.tables "
                                    "ORDER BY table_name").fetchall():
            h.update(repr(con.execute(f'SELECT * FROM "{table}" ORDER BY ALL')
                          .fetchall()).encode())
        return h.hexdigest()
    finally:
        con.close()


def count(path: Path, table: str) -> dict[str, int]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return dict(con.execute(f"SELECT probe, count(*) FROM {table} GROUP BY probe")
                    .fetchall())
    finally:
        con.close()


VOCAB = Vocab(d_vocab=50, n_ctx=32, bos=49, ordinary=torch.arange(40))


def test_probe_names_spell_out_every_parameter():
    probes = build_probes(parse_probes("repeat(seq=5),random(seq=10),default"), VOCAB)
    assert [p.name for p in probes] == [
        "repeat(seq=5,batch=32,seed=0)",
        "random(seq=10,batch=32,seed=0)",
        "repeat(seq=15,batch=32,seed=0)",
        "duplicate(seq=30,batch=32,seed=0,pool=15)",
        "random(seq=30,batch=32,seed=0)",
    ]


def test_synthetic_probes_repeat_bit_for_bit_and_have_their_shape():
    a, = build_probes(parse_probes("repeat(seq=6,batch=3,seed=7)"), VOCAB)
    b, = build_probes(parse_probes("repeat(seq=6, batch=3, seed=7)"), VOCAB)
    assert torch.equal(a.batches[0].tokens, b.batches[0].tokens)
    tokens, mask = a.batches[0].tokens, a.batches[0].loss_mask
    assert tokens.shape == (3, 13) and (tokens[:, 0] == 49).all()
    assert torch.equal(tokens[:, 1:7], tokens[:, 7:])
    assert mask.sum(1).tolist() == [5, 5, 5]  # predictions of x[1:] in the second copy
    assert int(tokens[:, 1:].max()) < 40  # ordinary ids only
    dup, = build_probes(parse_probes("duplicate(seq=30,batch=2,pool=3)"), VOCAB)
    assert all(len(set(r.tolist())) <= 4 for r in dup.batches[0].tokens)  # BOS + pool of 3


@pytest.mark.parametrize(("text", "message"), [
    ("repeat(seq=20)", "41 tokens, but this model reads at most 32"),
    ("repeat(len=3)", "bad parameter"),
    ("induction", "not understood"),
    ("repeat(seq=x)", "not an integer"),
    ("repeat(seq=1)", "at least 2"),
    ("random(seq=9),random(seq=9,batch=32,seed=0)", "twice"),
    ("text(path=/nonexistent/file.txt)", "no such file"),
    ("", "empty"),
])
def test_bad_probes_are_refused_with_the_reason(text: str, message: str):
    with pytest.raises(BadInputError, match=message.replace("(", r"\(")):
        build_probes(parse_probes(text), VOCAB)


def test_token_files_group_by_length_and_refuse_ids_outside_the_vocabulary(tmp_path: Path):
    good = tmp_path / "ids.txt"
    good.write_text("1 2 3 1 2 3\n4,5,6\n7 8 9\n")
    probe, = build_probes(parse_probes(f"tokens(path={good})"), VOCAB)
    assert [tuple(b.tokens.shape) for b in probe.batches] == [(2, 3), (1, 6)]
    sha = hashlib.sha256(good.read_bytes()).hexdigest()[:12]
    assert probe.name == f"tokens(path={good.resolve()},sha={sha})"
    assert build_probes(parse_probes(probe.name), VOCAB)[0].name == probe.name
    good.write_text("1 2 3\n")
    with pytest.raises(BadInputError, match="changed since"):
        build_probes(parse_probes(probe.name), VOCAB)
    bad = tmp_path / "bad.txt"
    bad.write_text("1 2 3\n4 50 6\n")
    with pytest.raises(BadInputError, match="id 50, outside"):
        build_probes(parse_probes(f"tokens(path={bad})"), VOCAB)


def test_a_probe_that_does_not_fit_writes_nothing(plain_db: Path, tmp_path: Path):
    before = snapshot(plain_db)
    too_big = tmp_path / "big.txt"
    too_big.write_text("1 2 500\n")
    runner = CliRunner()
    for probes in ("repeat(seq=40)", f"tokens(path={too_big})"):
        result = runner.invoke(app, ["probe", "--db", str(plain_db), "--model", "toy",
                                     "--probes", probes])
        assert result.exit_code == 2, result.output
        assert "BAD_INPUT" in result.output
    assert snapshot(plain_db) == before
    fresh = tmp_path / "fresh.duckdb"
    with pytest.raises(BadInputError, match="n_ctx"):
        ingest("toy", fresh, probes="repeat(seq=40)")
    assert not fresh.exists()


def metric_counts(path: Path, table: str, probe: str) -> dict[str, int]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return dict(con.execute(f"SELECT metric, count(*) FROM {table} WHERE probe = ? "
                                "GROUP BY metric", [probe]).fetchall())
    finally:
        con.close()


def test_probe_command_adds_evidence_and_replaces_the_same_probe(plain_db: Path,
                                                                  tmp_path: Path):
    runner = CliRunner()
    args = ["probe", "--db", str(plain_db), "--model", "toy", "--probes", SMALL,
            "--exact-heads", "3", "--exact-edges", "2"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "agreement ablation_mean_dloss" in first.output
    nodes = metric_counts(plain_db, "node_scores", SMALL)
    edges = metric_counts(plain_db, "edge_scores", SMALL)
    assert nodes["induction_share"] == nodes["attrib_ablation_mean_dloss"] == 8  # every head
    assert nodes["ablation_mean_dloss"] == 3  # the top 3 by |attribution|, per mode
    # EAP on every Q/K/V edge into layer 1: 7 writers (EMBED, POS_EMBED, 4 heads, MLP0)
    assert edges["attrib_path_zero_dloss"] == edges["attrib_path_mean_dloss"] == 7 * 4 * 3
    assert edges["path_mean_dloss"] == edges["path_zero_dloss"] == 2
    assert runner.invoke(app, args).exit_code == 0
    assert metric_counts(plain_db, "node_scores", SMALL) == nodes  # replaced, not duplicated
    assert metric_counts(plain_db, "edge_scores", SMALL) == edges
    # exact confirmations added later, ranked by the stored attribution
    more = runner.invoke(app, args[:7] + ["--attribution", "none", "--exact-heads", "all",
                                          "--exact-edges", "5"])
    assert more.exit_code == 0, more.output
    after = metric_counts(plain_db, "node_scores", SMALL)
    assert after["ablation_zero_dloss"] == after["ablation_mean_dloss"] == 8
    assert after["attrib_ablation_mean_dloss"] == 8  # the attribution is kept
    assert 5 <= metric_counts(plain_db, "edge_scores", SMALL)["path_mean_dloss"] <= 7
    con = duckdb.connect(str(plain_db), read_only=True)
    rows = con.execute("SELECT quantity, method, n, k, overlap FROM evidence_agreement "
                       "WHERE probe = ? ORDER BY quantity", [SMALL]).fetchall()
    con.close()
    assert ("ablation_mean_dloss", "attribution", 8, 8, 8) in rows  # every head both ways
    text = tmp_path / "t.txt"
    text.write_text("t1 t2 t3 t4 t1 t2 t3 t4\nt5 t6 t7 t5 t6 t7\n")
    third = runner.invoke(app, args[:6] + [f"text(path={text})", "--exact-edges", "0"])
    assert third.exit_code == 0, third.output
    assert len(count(plain_db, "node_scores")) == 2
    assert metric_counts(plain_db, "node_scores", SMALL) == after


def test_probe_refuses_weights_that_changed_since_ingest(plain_db: Path):
    con = duckdb.connect(str(plain_db))
    con.execute("UPDATE models SET weights_digest = '0000' WHERE name = 'toy'")
    con.close()
    before = snapshot(plain_db)
    result = CliRunner().invoke(app, ["probe", "--db", str(plain_db), "--model", "toy",
                                      "--probes", SMALL])
    assert result.exit_code == 2 and "changed since the model was ingested" in result.output
    assert snapshot(plain_db) == before


def test_role_scores_equal_transformerlens_detect_head(toy):
    """Same prompts through TransformerLens's own detector (it tokenises the text itself)."""
    from transformer_lens.head_detector import detect_head

    probe, = build_probes(parse_probes("repeat(seq=12,batch=3,seed=1)"), toy.vocab)
    clean = ProbeRunner(toy, probe).clean()
    toy.bridge.tokenizer = toy.vocab.tokenizer
    texts = [toy.vocab.tokenizer.decode(row) for row in probe.batches[0].tokens]
    assert torch.equal(toy.bridge.to_tokens(texts[0])[0], probe.batches[0].tokens[0])
    for role in ("previous_token", "duplicate_token", "induction"):
        theirs = detect_head(toy.bridge, texts, f"{role}_head")
        torch.testing.assert_close(clean.role_scores[f"{role}_score"], theirs.float(),
                                   atol=1e-6, rtol=0)


def test_batching_does_not_change_the_numbers(toy):
    probe, = build_probes(parse_probes("repeat(seq=10,batch=6,seed=3)"), toy.vocab)
    whole, split = ProbeRunner(toy, probe), ProbeRunner(toy, probe, max_tokens=21)
    assert len(split.chunks) == 6 and len(whole.chunks) == 1
    for metric, values in whole.clean().role_scores.items():
        torch.testing.assert_close(values, split.clean().role_scores[metric], atol=1e-6, rtol=0)
    head = HeadRef(0, 1)
    for mode in ("zero", "mean"):
        assert whole.effect(whole.ablate(head, mode)) == pytest.approx(
            split.effect(split.ablate(head, mode)), abs=1e-5)


def _changed_heads(model, runner, intervention, names, tol=1e-6):
    """Per hook point, which heads' activations ``intervention`` changes by more than
    ``tol`` (chunk 0)."""
    tokens = runner.chunks[0].tokens

    def capture(extra):
        seen = {}
        hooks = [(n, lambda x, hook: seen.__setitem__(hook.name, x.clone())) for n in names]
        with torch.inference_mode():
            model.bridge.run_with_hooks(tokens, fwd_hooks=extra + hooks)
        return seen

    clean, patched = capture([]), capture(runner.hooks(intervention))
    out = {}
    for name in names:
        diff = (clean[name] - patched[name]).abs()
        per_head = diff.amax(dim=(0, 2, 3)) if "pattern" in name else diff.amax(dim=(0, 1, 3))
        out[name] = (per_head > tol).tolist()
    return out


def test_path_patching_changes_only_the_named_input_of_the_named_head(toy):
    probe, = build_probes(parse_probes(SMALL), toy.vocab)
    runner = ProbeRunner(toy, probe)
    names = [f"blocks.1.attn.hook_{x}" for x in ("q", "k", "v")]
    with split_qkv_inputs(toy) as refusal:
        assert refusal is None
        changed = _changed_heads(toy, runner, runner.patch_path(
            HeadRef(0, 2), HeadRef(1, 3), "K", "zero"), names)
    for name in names:
        assert changed[name] == [name.endswith("hook_k") and h == 3 for h in range(4)], name


def test_grouped_query_path_patching_reaches_one_query_head():
    """Keys and values are shared by a group of query heads; patching the K (V) route
    into one query head changes that head's attention pattern (z) and no other's."""
    from headgraph.ingest.evidence.runnable import runnable_from_reader
    from headgraph.ingest.sources import open_source

    model = runnable_from_reader(open_source("random:llama,layers=2,heads=4,kv_heads=2"))
    probe, = build_probes(parse_probes("repeat(seq=6,batch=2,seed=0)"), model.vocab)
    runner = ProbeRunner(model, probe)
    scores, z = "blocks.1.attn.hook_pattern", "blocks.1.attn.hook_z"
    with split_qkv_inputs(model) as refusal:
        assert refusal is None
        for kind, name in (("K", scores), ("V", z), ("Q", scores)):
            changed = _changed_heads(model, runner, runner.patch_path(
                HeadRef(0, 1), HeadRef(1, 2), kind, "zero"), [name], tol=0.0)
            assert changed[name] == [False, False, True, False], kind  # not head 3


def test_ingest_with_probes_writes_evidence_in_the_same_run(tmp_path: Path):
    path = tmp_path / "cli.duckdb"
    probe = "repeat(seq=5,batch=4,seed=0)"
    result = CliRunner().invoke(app, ["ingest", "random:L2H2D16V30,ctx=16", "--db", str(path),
                                      "--probes", "repeat(seq=5,batch=4)"])
    assert result.exit_code == 0, result.output
    nodes = metric_counts(path, "node_scores", probe)
    assert nodes["loss"] == 1
    for metric in ("induction_score", "attrib_ablation_zero_dloss", "ablation_mean_dloss"):
        assert nodes[metric] == 4, metric  # every head (4 <= the default 10 confirmed)
    edges = metric_counts(path, "edge_scores", probe)
    # EMBED, POS_EMBED, L0H0, L0H1, MLP0 into the 2 heads of layer 1, by Q, K and V
    assert edges["attrib_path_mean_dloss"] == 5 * 2 * 3
    assert edges["path_mean_dloss"] == edges["path_zero_dloss"] == 20  # the default top 20
    only = CliRunner().invoke(app, ["probe", "--db", str(path), "--model",
                                    "random:L2H2D16V30,ctx=16", "--probes",
                                    "repeat(seq=5,batch=4)", "--heads", "L1H0",
                                    "--edges", "L0H1>L1H0:K", "--attribution", "none"])
    assert only.exit_code == 0, only.output
    assert metric_counts(path, "node_scores", probe) == nodes  # the same rows, replaced
    con = duckdb.connect(str(path), read_only=True)
    named = con.execute("SELECT count(*) FROM edge_scores WHERE source = 'L0H1' AND "
                        "target = 'L1H0' AND kind = 'K' AND metric LIKE 'path_%'").fetchone()[0]
    con.close()
    assert named == 2  # both modes, measured once each (added or replaced)
    assert metric_counts(path, "edge_scores", probe)["path_mean_dloss"] in (20, 21)
