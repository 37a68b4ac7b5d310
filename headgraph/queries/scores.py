"""Evidence rows about nodes (``node_scores``): role scores and effects from running the
model, each tagged with the probe that produced it.

:func:`node_scores_of` is the one reader of these rows and :class:`ScoreRow` their one
record: :mod:`headgraph.queries.evidence` (``node_scores``, ``top_scores``), the API's
DataLoaders (``Node.scores``) and the Python API all go through them."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import and_, select

from headgraph.queries.records import ScoreRow
from headgraph.queries.session import GraphDB
from headgraph.schema.tables import node_scores


def node_scores_of(db: GraphDB, model_id: int, names: Iterable[str],
                   probe: str | None = None) -> dict[str, list[ScoreRow]]:
    """For each node, its evidence rows (of one probe if given), by metric then probe.
    One statement for all nodes (for DataLoaders); a node without evidence gets ``[]``."""
    wanted = sorted(set(names))
    out: dict[str, list[ScoreRow]] = {n: [] for n in wanted}
    if not wanted:
        return out
    c = node_scores.c
    stmt = select(node_scores).where(and_(c.model_id == model_id, c.node.in_(wanted)))
    if probe is not None:
        stmt = stmt.where(c.probe == probe)
    for r in db.rows(stmt.order_by(c.node, c.metric, c.probe)):
        out[r["node"]].append(ScoreRow.from_row(r))
    return out
