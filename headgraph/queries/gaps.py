"""Where weights and discovered circuits disagree: ``Model.evidenceGaps``.

Each weight edge has a calibrated strength ``z`` (``edges.z``): how many model-typical
deviations its composition stands above what the model's residual-stream structure
explains (the structural null, docs/science.md). A circuit (:mod:`headgraph.ingest.
circuits`) says which edges a tool found to matter for a task.

Definitions, per stored circuit (tool, task) of the model:

* **absent** (``ABSENT_FROM_CIRCUIT``): a weight edge with ``z >= min_z`` (default 3) that
  the circuit does not include: no ``<tool>:in_graph`` row of value 1 on the circuit's
  probe for that (source, target, kind). Edges whose end the circuit's naming cannot
  name (``POS_EMBED`` in EAP-IG names: its ``input`` is the token embedding alone) are
  left out. Strongest ``z`` first.
* **weak** (``WEAK_IN_WEIGHTS``): an edge the circuit includes whose weight edge has
  ``z < max_z`` (default 1): weight composition barely above chance. Weakest ``z`` first.
  A circuit edge with no weight edge stored (MLP sources, say) is outside what weights
  measure and is not listed.

Edges without a z are never listed; a model ingested before headgraph stored the
structural z is refused with a message that says so (:class:`BadInputError`).
Both lists hold at most ``top`` edges per circuit; the circuit's own score of the edge
(``<tool>:score``) comes along where the file had one.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, exists, literal, select

from headgraph.errors import BadInputError
from headgraph.queries.circuits import CircuitRow, list_circuits
from headgraph.queries.nodes import check_count, check_kind
from headgraph.queries.records import EdgeRow, ModelRow
from headgraph.queries.session import GraphDB
from headgraph.queries.structural import edge_columns, require_structural_z
from headgraph.schema import tables as t

ABSENT = "absent"
WEAK = "weak"
NO_POS_EMBED = ("eap",)


@dataclass(frozen=True)
class EvidenceGap:
    """One disagreement: ``gap`` (absent or weak), the ``circuit``, the weight ``edge``
    (with its ``z``), the circuit's score of it and whether the circuit includes it."""

    gap: str
    circuit: CircuitRow
    edge: EdgeRow
    circuit_score: float | None
    in_circuit: bool


def _z():
    return t.edges.c.z


def _matches(s, e):
    return and_(s.model_id == e.model_id, s.source == e.source, s.target == e.target,
                s.kind == e.kind)


def _gaps_of(db: GraphDB, model: ModelRow, circuit: CircuitRow, kind: str | None, top: int,
             min_z: float, max_z: float) -> list[EvidenceGap]:
    e = t.edges.c
    member = t.edge_scores.alias("member")
    score = t.edge_scores.alias("score")
    in_circuit = and_(_matches(member.c, e), member.c.metric == circuit.in_graph_metric,
                      member.c.probe == circuit.probe, member.c.value > 0.5)
    scored = and_(_matches(score.c, e), score.c.metric == circuit.score_metric,
                  score.c.probe == circuit.probe)
    base = [e.model_id == model.model_id, e.z.is_not(None)]
    if kind is not None:
        base.append(e.kind == kind)
    cols = [*edge_columns(True), score.c.value.label("circuit_score")]
    absent = select(*cols, literal(False).label("member")).select_from(
        t.edges.outerjoin(score, scored)).where(and_(
            *base, _z() >= min_z, ~exists().where(in_circuit)))
    if circuit.naming in NO_POS_EMBED:
        absent = absent.where(e.source != "POS_EMBED")
    absent = absent.order_by(_z().desc(), e.source, e.target, e.kind).limit(top)
    weak = select(*cols, literal(True).label("member")).select_from(
        t.edges.join(member, in_circuit).outerjoin(score, scored)).where(and_(
            *base, _z() < max_z)).order_by(_z().asc(), e.source, e.target, e.kind).limit(top)
    out = []
    for gap, stmt in ((ABSENT, absent), (WEAK, weak)):
        for r in db.rows(stmt):
            out.append(EvidenceGap(gap, circuit, EdgeRow.from_row(r), r["circuit_score"],
                                   bool(r["member"])))
    return out


def evidence_gaps(db: GraphDB, model: ModelRow, kind: str | None = None, top: int = 10, *,
                  tool: str | None = None, task: str | None = None, min_z: float = 3.0,
                  max_z: float = 1.0) -> list[EvidenceGap]:
    """Edges strong by weight but absent from a circuit, then circuit edges weak by
    weight, per circuit (see the module doc for the definitions).

    Examples
    --------
    >>> [(g.gap, g.edge.source, g.edge.target, round(g.edge.z, 1))
    ...  for g in evidence_gaps(db, toy, "K", top=1)]  # doctest: +SKIP
    [('absent', 'L0H2', 'L1H2', 7.8), ('weak', 'L0H1', 'L1H2', -0.7)]
    """
    check_count("top", top)
    if kind is not None:
        check_kind(kind)
    for name, value in (("min_z", min_z), ("max_z", max_z)):
        if not isinstance(value, int | float) or value != value:
            raise BadInputError(f"{name} must be a number, not {value!r}.")
    out: list[EvidenceGap] = []
    circuits = list_circuits(db, model, tool, task)
    if circuits:
        require_structural_z(model, "evidenceGaps")
    for circuit in circuits:
        out.extend(_gaps_of(db, model, circuit, kind, top, min_z, max_z))
    return out
