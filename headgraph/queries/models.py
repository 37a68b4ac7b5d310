"""Named queries about models."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import literal_column, select

from headgraph.errors import ModelNotFoundError
from headgraph.queries.records import ModelRow
from headgraph.queries.session import GraphDB
from headgraph.schema.tables import models


def _models():
    """``SELECT * FROM models``: every column the database has, so a file written before
    a column was added (``ADDED_COLUMNS``: ``null_bands``) still reads."""
    return select(literal_column("*")).select_from(models)


def list_models(db: GraphDB, family: str | None = None) -> list[ModelRow]:
    """All stored models (of one family if given), by family, step and name."""
    stmt = _models()
    if family is not None:
        stmt = stmt.where(models.c.family == family)
    stmt = stmt.order_by(models.c.family, models.c.step, models.c.name)
    found = [ModelRow.from_row(r) for r in db.rows(stmt)]
    db.lasting.seen(found)
    return found


def get_model(db: GraphDB, name: str) -> ModelRow:
    """The model called ``name``; :class:`ModelNotFoundError` if there is none."""
    memo = db.memo
    if memo is not None and ("model", name) in memo:
        return memo["model", name]
    rows = db.rows(_models().where(models.c.name == name))
    if not rows:
        known = [m.name for m in list_models(db)][:20]
        raise ModelNotFoundError(
            f"no model named {name!r} in {db.target}. Stored: {', '.join(known) or 'none'}."
        )
    row = ModelRow.from_row(rows[0])
    db.lasting.seen([row])
    if memo is not None:
        memo["model", name] = row
    return row


def models_by_id(db: GraphDB, ids: Iterable[int]) -> dict[int, ModelRow]:
    """The models with these ids, by id, in one statement (missing ids are left out)."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    rows = db.rows(_models().where(models.c.model_id.in_(wanted)))
    found = [ModelRow.from_row(r) for r in rows]
    db.lasting.seen(found)
    return {r.model_id: r for r in found}


def database_sizes(db: GraphDB) -> dict[str, int]:
    """How large the stored lists can be, for the API's cost estimate: the number of
    models and of imported circuits, and the most nodes and heads of any one model (one
    statement each over small tables)."""
    from sqlalchemy import func

    from headgraph.schema.tables import circuits

    m = models.c
    row = db.rows(select(func.count().label("models"), func.max(m.n_nodes).label("nodes"),
                         func.max(m.n_layers * m.n_heads).label("heads")), budgeted=False)[0]
    n_circuits = db.rows(select(func.count().label("n")).select_from(circuits),
                         budgeted=False)[0]["n"]
    return {"models": int(row["models"] or 0), "nodes": int(row["nodes"] or 0),
            "heads": int(row["heads"] or 0), "circuits": int(n_circuits or 0)}


def stored_digest(db: GraphDB, name: str) -> str | None:
    """The weights digest of the model called ``name``, or ``None`` if there is none."""
    rows = db.rows(select(models.c.weights_digest).where(models.c.name == name))
    return rows[0]["weights_digest"] if rows else None
