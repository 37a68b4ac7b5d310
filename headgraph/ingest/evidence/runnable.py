"""A model that can be *run* (not only read): the bridge, its tokenizer and vocabulary.

Evidence needs forward passes, so it needs the model itself: for a Hugging Face directory
(``toy``, a local path, a cached hub name) the compatibility-mode TransformerBridge that the
weight reader already built; for a GGUF file the bridge over transformers' load of it
(:func:`headgraph.ingest.gguf_reader.bridge_from_gguf`, with the file's tokenizer); for a
``random:`` GPT-2 shape an HF ``GPT2LMHeadModel`` filled
with exactly the tensors the streamed reader reads (same seeded generator, zero biases,
identity LayerNorms), wrapped with ``build_bridge_from_module``.

Decoders (``*LMHeadModel``, ``*ForCausalLM``) are *causal LMs*: their causal metric is a
next-token loss. Everything else (BERT/MiniLM encoders) is scored through the final hidden
state instead (see :mod:`headgraph.ingest.evidence.causal`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from headgraph.errors import BadInputError, SourceError
from headgraph.ingest.evidence.probes import Vocab
from headgraph.ingest.reader import WeightReader

_CAUSAL_SUFFIXES = ("LMHeadModel", "ForCausalLM")
_BRACKETED = re.compile(r"^(\[.*\]|<.*>)$")  # [unused12], [CLS], <|endoftext|>, <pad>...


@dataclass(frozen=True)
class RunnableModel:
    """A bridge ready for hooked forward passes, with what probes and metrics need."""

    bridge: Any
    source: str
    weights_digest: str
    architecture: str
    causal_lm: bool
    vocab: Vocab

    @property
    def n_layers(self) -> int:
        return int(self.bridge.cfg.n_layers)

    @property
    def n_heads(self) -> int:
        return int(self.bridge.cfg.n_heads)

    @property
    def n_kv_heads(self) -> int:
        """Key/value heads (fewer than ``n_heads`` under grouped-query attention)."""
        return int(self.bridge.W_K.shape[1])

    def source_hooks(self) -> list[str]:
        """Where each writer that Q/K/V edges start from writes, in residual order, for
        the writers this bridge exposes: ``hook_embed``, ``hook_pos_embed``, then per layer
        ``blocks.{l}.attn.hook_z`` (heads) and ``blocks.{l}.hook_mlp_out``."""
        have = self.bridge.hook_dict
        names = [n for n in ("hook_embed", "hook_pos_embed") if n in have]
        if getattr(self.bridge.cfg, "positional_embedding_type", "standard") != "standard":
            names = [n for n in names if n != "hook_pos_embed"]  # rotary: not a residual write
        for layer in range(self.n_layers):
            names += [n for n in (f"blocks.{layer}.attn.hook_z", f"blocks.{layer}.hook_mlp_out")
                      if n in have]
        return names


def _source_dir(source: str) -> Path | None:
    if source == "toy" or source.startswith("toy@"):
        from headgraph.toy import checkpoint_dir

        return checkpoint_dir(None if source == "toy" else int(source[4:]))
    path = Path(source).expanduser()
    return path if path.is_dir() else None


def load_tokenizer(folder: Path | None) -> Any:
    """The model's own tokenizer from its folder, or ``None`` if it ships none."""
    if folder is None or not any((folder / f).exists() for f in
                                 ("tokenizer.json", "vocab.txt", "tokenizer_config.json")):
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception:  # a broken tokenizer leaves token-id probes usable
        return None


