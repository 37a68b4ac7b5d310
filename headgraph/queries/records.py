"""Frozen records returned by the read side (no torch, no ORM objects)."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any

from sqlalchemy import RowMapping


def _opt(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


@dataclass(frozen=True)
class ModelRow:
    model_id: int
    name: str
    family: str | None
    step: int | None
    source: str
    architecture: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    d_head: int
    d_mlp: int
    d_vocab: int | None
    n_ctx: int | None
    position_scheme: str | None
    parallel_blocks: bool | None
    readout: str | None
    processing: str
    weights_digest: str
    ingested_at: dt.datetime
    headgraph_version: str
    n_nodes: int
    n_edges: int
    null_bands: str | None = None  # the structural null's bands; None: no structural z

    @property
    def structural_z(self) -> bool:
        """Whether its edges carry the structural z (ingested by a headgraph that stores
        it; ``None`` ``null_bands`` also on a file written before the column existed)."""
        return self.null_bands is not None

    @classmethod
    def from_row(cls, row: RowMapping) -> ModelRow:
        return cls(**{f: row.get(f) for f in cls.__dataclass_fields__})


@dataclass(frozen=True)
class NodeRow:
    model_id: int
    node: str
    kind: str
    layer: int | None
    head: int | None
    kv_head: int | None
    qk_norm: float | None
    ov_norm: float | None
    copying_positive_fraction: float | None
    copying_ratio: float | None
    in_norm: float | None
    out_norm: float | None

    @classmethod
    def from_row(cls, row: RowMapping) -> NodeRow:
        return cls(**{f: _opt(row[f]) for f in cls.__dataclass_fields__})


@dataclass(frozen=True)
class EdgeRow:
    """One stored edge.

    ``z``: how far the edge stands above what the model's structure explains (the stored,
    calibrated structural z; docs/science.md). ``None`` for a model ingested before
    headgraph stored it, or where it is undefined. ``gaussian_z`` =
    ``(score - baseline) / null_std``, against Gaussian matrices of the same shapes
    (``None`` without a null spread). ``rank``: 1 for the strongest feeder of the target in
    this kind; ``reader_rank`` (readers lists only): 1 for the strongest reader of the
    source in this kind. Fields, not properties, so that ``pandas.DataFrame(rows)`` has
    them."""

    model_id: int
    source: str
    target: str
    kind: str
    score: float
    baseline: float
    null_std: float | None
    rank: int
    z: float | None = None
    gaussian_z: float | None = None
    reader_rank: int | None = None

    @classmethod
    def from_row(cls, row: RowMapping) -> EdgeRow:
        # field by field: the hottest constructor of the read side (10 per feeders call)
        score, baseline, std = _opt(row["score"]), _opt(row["baseline"]), _opt(row["null_std"])
        gaussian = (score - baseline) / std if std else None
        return cls(row["model_id"], row["source"], row["target"], row["kind"], score,
                   baseline, std, row["rank"], _opt(row["z"]), gaussian,
                   row.get("reader_rank"))


@dataclass(frozen=True)
class ScoreRow:
    """One piece of evidence about a node from running the model (``node_scores``)."""

    model_id: int
    node: str
    metric: str
    probe: str
    value: float

    @classmethod
    def from_row(cls, row: RowMapping) -> ScoreRow:
        return cls(**{f: row[f] for f in cls.__dataclass_fields__})
