"""All edges of a model, a page at a time, in one stable order.

The order is ``score`` descending, then ``source``, ``target``, ``kind`` (unique within a
model, so the order is total). A page is read with a keyset condition ("after this
edge") and ``LIMIT first + 1`` in SQL: the cost of a page does not grow with its depth
and no query ever lists all edges. The cursor is an opaque string that encodes the last
edge's key exactly (its score as the stored float, not a rounded one).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass

from sqlalchemy import REAL, ColumnElement, Select, and_, cast, func, or_, select

from headgraph.errors import BadInputError
from headgraph.queries.models import models_by_id
from headgraph.queries.nodes import check_count, check_kind
from headgraph.queries.records import EdgeRow
from headgraph.queries.session import GraphDB
from headgraph.queries.structural import edge_columns, has_structural_z, require_structural_z
from headgraph.schema.tables import edges, score_at_least


@dataclass(frozen=True)
class EdgeKey:
    """Where an edge sits in the order (score desc, source, target, kind)."""

    score: float
    source: str
    target: str
    kind: str

    @classmethod
    def of(cls, edge: EdgeRow) -> EdgeKey:
        return cls(edge.score, edge.source, edge.target, edge.kind)

    def encode(self) -> str:
        """The opaque cursor string for this position."""
        raw = json.dumps([self.score, self.source, self.target, self.kind])
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, cursor: str) -> EdgeKey:
        """Parse a cursor made by :meth:`encode`; :class:`BadInputError` otherwise."""
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            score, source, target, kind = json.loads(raw)
        except (binascii.Error, UnicodeDecodeError, ValueError, TypeError):
            raise BadInputError(f"cursor {cursor[:60]!r} is not one this server made; pass "
                                "an endCursor from a previous page, or omit it.") from None
        if (isinstance(score, bool) or not isinstance(score, int | float)
                or not math.isfinite(score)
                or not all(isinstance(s, str) for s in (source, target, kind))):
            raise BadInputError(f"cursor {cursor[:60]!r} is damaged; pass an endCursor from "
                                "a previous page, or omit it.")
        return cls(float(score), source, target, kind)

    def after(self) -> ColumnElement[bool]:
        """SQL condition: the edge comes after this key in the order.

        The score is compared as REAL, the column's type: a driver may hand back a float4
        as its shortest decimal (PostgreSQL: 0.24818276), which as a double is not the
        stored value, and the same edge would come back on the next page.
        """
        c = edges.c
        score = cast(self.score, REAL)
        return or_(
            c.score < score,
            and_(c.score == score, or_(
                c.source > self.source,
                and_(c.source == self.source, or_(
                    c.target > self.target,
                    and_(c.target == self.target, c.kind > self.kind),
                )),
            )),
        )


@dataclass(frozen=True)
class EdgePage:
    """One page of edges and whether more follow."""

    rows: list[EdgeRow]
    has_next: bool

    @property
    def end(self) -> EdgeKey | None:
        return EdgeKey.of(self.rows[-1]) if self.rows else None


def _filtered(db: GraphDB, stmt: Select, model_id: int, kind: str | None,
              min_score: float | None, min_z: float | None) -> Select:
    stmt = stmt.where(edges.c.model_id == model_id)
    if kind is not None:
        stmt = stmt.where(edges.c.kind == check_kind(kind))
    if min_score is not None:
        stmt = stmt.where(score_at_least(min_score))
    if min_z is not None:
        if isinstance(min_z, bool) or not isinstance(min_z, int | float) or min_z != min_z:
            raise BadInputError(f"min_z must be a number, not {min_z!r}.")
        if not has_structural_z(db, model_id):
            model = models_by_id(db, [model_id]).get(model_id)
            if model is not None:
                require_structural_z(model, "a z filter")
        stmt = stmt.where(edges.c.z >= cast(min_z, REAL))
    return stmt


def edge_page(db: GraphDB, model_id: int, *, kind: str | None = None,
              min_score: float | None = None, first: int = 100,
              after: EdgeKey | None = None, min_z: float | None = None) -> EdgePage:
    """Up to ``first`` edges after ``after`` (from the start when ``None``); with ``min_z``
    only edges whose structural z is at least that (:class:`BadInputError` for a model
    without z).

    Examples
    --------
    >>> page = edge_page(db, model.model_id, kind="K", first=50)  # doctest: +SKIP
    >>> nxt = edge_page(db, model.model_id, kind="K", first=50, after=page.end)  # doctest: +SKIP
    """
    check_count("first", first)
    stmt = _filtered(db, select(*edge_columns(has_structural_z(db, model_id))), model_id,
                     kind, min_score, min_z)
    if after is not None:
        stmt = stmt.where(after.after())
    stmt = stmt.order_by(edges.c.score.desc(), edges.c.source, edges.c.target,
                         edges.c.kind).limit(first + 1)
    rows = [EdgeRow.from_row(r) for r in db.rows(stmt)]
    return EdgePage(rows=rows[:first], has_next=len(rows) > first)


def count_edges(db: GraphDB, model_id: int, *, kind: str | None = None,
                min_score: float | None = None, min_z: float | None = None) -> int:
    """How many edges match the filter (all pages together)."""
    stmt = _filtered(db, select(func.count().label("n")).select_from(edges), model_id, kind,
                     min_score, min_z)
    return int(db.rows(stmt)[0]["n"])
