"""What each stage of an ingest costs on this machine: the time half of ``headgraph plan``.

An ingest reports the seconds of each of :data:`STAGES` (``headgraph ingest`` prints them,
:class:`~headgraph.ingest.pipeline.IngestReport` keeps them), and ``plan`` predicts the
same list from the model's shape, this machine's measured matmul rate, the Gaussian nulls
already cached and the probes asked for:

=================  =====================================================================
stage              model (``R`` = this machine's fp32 matmul rate, :func:`plan.matmul_rate`)
=================  =====================================================================
``start``          interpreter and imports (torch, the ingest's modules) up to the
                   command's start: calibrated seconds (transformers and TransformerLens,
                   when a bridge is built, are imported during ``load``)
``load``           streamed GPT-2 shapes: nothing (weights are drawn as compose reads
                   them); GGUF (streamed): hashing the file and dequantizing every tensor;
                   a bridge: reading the checkpoint and building HF model and bridge, per
                   parameter
``null``           the edge types whose Gaussian null neither the database nor the disk
                   cache holds: each costs its random draws and its products
``compose``        :func:`plan.stage_flops` over ``R`` times the measured efficiency, plus
                   drawing a random model's weights
``virtual heads``  the length-3 search's budget (:data:`VIRTUAL_BUDGET_SHARE` of compose's
                   FLOPs) and its seed, at the same efficiency
``probes``         building the runnable model where the reader has none, then forward
                   passes: role scores (a pass per probe), attribution (forward and backward)
                   and the exact confirmations (each resumes at its layer: half a pass on
                   average), at the bridge's measured efficiency
``write``          a fixed cost and a cost per stored row (edges and evidence)
=================  =====================================================================

The constants (:class:`Calibration`) were measured on the development machine
(BENCHMARKS.md, "plan against the measured ingest") against its matmul rate then; here
fixed costs scale by the ratio of that rate to this machine's, FLOP costs by the measured
rate itself. ``benchmarks/bench_plan.py`` prints each stage predicted and measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from headgraph.ingest.shape import ModelShape

if TYPE_CHECKING:
    from headgraph.ingest.null import EdgeType

VIRTUAL_BUDGET_SHARE = 0.25
"""The exact length-3 virtual-head search (:mod:`headgraph.ingest.virtual`) spends at most
this share of the composition's FLOPs."""

STAGES = ("start", "load", "null", "compose", "virtual heads", "probes", "write")
"""The stages an ingest reports and ``plan`` predicts, in order."""


@dataclass(frozen=True)
class Calibration:
    """Measured constants of the time model (see the module docstring)."""

    reference_rate: float = 190.0  # GFLOP/s of matmul_rate() where these were measured
    start_s: float = 1.7  # interpreter, torch, the ingest's modules
    random_per_s: float = 9.0e7  # random numbers drawn and processed a second
    compose_efficiency: float = 0.45  # share of the floor that compose's FLOPs run at
    per_layer_s: float = 0.02  # Python and allocation per layer and pass
    bridge_fixed_s: float = 2.5  # building a bridge, beyond its parameters
    bridge_per_param_s: float = 5.0e-8  # HF model + bridge, per parameter
    read_bytes_per_s: float = 1.0e9  # reading and hashing a weight file
    dequant_per_s: float = 1.5e8  # GGUF elements dequantized a second
    forward_efficiency: float = 0.12  # share of the floor a bridge's forward runs at
    write_fixed_s: float = 0.35
    write_per_row_s: float = 2.5e-7


CALIBRATION = Calibration()


def _null_seconds(types: list[EdgeType], cal: Calibration, rate: float) -> float:
    """Drawing and scoring the nulls of ``types`` (:func:`null.sample_null`)."""
    from headgraph.ingest.null import null_samples

    total = 0.0
    for writer, reader, _ in types:
        n = null_samples(writer, reader)
        numbers = flops = 0.0
        for side in (writer, reader):
            d, k = side.d_model, side.size
            if side.kind == "head":
                numbers += n * (d * k + k * k / 2)
                flops += n * 2 * d * k * k
            elif k > 2 * d:
                numbers += n * d * d / 2
            else:
                numbers += n * k * d
        rows = writer.size if writer.kind == "head" or writer.size <= 2 * writer.d_model \
            else writer.d_model
        cols = reader.size if reader.kind == "head" or reader.size <= 2 * reader.d_model \
            else reader.d_model
        flops += n * 2 * rows * writer.d_model * cols
        total += numbers / cal.random_per_s + flops / (rate * 1e9 * cal.compose_efficiency)
    return total


