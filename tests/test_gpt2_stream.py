"""The streamed GPT-2 reader folds and centres exactly as TransformerLens's bridge does."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from headgraph.errors import SourceError
from headgraph.ingest.bridge_reader import BridgeReader
from headgraph.ingest.compose import compose
from headgraph.ingest.gpt2_stream import (
    GPT2StreamReader,
    gpt2_spec,
    parse_random_shape,
    random_tensor_source,
)
from headgraph.ingest.spec import SourceInfo


def _with_real_layernorms(shape):
    """A random tensor source whose LayerNorm weights are not the identity, so the fold
    is actually exercised."""
    base = random_tensor_source(shape)

    def get(name: str) -> torch.Tensor:
        t = base(name)
        if "ln_" in name and name.endswith("weight"):
            g = torch.Generator().manual_seed(len(name))
            return 1.0 + 0.5 * torch.randn(t.shape, generator=g)
        return t

    return get


@pytest.fixture(scope="module")
def pair():
    shape = parse_random_shape("L3H4D32V50,ctx=16,seed=5")
    get = _with_real_layernorms(shape)
    cfg = GPT2Config(n_layer=3, n_head=4, n_embd=32, vocab_size=50, n_positions=16)
    cfg.architectures = ["GPT2LMHeadModel"]
    model = GPT2LMHeadModel(cfg)
    state = {}
    for key, value in model.state_dict().items():
        name = key.removeprefix("transformer.")
        if key == "lm_head.weight":
            name = "wte.weight"
        try:
            state[key] = get(name).reshape(value.shape)
        except KeyError:  # biases: irrelevant to composition, keep them random
            state[key] = value
    model.load_state_dict(state)
    from transformer_lens.model_bridge.sources._bridge_builder import build_bridge_from_module

    bridge = build_bridge_from_module(model, "GPT2LMHeadModel", hf_config=cfg)
    bridge.enable_compatibility_mode(disable_warnings=True)
    ref = BridgeReader(bridge, SourceInfo("ref", "x"), readout="unembed",
                       architecture="GPT2LMHeadModel")
    ours = GPT2StreamReader(get, gpt2_spec(shape), SourceInfo("ours", "y"))
    return ref, ours


def test_streamed_weights_equal_bridge_processing(pair):
    ref, ours = pair
    for layer in range(3):
        a, b = ref.layer(layer), ours.layer(layer)
        for name in ("W_Q", "W_K", "W_V", "W_O", "W_in", "W_out"):
            torch.testing.assert_close(getattr(b, name), getattr(a, name), atol=1e-6, rtol=1e-5)
    ga, gb = ref.globals(), ours.globals()
    for name in ("W_E", "W_U", "W_pos"):
        torch.testing.assert_close(getattr(gb, name), getattr(ga, name), atol=1e-6, rtol=1e-5)


def test_streamed_scores_equal_bridge_scores(pair):
    ref, ours = pair
    a, b = compose(ref), compose(ours)
    assert a.nodes.names == b.nodes.names
    np.testing.assert_array_equal(a.edges.source, b.edges.source)
    np.testing.assert_array_equal(a.edges.target, b.edges.target)
    np.testing.assert_allclose(a.edges.score, b.edges.score, atol=1e-5)
    for metric in a.metrics:
        np.testing.assert_allclose(a.metrics[metric], b.metrics[metric], atol=1e-4, rtol=1e-4)


def test_random_tensors_are_reproducible_per_name():
    get = random_tensor_source(parse_random_shape("L2H2D8V10"))
    again = random_tensor_source(parse_random_shape("L2H2D8V10"))
    other = random_tensor_source(parse_random_shape("L2H2D8V10,seed=1"))
    name = "h.1.attn.c_attn.weight"
    assert torch.equal(get(name), again(name))
    assert not torch.equal(get(name), other(name))


@pytest.mark.parametrize("text", ["gpt3", "L0H1D8", "L2H3D8", "L2H2D8,seed=x", "L2H2D8,bogus=1"])
def test_bad_random_shapes_are_refused(text):
    with pytest.raises(SourceError):
        parse_random_shape(text)
