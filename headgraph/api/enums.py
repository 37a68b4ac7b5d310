"""The GraphQL enums: node kinds, edge kinds, head orders, path weights and rankings."""

from __future__ import annotations

from enum import Enum

import strawberry

__all__ = ["EdgeKind", "HeadOrder", "NodeKind", "PathRank", "PathWeight"]


@strawberry.enum(description="What a node is.")
class NodeKind(Enum):
    HEAD = "head"
    MLP = "mlp"
    EMBED = "embed"
    POS_EMBED = "pos_embed"
    UNEMBED = "unembed"


@strawberry.enum(description="How the target reads the source's write: through its queries "
                 "(Q), keys (K) or values (V) for a head; as input for an MLP; or as logits.")
class EdgeKind(Enum):
    Q = "Q"
    K = "K"
    V = "V"
    MLP = "MLP"
    UNEMBED = "UNEMBED"


@strawberry.enum(description="Orders for Model.heads. ROLE_SCORE (with `role`) orders by "
                 "the number that earned the role: its attention share above its null, or the "
                 "copying ratio "
                 "(most negative first for suppression).")
class HeadOrder(Enum):
    LAYER = "layer"
    ROLE_SCORE = "role_score"
    COPYING_RATIO = "copying_ratio"
    COPYING_POSITIVE_FRACTION = "copying_positive_fraction"
    OV_NORM = "ov_norm"
    QK_NORM = "qk_norm"


@strawberry.enum(description="The weight of a path's edge: its stored score (SCORE), the "
                 "score over its Gaussian baseline (RATIO, 'times chance'), or its structural "
                 "z floored at 0 (Z: above what the model's structure explains; an edge at or "
                 "below its null cannot be on a path; rank PER_HOP, since products of z > 1 "
                 "grow with length).")
class PathWeight(Enum):
    SCORE = "score"
    RATIO = "ratio"
    Z = "z"


@strawberry.enum(description="How paths of different lengths are ranked: by the product of "
                 "their weights (PRODUCT; weights are <= 1 for scores, so short paths win) "
                 "or by its geometric mean per hop (PER_HOP; compares lengths fairly).")
class PathRank(Enum):
    PRODUCT = "product"
    PER_HOP = "per_hop"
