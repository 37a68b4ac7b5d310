"""Attribution patching against exact patching (headgraph.ingest.evidence.attribution).

Attribution is the first-order term of the exact effect along the ablation's direction:
``∇M · (â - a) = d/dε M(a + ε (â - a))`` at 0. The exact interventions take a step
``ε`` (``scale``), so their finite difference must equal the attribution to within the
second-order term: that checks every gradient, every write difference and (on a
grouped-query model) the split of the shared K/V copies per query head. How far the
first-order numbers are from the *full* ablation is a property of the model, reported
as the stored agreement, and checked on the toy for what it must get right.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from headgraph.ingest.evidence.agreement import agreement, spearman
from headgraph.ingest.evidence.attribution import attribute
from headgraph.ingest.evidence.causal import HeadRef, ProbeRunner, SourceRef, split_qkv_inputs
from headgraph.ingest.evidence.probes import build_probes, parse_probes
from headgraph.ingest.evidence.runnable import RunnableModel, load_runnable, model_vocab
from headgraph.schema.metrics import estimate_of, metric_method, quantity_of

EPS = 1e-3


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def finite_difference(runner: ProbeRunner, make, eps: float = EPS) -> float:
    return runner.effect(make(eps)) / eps


def test_attribution_is_the_derivative_of_the_exact_effect_on_the_toy():
    toy = load_runnable("toy")
    probe, = build_probes(parse_probes("repeat(seq=10,batch=8,seed=0)"), toy.vocab)
    runner = ProbeRunner(toy, probe)
    with split_qkv_inputs(toy):
        attr = attribute(runner)
        for mode in ("zero", "mean"):
            for head in ("L0H1", "L0H2", "L1H3"):
                want = finite_difference(runner, lambda e, h=head, m=mode: runner.ablate(
                    HeadRef.parse(h), m, e))
                assert attr.nodes[mode][head] == pytest.approx(want, abs=2e-3, rel=0.02), \
                    (mode, head)
            for source, target, kind in (("L0H2", "L1H3", "K"), ("EMBED", "L1H0", "Q"),
                                         ("POS_EMBED", "L1H1", "K"), ("L0H0", "L1H2", "V")):
                want = finite_difference(runner, lambda e, s=source, t=target, k=kind, m=mode:
                                         runner.patch_path(SourceRef(s), HeadRef.parse(t), k,
                                                           m, e))
                got = attr.edges[mode][(source, target, kind)]
                assert got == pytest.approx(want, abs=2e-3, rel=0.02), (mode, source, target)
    # every Q/K/V edge into layer 1 has a number: 7 writers x 4 heads x 3 kinds
    assert len(attr.edges["mean"]) == 7 * 4 * 3


def sharp_grouped_model() -> RunnableModel:
    """A random Llama with grouped-query attention (4 query heads, 2 KV heads) whose
    attention is sharp enough for keys to matter, in float64."""
    import transformers as tf
    from transformer_lens.model_bridge.sources._bridge_builder import build_bridge_from_module

    torch.manual_seed(0)
    cfg = tf.LlamaConfig(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         hidden_size=64, intermediate_size=128, vocab_size=64,
                         max_position_embeddings=64)
    cfg.architectures = ["LlamaForCausalLM"]
    hf = tf.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for layer in hf.model.layers:
            for proj, factor in (("q_proj", 15), ("k_proj", 15), ("v_proj", 10),
                                 ("o_proj", 10)):
                getattr(layer.self_attn, proj).weight.mul_(factor)
    hf = hf.double()
    bridge = build_bridge_from_module(hf, "LlamaForCausalLM", hf_config=cfg)
    bridge.enable_compatibility_mode(disable_warnings=True)
    return RunnableModel(bridge=bridge, source="test", weights_digest="",
                         architecture="LlamaForCausalLM", causal_lm=True,
                         vocab=model_vocab(bridge, None))


@pytest.mark.slow
def test_grouped_query_edges_are_measured_through_one_query_head():
    """Heads L1H2 and L1H3 share a KV head: their K and V numbers differ, and each equals
    the derivative of patching that head's own copy of the keys or values."""
    model = sharp_grouped_model()
    probe, = build_probes(parse_probes("repeat(seq=6,batch=4,seed=0)"), model.vocab)
    runner = ProbeRunner(model, probe)
    with split_qkv_inputs(model):
        attr = attribute(runner)
        assert attr.notes == []
        for mode in ("zero", "mean"):
            for source, target, kind in (("L0H0", "L1H2", "K"), ("L0H0", "L1H3", "K"),
                                         ("L0H1", "L1H0", "V"), ("L0H1", "L1H1", "V")):
                want = finite_difference(runner, lambda e, s=source, t=target, k=kind, m=mode:
                                         runner.patch_path(SourceRef(s), HeadRef.parse(t), k,
                                                           m, e), eps=1e-4)
                got = attr.edges[mode][(source, target, kind)]
                assert got == pytest.approx(want, abs=1e-4, rel=0.05), (mode, source, target)
    for kind, (a, b) in (("K", ("L1H2", "L1H3")), ("V", ("L1H0", "L1H1"))):
        source = "L0H0" if kind == "K" else "L0H1"
        assert attr.edges["zero"][(source, a, kind)] != pytest.approx(
            attr.edges["zero"][(source, b, kind)], rel=0.05)


def test_agreement_statistics():
    assert spearman(np.array([1.0, 2, 3, 4]), np.array([10.0, 20, 30, 40])) == pytest.approx(1)
    assert spearman(np.array([1.0, 2, 3]), np.array([3.0, 2, 1])) == pytest.approx(-1)
    assert spearman(np.array([1.0, 2]), np.array([1.0, 2])) is None
    assert spearman(np.array([1.0, 1, 2, 2]), np.array([1.0, 1, 2, 2])) == pytest.approx(1)
    estimate = -np.arange(12.0, 0, -1)  # signs do not matter, sizes do
    exact = np.arange(12.0, 0, -1)
    exact[[9, 10]] = exact[[10, 9]]  # the 10th and 11th swap places
    a = agreement("p", "ablation_mean_dloss", "attribution", estimate, exact)
    assert (a.n, a.k, a.overlap) == (12, 10, 9)
    assert a.spearman == pytest.approx(-spearman(-estimate, exact))


def test_metric_names_say_their_method():
    assert metric_method("ablation_mean_dloss") == "exact"
    assert metric_method("attrib_path_zero_dloss") == "attribution"
    assert metric_method("ig_ablation_mean_dloss") == "integrated_gradients"
    assert metric_method("induction_share") == "patterns"
    assert metric_method("eap-ig:score") == "tool"
    assert quantity_of(estimate_of("path_mean_dloss", "attribution")) == "path_mean_dloss"
