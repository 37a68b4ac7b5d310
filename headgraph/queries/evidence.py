"""The read side of evidence from running the model: scores, roles, causal edges.

Rows come from ``node_scores`` and ``edge_scores`` (written by
:mod:`headgraph.ingest.evidence.collect`); every row names the probe that produced it (a canonical
string such as ``repeat(seq=20,batch=32,seed=0)``). Metrics stored per head:

==================================  ====================================================
metric                              meaning (definitions in ``headgraph.ingest.evidence.roles`` /
                                    ``headgraph.ingest.evidence.causal``)
==================================  ====================================================
``<role>_score``                    TransformerLens ``detect_head`` "mul" score, for role
                                    in previous_token, duplicate_token, induction,
                                    first_token
``<role>_share``                    mean attention a query that has a target pays to it
                                    (probe-independent)
``<role>_null_share``               the same on the same rows with the role's relation
                                    taken away (positions shuffled or tokens redrawn:
                                    ``headgraph.ingest.evidence.controls``)
``previous_token_rival_share``      the larger share at ``j = i`` or ``j = i - 2``
``ablation_{zero,mean}_dloss``      loss change when the head's ``z`` is zeroed / set to
                                    its mean (causal LMs); ``..._dembed`` for encoders
``loss`` (node ``UNEMBED``)         the clean loss of the probe
==================================  ====================================================

and per Q/K/V edge ``path_{zero,mean}_dloss``: the loss change when the source's write is
removed (or mean-replaced) only from what the target's Q, K or V input reads.

**Roles** are read from these numbers by :mod:`headgraph.queries.roles` (re-exported
here: ``ROLE_RULES``, ``roles_of``, ``heads_with_role``, ...).

No torch here: everything is read from the database.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import and_, select, text, tuple_

from headgraph.queries.nodes import check_count, check_kind, get_node
from headgraph.queries.records import ModelRow, ScoreRow
from headgraph.queries.roles import (  # re-exported: roles were read here before
    ROLE_MARGIN,
    ROLE_RULES,
    ROLE_SCORE,
    ROLES,
    RoleRecord,
    RoleRule,
    heads_in_role,
    heads_with_role,
    role_candidates,
    roles,
    roles_of,
    rule,
)
from headgraph.queries.scores import node_scores_of
from headgraph.queries.session import GraphDB
from headgraph.schema import tables as t

EdgeKey = tuple[str, str, str]  # (source, target, kind)


@dataclass(frozen=True)
class EdgeEvidence:
    """Causal evidence on one weight edge: ``metric`` = ``value`` on ``probe``."""

    source: str
    target: str
    kind: str
    metric: str
    probe: str
    value: float


def node_scores(db: GraphDB, model: ModelRow, node: str,
                probe: str | None = None) -> list[ScoreRow]:
    """Every evidence row of one node (of one probe if given), by metric then probe.

    Raises :class:`~headgraph.errors.NodeNotFoundError` for a node the model lacks.

    Examples
    --------
    >>> [(s.metric, round(s.value, 1)) for s in node_scores(db, toy, "L0H2")][:2]
    ... # doctest: +SKIP
    [('ablation_mean_dloss', 3.5), ('ablation_zero_dloss', 3.1)]
    """
    get_node(db, model, node)
    return node_scores_of(db, model.model_id, [node], probe)[node]


def top_scores(db: GraphDB, model: ModelRow, metric: str, probe: str | None = None,
               top: int | None = 10, descending: bool = True) -> list[ScoreRow]:
    """The nodes with the largest (or smallest) ``metric``, one row per (node, probe).

    Examples
    --------
    "Which head's ablation costs the most induction loss?" is
    ``top_scores(db, toy, "ablation_mean_dloss", top=1)``.
    """
    check_count("top", top)
    c = t.node_scores.c
    stmt = select(t.node_scores).where(
        and_(c.model_id == model.model_id, c.metric == metric))
    if probe is not None:
        stmt = stmt.where(c.probe == probe)
    stmt = stmt.order_by(c.value.desc() if descending else c.value.asc(), c.node, c.probe)
    if top is not None:
        stmt = stmt.limit(top)
    return [ScoreRow.from_row(r) for r in db.rows(stmt)]


def edge_evidence_of(db: GraphDB, model_id: int, keys: Iterable[EdgeKey],
                     probe: str | None = None) -> dict[EdgeKey, list[EdgeEvidence]]:
    """For each ``(source, target, kind)``, its causal evidence rows, by metric then probe.
    One statement for all edges (for DataLoaders)."""
    wanted = sorted(set(keys))
    out: dict[EdgeKey, list[EdgeEvidence]] = {k: [] for k in wanted}
    if not wanted:
        return out
    c = t.edge_scores.c
    stmt = select(c.source, c.target, c.kind, c.metric, c.probe, c.value).where(and_(
        c.model_id == model_id, tuple_(c.source, c.target, c.kind).in_(wanted)))
    if probe is not None:
        stmt = stmt.where(c.probe == probe)
    for r in db.rows(stmt.order_by(c.source, c.target, c.kind, c.metric, c.probe)):
        key = (r["source"], r["target"], r["kind"])
        out[key].append(EdgeEvidence(*key, r["metric"], r["probe"], r["value"]))
    return out


def edge_evidence(db: GraphDB, model: ModelRow, source: str, target: str, kind: str,
                  probe: str | None = None) -> list[EdgeEvidence]:
    """The causal evidence on the weight edge ``source -> target`` of ``kind``.

    Examples
    --------
    >>> [(e.metric, round(e.value, 1)) for e in edge_evidence(db, toy, "L0H2", "L1H1", "K")]
    ... # doctest: +SKIP
    [('path_mean_dloss', 1.9), ('path_zero_dloss', 1.0)]
    """
    check_kind(kind)
    return edge_evidence_of(db, model.model_id, [(source, target, kind)], probe)[
        (source, target, kind)]


def top_edge_evidence(db: GraphDB, model: ModelRow, metric: str = "path_zero_dloss",
                      kind: str | None = None, probe: str | None = None,
                      top: int | None = 10) -> list[EdgeEvidence]:
    """The routes whose removal costs most: edges by ``metric``, largest first."""
    check_count("top", top)
    c = t.edge_scores.c
    stmt = select(c.source, c.target, c.kind, c.metric, c.probe, c.value).where(
        and_(c.model_id == model.model_id, c.metric == metric))
    if kind is not None:
        stmt = stmt.where(c.kind == check_kind(kind))
    if probe is not None:
        stmt = stmt.where(c.probe == probe)
    stmt = stmt.order_by(c.value.desc(), c.source, c.target, c.kind)
    if top is not None:
        stmt = stmt.limit(top)
    return [EdgeEvidence(r["source"], r["target"], r["kind"], r["metric"], r["probe"],
                         r["value"]) for r in db.rows(stmt)]


@dataclass(frozen=True)
class AgreementRow:
    """How an estimate agrees with the exact measurement of ``quantity`` on ``probe``
    (``evidence_agreement``; :mod:`headgraph.ingest.evidence.agreement`): over the ``n``
    heads or edges measured both ways, Spearman's rank correlation and how many of the
    ``k`` largest by ``|estimate|`` are among the ``k`` largest by ``|exact|``."""

    probe: str
    quantity: str
    method: str
    n: int
    spearman: float | None
    k: int
    overlap: int


def agreement_of(db: GraphDB, model: ModelRow, probe: str | None = None
                 ) -> list[AgreementRow]:
    """The model's stored agreement rows (``[]`` in a database made before they were)."""
    known = db.rows(text("SELECT count(*) AS n FROM information_schema.tables "
                         "WHERE table_name = 'evidence_agreement'"))
    if not known[0]["n"]:
        return []
    c = t.evidence_agreement.c
    stmt = select(t.evidence_agreement).where(c.model_id == model.model_id)
    if probe is not None:
        stmt = stmt.where(c.probe == probe)
    rows = db.rows(stmt.order_by(c.probe, c.quantity, c.method))
    return [AgreementRow(r["probe"], r["quantity"], r["method"], r["n"], r["spearman"], r["k"],
                         r["overlap"]) for r in rows]


def probes_of(db: GraphDB, model: ModelRow) -> list[str]:
    """The probes that have evidence stored for this model, sorted."""
    rows = db.rows(select(t.node_scores.c.probe).where(t.node_scores.c.model_id == model.model_id)
                   .union(select(t.edge_scores.c.probe)
                          .where(t.edge_scores.c.model_id == model.model_id)))
    return sorted(r["probe"] for r in rows)


__all__ = [
    "ROLES", "ROLE_MARGIN", "ROLE_RULES", "ROLE_SCORE", "AgreementRow", "EdgeEvidence", "agreement_of", "RoleRecord", "RoleRule", "ScoreRow",
    "edge_evidence", "edge_evidence_of", "heads_in_role", "heads_with_role", "node_scores", "node_scores_of",
    "probes_of", "role_candidates", "roles", "roles_of", "rule", "top_edge_evidence", "top_scores",
]
