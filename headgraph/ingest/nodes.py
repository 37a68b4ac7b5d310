"""The node set of a model and the order in which its components read and write.

Names (docs/data-model.md): heads ``L{layer}H{head}``, MLPs ``MLP{layer}``, and ``EMBED``,
``POS_EMBED``, ``UNEMBED``. Every node gets a *position* in the residual stream:

=============  ==============================  =========================================
node           position                        reads the writes of
=============  ==============================  =========================================
EMBED, POS     -1                              nothing
head in l      2 l                             every writer with a smaller position
MLP l          2 l + 1 (2 l if parallel)       every writer with a smaller position
UNEMBED        2 n_layers + 1                  every writer
=============  ==============================  =========================================

so a head feeds heads of later layers only, a sequential MLP reads its own layer's
attention, and a parallel MLP (GPT-NeoX, GPT-J) does not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from headgraph.ingest.spec import ModelSpec

NODE_KINDS = ("embed", "pos_embed", "head", "mlp", "unembed")


@dataclass(frozen=True)
class NodeTable:
    """All nodes of one model, indexed 0..n-1, as parallel arrays."""

    names: tuple[str, ...]
    kinds: tuple[str, ...]
    layers: np.ndarray  # (n,) int, -1 where a node has no layer
    heads: np.ndarray  # (n,) int, -1 for non-heads
    positions: np.ndarray  # (n,) int

    def index(self, name: str) -> int:
        return self.names.index(name)

    def head_ids(self, layer: int, n_heads: int) -> np.ndarray:
        """Node ids of the heads of one layer (heads are stored contiguously)."""
        start = self.names.index(f"L{layer}H0")
        return np.arange(start, start + n_heads)


def build_nodes(spec: ModelSpec) -> NodeTable:
    """Lay out the nodes of ``spec`` in residual-stream order."""
    names: list[str] = ["EMBED"]
    kinds: list[str] = ["embed"]
    layers: list[int] = [-1]
    heads: list[int] = [-1]
    positions: list[int] = [-1]
    if spec.has_pos_embed:
        names.append("POS_EMBED")
        kinds.append("pos_embed")
        layers.append(-1)
        heads.append(-1)
        positions.append(-1)
    for layer in range(spec.n_layers):
        for head in range(spec.n_heads):
            names.append(f"L{layer}H{head}")
            kinds.append("head")
            layers.append(layer)
            heads.append(head)
            positions.append(2 * layer)
        if spec.d_mlp:
            names.append(f"MLP{layer}")
            kinds.append("mlp")
            layers.append(layer)
            heads.append(-1)
            positions.append(2 * layer if spec.parallel_blocks else 2 * layer + 1)
    names.append("UNEMBED")
    kinds.append("unembed")
    layers.append(-1)
    heads.append(-1)
    positions.append(2 * spec.n_layers + 1)
    return NodeTable(
        names=tuple(names),
        kinds=tuple(kinds),
        layers=np.asarray(layers, dtype=np.int32),
        heads=np.asarray(heads, dtype=np.int32),
        positions=np.asarray(positions, dtype=np.int32),
    )
