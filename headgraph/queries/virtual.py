"""Stored virtual attention heads (``virtual_heads``): chains of V-composition scored at ingest.

A chain ``h1 -> h2 (-> h3)`` acts as one head whose OV circuit is ``W_OV^1 W_OV^2 …``;
``score = ‖Π W_OV‖_F / Π ‖W_OV‖_F`` was computed exactly from the weights
(:mod:`headgraph.ingest.virtual`), ``heuristic`` is the product of the chain's stored
V-composition scores, and the copying scores come from the eigenvalues of the chain's full
OV circuit ``W_E W_OV^1 W_OV^2 … W_U``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sqlalchemy import RowMapping, and_, select

from headgraph.errors import BadInputError
from headgraph.queries.nodes import check_count
from headgraph.queries.session import GraphDB
from headgraph.schema.tables import virtual_heads

MIN_LENGTH = 2


def _opt(value: float | None) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


@dataclass(frozen=True)
class VirtualHeadRow:
    """One stored chain, first head first."""

    model_id: int
    heads: tuple[str, ...]
    length: int
    score: float
    heuristic: float
    copying_positive_fraction: float | None
    copying_ratio: float | None

    @classmethod
    def from_row(cls, row: RowMapping) -> VirtualHeadRow:
        return cls(model_id=row["model_id"], heads=tuple(row["heads"].split(",")),
                   length=int(row["length"]), score=float(row["score"]),
                   heuristic=float(row["heuristic"]),
                   copying_positive_fraction=_opt(row["copying_positive_fraction"]),
                   copying_ratio=_opt(row["copying_ratio"]))


def virtual_heads_of(db: GraphDB, model_id: int, *, length: int | None = None,
                     top: int = 10) -> list[VirtualHeadRow]:
    """The ``top`` strongest stored virtual heads of a model (of one chain ``length`` if
    given), by exact score descending, then by the chain's names.

    Raises :class:`~headgraph.errors.BadInputError` for a ``length`` under 2 or a negative
    ``top``. Only what the ingest stored is returned (its ``virtual_top`` strongest
    candidates per length; chains of 2 and 3 heads).

    Examples
    --------
    >>> [(v.heads, round(v.score, 3)) for v in virtual_heads_of(db, 1, top=2)]  # doctest: +SKIP
    [(('L0H1', 'L1H1'), 0.126), (('L0H1', 'L1H0'), 0.121)]
    """
    check_count("top", top)
    if length is not None and length < MIN_LENGTH:
        raise BadInputError(f"a virtual head is a chain of at least {MIN_LENGTH} heads; "
                            f"length {length} cannot exist.")
    c = virtual_heads.c
    cond = [c.model_id == model_id]
    if length is not None:
        cond.append(c.length == length)
    stmt = select(virtual_heads).where(and_(*cond)).order_by(c.score.desc(), c.heads).limit(top)
    return [VirtualHeadRow.from_row(r) for r in db.rows(stmt)] if top else []
