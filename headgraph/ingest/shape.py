"""The shape of a model as the cost model sees it: sizes, not weights.

:func:`headgraph.ingest.plan.shape_of` reads it from a source's config (no weights are
loaded); the FLOP counts (:mod:`headgraph.ingest.plan`) and the time model
(:mod:`headgraph.ingest.stages`) are functions of it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelShape:
    architecture: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    d_head: int
    d_mlp: int
    d_vocab: int
    n_ctx: int
    gated: bool
    parallel: bool
    pos_embed: bool
    n_parameters: int
    loads_whole_model: bool  # through an HF model + bridge (else streamed per layer)
    tied_vocab: bool = False  # the reader forms the vocabulary products from one Gram
    file_bytes: int = 0  # the weight file read (GGUF), for the load stage
    processing: str = "fold_ln,center_writing_weights,center_unembed"
