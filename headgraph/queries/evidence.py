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
                                    (probe-independent; the role thresholds use it)
``ablation_{zero,mean}_dloss``      loss change when the head's ``z`` is zeroed / set to
                                    its mean (causal LMs); ``..._dembed`` for encoders
``loss`` (node ``UNEMBED``)         the clean loss of the probe
==================================  ====================================================

and per Q/K/V edge ``path_{zero,mean}_dloss``: the loss change when the source's write is
removed (or mean-replaced) only from what the target's Q, K or V input reads.

**Roles** are derived at read time from stored numbers, so a threshold can change without
re-running anything. :data:`ROLE_RULES` is the one declared table:

===============  =========================================  ===========================
role             rule                                       evidence
===============  =========================================  ===========================
previous_token   ``previous_token_share >= 0.5``            attention patterns (probe)
induction        ``induction_share >= 0.4``                 attention patterns (probe)
duplicate_token  ``duplicate_token_share >= 0.4``           attention patterns (probe)
first_token      ``first_token_share >= 0.5``               attention patterns (probe)
copying          ``nodes.copying_ratio >= 0.7``             weights (full OV circuit)
suppression      ``nodes.copying_ratio <= -0.7``            weights (full OV circuit)
===============  =========================================  ===========================

A pattern role holds when the share reaches the threshold on *some* stored probe (or on
the one named by ``probe``); the record gives the probe with the largest share. The
thresholds are fixed effect sizes, not calibrated against a null probe: ``first_token``
marks a resting position (attention sinks) on many heads of a real model, and
``copying`` is loose where embeddings are tied (docs/science.md, "How far the thresholds
can be trusted"). :func:`heads_in_role` with ``order_by="role_score"`` lists a role's
heads by the number that earned it, strongest first. A probe
stores a share only where at least 16 of its query rows have a target (e.g. no
``induction_share`` on a short random probe over a large vocabulary, where tokens rarely
recur), so a share is never a ratio of a handful of rows. The
share's ceiling is 1 on every probe (unlike ``_score``, whose ceiling is the fraction of
queries that have a target), which is why the thresholds are written on it. Copying and
suppression describe what the head's write would do to the logits if read directly
(eigenvalues of ``W_E W_OV W_U``); in a deep circuit a head can carry that sign without
acting on logits (e.g. a previous-token head whose write only feeds keys).

No torch here: everything is read from the database.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import and_, select, text, tuple_

from headgraph.errors import BadInputError
from headgraph.queries.nodes import check_count, check_kind, get_node, top_heads
from headgraph.queries.records import ModelRow, NodeRow, ScoreRow
from headgraph.queries.scores import node_scores_of
from headgraph.queries.session import GraphDB
from headgraph.schema import tables as t

EdgeKey = tuple[str, str, str]  # (source, target, kind)


@dataclass(frozen=True)
class RoleRule:
    """One role: ``metric`` (a ``node_scores`` metric, or ``nodes.<column>`` for weight
    roles) compared with ``threshold`` by ``op`` (``">="`` or ``"<="``)."""

    role: str
    metric: str
    op: str
    threshold: float
    help: str

    @property
    def from_weights(self) -> bool:
        return self.metric.startswith("nodes.")

    def holds(self, value: float) -> bool:
        return value >= self.threshold if self.op == ">=" else value <= self.threshold


ROLE_RULES: tuple[RoleRule, ...] = (
    RoleRule("previous_token", "previous_token_share", ">=", 0.5,
             "attends to the token just before the query"),
    RoleRule("induction", "induction_share", ">=", 0.4,
             "attends to the token after an earlier copy of the query's token"),
    RoleRule("duplicate_token", "duplicate_token_share", ">=", 0.4,
             "attends to earlier copies of the query's token"),
    RoleRule("first_token", "first_token_share", ">=", 0.5,
             "attends to the first position (BOS/CLS): a resting or sink head"),
    RoleRule("copying", "nodes.copying_ratio", ">=", 0.7,
             "its full OV circuit raises the logit of the token it attends to"),
    RoleRule("suppression", "nodes.copying_ratio", "<=", -0.7,
             "its full OV circuit lowers the logit of the token it attends to"),
)
ROLES = tuple(r.role for r in ROLE_RULES)
ROLE_SCORE = "role_score"
"""The head order of :func:`heads_in_role` by the role's own number."""


@dataclass(frozen=True)
class RoleRecord:
    """A role a head plays, and the number that earned it: ``metric`` = ``value`` on
    ``probe`` (``None`` for weight-based roles), against ``threshold``."""

    node: str
    role: str
    metric: str
    value: float
    threshold: float
    probe: str | None


@dataclass(frozen=True)
class EdgeEvidence:
    """Causal evidence on one weight edge: ``metric`` = ``value`` on ``probe``."""

    source: str
    target: str
    kind: str
    metric: str
    probe: str
    value: float


def rule(role: str) -> RoleRule:
    """The rule of ``role``; :class:`BadInputError` naming the roles if unknown."""
    for r in ROLE_RULES:
        if r.role == role:
            return r
    raise BadInputError(f"unknown role {role!r}; use one of {', '.join(ROLES)}.")


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


