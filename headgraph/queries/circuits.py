"""Stored circuits: one ``circuits`` row per circuit a discovery tool found (ACDC,
auto-circuit, EAP-IG), whose edges are ``edge_scores`` rows (metric ``<tool>:in_graph`` and
``<tool>:score``, probe ``task:<task>``): evidence on the model's own edges, set against
the weights by :mod:`headgraph.queries.gaps`. Importing and exporting the tools' files is
:mod:`headgraph.circuits`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from headgraph.queries.arrow import has_table
from headgraph.queries.records import ModelRow
from headgraph.queries.session import GraphDB
from headgraph.schema import tables as t


@dataclass(frozen=True)
class CircuitRow:
    """One stored circuit: found by ``tool`` for ``task`` on model ``model_id``."""

    circuit_id: int
    model_id: int
    tool: str
    task: str
    probe: str
    format: str
    naming: str
    header: str
    n_edges: int
    n_in_graph: int
    source: str
    imported_at: dt.datetime

    @classmethod
    def from_row(cls, row: Any) -> CircuitRow:
        return cls(**{f: row[f] for f in cls.__dataclass_fields__})

    @property
    def in_graph_metric(self) -> str:
        return f"{self.tool}:in_graph"

    @property
    def score_metric(self) -> str:
        return f"{self.tool}:score"


def list_circuits(db: GraphDB, model: ModelRow, tool: str | None = None,
                  task: str | None = None) -> list[CircuitRow]:
    """The circuits stored for ``model`` (of one tool / task if given), by tool and task."""
    if not has_table(db, "circuits"):
        return []
    c = t.circuits.c
    stmt = select(t.circuits).where(c.model_id == model.model_id)
    if tool is not None:
        stmt = stmt.where(c.tool == tool)
    if task is not None:
        stmt = stmt.where(c.task == task)
    return [CircuitRow.from_row(r) for r in db.rows(stmt.order_by(c.tool, c.task))]
