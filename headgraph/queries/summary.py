"""``headgraph summary MODEL``: the findings a researcher looks for first, with evidence.

One read of a stored model (``Model.summary`` in GraphQL, ``model.summary()`` in Python,
the ``summary`` command) that puts the weights (edges and their structural z) beside the
evidence from running the model (roles, path patching):

* **previous-token**, **induction** and **duplicate-token** heads: the heads that play the
  role (:data:`~headgraph.queries.roles.ROLE_RULES`), strongest first, with the share
  that earned it and its probe;
* **the induction circuit's keys**: the K edges from previous-token heads into each listed
  induction head at z >= :data:`Z_ABOVE` (or its strongest one, where none reaches it),
  with z, place among the target's K-feeders by z, the target's key/value head, and the
  path-patching effect where one was measured;
* **copying heads** (by weights: the full OV circuit), the **strongest K edges** between
  heads by z (what the weights alone point to, evidence or not) and the **strongest
  virtual heads**;
* **disagreements**, each with both numbers: an induction head whose strongest K-feeder by
  z is not a previous-token head; an induction head that no previous-token head feeds
  above :data:`Z_ABOVE`; a previous-token head feeding the keys of a head that is not an
  induction head at z >= :data:`Z_STRONG` (under grouped-query attention, say whether the
  target shares its key/value head with an induction head: K-composition into a KV group
  is one fact for the whole group); an edge weak in weights (z < 1) whose path patching
  costs at least :data:`EFFECT_SHARE` of the probe's largest path effect.

Lists hold at most :data:`TOP` entries; ``counts`` gives how many heads play each role.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import and_, select

from headgraph.queries.evidence import (
    EdgeEvidence,
    edge_evidence_of,
    probes_of,
    top_edge_evidence,
)
from headgraph.queries.nodes import nodes_named
from headgraph.queries.records import ModelRow
from headgraph.queries.roles import RoleRecord, heads_with_role, role_candidates, rule
from headgraph.queries.session import GraphDB
from headgraph.queries.structural import StructuralNullInfo, structural_null_of
from headgraph.queries.summary_text import summary_lines
from headgraph.queries.virtual import VirtualHeadRow, virtual_heads_of
from headgraph.schema.tables import edges

TOP = 5
Z_ABOVE = 3.0
"""A z from which an edge stands out from what the model's structure explains."""
Z_STRONG = 5.0
"""A z from which a weight edge is strong enough that evidence against it is news."""
EFFECT_SHARE = 0.25
PATH_METRIC = "path_zero_dloss"
ROLES_SHOWN = ("previous_token", "induction", "duplicate_token", "copying")


@dataclass(frozen=True)
class HeadFinding:
    """A head that plays a role: ``metric`` = ``value`` (on ``probe``; ``None`` for weight
    roles), its ``null`` on that probe (pattern roles) and the key/value head it reads."""

    node: str
    value: float
    metric: str
    probe: str | None
    kv_head: int | None
    null: float | None = None


@dataclass(frozen=True)
class EdgeFinding:
    """A weight edge: its structural ``z``, ``score``, ``rank`` (by score) and ``z_rank``
    (by z) among the target's feeders of the kind, the target's key/value head (K, V) and
    its path-patching evidence."""

    source: str
    target: str
    kind: str
    z: float | None
    score: float
    rank: int
    z_rank: int | None
    kv_head: int | None
    evidence: tuple[EdgeEvidence, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.source} -> {self.target} ({self.kind})"


@dataclass(frozen=True)
class Disagreement:
    """Where the weights and the evidence say different things about ``subject``."""

    subject: str
    weights: str
    evidence: str


@dataclass(frozen=True)
class ModelSummary:
    model: ModelRow
    structural_null: StructuralNullInfo | None
    probes: tuple[str, ...]
    counts: tuple[tuple[str, int], ...]  # (role, heads playing it)
    previous_token: tuple[HeadFinding, ...]
    induction: tuple[HeadFinding, ...]
    induction_keys: tuple[EdgeFinding, ...]
    duplicate_token: tuple[HeadFinding, ...]
    copying: tuple[HeadFinding, ...]
    strongest_k: tuple[EdgeFinding, ...]
    virtual_heads: tuple[VirtualHeadRow, ...]
    disagreements: tuple[Disagreement, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)

    def count(self, role: str) -> int:
        return dict(self.counts).get(role, 0)

    def lines(self) -> list[str]:
        """The summary as plain text lines (what the ``summary`` command prints)."""
        return summary_lines(self)

    def __str__(self) -> str:
        return "\n".join(self.lines())


def _heads(records: list[RoleRecord], kv: dict[str, int | None]) -> tuple[HeadFinding, ...]:
    return tuple(HeadFinding(r.node, r.value, r.metric, r.probe, kv.get(r.node), r.null)
                 for r in records[:TOP])