def probe_flops(s: ModelShape, probes: int = 3, causal: int = 1, exact: int = 60,
                tokens: int = 1312, loss_tokens: int = 640) -> dict[str, float]:
    """FLOPs of the default evidence run (:mod:`headgraph.ingest.evidence.collect`):
    ``probes`` clean passes with their roles' two controlled passes (positions shuffled,
    tokens redrawn: :mod:`headgraph.ingest.evidence.controls`), one attribution (forward, backward, EAP contraction) per
    ``causal`` probe, and ``exact`` confirmations resumed at their layer (half a pass)."""
    L, H, kv, d, dh = s.n_layers, s.n_heads, s.n_kv_heads, s.d_model, s.d_head
    d_in = s.d_mlp * (2 if s.gated else 1)
    per_token = 2 * L * (d * dh * (2 * H + 2 * kv) + d * (d_in + s.d_mlp))
    attention = 4 * L * H * dh * 41  # scores and mixing, probes of 41 tokens
    forward = tokens * (per_token + attention)
    unembed = loss_tokens * 2 * d * s.d_vocab
    sources = L * H + L + 2
    eap = tokens * d * 2 * 3 * H * (L * sources / 2)
    return {"roles": 3 * probes * forward + causal * unembed,
            "attribution": causal * (3 * (forward + unembed) + eap),
            "exact": exact * (forward / 2 + unembed)}


def stage_seconds(s: ModelShape, *, rate: float, missing: list[EdgeType], compose_flops: float,
                  edges: int, probes: bool = False, cal: Calibration = CALIBRATION
                  ) -> dict[str, float]:
    """Predicted seconds of every stage of :data:`STAGES` (module docstring), given the
    composition's FLOPs and the edges written (:func:`headgraph.ingest.plan.make_plan`)."""
    slow = cal.reference_rate / rate  # > 1 on a slower (or busier) machine than the reference
    floor = rate * 1e9
    compose = float(compose_flops)
    out = dict.fromkeys(STAGES, 0.0)
    out["start"] = slow * cal.start_s  # transformers is imported in load (a bridge's fixed cost)
    if s.loads_whole_model:
        out["load"] = slow * (cal.bridge_fixed_s + cal.bridge_per_param_s * s.n_parameters
                              + s.file_bytes / cal.read_bytes_per_s)
    elif s.file_bytes:  # a streamed GGUF file
        out["load"] = slow * (s.file_bytes / cal.read_bytes_per_s
                              + s.n_parameters / cal.dequant_per_s)
    out["null"] = slow * _null_seconds(missing, cal, cal.reference_rate)
    drawn = s.n_parameters if s.architecture == "GPT2LMHeadModel" and not s.loads_whole_model \
        and not s.file_bytes else 0
    out["compose"] = (compose / (floor * cal.compose_efficiency)
                      + slow * (drawn / cal.random_per_s + 2 * s.n_layers * cal.per_layer_s))
    out["virtual heads"] = (VIRTUAL_BUDGET_SHARE * 1.2 * compose / (floor * cal.compose_efficiency)
                            + slow * s.n_layers * cal.per_layer_s)
    if probes:
        build = 0.0 if s.loads_whole_model else slow * (
            cal.bridge_fixed_s + cal.bridge_per_param_s * s.n_parameters)
        out["probes"] = build + sum(probe_flops(s).values()) / (floor * cal.forward_efficiency)
    rows = edges + (_evidence_rows(s) if probes else 0)
    out["write"] = slow * (cal.write_fixed_s + cal.write_per_row_s * rows)
    return out


def _evidence_rows(s: ModelShape) -> int:
    """Rows the default evidence writes: role scores, attribution on every head and every
    Q/K/V edge into a head (both modes), and the exact confirmations."""
    L, H = s.n_layers, s.n_heads
    writers = (2 if s.pos_embed else 1), H + (1 if s.d_mlp else 0)  # embeddings; per layer
    qkv_edges = 3 * H * sum(writers[0] + t * writers[1] for t in range(1, L))
    return 3 * 8 * L * H + 2 * L * H + 2 * qkv_edges + 60 + 1
