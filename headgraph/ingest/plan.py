"""``headgraph plan SOURCE``: what an ingest will cost, before it starts.

From the model's shape alone (a ``random:`` shape, or a checkpoint's config.json; no
weights are loaded) it counts the edges, the multiply-adds of every stage of
:func:`headgraph.ingest.compose.compose` (with grouped-query sharing), the memory the
factors and Grams need, the size of the database, and a time on this machine from a
measured matmul rate.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from headgraph.errors import SourceError
from headgraph.ingest.cost import (
    HeadMethod,
    choose_head_method,
    gram_bytes,
    gram_fraction,
    head_pair_flops,
)
from headgraph.ingest.null import null_key
from headgraph.ingest.shape import ModelShape
from headgraph.ingest.spec import ModelSpec

BYTES_PER_EDGE = 9.0  # measured on DuckDB for gpt2-xl-sized models (BENCHMARKS.md)


@dataclass(frozen=True)
class Plan:
    shape: ModelShape
    edges: dict[str, int]
    flops: dict[str, float]
    peak_bytes: float
    database_bytes: float
    seconds: float  # all stages
    gflops_rate: float
    head_method: HeadMethod = "qr"
    stages: dict[str, float] = field(default_factory=dict)  # seconds per ingest stage
    nulls_to_sample: int = 0  # edge types whose Gaussian null is not cached


def edge_counts(s: ModelShape) -> dict[str, int]:
    L, H = s.n_layers, s.n_heads
    embeds = 2 if s.pos_embed else 1
    head_pairs = H * H * L * (L - 1) // 2
    mlp_into_heads = sum(H * (L - 1 - m) for m in range(L)) if s.d_mlp else 0
    per_kind = head_pairs + mlp_into_heads + embeds * L * H
    if s.d_mlp:
        own = 0 if s.parallel else 1
        mlp = sum(H * (m + own) for m in range(L)) + L * (L - 1) // 2 + embeds * L
    else:
        mlp = 0
    unembed = L * H + (L if s.d_mlp else 0) + embeds
    return {"Q": per_kind, "K": per_kind, "V": per_kind, "MLP": mlp, "UNEMBED": unembed,
            "head->head (Q+K+V)": 3 * head_pairs}


def head_method(s: ModelShape) -> HeadMethod:
    """How head pairs of this shape are scored (:func:`~.cost.choose_head_method`)."""
    return choose_head_method(s.n_layers, s.n_heads, s.n_kv_heads, s.d_model, s.d_head)


def stage_flops(s: ModelShape) -> dict[str, float]:
    """FLOPs (2 per multiply-add) of each stage of ``compose``, on the head-pair route that
    :func:`head_method` picks. "Gram pairs" are the edges between heads and dense nodes:
    on the QR route each head's read and write Grams are formed for them (full ``d x d``);
    on the block-Gram route those Grams already exist, and only upper blocks are multiplied."""
    L, H, kv, d, dh = s.n_layers, s.n_heads, s.n_kv_heads, s.d_model, s.d_head
    d_in = s.d_mlp * (2 if s.gated else 1)
    method = head_method(s)
    n_w = (2 if s.pos_embed else 1) + (L if s.d_mlp else 0)
    n_r = 1 + (L if s.d_mlp else 0)
    if method == "gram":
        f = gram_fraction(d)
        dense_pairs = 3 * L * H * 2 * d * d * f * n_w + L * H * 2 * d * d * f * n_r
    else:
        dense_pairs = (3 * L * H * 2 * d * d * dh + 3 * L * H * 2 * d * d * n_w
                       + L * H * 2 * d * d * dh + L * H * 2 * d * d * n_r)
    return {
        "head->head": head_pair_flops(L, H, kv, d, dh)[method],
        "head factors": L * H * 2 * d * dh * dh * 8,
        # tied embeddings: W_E^T W_E, W_U W_U^T and W_U W_E from one Gram
        "dense Grams": 2 * d * d * ((1 if s.tied_vocab else 2) * s.d_vocab
                                    + (s.n_ctx if s.pos_embed else 0) + L * (d_in + s.d_mlp)),
        "readout and copying": (6 * d**3 if s.tied_vocab else 2 * d * d * s.d_vocab)
        + L * H * 2 * dh * d * d,
        "Gram pairs": dense_pairs,
    }


def shape_of_spec(spec: ModelSpec) -> ModelShape:
    """The plan's view of a model already open (its :class:`ModelSpec`); MLPs count as
    gated for the architectures whose MLPs are (Llama-family)."""
    return ModelShape(spec.architecture, spec.n_layers, spec.n_heads, spec.n_kv_heads,
                      spec.d_model, spec.d_head, spec.d_mlp, spec.d_vocab, spec.n_ctx,
                      spec.gated_mlp, spec.parallel_blocks, spec.has_pos_embed, 0, False,
                      processing=spec.processing)


def spec_of_shape(s: ModelShape) -> ModelSpec:
    """The :class:`ModelSpec` an ingest of ``s`` would see (for the null's edge types)."""
    return ModelSpec(s.architecture, s.n_layers, s.n_heads, s.n_kv_heads, s.d_model,
                     s.d_head, s.d_mlp, s.d_vocab, s.n_ctx, parallel_blocks=s.parallel,
                     has_pos_embed=s.pos_embed, processing=s.processing, gated_mlp=s.gated)


def compose_flops(spec: ModelSpec) -> float:
    """All of :func:`stage_flops` for an open model."""
    return float(sum(stage_flops(shape_of_spec(spec)).values()))


def peak_bytes(s: ModelShape) -> float:
    """The largest memory the ingest holds at once (fp32)."""
    factors = s.n_layers * s.n_heads * s.d_head * s.d_model * 4
    n_grams = (2 if s.pos_embed else 1) + 1 + (2 * s.n_layers if s.d_mlp else 0)
    grams = n_grams * s.d_model**2 * 4 * 2  # stacked once, briefly twice
    d_in = s.d_mlp * (2 if s.gated else 1)
    layer = 4 * (2 * s.n_heads + 2 * s.n_kv_heads) * s.d_model * s.d_head + \
        4 * s.d_model * (d_in + s.d_mlp)
    vocab = 3 * s.d_vocab * s.d_model * 4
    model = 3.2 * s.n_parameters * 4 if s.loads_whole_model else 0
    head_grams = gram_bytes(s.n_layers, s.n_heads, s.d_model) if head_method(s) == "gram" else 0
    return model + factors + grams + head_grams + max(layer + 134e6, vocab)


def matmul_rate(seconds: float = 0.3) -> float:
    """fp32 GFLOP/s of this machine for the kernel's product shape (best of a few)."""
    import torch

    a, b = torch.randn(1024, 1024), torch.randn(1024, 2048)
    a @ b
    best, start = float("inf"), time.perf_counter()
    while time.perf_counter() - start < seconds:
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * 1024 * 1024 * 2048 / best / 1e9


def shape_of(source: str) -> ModelShape:
    """The shape of a source, without loading its weights."""
    if source.startswith("random:"):
        return _random_shape(source[len("random:"):])
    from headgraph.ingest.sources import _toy_dir

    path = _toy_dir(source) if source == "toy" or source.startswith("toy@") else Path(source)
    if path.is_file() and path.suffix.lower() == ".gguf":
        from headgraph.ingest.gguf_reader import gguf_shape_fields, parse_gguf

        fields = gguf_shape_fields(path)
        tied = "output.weight" not in parse_gguf(path).tensors and not fields[
            "loads_whole_model"]
        return ModelShape(**fields, tied_vocab=tied, file_bytes=path.stat().st_size)
    if not (path / "config.json").exists():
        raise SourceError(f"{source}: plan needs a local model directory with config.json, "
                          "a .gguf file or a random: shape.")
    from transformers import AutoConfig

    from headgraph.ingest.bridge_reader import _resolve_architecture

    config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    arch, _ = _resolve_architecture(config, str(path))
    return _from_hf(config, arch, loads_whole_model=True)


def _from_hf(config, arch: str, *, loads_whole_model: bool) -> ModelShape:
    import torch
    from transformer_lens.factories.architecture_adapter_factory import (
        ArchitectureAdapterFactory,
    )
    from transformer_lens.model_bridge.sources._bridge_builder import (
        build_bridge_config_from_hf,
    )

    c = build_bridge_config_from_hf(config, arch, "plan", torch.float32)
    c = ArchitectureAdapterFactory.select_architecture_adapter(c).cfg  # fills arch defaults
    gated = bool(getattr(c, "gated_mlp", False))
    n_kv = getattr(c, "n_key_value_heads", None) or c.n_heads
    d_mlp = 0 if getattr(c, "attn_only", False) else int(c.d_mlp or 0)
    pos = getattr(c, "positional_embedding_type", "standard") == "standard"
    n_params = c.n_layers * (c.d_model * c.d_head * (2 * c.n_heads + 2 * n_kv)
                             + c.d_model * d_mlp * (3 if gated else 2)) + c.d_vocab * c.d_model
    norm = str(getattr(c, "normalization_type", "LN"))
    processing = ("fold_rms,center_unembed" if norm.startswith("RMS") else
                  "center_unembed" if arch.startswith("Bert") else
                  "fold_ln,center_writing_weights,center_unembed")
    return ModelShape(arch, c.n_layers, c.n_heads, n_kv, c.d_model, c.d_head, d_mlp, c.d_vocab,
                      c.n_ctx, gated, bool(getattr(c, "parallel_attn_mlp", False)), pos,
                      n_params, loads_whole_model, processing=processing)


def _random_shape(text: str) -> ModelShape:
    from headgraph.ingest.gpt2_stream import PRESETS as GPT2
    from headgraph.ingest.gpt2_stream import parse_random_shape
    from headgraph.ingest.random_hf import (
        FAMILIES,
        PRESETS,
        hf_config,
        n_parameters,
        parse_family_shape,
    )

    head = text.split(",", 1)[0]
    if head in FAMILIES or (head in PRESETS and head not in GPT2):
        fs = parse_family_shape(text)
        config, arch = hf_config(fs)
        shape = _from_hf(config, arch, loads_whole_model=True)
        return ModelShape(**{**shape.__dict__, "n_parameters": n_parameters(fs)})
    g = parse_random_shape(text)
    n_params = g.n_layers * 12 * g.d_model**2 + g.d_vocab * g.d_model
    return ModelShape("GPT2LMHeadModel", g.n_layers, g.n_heads, g.n_heads, g.d_model, g.d_head,
                      g.d_mlp, g.d_vocab, g.n_ctx, False, False, True, n_params, False,
                      tied_vocab=True)


def make_plan(source: str, rate: float | None = None, *, probes: str | None = None,
              known_nulls: dict | None = None) -> Plan:
    """The plan of ingesting ``source`` (with ``probes``) on this machine: edges, FLOPs,
    memory, database size and the seconds of every stage
    (:func:`~headgraph.ingest.stages.stage_seconds`); ``known_nulls`` are baselines the
    target database already holds (the disk cache is looked up too)."""
    from headgraph.ingest.null import edge_types
    from headgraph.ingest.nullcache import missing_nulls
    from headgraph.ingest.stages import stage_seconds

    s = shape_of(source)
    flops = stage_flops(s)
    flops["total"] = sum(flops.values())
    edges = edge_counts(s)
    total_edges = sum(v for k, v in edges.items() if len(k) <= 7)
    rate = rate or matmul_rate()
    types = edge_types(spec_of_shape(s))
    uncached = set(missing_nulls(types, known_nulls))
    missing = [t for t in types if null_key(*t) in uncached]
    stages = stage_seconds(s, rate=rate, missing=missing, probes=probes is not None,
                           compose_flops=flops["total"], edges=total_edges)
    return Plan(shape=s, edges={**edges, "total": total_edges}, flops=flops,
                peak_bytes=peak_bytes(s), database_bytes=total_edges * BYTES_PER_EDGE + 1e6,
                seconds=sum(stages.values()), gflops_rate=rate, head_method=head_method(s),
                stages=stages, nulls_to_sample=len(missing))
