"""GPT-2-family weights read tensor by tensor, folded and centred here, never held whole.

``random:gpt2-xl`` has 1.6B parameters (6.2 GB in fp32); wrapping it in an HF model and
a bridge would need several times that. This reader instead asks a *tensor source* for
one named tensor at a time (HF GPT-2 names: ``h.{l}.attn.c_attn.weight`` ...) and applies
the same processing as TransformerLens's compatibility mode:

* fold LayerNorm: ``W_{Q,K,V} <- diag(ln_1.w) W``, ``W_in <- diag(ln_2.w) W_in``,
  ``W_U <- diag(ln_f.w) W_U``, then centre each reading weight over ``d_model``
  (LayerNorm's centring makes the mean direction invisible to it);
* centre writing weights over ``d_model``: ``W_O``, ``W_out``, ``W_E``, ``W_pos``;
* centre the unembedding over the vocabulary.

Biases are irrelevant to composition scores and are not read. Parity with the bridge is
tested on small shapes (tests/test_gpt2_stream.py).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch

from headgraph.errors import SourceError
from headgraph.ingest.kernel import tied_vocab_grams
from headgraph.ingest.reader import check_finite
from headgraph.ingest.spec import GlobalWeights, LayerWeights, ModelSpec, SourceInfo, VocabGrams

TensorSource = Callable[[str], torch.Tensor]
PROCESSING = "headgraph:fold_ln,center_writing_weights,center_unembed"
ATTENTION_CACHE_BYTES = 512 << 20
"""Processed attention weights a reader keeps between passes (else it regenerates them)."""


@dataclass(frozen=True)
class GPT2Shape:
    n_layers: int
    n_heads: int
    d_model: int
    d_vocab: int = 50257
    n_ctx: int = 1024
    seed: int = 0

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    @property
    def d_mlp(self) -> int:
        return 4 * self.d_model


PRESETS: dict[str, GPT2Shape] = {
    "gpt2-small": GPT2Shape(12, 12, 768),
    "gpt2-medium": GPT2Shape(24, 16, 1024),
    "gpt2-large": GPT2Shape(36, 20, 1280),
    "gpt2-xl": GPT2Shape(48, 25, 1600),
}

_LHD = re.compile(r"^L(\d+)H(\d+)D(\d+)(?:V(\d+))?$")


def parse_random_shape(text: str) -> GPT2Shape:
    """``gpt2-small`` | ``L{layers}H{heads}D{d_model}[V{vocab}]``, then ``,seed=N``,
    ``,vocab=N``, ``,ctx=N`` options."""
    name, *opts = [p.strip() for p in text.split(",")]
    if name in PRESETS:
        shape = PRESETS[name]
    elif m := _LHD.match(name):
        layers, heads, d_model = (int(m.group(i)) for i in (1, 2, 3))
        vocab = int(m.group(4)) if m.group(4) else 50257
        if min(layers, heads, d_model, vocab) <= 0 or d_model % heads:
            raise SourceError(
                f"random:{text}: need layers, heads, d_model > 0 and d_model divisible by "
                f"heads (got L{layers} H{heads} D{d_model})."
            )
        shape = GPT2Shape(layers, heads, d_model, vocab)
    else:
        raise SourceError(
            f"random:{text}: unknown shape. Use one of {', '.join(PRESETS)} or "
            "L{layers}H{heads}D{d_model} (e.g. random:L4H8D256), optionally ',seed=N'."
        )
    fields = {"seed": shape.seed, "vocab": shape.d_vocab, "ctx": shape.n_ctx}
    for opt in opts:
        key, _, value = opt.partition("=")
        if key not in fields or not value.isdigit():
            raise SourceError(f"random:{text}: bad option {opt!r}; use seed=N, vocab=N or ctx=N.")
        fields[key] = int(value)
    return GPT2Shape(shape.n_layers, shape.n_heads, shape.d_model, fields["vocab"],
                     fields["ctx"], fields["seed"])


def gpt2_spec(shape: GPT2Shape, processing: str = PROCESSING) -> ModelSpec:
    return ModelSpec(
        architecture="GPT2LMHeadModel",
        n_layers=shape.n_layers,
        n_heads=shape.n_heads,
        n_kv_heads=shape.n_heads,
        d_model=shape.d_model,
        d_head=shape.d_head,
        d_mlp=shape.d_mlp,
        d_vocab=shape.d_vocab,
        n_ctx=shape.n_ctx,
        processing=processing,
    )


def random_tensor_source(shape: GPT2Shape) -> TensorSource:
    """HF GPT-2 initialisation (N(0, 0.02); residual projections N(0, 0.02/sqrt(2 L));
    LayerNorms at identity), each tensor seeded by its name so any tensor can be
    regenerated alone, identically."""
    d, L = shape.d_model, shape.n_layers
    shapes = {
        "wte.weight": (shape.d_vocab, d),
        "wpe.weight": (shape.n_ctx, d),
        "attn.c_attn.weight": (d, 3 * d),
        "attn.c_proj.weight": (d, d),
        "mlp.c_fc.weight": (d, 4 * d),
        "mlp.c_proj.weight": (4 * d, d),
    }

    def get(name: str) -> torch.Tensor:
        suffix = re.sub(r"^h\.\d+\.", "", name)
        if suffix.startswith("ln_") or name.startswith("ln_f"):
            return torch.ones(d) if name.endswith("weight") else torch.zeros(d)
        if suffix not in shapes:
            raise KeyError(name)
        digest = hashlib.sha256(f"{shape.seed}:{name}".encode()).digest()
        gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)
        std = 0.02 / math.sqrt(2 * L) if suffix.endswith("c_proj.weight") else 0.02
        return torch.randn(shapes[suffix], generator=gen) * std

    return get


def _center_rows(w: torch.Tensor, dim: int) -> torch.Tensor:
    return w - w.mean(dim=dim, keepdim=True)


class GPT2StreamReader:
    """A :class:`~headgraph.ingest.reader.WeightReader` over a GPT-2 tensor source."""

    def __init__(self, get: TensorSource, spec: ModelSpec, info: SourceInfo,
                 cache_bytes: int = ATTENTION_CACHE_BYTES) -> None:
        self._get = get
        self.spec = spec
        self.info = info
        # an ingest reads each layer's attention three times (factors, scores, virtual
        # heads); keep the processed weights when they all fit, else regenerate them
        per_layer = 4 * 4 * spec.d_model * spec.n_heads * spec.d_head
        self._keep = per_layer * spec.n_layers <= cache_bytes
        self._attention: dict[int, tuple[torch.Tensor, ...]] = {}

    def globals(self) -> GlobalWeights:
        wte = self._get("wte.weight").float().clone()  # ours to centre in place
        W_U = wte.T * self._get("ln_f.weight").float()[:, None]  # tied unembedding
        W_U.sub_(W_U.mean(dim=0, keepdim=True)).sub_(W_U.mean(dim=-1, keepdim=True))
        W_E = wte.sub_(wte.mean(dim=-1, keepdim=True))  # in place: vocabulary-sized copies
        W_pos = _center_rows(self._get("wpe.weight").float(), -1)  # add up on big models
        return GlobalWeights(W_E=W_E, W_U=W_U, W_pos=W_pos)

    def vocab_grams(self, device: torch.device | str = "cpu") -> VocabGrams:
        """GPT-2 ties its unembedding to ``wte``: all three vocabulary products from one
        Gram (:func:`~headgraph.ingest.kernel.tied_vocab_grams`), the same processing as
        :meth:`globals`."""
        wte = self._get("wte.weight").float().to(device)
        check_finite("wte", wte)
        embed, unembed, readout = tied_vocab_grams(
            wte, self._get("ln_f.weight").float().to(device), centre_write=True,
            centre_read=True, centre_vocab=True)
        W_pos = _center_rows(self._get("wpe.weight").float(), -1).to(device)
        check_finite("wpe", W_pos)
        return VocabGrams(embed=embed, unembed=unembed, readout=readout,
                          rows=int(wte.shape[0]), W_pos=W_pos)

    def _attention_weights(self, layer: int) -> tuple[torch.Tensor, ...]:
        if layer in self._attention:
            return self._attention[layer]
        H, d, dh = self.spec.n_heads, self.spec.d_model, self.spec.d_head
        p = f"h.{layer}."
        ln1 = self._get(p + "ln_1.weight").float()
        qkv = self._get(p + "attn.c_attn.weight").float() * ln1[:, None]  # (d, 3d)
        qkv = _center_rows(qkv, 0)
        W_Q, W_K, W_V = (
            w.reshape(d, H, dh).permute(1, 0, 2).contiguous() for w in qkv.split(d, dim=1)
        )
        W_O = _center_rows(self._get(p + "attn.c_proj.weight").float(), -1).reshape(H, dh, d)
        if self._keep:
            self._attention[layer] = (W_Q, W_K, W_V, W_O)
        return W_Q, W_K, W_V, W_O

    def layer(self, layer: int, *, mlp: bool = True) -> LayerWeights:
        p = f"h.{layer}."
        W_Q, W_K, W_V, W_O = self._attention_weights(layer)
        W_in = W_out = None
        if mlp:
            ln2 = self._get(p + "ln_2.weight").float()
            W_in = _center_rows(self._get(p + "mlp.c_fc.weight").float() * ln2[:, None], 0)
            W_out = _center_rows(self._get(p + "mlp.c_proj.weight").float(), -1)
        return LayerWeights(layer=layer, W_Q=W_Q, W_K=W_K, W_V=W_V, W_O=W_O, W_in=W_in,
                            W_out=W_out)

    def close(self) -> None:
        self._attention.clear()


def random_gpt2_reader(text: str) -> GPT2StreamReader:
    """The reader for a ``random:`` GPT-2 shape (the part after ``random:``)."""
    shape = parse_random_shape(text)
    digest = hashlib.sha256(f"headgraph-random-gpt2:{shape}".encode()).hexdigest()
    info = SourceInfo(source=f"random:{text}", weights_digest=digest)
    return GPT2StreamReader(random_tensor_source(shape), gpt2_spec(shape), info)
