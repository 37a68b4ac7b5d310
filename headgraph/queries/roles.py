"""Roles of attention heads, read from stored evidence and weights.

**Roles** are derived at read time from stored numbers, so a rule can change without
re-running anything. :data:`ROLE_RULES` is the one declared table:

===============  =================================================  ====================
role             rule                                               evidence
===============  =================================================  ====================
previous_token   ``previous_token_share - its null >= 0.25`` and    patterns (probe)
                 ``previous_token_share > its rival``
induction        ``induction_share - its null >= 0.25``             patterns (probe)
duplicate_token  ``duplicate_token_share - its null >= 0.25``       patterns (probe)
first_token      ``first_token_share - its null >= 0.25``           patterns (probe)
copying          ``nodes.copying_ratio >= 0.7``                     weights (OV circuit)
suppression      ``nodes.copying_ratio <= -0.7``                    weights (OV circuit)
===============  =================================================  ====================

A pattern role is read from the attention its relation itself draws: the share minus the
same head's null on the same probe (:data:`ROLE_MARGIN`). It holds on the probe where that
is largest; a probe whose null is not stored (evidence from before nulls) counts only
where no probe has one, and then by the old fixed share thresholds (0.5, 0.4, 0.4, 0.5),
with :attr:`RoleRecord.calibrated` ``False``. A probe stores a share only where at least
16 of its query rows have a target, so a share is never a ratio of a handful of rows.
``previous_token``'s rival (``previous_token_rival_share``, its larger share at ``i`` or
``i - 2`` in the clean run) tells a head that picks ``i - 1`` from a local one, since the
positional null takes recency away too. ``first_token`` marks a sink made by the position
encoding: a head that rests on the first token because it comes first in the causal
order rests there with positions shuffled too, and plays no role.
Copying and suppression describe what the head's write would do to the logits if read
directly (eigenvalues of ``W_E W_OV W_U``); their thresholds are fixed, not calibrated,
and loose where embeddings are tied (docs/science.md, "Roles"). :func:`heads_in_role`
with ``order_by="role_score"`` lists a role's heads by the number that earned it,
strongest first.

No torch here: everything is read from the database.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import and_, select

from headgraph.errors import BadInputError
from headgraph.queries.nodes import check_count, get_node, top_heads
from headgraph.queries.records import ModelRow, NodeRow
from headgraph.queries.session import GraphDB
from headgraph.schema import tables as t


@dataclass(frozen=True)
class RoleRule:
    """One role. A weight role compares ``nodes.<column>`` with ``threshold`` by ``op``.
    A pattern role compares the attention the relation itself draws, ``metric`` minus
    its null ``null_metric`` on the same probe, with ``threshold`` (always ``>=``) and,
    where the rule names a ``rival_metric``, needs ``metric`` above the rival too; evidence
    stored without its null (before nulls were measured) falls back to ``metric >= fixed``,
    and says so (:attr:`RoleRecord.calibrated`)."""

    role: str
    metric: str
    op: str
    threshold: float
    help: str
    null_metric: str | None = None
    fixed: float | None = None
    rival_metric: str | None = None

    @property
    def from_weights(self) -> bool:
        return self.metric.startswith("nodes.")

    def holds(self, value: float, null: float | None = None,
              rival: float | None = None) -> bool:
        """Whether a head with this ``value`` (and, for a pattern role, this ``null`` and
        ``rival``) plays the role."""
        if any(x is not None and x != x for x in (value, null, rival)):  # NaN
            return False
        if rival is not None and value <= rival:
            return False
        if null is not None:
            return value - null >= self.threshold
        if self.from_weights:
            return value >= self.threshold if self.op == ">=" else value <= self.threshold
        return self.fixed is not None and value >= self.fixed


ROLE_MARGIN = 0.25
"""The least attention, as a share of the rows that have a target, that a pattern role's
relation must draw beyond the head's own null (docs/science.md, "Roles")."""


def _pattern(role: str, fixed: float, help: str, rival: bool = False) -> RoleRule:
    return RoleRule(role, f"{role}_share", ">=", ROLE_MARGIN, help,
                    null_metric=f"{role}_null_share", fixed=fixed,
                    rival_metric=f"{role}_rival_share" if rival else None)