def best_shares(db: GraphDB, model_id: int, metrics: list[str], names: list[str] | None,
                 probe: str | None) -> dict[tuple[str, str], tuple[float, str]]:
    """(node, metric) -> (largest value, its probe), over the stored probes (or ``probe``)."""
    c = t.node_scores.c
    stmt = select(c.node, c.metric, c.probe, c.value).where(
        and_(c.model_id == model_id, c.metric.in_(metrics)))
    if names is not None:
        stmt = stmt.where(c.node.in_(names))
    if probe is not None:
        stmt = stmt.where(c.probe == probe)
    best: dict[tuple[str, str], tuple[float, str]] = {}
    for r in db.rows(stmt.order_by(c.node, c.metric, c.probe)):
        key = (r["node"], r["metric"])
        if key not in best or r["value"] > best[key][0]:
            best[key] = (r["value"], r["probe"])
    return best


def roles_of(db: GraphDB, model_id: int, names: Iterable[str],
             probe: str | None = None) -> dict[str, list[RoleRecord]]:
    """For each node, the roles it plays (in :data:`ROLE_RULES` order). Two statements
    for all nodes."""
    wanted = sorted(set(names))
    out: dict[str, list[RoleRecord]] = {n: [] for n in wanted}
    if not wanted:
        return out
    pattern_rules = [r for r in ROLE_RULES if not r.from_weights]
    best = best_shares(db, model_id, [r.metric for r in pattern_rules], wanted, probe)
    ratio = {r["node"]: r["copying_ratio"] for r in db.rows(
        select(t.nodes.c.node, t.nodes.c.copying_ratio).where(and_(
            t.nodes.c.model_id == model_id, t.nodes.c.node.in_(wanted), t.nodes.c.kind == "head")))}
    for name in wanted:
        for r in ROLE_RULES:
            if r.from_weights:
                value, where = ratio.get(name), None
            else:
                value, where = best.get((name, r.metric), (None, None))
            if value is not None and value == value and r.holds(value):
                out[name].append(RoleRecord(name, r.role, r.metric.removeprefix("nodes."),
                                            value, r.threshold, where))
    return out


def roles(db: GraphDB, model: ModelRow, node: str, probe: str | None = None) -> list[RoleRecord]:
    """The roles one node plays (see :data:`ROLE_RULES`); ``[]`` if none or no evidence.

    Examples
    --------
    >>> [r.role for r in roles(db, toy, "L1H3")]  # doctest: +SKIP
    ['induction', 'first_token', 'copying']
    """
    get_node(db, model, node)
    return roles_of(db, model.model_id, [node], probe)[node]


def heads_with_role(db: GraphDB, model: ModelRow, role: str,
                    probe: str | None = None) -> list[RoleRecord]:
    """Every head that plays ``role``, the most clear-cut first (largest share; for
    suppression the most negative ratio).

    Examples
    --------
    >>> [r.node for r in heads_with_role(db, toy, "previous_token")]  # doctest: +SKIP
    ['L0H2']
    """
    r = rule(role)
    if r.from_weights:
        col = t.nodes.c.copying_ratio
        cond = col >= r.threshold if r.op == ">=" else col <= r.threshold
        rows = db.rows(select(t.nodes.c.node, col).where(and_(
            t.nodes.c.model_id == model.model_id, t.nodes.c.kind == "head", cond)))
        found = [RoleRecord(x["node"], role, "copying_ratio", x["copying_ratio"],
                            r.threshold, None) for x in rows]
    else:
        best = best_shares(db, model.model_id, [r.metric], None, probe)
        found = [RoleRecord(node, role, r.metric, value, r.threshold, where)
                 for (node, _), (value, where) in best.items() if r.holds(value)]
    sign = -1 if r.op == ">=" else 1
    return sorted(found, key=lambda x: (sign * x.value, x.node))


def heads_in_role(db: GraphDB, model: ModelRow, role: str, order_by: str = "layer",
                  descending: bool = False, first: int | None = None,
                  probe: str | None = None) -> list[NodeRow]:
    """The heads that play ``role`` (:func:`heads_with_role`), in the order of
    :func:`~headgraph.queries.nodes.top_heads` (``order_by``, ``descending``), or with
    ``order_by="role_score"`` by the number that earned the role (its share, or the copying
    ratio; ``descending``: the most clear-cut first), at most ``first``. Two statements;
    :class:`BadInputError` for an unknown role.

    Examples
    --------
    >>> [h.node for h in heads_in_role(db, toy, "induction")]  # doctest: +SKIP
    ['L1H0', 'L1H1', 'L1H2', 'L1H3']
    """
    check_count("first", first)
    records = heads_with_role(db, model, role, probe)
    if not records or first == 0:
        return []
    if order_by == ROLE_SCORE:
        by_name = {h.node: h for h in top_heads(db, model, "layer", False, None)}
        names = [r.node for r in (records if descending else reversed(records))]
        ordered = [by_name[n] for n in names if n in by_name]
    else:
        playing = {r.node for r in records}
        ordered = [h for h in top_heads(db, model, order_by, descending, None)
                   if h.node in playing]
    return ordered if first is None else ordered[:first]


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
    "ROLES", "ROLE_RULES", "AgreementRow", "EdgeEvidence", "agreement_of", "RoleRecord", "RoleRule", "ScoreRow",
    "edge_evidence", "edge_evidence_of", "heads_in_role", "heads_with_role", "node_scores", "node_scores_of",
    "probes_of", "roles", "roles_of", "rule", "top_edge_evidence", "top_scores",
]
