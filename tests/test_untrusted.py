"""Checkpoints from strangers: loading never runs code from a model file, and every
malformed checkpoint gets one clear error with the database unchanged."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
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
