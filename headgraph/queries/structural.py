"""The structural z on the read side: which column to read, and the calibration behind it.

``edges.z`` (the calibrated structural z, :mod:`headgraph.ingest.structural`) and
``models.null_bands`` were added within schema version 1. A model ingested before has no
structural z; a database file that no newer headgraph has written to lacks the columns
altogether. A model's row says which it is (``null_bands`` NULL: none), so edge queries
select ``edges.z`` for models that have it and a typed NULL otherwise: every statement
runs on every file, and such a model answers ``z = None`` (GraphQL ``null``) while its
Gaussian z (``gaussian_z``) stays.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import REAL, ColumnElement, cast, null, select

from headgraph.errors import BadInputError
from headgraph.queries.models import models_by_id
from headgraph.queries.records import ModelRow
from headgraph.queries.session import GraphDB
from headgraph.schema.tables import edges, null_calibration

BASE_COLUMNS = tuple(edges.c[name] for name in ("model_id", "source", "target", "kind", "score",
                                                "baseline", "null_std", "rank"))
"""The columns every database's ``edges`` has."""


def has_structural_z(db: GraphDB, model_id: int) -> bool:
    """Whether model ``model_id``'s edges carry the structural z (its row is read once per
    reader: :meth:`~headgraph.queries.lasting.Lasting.structural`)."""
    known = db.lasting.structural(model_id)
    if known is None:
        row = models_by_id(db, [model_id]).get(model_id)
        known = row is not None and row.structural_z
    return known


def z_column(has_z: bool) -> ColumnElement:
    """``edges.z``, or a REAL NULL named ``z`` for a model without it."""
    return edges.c.z if has_z else cast(null(), REAL).label("z")


def edge_columns(has_z: bool) -> list[ColumnElement]:
    """Every column of an edge row (:class:`~headgraph.queries.records.EdgeRow`)."""
    return [*BASE_COLUMNS, z_column(has_z)]


def no_structural_z(model: ModelRow) -> str:
    """Why a model has no z, and what to do about it (one line)."""
    return (f"model {model.name!r} was ingested before headgraph stored the structural null, "
            f"so its edges have no z (their Gaussian z, gaussianZ, is still there); "
            f"re-ingest it with --replace (its evidence is kept when the weights are "
            f"unchanged) to get z.")


def require_structural_z(model: ModelRow, what: str) -> None:
    """:class:`BadInputError` (saying so) when ``model`` has no structural z."""
    if not model.structural_z:
        raise BadInputError(f"{what} needs z: {no_structural_z(model)}")


@dataclass(frozen=True)
class CalibrationRow:
    """One ``null_calibration`` row: the empirical-null centre ``delta`` and scale ``phi``
    of the model's edges of one ``kind`` and ``family`` (``edges`` with a z), and where
    they came from (``basis``: ``own``, another unit, or ``analytic``)."""

    kind: str
    family: str
    edges: int
    delta: float
    phi: float
    basis: str


@dataclass(frozen=True)
class StructuralNullInfo:
    """The structural null of one model: band sizes (``"+1"``: the all-ones direction of a
    centred model as its own band) and the calibration per kind and family."""

    bands: str
    calibration: tuple[CalibrationRow, ...]

    @property
    def band_sizes(self) -> tuple[int, ...]:
        head, _, ones = self.bands.partition("+")
        return tuple(int(x) for x in head.split(",") if x) + ((int(ones),) if ones else ())


KIND_ORDER = ("Q", "K", "V", "MLP", "UNEMBED")
FAMILY_ORDER = ("head->head", "dense->head", "head->dense", "dense->dense")


def structural_null_of(db: GraphDB, model: ModelRow) -> StructuralNullInfo | None:
    """The model's structural null, or ``None`` for a model ingested before it existed."""
    if not model.structural_z:
        return None
    # the writer that set null_bands created the table in the same transaction
    rows = db.rows(select(null_calibration).where(null_calibration.c.model_id == model.model_id))
    cal = sorted((CalibrationRow(r["kind"], r["family"], r["edges"], r["delta"], r["phi"],
                                 r["basis"]) for r in rows),
                 key=lambda x: (_place(KIND_ORDER, x.kind), _place(FAMILY_ORDER, x.family)))
    return StructuralNullInfo(model.null_bands or "", tuple(cal))


def _place(order: tuple[str, ...], value: str) -> int:
    return order.index(value) if value in order else len(order)
