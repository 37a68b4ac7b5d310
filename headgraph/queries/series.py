"""Checkpoint series: one node or edge metric across the steps of a training run."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, select

from headgraph.errors import BadInputError, ModelNotFoundError, NodeNotFoundError
from headgraph.queries.models import list_models
from headgraph.queries.nodes import check_kind
from headgraph.queries.session import GraphDB
from headgraph.schema.tables import edges, models, node_scores, nodes

NODE_COLUMNS = ("qk_norm", "ov_norm", "copying_positive_fraction", "copying_ratio", "in_norm",
                "out_norm")
EDGE_METRICS = ("score", "baseline", "rank", "z", "gaussian_z")


@dataclass(frozen=True)
class SeriesPoint:
    step: int
    model: str
    value: float


def series(db: GraphDB, family: str, *, node: str | None = None, source: str | None = None,
           target: str | None = None, kind: str | None = None,
           metric: str | None = None) -> list[SeriesPoint]:
    """A metric over the checkpoints of ``family``, by step.

    Node series: ``node`` and a ``metric`` that is a node column (``copying_ratio``...) or
    an evidence metric in ``node_scores``. Edge series: ``source``, ``target``, ``kind`` and
    ``metric`` in ``score`` (default), ``baseline``, ``rank``, ``z`` (the structural z),
    ``gaussian_z``. Checkpoints without a step, or where the node or edge is absent (or,
    for ``z``, ingested before headgraph stored it), are left out; a node that no
    checkpoint of the family has is :class:`~headgraph.errors.NodeNotFoundError`.

    Examples
    --------
    K-composition from the previous-token head into an induction head over training:
    ``series(db, "toy", source="L0H1", target="L1H2", kind="K")``.
    """
    if not db.rows(select(models.c.model_id).where(models.c.family == family).limit(1)):
        raise ModelNotFoundError(f"no models of family {family!r} in {db.target}.")
    run = select(models.c.model_id, models.c.name, models.c.step).where(
        and_(models.c.family == family, models.c.step.is_not(None))).subquery()
    if node is not None and (source or target or kind):
        raise BadInputError("give either node (a node series) or source/target/kind (an edge "
                            "series), not both.")
    if node is not None:
        metric = metric or "copying_ratio"
        if metric in NODE_COLUMNS:
            col = nodes.c[metric]
            stmt = select(run.c.step, run.c.name, col.label("value")).join(
                nodes, and_(nodes.c.model_id == run.c.model_id, nodes.c.node == node))
        else:
            stmt = select(run.c.step, run.c.name, node_scores.c.value).join(
                node_scores, and_(node_scores.c.model_id == run.c.model_id,
                                  node_scores.c.node == node, node_scores.c.metric == metric))
    elif source and target and kind:
        check_kind(kind)
        metric = metric or "score"
        if metric not in EDGE_METRICS:
            raise BadInputError(f"edge metric must be one of {', '.join(EDGE_METRICS)}.")
        if metric == "z" and not any(m.structural_z for m in list_models(db, family)):
            raise BadInputError(f"no checkpoint of family {family!r} has the structural z "
                                "(all were ingested before headgraph stored it): re-ingest "
                                "them with --replace, or ask for metric gaussian_z.")
        value = ((edges.c.score - edges.c.baseline) / edges.c.null_std
                 if metric == "gaussian_z" else edges.c[metric])
        stmt = select(run.c.step, run.c.name, value.label("value")).join(
            edges, and_(edges.c.model_id == run.c.model_id, edges.c.source == source,
                        edges.c.target == target, edges.c.kind == kind))
    else:
        raise BadInputError("a series needs node= (with metric=) or source=, target= and kind=.")
    rows = db.rows(stmt.order_by(run.c.step))
    points = [SeriesPoint(int(r["step"]), r["name"], float(r["value"])) for r in rows
              if r["value"] is not None]
    if not points:
        _check_nodes(db, family, [n for n in (node, source, target) if n is not None])
    return points


def _check_nodes(db: GraphDB, family: str, named: list[str]) -> None:
    """:class:`NodeNotFoundError` for a node name that no checkpoint of ``family`` has
    (rather than a silently empty series)."""
    if not named:
        return
    stmt = select(nodes.c.node).distinct().select_from(
        nodes.join(models, models.c.model_id == nodes.c.model_id)).where(and_(
            models.c.family == family, nodes.c.node.in_(named)))
    found = {r["node"] for r in db.rows(stmt)}
    missing = [n for n in named if n not in found]
    if missing:
        raise NodeNotFoundError(f"no checkpoint of family {family!r} has a node named "
                                f"{', '.join(map(repr, missing))}.")