ROLE_RULES: tuple[RoleRule, ...] = (
    _pattern("previous_token", 0.5, "attends to the token just before the query, by its "
             "position (null: positions shuffled), more than to itself or the token "
             "before that", rival=True),
    _pattern("induction", 0.4, "attends to the token after an earlier copy of the query's "
             "token (null: tokens redrawn)"),
    _pattern("duplicate_token", 0.4, "attends to earlier copies of the query's token "
             "(null: tokens redrawn)"),
    _pattern("first_token", 0.5, "attends to the first position by its position "
             "encoding (null: positions shuffled): a positional sink"),
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
    """A head's number for a role: ``metric`` = ``value`` on ``probe`` (``None`` for
    weight roles), its ``null`` on the same probe (pattern roles whose null was measured),
    its ``rival`` (``previous_token``: its larger share at ``i`` or ``i - 2``), and the
    ``threshold`` that :attr:`strength` is held against."""

    node: str
    role: str
    metric: str
    value: float
    threshold: float
    probe: str | None
    null: float | None = None
    rival: float | None = None

    @property
    def calibrated(self) -> bool:
        """Whether a pattern role was judged against its null (weight roles: ``False``)."""
        return self.null is not None

    @property
    def strength(self) -> float:
        """The number held against the threshold: ``value - null`` where there is a null,
        else ``value``."""
        return self.value - self.null if self.null is not None else self.value

    def explain(self) -> str:
        """``"previous_token_share 0.34, null 0.04: +0.30 vs 0.25"``."""
        rival = "" if self.rival is None else f"; rival {self.rival:.2f}"
        if self.null is None:
            return f"{self.metric} {self.value:.2f} vs {self.threshold:g}{rival}"
        above = f"{self.strength:+.2f}".replace("-0.00", "+0.00")
        return (f"{self.metric} {self.value:.2f}, null {self.null:.2f}: {above} vs "
                f"{self.threshold:g}{rival}")


def rule(role: str) -> RoleRule:
    """The rule of ``role``; :class:`BadInputError` naming the roles if unknown."""
    for r in ROLE_RULES:
        if r.role == role:
            return r
    raise BadInputError(f"unknown role {role!r}; use one of {', '.join(ROLES)}.")


def role_candidates(db: GraphDB, model_id: int, rules: Iterable[RoleRule],
                    names: list[str] | None, probe: str | None
                    ) -> dict[tuple[str, str], RoleRecord]:
    """(node, role) -> the head's best record for each pattern role in ``rules``, playing
    it or not: over the stored probes (or ``probe``), judged against its null wherever one
    is stored (a probe without its null only counts where no probe has one), a probe where
    the role holds before one where it does not, then the largest
    :attr:`~RoleRecord.strength`. Records with a NaN are skipped. One statement."""
    by_metric = {r.metric: r for r in rules if not r.from_weights}
    by_null = {r.null_metric: r for r in by_metric.values() if r.null_metric}
    by_rival = {r.rival_metric: r for r in by_metric.values() if r.rival_metric}
    if not by_metric:
        return {}
    c = t.node_scores.c
    stmt = select(c.node, c.metric, c.probe, c.value).where(and_(
        c.model_id == model_id, c.metric.in_([*by_metric, *by_null, *by_rival])))
    if names is not None:
        stmt = stmt.where(c.node.in_(names))
    if probe is not None:
        stmt = stmt.where(c.probe == probe)
    values: dict[tuple[str, str, str], float] = {}  # (node, role, probe) -> share
    nulls: dict[tuple[str, str, str], float] = {}
    rivals: dict[tuple[str, str, str], float] = {}
    for r in db.rows(stmt):
        for table, rules_by in ((values, by_metric), (nulls, by_null), (rivals, by_rival)):
            if r["metric"] in rules_by:
                table[r["node"], rules_by[r["metric"]].role, r["probe"]] = r["value"]
    rule_of = {r.role: r for r in by_metric.values()}
    best: dict[tuple[str, str], RoleRecord] = {}
    for key, value in sorted(values.items()):
        node, role, where = key
        ru, null = rule_of[role], nulls.get(key)
        record = RoleRecord(node, role, ru.metric, value,
                            ru.threshold if null is not None else (ru.fixed or 0.0), where,
                            null, rivals.get(key))
        if record.strength != record.strength:  # NaN: no number to judge
            continue
        rank = (record.calibrated, ru.holds(value, null, record.rival), record.strength)
        old = best.get((node, role))
        if old is None or rank > (old.calibrated, ru.holds(old.value, old.null, old.rival),
                                  old.strength):
            best[node, role] = record
    return best


def roles_of(db: GraphDB, model_id: int, names: Iterable[str],
             probe: str | None = None) -> dict[str, list[RoleRecord]]:
    """For each node, the roles it plays (in :data:`ROLE_RULES` order). Two statements
    for all nodes."""
    wanted = sorted(set(names))
    out: dict[str, list[RoleRecord]] = {n: [] for n in wanted}
    if not wanted:
        return out
    found = role_candidates(db, model_id, ROLE_RULES, wanted, probe)
    ratio = {r["node"]: r["copying_ratio"] for r in db.rows(
        select(t.nodes.c.node, t.nodes.c.copying_ratio).where(and_(
            t.nodes.c.model_id == model_id, t.nodes.c.node.in_(wanted), t.nodes.c.kind == "head")))}
    for name in wanted:
        for r in ROLE_RULES:
            if r.from_weights:
                value = ratio.get(name)
                record = None if value is None else RoleRecord(
                    name, r.role, "copying_ratio", value, r.threshold, None)
            else:
                record = found.get((name, r.role))
            if record is not None and r.holds(record.value, record.null, record.rival):
                out[name].append(record)
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
    """Every head that plays ``role``, the most clear-cut first (largest
    :attr:`~RoleRecord.strength`; for suppression the most negative ratio).

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
        found = [x for x in role_candidates(db, model.model_id, [r], None, probe).values()
                 if r.holds(x.value, x.null, x.rival)]
    sign = -1 if r.op == ">=" else 1
    return sorted(found, key=lambda x: (not x.calibrated, sign * x.strength, x.node))


def heads_in_role(db: GraphDB, model: ModelRow, role: str, order_by: str = "layer",
                  descending: bool = False, first: int | None = None,
                  probe: str | None = None) -> list[NodeRow]:
    """The heads that play ``role`` (:func:`heads_with_role`), in the order of
    :func:`~headgraph.queries.nodes.top_heads` (``order_by``, ``descending``), or with
    ``order_by="role_score"`` by the number that earned the role (its share above its
    null, or the copying ratio; ``descending``: the most clear-cut first), at most ``first``. Two statements;
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


__all__ = [
    "ROLES", "ROLE_MARGIN", "ROLE_RULES", "ROLE_SCORE", "RoleRecord", "RoleRule", "heads_in_role",
    "heads_with_role", "role_candidates", "roles", "roles_of", "rule",
]
