"""The interface every weight source implements, and checks shared by all of them."""

from __future__ import annotations

from typing import Protocol

import torch

from headgraph.errors import BadWeightsError
from headgraph.ingest.spec import GlobalWeights, LayerWeights, ModelSpec, SourceInfo


class WeightReader(Protocol):
    """Random access to a model's processed weights, one layer at a time.

    Readers may be asked for the same layer more than once (the composition pass reads
    layers twice rather than hold every factor of a large model in memory), so reading
    must be repeatable and cheap relative to the matmuls that follow.
    """

    spec: ModelSpec
    info: SourceInfo

    def globals(self) -> GlobalWeights: ...

    def layer(self, layer: int, *, mlp: bool = True) -> LayerWeights:
        """One layer's weights; ``mlp=False`` may skip reading the MLP."""
        ...

    def close(self) -> None: ...


def check_finite(name: str, tensor: torch.Tensor | None) -> None:
    """Refuse NaN/Inf weights: they would give NaN scores that look like data."""
    if tensor is None or bool(torch.isfinite(tensor.sum())):
        return  # a NaN or Inf anywhere makes the sum non-finite; finite sum: all finite
    if not bool(torch.isfinite(tensor).all()):
        bad = int((~torch.isfinite(tensor)).sum())
        raise BadWeightsError(
            f"weight {name} holds {bad} NaN/Inf value(s); the checkpoint is corrupt or was "
            "saved mid-divergence. Use an earlier checkpoint or repair the file."
        )


def check_layer(lw: LayerWeights, spec: ModelSpec) -> LayerWeights:
    """Check one layer's shapes against the spec and refuse non-finite values."""
    H, Hkv, d, dh = spec.n_heads, spec.n_kv_heads, spec.d_model, spec.d_head
    expected = {
        "W_Q": (H, d, dh),
        "W_K": (Hkv, d, dh),
        "W_V": (Hkv, d, dh),
        "W_O": (H, dh, d),
    }
    for name, shape in expected.items():
        got = tuple(getattr(lw, name).shape)
        if got != shape:
            raise BadWeightsError(
                f"layer {lw.layer} {name} has shape {got} but the config says {shape}; the "
                "config does not match the weights."
            )
    for name in ("W_Q", "W_K", "W_V", "W_O", "W_in", "W_out"):
        check_finite(f"blocks.{lw.layer}.{name}", getattr(lw, name))
    return lw
