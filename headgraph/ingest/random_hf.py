"""Random-weight models of every family, built offline from the transformers config class.

``random:FAMILY[,layers=N][,heads=N][,kv_heads=N][,d_model=N][,d_mlp=N][,vocab=N][,ctx=N]
[,seed=N]`` builds a seeded, randomly initialised HF model (the architecture's own init)
and reads it through the TransformerBridge, so scores on it are checked against the same
reference as real checkpoints. Presets give published shapes to size work before a
download (``headgraph plan random:pythia-1.4b``).

=========  ======================  ===================================================
family     HF class                notes
=========  ======================  ===================================================
gpt2       GPT2LMHeadModel         learned positions, LayerNorm
neox       GPTNeoXForCausalLM      rotary, parallel attention + MLP (Pythia)
gptj       GPTJForCausalLM         rotary, parallel attention + MLP
opt        OPTForCausalLM          learned positions (offset 2), LayerNorm
llama      LlamaForCausalLM        rotary, RMSNorm, gated MLP, grouped-query attention
mistral    MistralForCausalLM      as llama (sliding window ignored: content circuits)
qwen2      Qwen2ForCausalLM        as llama, QKV biases
bert       BertForMaskedLM         encoder, post-LN (LayerNorm cannot be folded)
=========  ======================  ===================================================
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from headgraph.errors import SourceError, UnsupportedArchitectureError
from headgraph.ingest.sanity import check_shape


@dataclass(frozen=True)
class FamilyShape:
    family: str
    layers: int = 2
    heads: int = 4
    kv_heads: int | None = None
    d_model: int = 64
    d_mlp: int | None = None
    vocab: int = 128
    ctx: int = 64
    seed: int = 0
    extra: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def n_kv(self) -> int:
        return self.kv_heads or self.heads


PRESETS: dict[str, FamilyShape] = {
    "pythia-160m": FamilyShape("neox", 12, 12, None, 768, 3072, 50304, 2048),
    "pythia-1.4b": FamilyShape("neox", 24, 16, None, 2048, 8192, 50304, 2048),
    "qwen2-0.5b": FamilyShape("qwen2", 24, 14, 2, 896, 4864, 151936, 32768),
    "llama-3-8b": FamilyShape("llama", 32, 32, 8, 4096, 14336, 128256, 8192),
}

MAX_BRIDGE_PARAMETERS = 2_000_000_000
FAMILIES = ("gpt2", "neox", "gptj", "opt", "llama", "mistral", "qwen2", "bert")
_OPTIONS = {"layers", "heads", "kv_heads", "d_model", "d_mlp", "vocab", "ctx", "seed"}


def parse_family_shape(text: str) -> FamilyShape:
    """``llama,layers=2,heads=4,kv_heads=2`` or a preset name, with options."""
    name, *opts = [p.strip() for p in text.split(",")]
    if name in PRESETS:
        base = PRESETS[name]
    elif name in FAMILIES:
        base = FamilyShape(name)
    else:
        raise SourceError(
            f"random:{text}: unknown family or preset {name!r}. Families: "
            f"{', '.join(FAMILIES)}; presets: {', '.join(PRESETS)}; or a GPT-2 shape "
            "like random:L4H8D256."
        )
    values = {k: getattr(base, k) for k in _OPTIONS}
    for opt in opts:
        key, _, value = opt.partition("=")
        if key not in _OPTIONS or not value.isdigit():
            raise SourceError(f"random:{text}: bad option {opt!r}; use "
                              f"{', '.join(sorted(_OPTIONS))} with whole numbers.")
        values[key] = int(value)
    shape = FamilyShape(base.family, **values)
    check_shape(f"random:{text}", layers=shape.layers, heads=shape.heads,
                kv_heads=shape.n_kv, d_model=shape.d_model, d_mlp=shape.d_mlp or None,
                vocab=shape.vocab, ctx=shape.ctx)
    if shape.family in ("gpt2", "neox", "gptj", "opt", "bert") and shape.n_kv != shape.heads:
        raise UnsupportedArchitectureError(
            f"random:{text}: {shape.family} has no grouped-query attention; drop kv_heads.")
    return shape


def hf_config(shape: FamilyShape):
    """The transformers config (and model class name) for a family shape."""
    import transformers as tf

    s = shape
    d_mlp = s.d_mlp or 4 * s.d_model
    common = {"vocab_size": s.vocab}
    if s.family == "gpt2":
        cfg = tf.GPT2Config(n_layer=s.layers, n_head=s.heads, n_embd=s.d_model, n_inner=d_mlp,
                            n_positions=s.ctx, **common)
        return cfg, "GPT2LMHeadModel"
    if s.family == "neox":
        cfg = tf.GPTNeoXConfig(num_hidden_layers=s.layers, num_attention_heads=s.heads,
                               hidden_size=s.d_model, intermediate_size=d_mlp,
                               max_position_embeddings=s.ctx, rotary_pct=0.25,
                               use_parallel_residual=True, **common)
        return cfg, "GPTNeoXForCausalLM"
    if s.family == "gptj":
        cfg = tf.GPTJConfig(n_layer=s.layers, n_head=s.heads, n_embd=s.d_model, n_inner=d_mlp,
                            n_positions=s.ctx, rotary_dim=max(2, (s.d_model // s.heads) // 4),
                            **common)
        return cfg, "GPTJForCausalLM"
    if s.family == "opt":
        cfg = tf.OPTConfig(num_hidden_layers=s.layers, num_attention_heads=s.heads,
                           hidden_size=s.d_model, ffn_dim=d_mlp, word_embed_proj_dim=s.d_model,
                           max_position_embeddings=s.ctx, **common)
        return cfg, "OPTForCausalLM"
    if s.family == "bert":
        cfg = tf.BertConfig(num_hidden_layers=s.layers, num_attention_heads=s.heads,
                            hidden_size=s.d_model, intermediate_size=d_mlp,
                            max_position_embeddings=s.ctx, **common)
        return cfg, "BertForMaskedLM"
    classes = {"llama": (tf.LlamaConfig, "LlamaForCausalLM"),
               "mistral": (tf.MistralConfig, "MistralForCausalLM"),
               "qwen2": (tf.Qwen2Config, "Qwen2ForCausalLM")}
    config_cls, arch = classes[s.family]
    cfg = config_cls(num_hidden_layers=s.layers, num_attention_heads=s.heads,
                     num_key_value_heads=s.n_kv, hidden_size=s.d_model,
                     intermediate_size=d_mlp, max_position_embeddings=s.ctx, **common)
    return cfg, arch


def n_parameters(shape: FamilyShape) -> int:
    """Approximate parameter count (embeddings counted once when tied)."""
    d, L, H, kv = shape.d_model, shape.layers, shape.heads, shape.n_kv
    dh = d // H
    d_mlp = shape.d_mlp or 4 * d
    gated = shape.family in ("llama", "mistral", "qwen2")
    attn = d * dh * (2 * H + 2 * kv)
    mlp = d * d_mlp * (3 if gated else 2)
    return L * (attn + mlp) + shape.vocab * d * (1 if shape.family in ("gpt2", "qwen2") else 2)


def random_family_reader(text: str):
    """A bridge reader over a seeded random HF model of the given family shape."""
    import torch
    import transformers

    from headgraph.ingest.bridge_reader import BridgeReader
    from headgraph.ingest.spec import SourceInfo

    shape = parse_family_shape(text)
    if n_parameters(shape) > MAX_BRIDGE_PARAMETERS:
        raise SourceError(
            f"random:{text}: {n_parameters(shape) / 1e9:.1f}B parameters would not fit in memory "
            "as an HF model wrapped in a bridge (about 3x the fp32 weights). `headgraph plan "
            f"random:{text}` sizes the ingest; benchmarks/bench_architectures.py scores this "
            "shape's attention from factors generated layer by layer."
        )
    cfg, arch = hf_config(shape)
    cfg.architectures = [arch]
    torch.manual_seed(shape.seed)
    model = getattr(transformers, arch)(cfg)
    model.eval()
    from transformer_lens.model_bridge.sources._bridge_builder import build_bridge_from_module

    bridge = build_bridge_from_module(model, arch, hf_config=cfg)
    bridge.enable_compatibility_mode(disable_warnings=True)
    digest = hashlib.sha256(f"headgraph-random-hf:{shape}".encode()).hexdigest()
    # every class here has an LM head (BertForMaskedLM's is randomly initialised too)
    return BridgeReader(bridge, SourceInfo(source=f"random:{text}", weights_digest=digest),
                        readout="unembed", architecture=arch)