def model_vocab(bridge: Any, tokenizer: Any) -> Vocab:
    """Vocabulary facts for probes: BOS (or CLS) id and the ordinary (non-special) ids."""
    cfg = bridge.cfg
    d_vocab, n_ctx = int(cfg.d_vocab), int(cfg.n_ctx)
    special: set[int] = set()
    bos = None
    if tokenizer is not None:
        special |= {int(i) for i in tokenizer.all_special_ids}
        names = tokenizer.convert_ids_to_tokens(list(range(min(d_vocab, len(tokenizer)))))
        special |= {i for i, t in enumerate(names) if t is not None and _BRACKETED.match(t)}
        bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None \
            else tokenizer.cls_token_id
    hf = getattr(bridge, "original_model", None)
    hf_cfg = getattr(hf, "config", None)
    for attr in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = getattr(hf_cfg, attr, None)
        if isinstance(value, int) and 0 <= value < d_vocab:
            special.add(value)
            if attr == "bos_token_id" and bos is None:
                bos = value
    keep = torch.ones(d_vocab, dtype=torch.bool)
    keep[[i for i in special if 0 <= i < d_vocab]] = False
    if bos is not None and not 0 <= bos < d_vocab:
        bos = None
    return Vocab(d_vocab=d_vocab, n_ctx=n_ctx, bos=bos, ordinary=keep.nonzero().flatten(),
                 tokenizer=tokenizer)


def random_gpt2_bridge(text: str) -> Any:
    """A runnable HF GPT-2 with the weights of ``random:<text>`` (see the module docstring)."""
    from transformer_lens.model_bridge.sources._bridge_builder import build_bridge_from_module
    from transformers import GPT2Config, GPT2LMHeadModel

    from headgraph.ingest.gpt2_stream import parse_random_shape, random_tensor_source

    shape = parse_random_shape(text)
    config = GPT2Config(vocab_size=shape.d_vocab, n_positions=shape.n_ctx, n_embd=shape.d_model,
                        n_layer=shape.n_layers, n_head=shape.n_heads, resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=shape.d_vocab - 1,
                        eos_token_id=shape.d_vocab - 1)
    config._attn_implementation = "eager"
    get = random_tensor_source(shape)
    model = GPT2LMHeadModel(config)
    state = {}
    for name, param in model.state_dict().items():
        key = name.removeprefix("transformer.")
        if key == "lm_head.weight":
            continue  # tied to wte
        try:
            state[name] = get(key)
        except KeyError:  # biases: zero, as HF initialises them
            state[name] = torch.zeros(param.shape)
    model.load_state_dict(state, strict=False)
    model.eval()
    bridge = build_bridge_from_module(model, "GPT2LMHeadModel", hf_config=config)
    bridge.enable_compatibility_mode(disable_warnings=True)
    return bridge


def runnable_from_reader(reader: WeightReader) -> RunnableModel:
    """The runnable model behind an open weight reader (reusing its bridge if it has one)."""
    source = reader.info.source
    bridge = getattr(reader, "bridge", None)
    folder, tokenizer = None, None
    if source.lower().endswith(".gguf"):  # run through transformers' load of the file
        from headgraph.ingest.gguf_reader import bridge_from_gguf

        if bridge is None:
            bridge, tokenizer, _ = bridge_from_gguf(Path(source))
        else:
            tokenizer = getattr(bridge, "tokenizer", None)
    elif bridge is None and source.startswith("random:"):
        bridge = random_gpt2_bridge(source[len("random:"):])
    elif bridge is None:
        raise BadInputError(f"{source}: this source is read tensor by tensor and cannot be run, "
                            "so probes cannot be measured on it.")
    else:
        folder = _source_dir(source)
    arch = reader.spec.architecture
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return RunnableModel(
        bridge=bridge,
        source=source,
        weights_digest=reader.info.weights_digest,
        architecture=arch,
        causal_lm=arch.endswith(_CAUSAL_SUFFIXES),
        vocab=model_vocab(bridge, tokenizer or load_tokenizer(folder)),
    )


def load_runnable(source: str, digest: str | None = None, *,
                  allow_pickle: bool = False) -> RunnableModel:
    """Open ``source`` (as stored in ``models.source``) for running; with ``digest``,
    refuse weights that differ from the ones ingested."""
    from headgraph.ingest.sources import open_source

    reader = open_source(source, allow_pickle=allow_pickle)
    if digest is not None and reader.info.weights_digest != digest:
        reader.close()
        raise SourceError(
            f"{source}: its weights changed since the model was ingested (digest "
            f"{reader.info.weights_digest[:12]}, stored {digest[:12]}); evidence from these "
            "weights would not describe the stored graph. Re-ingest it with --replace."
        )
    return runnable_from_reader(reader)
