"""Configs checked against sense before anything is allocated.

A model is built from its ``config.json`` first and filled from its weights after, so a
config that lies allocates what it says: ``n_layer: 1000000000`` took 161 s and 3.2 GB
before failing with "the weights could not be loaded ()". Before any model is built:

* every shape number is within sane bounds (:func:`check_shape`: at least 1, at most
  :data:`LIMITS`, heads dividing the width), for ``random:`` shapes and configs alike;
* a checkpoint's config must agree with its weights file, read from the safetensors
  headers only (:func:`weights_layout`, a few KB): the layers the tensor names number,
  the embedding's width and vocabulary, and the parameters the config implies against
  those the file holds (:func:`check_against_weights`);
* architectures whose scores would mean nothing are refused with one line
  (:func:`refuse_unscorable`): encoder-decoders (T5, BART: two residual streams) and
  mixture-of-experts MLPs (Mixtral: routed MLPs), as the README says.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from headgraph.errors import SourceError, UnsupportedArchitectureError

LIMITS = {"layers": 1024, "heads": 4096, "kv_heads": 4096, "d_model": 1 << 17,
          "d_mlp": 1 << 20, "vocab": 1 << 24, "ctx": 1 << 24}
"""Largest value of each shape number headgraph accepts (the largest published models
have 126 layers, 128 heads, a width of 16,384 and 256k tokens)."""
HEADER_MAX = 100 << 20  # a safetensors header over 100 MB is not a real one
SLACK = 1.25  # a config may imply this much more than the file holds (biases, buffers)
_LAYER = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)\.")
_EMBEDDING = ("embed_tokens.weight", "wte.weight", "word_embeddings.weight",
              "embed_in.weight", "tok_embeddings.weight")
MOE_KEYS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts",
            "num_experts_per_tok")


def check_shape(where: str, **numbers: int | None) -> None:
    """Refuse a shape number below 1 or over its :data:`LIMITS` (``None``: not given), and
    heads that do not divide the width or key/value heads that do not divide the heads."""
    for name, value in numbers.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SourceError(f"{where}: {name} must be a whole number >= 1, not {value!r}.")
        if value > LIMITS[name]:
            raise SourceError(f"{where}: {name} = {value:,} is over the largest headgraph "
                              f"reads ({LIMITS[name]:,}); the config is wrong.")
    d, heads, kv = numbers.get("d_model"), numbers.get("heads"), numbers.get("kv_heads")
    if d and heads and d % heads:
        raise SourceError(f"{where}: a width of {d} does not divide into {heads} heads.")
    if heads and kv and heads % kv:
        raise SourceError(f"{where}: {heads} heads do not share {kv} key/value heads evenly.")


@dataclass(frozen=True)
class WeightsLayout:
    """What a weights file's headers say: tensor shapes by name."""

    shapes: dict[str, tuple[int, ...]]

    @property
    def n_parameters(self) -> int:
        total = 0
        for shape in self.shapes.values():
            n = 1
            for d in shape:
                n *= d
            total += n
        return total

    @property
    def layers(self) -> int:
        """Numbered blocks (the most common numbering: ``model.layers.N.``...)."""
        found = {int(m.group(1)) for name in self.shapes if (m := _LAYER.search(name))}
        return len(found)

    def embedding(self) -> tuple[int, int] | None:
        """(vocabulary, width) of the token embedding, if the file names one."""
        for name, shape in self.shapes.items():
            if name.endswith(_EMBEDDING) and len(shape) == 2:
                return shape[0], shape[1]
        return None


