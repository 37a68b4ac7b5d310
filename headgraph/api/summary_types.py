"""GraphQL types of a model's structural null (``Model.structuralNull``) and summary
(``Model.summary``): leaf values that name nodes rather than refer to ``Node``, so that
:mod:`headgraph.api.types` can return them without an import cycle."""

from __future__ import annotations

import strawberry

from headgraph.api.enums import EdgeKind
from headgraph.api.values import Score, f32
from headgraph.queries.structural import StructuralNullInfo
from headgraph.queries.summary import Disagreement as DisagreementRecord
from headgraph.queries.summary import EdgeFinding as EdgeFindingRecord
from headgraph.queries.summary import HeadFinding as HeadFindingRecord
from headgraph.queries.summary import ModelSummary as SummaryRecord


@strawberry.type(description="The empirical-null calibration of one kind and family of "
                 "edges: stored z = (raw z - delta) / phi.")
class NullCalibration:
    kind: EdgeKind
    family: str = strawberry.field(description="head->head, dense->head, head->dense or "
                                   "dense->dense.")
    edges: int = strawberry.field(description="Edges of this kind and family with a z.")
    delta: float = strawberry.field(description="Median raw z (the centre of the bulk).")
    phi: float = strawberry.field(description="max(1, 1.4826 MAD of raw z): how much wider "
                                  "than the analytic null the model's unrelated pairs spread "
                                  "(1 on random weights; about 4 on trained models).")
    basis: str = strawberry.field(description="Where delta and phi came from: own, another "
                                  "kind/family (too few edges here), or analytic (0, 1).")


@strawberry.type(description="The structural null a model's z is measured against: random "
                 "rotations of the residual stream within bands of the model's own metric "
                 "(the mean write density of its heads), calibrated per kind and family "
                 "(docs/science.md).")
class StructuralNull:
    bands: str = strawberry.field(description="Band sizes in eigenvalue order; '+1': a "
                                  "centred model's all-ones direction, its own band.")
    band_sizes: list[int]
    calibration: list[NullCalibration]

    @classmethod
    def of(cls, info: StructuralNullInfo) -> StructuralNull:
        return cls(bands=info.bands, band_sizes=list(info.band_sizes), calibration=[
            NullCalibration(kind=EdgeKind(c.kind), family=c.family, edges=c.edges,
                            delta=c.delta, phi=c.phi, basis=c.basis)
            for c in info.calibration])


@strawberry.type(description="A head that plays a role, with the number that earned it.")
class HeadFinding:
    node: str
    value: float
    metric: str = strawberry.field(description="The share (attention roles) or "
                                   "copying_ratio (weights).")
    probe: str | None = strawberry.field(description="The probe where the share stands "
                                         "furthest above its null; null for weight roles.")
    kv_head: int | None
    null: float | None = strawberry.field(description="The same head's share on that probe "
                                          "with the role's relation taken away (positions "
                                          "shuffled or tokens redrawn); the role is read "
                                          "from value - null. Null for weight roles and for "
                                          "evidence stored before nulls were measured.")

    @classmethod
    def of(cls, h: HeadFindingRecord) -> HeadFinding:
        return cls(node=h.node, value=f32(h.value), metric=h.metric, probe=h.probe,
                   kv_head=h.kv_head, null=None if h.null is None else f32(h.null))


@strawberry.type(description="A weight edge in a summary, with its evidence.")
class EdgeFinding:
    source: str
    target: str
    kind: EdgeKind
    z: float | None = strawberry.field(description="Structural z (as Edge.z).")
    score: float
    rank: int = strawberry.field(description="Place among the target's feeders by score.")
    z_rank: int | None = strawberry.field(description="Place among the target's feeders of "
                                          "this kind by z.")
    kv_head: int | None = strawberry.field(description="The target's key/value head (K, V).")
    evidence: list[Score] = strawberry.field(description="Path patching on this edge.")

    @classmethod
    def of(cls, e: EdgeFindingRecord) -> EdgeFinding:
        return cls(source=e.source, target=e.target, kind=EdgeKind(e.kind), z=f32(e.z),
                   score=f32(e.score), rank=e.rank, z_rank=e.z_rank, kv_head=e.kv_head,
                   evidence=[Score.from_row(x) for x in e.evidence])


@strawberry.type(description="Where the weights and the evidence say different things.")
class Disagreement:
    subject: str
    weights: str = strawberry.field(description="What the weights say, with the number.")
    evidence: str = strawberry.field(description="What the evidence says, with the number.")

    @classmethod
    def of(cls, d: DisagreementRecord) -> Disagreement:
        return cls(subject=d.subject, weights=d.weights, evidence=d.evidence)


@strawberry.type(description="How many heads play a role.")
class RoleCount:
    role: str
    heads: int


@strawberry.type(description="A virtual head in a summary (see Model.virtualHeads).")
class SummaryVirtualHead:
    heads: list[str]
    score: float
    copying_ratio: float | None


@strawberry.type(description="The findings a researcher looks for first, each with its "
                 "evidence: previous-token and induction heads and the K edges between them, "
                 "duplicate-token and copying heads, the strongest K edges and virtual heads, "
                 "and where weights and evidence disagree (headgraph.queries.summary).")
class ModelSummary:
    structural_null: StructuralNull | None
    probes: list[str] = strawberry.field(description="Probes with stored evidence.")
    role_counts: list[RoleCount]
    previous_token: list[HeadFinding]
    induction: list[HeadFinding]
    induction_keys: list[EdgeFinding] = strawberry.field(
        description="K edges from previous-token heads into each listed induction head at z "
                    ">= 3 (or its strongest one where none reaches 3).")
    duplicate_token: list[HeadFinding]
    copying: list[HeadFinding]
    strongest_k_edges: list[EdgeFinding] = strawberry.field(
        description="The strongest head -> head K edges by z (weights alone).")
    virtual_heads: list[SummaryVirtualHead]
    disagreements: list[Disagreement]
    notes: list[str]
    text: str = strawberry.field(description="The summary as `headgraph summary` prints it.")

    @classmethod
    def of(cls, s: SummaryRecord) -> ModelSummary:
        return cls(
            structural_null=None if s.structural_null is None else
            StructuralNull.of(s.structural_null),
            probes=list(s.probes),
            role_counts=[RoleCount(role=r, heads=n) for r, n in s.counts],
            previous_token=[HeadFinding.of(h) for h in s.previous_token],
            induction=[HeadFinding.of(h) for h in s.induction],
            induction_keys=[EdgeFinding.of(e) for e in s.induction_keys],
            duplicate_token=[HeadFinding.of(h) for h in s.duplicate_token],
            copying=[HeadFinding.of(h) for h in s.copying],
            strongest_k_edges=[EdgeFinding.of(e) for e in s.strongest_k],
            virtual_heads=[SummaryVirtualHead(heads=list(v.heads), score=f32(v.score),
                                              copying_ratio=f32(v.copying_ratio))
                           for v in s.virtual_heads],
            disagreements=[Disagreement.of(d) for d in s.disagreements],
            notes=list(s.notes), text="\n".join(s.lines()))
