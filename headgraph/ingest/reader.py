"""The interface every weight source implements, and checks shared by all of them."""

from __future__ import annotations

from typing import Protocol

import torch

from headgraph.errors import BadWeightsError
from headgraph.ingest.spec import GlobalWeights, LayerWeights, ModelSpec, SourceInfo, VocabGrams


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


def vocab_grams(reader: WeightReader, device: torch.device | str = "cpu") -> VocabGrams:
    """The vocabulary-sized products of ``reader``'s model (:class:`VocabGrams`).

    A reader may offer ``vocab_grams(device)`` (tied embeddings: one Gram instead of three
    vocabulary-sized products); otherwise they are formed from :meth:`WeightReader.globals`:
    ``W_E^T W_E``, ``W_U W_U^T`` and ``W_U W_E``, ``2 d_model^2 d_vocab`` FLOPs each."""
    own = getattr(reader, "vocab_grams", None)
    if own is not None:
        found = own(device)
        if found is not None:
            return found
    g = reader.globals()
    for name in ("W_E", "W_U", "W_pos"):
        check_finite(name, getattr(g, name))
    W_E = g.W_E.to(device, torch.float32)
    W_U = g.W_U.to(device, torch.float32)
    W_pos = None if g.W_pos is None else g.W_pos.to(device, torch.float32)
    return VocabGrams(embed=W_E.T @ W_E, unembed=W_U @ W_U.T, readout=W_U @ W_E,
                      rows=int(W_E.shape[0]), W_pos=W_pos)


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