def _k_edges(db: GraphDB, model: ModelRow, *, sources: list[str] | None = None,
             targets: list[str] | None = None, min_z: float | None = None,
             limit: int | None = None) -> list[dict]:
    """Head -> head K edges (of these sources / into these targets / at z >= ``min_z``),
    strongest z first, at most ``limit``."""
    c = edges.c
    cond = [c.model_id == model.model_id, c.kind == "K", c.source.like("L%H%"),
            c.target.like("L%H%"), c.z.is_not(None)]
    if sources is not None:
        cond.append(c.source.in_(sources))
    if targets is not None:
        cond.append(c.target.in_(targets))
    if min_z is not None:
        cond.append(c.z >= min_z)
    stmt = select(c.source, c.target, c.score, c.rank, c.z).where(and_(*cond))
    stmt = stmt.order_by(c.z.desc(), c.source, c.target)
    return [dict(r) for r in db.rows(stmt if limit is None else stmt.limit(limit))]


def _z_ranks(db: GraphDB, model: ModelRow, targets: list[str]) -> dict[tuple[str, str], int]:
    """(source, target) -> place by z among all of the target's K-feeders."""
    if not targets:
        return {}
    c = edges.c
    rows = db.rows(select(c.source, c.target).where(and_(
        c.model_id == model.model_id, c.kind == "K", c.target.in_(targets),
        c.z.is_not(None))).order_by(c.target, c.z.desc(), c.source))
    out, seen = {}, {}
    for r in rows:
        seen[r["target"]] = seen.get(r["target"], 0) + 1
        out[r["source"], r["target"]] = seen[r["target"]]
    return out


def _finding(row: dict, ranks: dict, kv: dict, evidence: dict) -> EdgeFinding:
    key = (row["source"], row["target"])
    return EdgeFinding(row["source"], row["target"], "K", row["z"], row["score"], row["rank"],
                       ranks.get(key), kv.get(row["target"]),
                       tuple(e for e in evidence.get((*key, "K"), [])
                             if e.metric.startswith("path_")))


def summarize(db: GraphDB, model: ModelRow) -> ModelSummary:
    """The summary of ``model`` (see the module docstring)."""
    info = structural_null_of(db, model)
    probes = tuple(p for p in probes_of(db, model) if not p.startswith("task:"))
    roles = {role: heads_with_role(db, model, role) for role in ROLES_SHOWN}
    heads = [f"L{la}H{h}" for la in range(model.n_layers) for h in range(model.n_heads)]
    kv = {n: r.kv_head for n, r in nodes_named(db, model.model_id, heads).items()}
    notes: list[str] = []
    if not probes:
        notes.append("no evidence stored: attention roles need probes (headgraph probe "
                     f"--model {model.name}, or ingest with --probes default)")
    prev = [r.node for r in roles["previous_token"]]
    ind = [r.node for r in roles["induction"][:TOP]]
    ind_all = {r.node for r in roles["induction"]}
    keys: list[EdgeFinding] = []
    strongest: list[EdgeFinding] = []
    disagreements: list[Disagreement] = []
    if info is None:
        notes.append("no structural z: the model was ingested before headgraph stored it; "
                     "re-ingest it with --replace for z and the weight findings")
    else:
        ranks = _z_ranks(db, model, ind)
        into_ind = _k_edges(db, model, targets=ind) if ind else []
        from_prev = (_k_edges(db, model, sources=prev, min_z=Z_STRONG,
                              limit=TOP + len(prev) * len(ind_all))
                     if prev else [])
        top_k = _k_edges(db, model, limit=TOP)
        wanted = [(r["source"], r["target"], "K") for r in (*into_ind, *from_prev, *top_k)]
        evidence = edge_evidence_of(db, model.model_id, wanted)
        keys = _key_edges([_finding(r, ranks, kv, evidence) for r in into_ind
                           if r["source"] in prev], ind)
        top_ranks = _z_ranks(db, model, sorted({x["target"] for x in top_k}))
        strongest = [_finding(r, top_ranks, kv, evidence) for r in top_k]
        disagreements = _disagreements(db, model, roles, into_ind, from_prev, ranks, kv)
    return ModelSummary(
        model=model, structural_null=info, probes=probes,
        counts=tuple((role, len(found)) for role, found in roles.items()),
        previous_token=_heads(roles["previous_token"], kv),
        induction=_heads(roles["induction"], kv), induction_keys=tuple(keys),
        duplicate_token=_heads(roles["duplicate_token"], kv),
        copying=_heads(roles["copying"], kv), strongest_k=tuple(strongest),
        virtual_heads=tuple(virtual_heads_of(db, model.model_id, top=3)),
        disagreements=tuple(disagreements), notes=tuple(notes))


