"""Checkpoints from strangers: loading never runs code from a model file, and every
malformed checkpoint gets one clear error with the database unchanged."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from support import said
from transformers import GPT2Config, GPT2LMHeadModel
from typer.testing import CliRunner

from headgraph.cli import app
from headgraph.errors import HeadgraphError, SourceError
from headgraph.ingest.pipeline import ingest


def _save(path: Path, **overrides) -> Path:
    cfg = GPT2Config(n_layer=2, n_head=2, n_embd=16, vocab_size=20, n_positions=8)
    GPT2LMHeadModel(cfg).save_pretrained(path)
    if overrides:
        config = json.loads((path / "config.json").read_text())
        config.update(overrides)
        (path / "config.json").write_text(json.dumps(config))
    return path


class _Exploit:
    """Unpickling this runs ``open(marker, 'w')``: the canary for unsafe loading."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _pickle_checkpoint(path: Path, marker: Path) -> Path:
    _save(path)
    (path / "model.safetensors").unlink()
    with (path / "pytorch_model.bin").open("wb") as f:
        pickle.dump({"transformer.wte.weight": _Exploit(str(marker))}, f)
    return path


def test_pickle_weights_are_refused_without_the_flag(tmp_path: Path):
    marker = tmp_path / "pwned"
    src = _pickle_checkpoint(tmp_path / "m", marker)
    with pytest.raises(SourceError, match="--allow-pickle"):
        ingest(str(src), tmp_path / "db.duckdb")
    assert not marker.exists() and not (tmp_path / "db.duckdb").exists()


def test_a_crafted_pickle_never_runs_even_with_the_flag(tmp_path: Path):
    marker = tmp_path / "pwned"
    src = _pickle_checkpoint(tmp_path / "m", marker)
    with pytest.raises(SourceError):
        ingest(str(src), tmp_path / "db.duckdb", allow_pickle=True)
    assert not marker.exists(), "unpickling ran code from the checkpoint"


def test_truncated_safetensors_is_refused(tmp_path: Path):
    src = _save(tmp_path / "m")
    weights = src / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(SourceError, match="could not be loaded"):
        ingest(str(src), tmp_path / "db.duckdb")
    assert not (tmp_path / "db.duckdb").exists()


def test_config_that_disagrees_with_the_weights_is_refused(tmp_path: Path):
    src = _save(tmp_path / "m", n_embd=32)
    with pytest.raises(SourceError):
        ingest(str(src), tmp_path / "db.duckdb")


@pytest.mark.parametrize("overrides", [{"n_layer": 0}, {"n_head": 0}],
                         ids=["zero-layers", "zero-heads"])
def test_degenerate_configs_are_refused(tmp_path: Path, overrides):
    src = _save(tmp_path / "m")
    config = json.loads((src / "config.json").read_text())
    config.update(overrides)
    (src / "config.json").write_text(json.dumps(config))
    with pytest.raises(HeadgraphError):
        ingest(str(src), tmp_path / "db.duckdb")
    result = CliRunner().invoke(app, ["ingest", str(src), "--db", str(tmp_path / "c.duckdb")])
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_remote_code_is_never_trusted(tmp_path: Path):
    """A config asking for custom code (auto_map) is not executed."""
    src = _save(tmp_path / "m")
    (src / "evil.py").write_text(f"open({str(tmp_path / 'pwned')!r}, 'w')\n")
    config = json.loads((src / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "evil.Evil", "AutoConfig": "evil.Cfg"}
    (src / "config.json").write_text(json.dumps(config))
    try:
        ingest(str(src), tmp_path / "db.duckdb")
    except HeadgraphError:
        pass
    assert not (tmp_path / "pwned").exists()
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    assert torch.__version__  # (the loader imported torch; nothing from the checkpoint)


# --- configs checked against sense and the weights, before anything is allocated -------

@pytest.mark.parametrize(("overrides", "says"), [
    ({"n_layer": 10**9}, "over the largest"),
    ({"n_layer": 5}, "says 5 layers but the weights hold 2"),
    ({"n_inner": 10**6}, "implies at least"),
    ({"vocab_size": 10**6}, "says 1,000,000 tokens"),
    ({"n_positions": 10**9}, "over the largest"),
    ({"n_head": 3}, "does not divide into 3 heads"),
], ids=["a-billion-layers", "more-layers-than-weights", "huge-mlp", "huge-vocab",
        "huge-context", "heads-not-dividing"])
def test_a_config_that_lies_is_refused_before_anything_is_built(tmp_path: Path, overrides,
                                                                 says):
    import time

    src = _save(tmp_path / "m", **overrides)
    t = time.perf_counter()
    result = CliRunner().invoke(app, ["ingest", str(src), "--db", str(tmp_path / "c.duckdb")])
    assert time.perf_counter() - t < 30  # at once (the billion layers took 161 s and 3.2 GB)
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    line = [x for x in result.output.splitlines() if "error [" in x]
    assert len(line) == 1 and "[BAD_SOURCE]" in line[0] and says in line[0], result.output
    assert not (tmp_path / "c.duckdb").exists()


def _tiny(kind: str, path: Path) -> Path:
    import transformers as tf

    if kind == "t5":
        cfg = tf.T5Config(vocab_size=32, d_model=16, d_kv=4, d_ff=32, num_layers=1,
                          num_heads=4)
        model = tf.T5ForConditionalGeneration(cfg)
    elif kind == "bart":
        cfg = tf.BartConfig(vocab_size=32, d_model=16, encoder_layers=1, decoder_layers=1,
                            encoder_attention_heads=2, decoder_attention_heads=2,
                            encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=16)
        model = tf.BartForConditionalGeneration(cfg)
    else:
        cfg = tf.MixtralConfig(vocab_size=32, hidden_size=16, intermediate_size=32,
                               num_hidden_layers=1, num_attention_heads=4,
                               num_key_value_heads=2, num_local_experts=4,
                               num_experts_per_tok=2, max_position_embeddings=16)
        model = tf.MixtralForCausalLM(cfg)
    model.save_pretrained(path)
    return path


@pytest.mark.parametrize(("kind", "says"), [("t5", "encoder-decoder"),
                                            ("bart", "encoder-decoder"),
                                            ("mixtral", "mixture-of-experts")])
def test_encoder_decoders_and_mixtures_of_experts_are_refused_with_one_line(
        tmp_path: Path, kind: str, says: str):
    src = _tiny(kind, tmp_path / kind)
    result = CliRunner().invoke(app, ["ingest", str(src), "--db", str(tmp_path / "c.duckdb")])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    lines = said(result.output)
    assert len(lines) == 1 and "[UNSUPPORTED_ARCHITECTURE]" in lines[0] and says in lines[0]
    assert not (tmp_path / "c.duckdb").exists()


@pytest.mark.parametrize("source", ["random:L1000000000H8D256", "random:L2H8D256V0",
                                    "random:llama,layers=1000000000",
                                    "random:gpt2,heads=999999999"])
def test_random_shapes_that_make_no_sense_are_refused_at_once(tmp_path: Path, source: str):
    with pytest.raises(SourceError):
        ingest(source, tmp_path / "db.duckdb")
    assert not (tmp_path / "db.duckdb").exists()
