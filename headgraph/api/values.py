"""Leaf values of the GraphQL API: the types and helpers that refer to no other object
type (4-byte floats as short decimals, copying scores, evidence scores, Relay page info).

Stored metrics are 4-byte floats (``REAL``); they are shown as the shortest decimal that
reads back as the same float (``0.13215104``, not ``0.1321510374546051``).
"""

from __future__ import annotations

import math
import struct

import strawberry
from strawberry import Private

from headgraph.api.enums import EdgeKind
from headgraph.errors import BadInputError
from headgraph.queries.evidence import EdgeEvidence
from headgraph.queries.records import ScoreRow
from headgraph.schema.metrics import metric_method


def f32(x: float | None) -> float | None:
    """The shortest decimal that reads back as the same 4-byte float as ``x``."""
    if x is None or not math.isfinite(x):
        return x
    try:
        for digits in range(6, 10):
            y = float(f"{x:.{digits}g}")
            if struct.unpack("f", struct.pack("f", y))[0] == x:
                return y
    except OverflowError:
        pass
    return x


@strawberry.type(description="Copying scores from the eigenvalues of the full OV circuit "
                 "W_E W_OV W_U.")
class Copying:
    positive_fraction: float | None = strawberry.field(
        description="Share of eigenvalues with positive real part.")
    ratio: float | None = strawberry.field(
        description="sum(eigenvalues) / sum(|eigenvalues|), in [-1, 1]: near +1 copies, "
                    "negative suppresses.")


@strawberry.type(description="Evidence about a node or an edge from running the model: "
                 "`metric` = `value` on `probe`.")
class Score:
    row: Private[ScoreRow | EdgeEvidence]
    metric: str
    probe: str = strawberry.field(description="The probe input set that produced it.")
    value: float
    method: str = strawberry.field(description=(
        "How it was measured: `exact` (ablation, path patching: a forward pass each), "
        "`attribution` (attribution patching / EAP: gradient x activation difference, the "
        "`attrib_` metrics), `integrated_gradients` (EAP-IG, `ig_`), `patterns` (attention "
        "role scores) or `tool` (an imported circuit file)."))

    @classmethod
    def from_row(cls, row: ScoreRow | EdgeEvidence) -> Score:
        return cls(row=row, metric=row.metric, probe=row.probe, value=f32(row.value),
                   method=metric_method(row.metric))


@strawberry.type(description="Relay page information.")
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


def kind_values(kinds: list[EdgeKind] | None) -> tuple[str, ...] | None:
    """GraphQL ``[EdgeKind!]`` as stored kind strings (``None`` stays ``None``; an empty
    list, which would allow nothing, is refused)."""
    if kinds is None:
        return None
    if not kinds:
        raise BadInputError("kinds is empty; name at least one edge kind, or leave it out "
                            "for all kinds.")
    return tuple(dict.fromkeys(k.value for k in kinds))