def weights_layout(files: Iterable[Path]) -> WeightsLayout | None:
    """Tensor shapes from safetensors headers (``None`` when a file is not safetensors:
    pickles are not opened here). :class:`SourceError` for a header that is not one."""
    shapes: dict[str, tuple[int, ...]] = {}
    for path in files:
        if path.suffix != ".safetensors":
            return None
        with path.open("rb") as f:
            head = f.read(8)
            size = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
            if not 0 < size <= min(HEADER_MAX, path.stat().st_size - 8):
                raise SourceError(f"{path}: not a safetensors file (its header length is "
                                  "wrong); the weights could not be read.")
            try:
                header = json.loads(f.read(size))
            except ValueError:
                raise SourceError(f"{path}: not a safetensors file (its header is not "
                                  "JSON); the weights could not be read.") from None
        for name, info in header.items():
            if name != "__metadata__" and isinstance(info, dict):
                shape = info.get("shape")
                if isinstance(shape, list) and all(isinstance(d, int) and d >= 0
                                                   for d in shape):
                    shapes[name] = tuple(shape)
    return WeightsLayout(shapes)


def config_shape(config: Any) -> dict[str, int | None]:
    """The shape numbers of a transformers config (its standard attribute names)."""
    def get(*names: str) -> int | None:
        for name in names:
            value = getattr(config, name, None)
            if value is not None:
                return value
        return None

    d = get("hidden_size", "n_embd", "d_model")
    return {"layers": get("num_hidden_layers", "n_layer"),
            "heads": get("num_attention_heads", "n_head"),
            "kv_heads": get("num_key_value_heads"),
            "d_model": d,
            "d_mlp": get("intermediate_size", "n_inner", "ffn_dim")
            or (4 * d if isinstance(d, int) else None),
            "vocab": get("vocab_size"),
            "ctx": get("max_position_embeddings", "n_positions")}


def check_against_weights(where: str, shape: dict[str, int | None],
                          layout: WeightsLayout) -> None:
    """Refuse a config that disagrees with its weights file (see the module doc)."""
    layers, d, vocab = shape["layers"], shape["d_model"], shape["vocab"]
    held = layout.layers
    if held and layers is not None and layers != held:
        raise SourceError(f"{where}: config.json says {layers:,} layers but the weights hold "
                          f"{held}; the config does not belong to these weights.")
    embedding = layout.embedding()
    if embedding is not None:
        if d is not None and embedding[1] != d:
            raise SourceError(f"{where}: config.json says a width of {d:,} but the weights' "
                              f"token embedding is {embedding[1]} wide; the config does not "
                              "belong to these weights.")
        if vocab is not None and vocab > embedding[0]:
            raise SourceError(f"{where}: config.json says {vocab:,} tokens but the weights' "
                              f"embedding has {embedding[0]}; the config does not belong to "
                              "these weights.")
    implied = implied_parameters(shape)
    if implied and implied > SLACK * layout.n_parameters + 1_000_000:
        raise SourceError(f"{where}: config.json implies at least {implied:,} parameters but "
                          f"the weights hold {layout.n_parameters:,}; the config does not "
                          "belong to these weights.")


def implied_parameters(shape: dict[str, int | None]) -> int:
    """A lower bound of the parameters a config implies: per layer the query and output
    projections (2 d^2) and two MLP matrices (2 d d_mlp), and the token embedding."""
    layers, d = shape["layers"] or 0, shape["d_model"] or 0
    d_mlp, vocab = shape["d_mlp"] or 0, shape["vocab"] or 0
    return layers * (2 * d * d + 2 * d * d_mlp) + vocab * d


def refuse_unscorable(config: Any, architecture: str, where: str) -> None:
    """One line for encoder-decoders and mixture-of-experts models (see the module doc)."""
    if getattr(config, "is_encoder_decoder", False):
        raise UnsupportedArchitectureError(
            f"{where}: {architecture} is an encoder-decoder (like T5 and BART): its two "
            "residual streams have no single composition score; headgraph reads decoder-only "
            "and encoder-only models.")
    experts = [k for k in MOE_KEYS if (getattr(config, k, None) or 0) > 1]
    if experts or "moe" in architecture.lower() or "mixtral" in architecture.lower():
        raise UnsupportedArchitectureError(
            f"{where}: {architecture} has mixture-of-experts MLPs (like Mixtral): a routed "
            "MLP has no single composition score; headgraph reads dense-MLP models.")