def _key_edges(found: list[EdgeFinding], targets: list[str]) -> list[EdgeFinding]:
    """Per induction head (in ``targets`` order): its previous-token feeders at z >=
    :data:`Z_ABOVE`, strongest first, or the strongest one where none reaches it."""
    out = []
    for target in targets:
        mine = sorted((e for e in found if e.target == target), key=lambda e: -(e.z or 0.0))
        out += [e for e in mine if (e.z or 0.0) >= Z_ABOVE] or mine[:1]
    return out


def _share(db: GraphDB, model: ModelRow, role: str, node: str) -> str:
    """``"previous_token_share 0.20, null 0.04: +0.16 vs 0.25; rival 0.10"`` for a head that does not
    play ``role`` (its best probe, against the role's threshold)."""
    r = rule(role)
    found = role_candidates(db, model.model_id, [r], [node], None).get((node, role))
    return f"no {r.metric} stored" if found is None else found.explain()


def _disagreements(db: GraphDB, model: ModelRow, roles: dict[str, list[RoleRecord]],
                   into_ind: list[dict], from_prev: list[dict], ranks: dict,
                   kv: dict[str, int | None]) -> list[Disagreement]:
    prev = {r.node for r in roles["previous_token"]}
    ind_all = {r.node for r in roles["induction"]}
    out: list[Disagreement] = []
    for target in [r.node for r in roles["induction"][:TOP]]:
        feeders = [r for r in into_ind if r["target"] == target]
        if not feeders:
            continue
        best = feeders[0]
        if best["source"] not in prev:
            out.append(Disagreement(
                f"{best['source']} -> {target} (K)",
                f"{best['source']} is {target}'s strongest K-feeder by z ({best['z']:.1f})",
                f"{best['source']} is not a previous-token head "
                f"({_share(db, model, 'previous_token', best['source'])})"))
        from_p = [r for r in feeders if r["source"] in prev]
        if prev and not any(r["z"] >= Z_ABOVE for r in from_p):
            top = from_p[0] if from_p else None
            out.append(Disagreement(
                target, "no previous-token head feeds its keys above z "
                f"{Z_ABOVE:g}" + (f" (best {top['source']} at z {top['z']:.1f})" if top else ""),
                f"{target} is an induction head "
                f"({next(r for r in roles['induction'] if r.node == target).explain()})"))
    groups: dict[tuple[str, int | None], set[str]] = {}
    for name in ind_all:
        groups.setdefault(_group(name, kv), set()).add(name)
    shown = 0
    for r in from_prev:
        if r["z"] < Z_STRONG or shown >= TOP:
            break
        if r["target"] in ind_all:
            continue
        siblings = sorted(groups.get(_group(r["target"], kv), set()))
        gqa = (f"; it shares key/value head {kv.get(r['target'])} of layer "
               f"{r['target'][1:].split('H')[0]} with induction head(s) {', '.join(siblings)}: "
               "K-composition into a KV group is one fact for the group"
               if siblings and model.n_kv_heads < model.n_heads else "")
        out.append(Disagreement(
            f"{r['source']} -> {r['target']} (K)",
            f"previous-token head {r['source']} feeds {r['target']}'s keys at z {r['z']:.1f}",
            f"{r['target']} is not an induction head "
            f"({_share(db, model, 'induction', r['target'])}){gqa}"))
        shown += 1
    out.extend(_causal_not_weights(db, model))
    return out


def _group(node: str, kv: dict[str, int | None]) -> tuple[str, int | None]:
    return node.split("H")[0], kv.get(node)


def _causal_not_weights(db: GraphDB, model: ModelRow) -> list[Disagreement]:
    """Edges whose path patching costs >= EFFECT_SHARE of the largest effect of their probe
    while their weight z is below 1."""
    measured = top_edge_evidence(db, model, PATH_METRIC, top=200)
    if not measured:
        return []
    best: dict[str, float] = {}
    for e in measured:
        best[e.probe] = max(best.get(e.probe, 0.0), e.value)
    strong = [e for e in measured if best[e.probe] > 0 and e.value >= EFFECT_SHARE * best[e.probe]]
    if not strong:
        return []
    c = edges.c
    z = {}
    for kind in sorted({e.kind for e in strong}):
        rows = db.rows(select(c.source, c.target, c.z).where(and_(
            c.model_id == model.model_id, c.kind == kind,
            c.target.in_(sorted({e.target for e in strong if e.kind == kind})))))
        z.update({(r["source"], r["target"], kind): r["z"] for r in rows})
    out = []
    for e in strong:
        value = z.get((e.source, e.target, e.kind))
        if value is not None and value < 1.0:
            out.append(Disagreement(
                f"{e.source} -> {e.target} ({e.kind})",
                f"z {value + 0.0:.1f}, within what the model's structure explains".replace(
                    "z -0.0", "z 0.0"),
                f"removing it costs {e.value:.2f} nats on {e.probe} "
                f"({e.value / best[e.probe]:.0%} of the largest path effect there): it acts "
                "through more than this direct composition"))
    return out[:TOP]
