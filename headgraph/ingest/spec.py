"""Records that cross the ingest's module borders: a model's shape and one layer's weights.

Row-vector convention throughout (docs/science.md): ``W_Q, W_K, W_V: [d_model, d_head]`` and
``W_O: [d_head, d_model]`` per head, so a head reads ``x @ W_Q`` and writes ``z @ W_O``.
All tensors are already processed (LayerNorm folded, writing weights centred), float32.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class ModelSpec:
    """Shape and conventions of one model, as stored in the ``models`` row.

    ``n_kv_heads`` < ``n_heads`` means grouped-query attention: query head ``h`` reads
    key/value head ``h // (n_heads // n_kv_heads)``. ``d_mlp`` is 0 for attention-only
    models. ``parallel_blocks`` is true where attention and MLP read the same residual
    (GPT-NeoX, GPT-J), so MLP ``l`` does not read attention layer ``l``. ``readout`` is
    ``"unembed"`` or ``"embed_transpose"`` (encoders without an LM head read out
    through ``W_E^T``). ``gated_mlp`` is not stored: it sizes the MLP's read side.
    """

    architecture: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    d_head: int
    d_mlp: int
    d_vocab: int
    n_ctx: int
    positional: str = "standard"
    parallel_blocks: bool = False
    readout: str = "unembed"
    has_pos_embed: bool = True
    processing: str = "fold_ln,center_writing_weights,center_unembed"
    gated_mlp: bool = False  # the MLP reads through [W_gate, W_in] (2 d_mlp columns)

    def __post_init__(self) -> None:
        for name in ("n_layers", "n_heads", "n_kv_heads", "d_model", "d_head", "d_vocab"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})"
            )

    @property
    def group(self) -> int:
        """Query heads per key/value head (1 without grouped-query attention)."""
        return self.n_heads // self.n_kv_heads

    @property
    def d_mlp_in(self) -> int:
        """Columns of the MLP's read matrix (gate and input side by side when gated)."""
        return self.d_mlp * (2 if self.gated_mlp else 1)

    @property
    def read_centred(self) -> bool:
        """Folded LayerNorm centres the reading weights over d_model."""
        return "fold_ln" in self.processing

    @property
    def write_centred(self) -> bool:
        return "center_writing_weights" in self.processing

    @property
    def n_head_nodes(self) -> int:
        return self.n_layers * self.n_heads

    def kv_head(self, head: int) -> int:
        return head // self.group


@dataclass(frozen=True)
class LayerWeights:
    """Processed weights of one block.

    Shapes: ``W_Q [n_heads, d_model, d_head]``, ``W_K, W_V [n_kv_heads, d_model, d_head]``,
    ``W_O [n_heads, d_head, d_model]``; ``W_in [d_model, d_mlp]`` (for gated MLPs the gate
    and input matrices side by side, both read the residual), ``W_out [d_mlp, d_model]``;
    MLP weights are ``None`` for attention-only blocks.
    """

    layer: int
    W_Q: torch.Tensor
    W_K: torch.Tensor
    W_V: torch.Tensor
    W_O: torch.Tensor
    W_in: torch.Tensor | None = None
    W_out: torch.Tensor | None = None


@dataclass(frozen=True)
class GlobalWeights:
    """Processed embedding and unembedding: ``W_E [d_vocab, d_model]``,
    ``W_pos [n_ctx, d_model]`` or ``None``, ``W_U [d_model, d_vocab]`` (``W_E^T`` when the
    model reads out through its embedding)."""

    W_E: torch.Tensor
    W_U: torch.Tensor
    W_pos: torch.Tensor | None = None


@dataclass(frozen=True)
class VocabGrams:
    """What composition needs of the vocabulary-sized matrices, ``d_model x d_model`` each:
    ``embed = W_E^T W_E``, ``unembed = W_U W_U^T`` and ``readout = W_U W_E`` (the core of
    every full OV circuit), with ``rows`` = d_vocab and ``W_pos`` (``[n_ctx, d_model]`` or
    ``None``). A reader that knows its embeddings are tied forms all three from one Gram
    (:func:`headgraph.ingest.kernel.tied_vocab_grams`); others go through
    :func:`headgraph.ingest.reader.vocab_grams`."""

    embed: torch.Tensor
    unembed: torch.Tensor
    readout: torch.Tensor
    rows: int
    W_pos: torch.Tensor | None = None


@dataclass(frozen=True)
class SourceInfo:
    """Where a model came from, for the ``models`` row."""

    source: str
    weights_digest: str
    extra: dict[str, str] = field(default_factory=dict)
