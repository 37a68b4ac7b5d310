"""``headgraph check``: prove a database is whole.

Checks, each reported with what failed:

* the schema version is this headgraph's;
* every model is complete: its node and edge counts equal those recorded on its row at
  commit (``models.n_nodes``, ``models.n_edges``);
* ranks are consistent: for each (model, target, kind) the ranks are exactly 1..n and
  rank 1 holds the largest score;
* no orphan rows: every row of a child table belongs to a stored model;
* every score is finite and within [0, 1];
* every model stored with the structural null (``models.null_bands``) has its
  ``null_calibration`` rows;
* whatever the ``checks`` a feature adds find (attribution graphs:
  :func:`headgraph.attribution.check.graph_problems`; :mod:`headgraph.maintenance` passes
  every feature's).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import Connection, inspect, text
from sqlalchemy.exc import DBAPIError

from headgraph.schema.database import (
    check_version,
    connect_error,
    create_db_engine,
    resolve_target,
    schema_state,
)

CHILDREN = ("nodes", "edges", "node_scores", "edge_scores", "evidence_agreement",
            "virtual_heads", "null_calibration")

Check = Callable[[Connection], list[str]]
"""A feature's check: what is wrong with its tables, one line each (read-only)."""


@dataclass(frozen=True)
class CheckReport:
    database: str
    models: tuple[str, ...]
    problems: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_database(db: str | os.PathLike[str] | None,
                   checks: Sequence[Check] = ()) -> CheckReport:
    """Check the core tables of ``db``, then run each of ``checks`` on the same connection."""
    target = resolve_target(db)
    engine = create_db_engine(target, read_only=True)
    problems: list[str] = []
    try:
        with engine.connect() as conn:
            version = schema_state(conn)
            check_version(version, target)
            if version is None:
                return CheckReport(str(target), (), ("the database is empty (no schema)",))
            models = conn.execute(text("SELECT model_id, name, n_nodes, n_edges FROM models "
                                       "ORDER BY name")).all()
            for model_id, name, n_nodes, n_edges in models:
                got_nodes = conn.execute(text("SELECT count(*) FROM nodes WHERE model_id = :m"),
                                         {"m": model_id}).scalar_one()
                got_edges = conn.execute(text("SELECT count(*) FROM edges WHERE model_id = :m"),
                                         {"m": model_id}).scalar_one()
                if (got_nodes, got_edges) != (n_nodes, n_edges):
                    problems.append(f"model {name!r} is incomplete: {got_nodes}/{n_nodes} nodes, "
                                    f"{got_edges}/{n_edges} edges")
            present = set(inspect(conn).get_table_names())
            for table in (*CHILDREN, "circuits"):
                if table not in present:
                    continue
                orphans = conn.execute(text(
                    f"SELECT count(*) FROM {table} c WHERE NOT EXISTS "
                    "(SELECT 1 FROM models m WHERE m.model_id = c.model_id)")).scalar_one()
                if orphans:
                    problems.append(f"{orphans} orphan row(s) in {table}")
            bad_ranks = conn.execute(text("""
                SELECT count(*) FROM (
                  SELECT model_id, target, kind, count(*) AS n, min(rank) AS lo,
                         max(rank) AS hi, count(DISTINCT rank) AS distinct_ranks,
                         max(score) AS best,
                         max(CASE WHEN rank = 1 THEN score END) AS first
                  FROM edges GROUP BY model_id, target, kind) g
                WHERE lo <> 1 OR hi <> n OR distinct_ranks <> n OR first IS NULL
                   OR first < best""")).scalar_one()
            if bad_ranks:
                problems.append(f"{bad_ranks} (model, target, kind) group(s) with inconsistent "
                                "ranks")
            problems.extend(_structural_problems(conn, present))
            bad_scores = conn.execute(text(
                "SELECT count(*) FROM edges WHERE NOT (score >= 0 AND score <= 1.0001)")
            ).scalar_one()
            if bad_scores:
                problems.append(f"{bad_scores} edge score(s) outside [0, 1] or NaN")
            for extra in checks:
                problems.extend(extra(conn))
    except DBAPIError as exc:
        raise connect_error(target, exc.orig or exc, read_only=True) from None
    finally:
        engine.dispose()
    return CheckReport(str(target), tuple(m[1] for m in models), tuple(problems))


def _structural_problems(conn: Connection, tables: set[str]) -> list[str]:
    """Models whose ``null_bands`` say they carry the structural z but whose calibration is
    missing (a file written before the structural null has neither: nothing to check)."""
    have = {c["name"] for c in inspect(conn).get_columns("models")}
    if "null_bands" not in have:
        return []
    if "null_calibration" not in tables:
        bare = conn.execute(text("SELECT name FROM models WHERE null_bands IS NOT NULL "
                                 "ORDER BY name")).scalars().all()
    else:
        bare = conn.execute(text(
            "SELECT name FROM models m WHERE null_bands IS NOT NULL AND NOT EXISTS "
            "(SELECT 1 FROM null_calibration c WHERE c.model_id = m.model_id) "
            "ORDER BY name")).scalars().all()
    return [f"model {name!r} has a structural null but no null_calibration rows"
            for name in bare]
