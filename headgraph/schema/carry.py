"""What replacing a model keeps: the evidence tied to a model's weights.

A model's evidence (``node_scores``, ``edge_scores``) and its imported circuits (a
``circuits`` row each, whose edges are ``edge_scores`` rows) describe its *weights*. When
a model is stored again under the same name (``--replace``, a re-run demo) with the same
``weights_digest``, they still hold: the writer takes them (:func:`take_rows`) before it
removes the old model and puts them back under the new ``model_id`` (:func:`put_rows`),
in its one transaction. When the weights differ they describe another model and go with
it; :func:`attached_rows` counts them first, so the writer can say what a replace drops
and refuse to drop it without ``--replace``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from sqlalchemy import Connection, func, insert, select

from headgraph.schema import tables as t
from headgraph.schema.bulk import bulk_insert
from headgraph.schema.transfer import read_arrow

EVIDENCE = (t.node_scores, t.edge_scores)


@dataclass(frozen=True)
class Carried:
    """A model's evidence rows (less ``model_id``) and circuit rows, between take and put."""

    evidence: dict[str, pa.Table]
    circuits: tuple[dict[str, Any], ...]

    def counts(self) -> dict[str, int]:
        rows = {name: table.num_rows for name, table in self.evidence.items()}
        rows["circuits"] = len(self.circuits)
        return {name: n for name, n in rows.items() if n}


def attached_rows(conn: Connection, model_id: int) -> dict[str, int]:
    """Rows tied to ``model_id`` that a replace keeps or drops, by table (only the tables
    that hold some)."""
    counts = {}
    for table in (*EVIDENCE, t.circuits):
        n = conn.execute(select(func.count()).select_from(table)
                         .where(table.c.model_id == model_id)).scalar_one()
        if n:
            counts[table.name] = int(n)
    return counts


def describe_rows(counts: dict[str, int]) -> str:
    """``"209 node_scores rows, 12 edge_scores rows and 1 circuit"`` (``"no evidence"``)."""
    parts = [f"{n:,} circuit{'s' if n != 1 else ''}" if name == "circuits"
             else f"{n:,} {name} row{'s' if n != 1 else ''}" for name, n in counts.items()]
    if not parts:
        return "no evidence"
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def take_rows(conn: Connection, model_id: int) -> Carried:
    """Read the evidence and circuits of ``model_id`` (before the model is removed)."""
    rows = conn.execute(select(t.circuits).where(t.circuits.c.model_id == model_id)
                        .order_by(t.circuits.c.circuit_id)).mappings().all()
    skip = ("circuit_id", "model_id")
    return Carried(evidence={table.name: read_arrow(conn, table, model_id)
                             for table in EVIDENCE},
                   circuits=tuple({k: v for k, v in r.items() if k not in skip} for r in rows))


def put_rows(conn: Connection, model_id: int, carried: Carried) -> dict[str, int]:
    """Insert ``carried`` under ``model_id`` in the caller's transaction; counts by table."""
    for name, table in carried.evidence.items():
        if table.num_rows:
            ids = pa.array([model_id] * table.num_rows, pa.int32())
            bulk_insert(conn, name, table.append_column("model_id", ids))
    for row in carried.circuits:
        conn.execute(insert(t.circuits).values(model_id=model_id, **row))
    return carried.counts()
