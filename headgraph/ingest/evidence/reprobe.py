"""Add evidence to a model that is already stored, without recomputing its weight graph.

``probe_model`` (the ``headgraph probe`` command) re-opens the model from its stored
``models.source``, refuses it if its weights digest differs from the stored one, runs the
probes, and writes the rows in one transaction that replaces the stored rows of the same
probe, metric and node or edge (:func:`~headgraph.ingest.evidence.collect.store_evidence`).
With ``attribution="none"`` it runs no attribution and confirms exactly the heads and edges
that the attribution stored earlier for the same probe ranks first: exact confirmations
added later. The database is held only for two short moments, reading the model row (and
that stored attribution) before the run and writing after it, so a server can keep
reading the file while the model runs; the write waits for the file as every writer does
(:func:`~headgraph.schema.database.begin_writing`: a headgraph server serving it steps
aside) and re-checks that the model was not replaced in between.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from sqlalchemy import Connection, and_, select
from sqlalchemy.exc import DBAPIError

from headgraph.errors import DatabaseError, ModelNotFoundError
from headgraph.ingest.evidence.agreement import Agreement
from headgraph.ingest.evidence.attribution import MODES, Attribution
from headgraph.ingest.evidence.collect import (
    EvidenceOptions,
    PriorAttribution,
    Progress,
    collect_evidence,
    store_evidence,
)
from headgraph.ingest.evidence.probes import build_probes, parse_probes
from headgraph.ingest.evidence.runnable import load_runnable
from headgraph.schema import tables as t
from headgraph.schema.database import (
    DatabaseTarget,
    begin_writing,
    check_version,
    create_db_engine,
    raise_db_error,
    resolve_target,
    schema_state,
)


@dataclass(frozen=True)
class StoredModel:
    """What probing needs from a ``models`` row."""

    model_id: int
    name: str
    source: str
    weights_digest: str


@dataclass(frozen=True)
class ProbeReport:
    """What ``probe_model`` wrote: canonical probe names, row counts, seconds per stage,
    forward passes per stage, and notes (e.g. why path patching was skipped)."""

    name: str
    database: str
    probes: tuple[str, ...]
    n_node_scores: int
    n_edge_scores: int
    timings: dict[str, float] = field(default_factory=dict)
    forward_passes: dict[str, int] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    agreement: tuple[Agreement, ...] = ()


def _model_row(conn: Connection, target: DatabaseTarget, name: str) -> StoredModel:
    version = schema_state(conn)
    if version is None:
        raise DatabaseError(f"{target}: the database is empty; ingest the model first.")
    check_version(version, target)
    m = t.models.c
    row = conn.execute(select(m.model_id, m.name, m.source, m.weights_digest)
                       .where(m.name == name)).first()
    if row is None:
        known = [r[0] for r in conn.execute(select(m.name).order_by(m.name).limit(20))]
        raise ModelNotFoundError(f"no model named {name!r} in {target}. Stored: "
                                 f"{', '.join(known) or 'none'}.")
    return StoredModel(*row)


def stored_attribution(conn: Connection, model_id: int) -> PriorAttribution:
    """:data:`PriorAttribution` from the stored ``attrib_*`` (else ``ig_*``) rows of each
    probe of the model."""
    found: dict[str, Attribution] = {}
    for method in ("attrib", "ig"):
        n, e = t.node_scores.c, t.edge_scores.c
        for mode in MODES:
            for r in conn.execute(select(n.probe, n.node, n.value).where(and_(
                    n.model_id == model_id, n.metric == f"{method}_ablation_{mode}_dloss"))):
                a = found.setdefault(r[0], Attribution(method))
                if a.method == method:
                    a.nodes.setdefault(mode, {})[r[1]] = r[2]
            for r in conn.execute(select(e.probe, e.source, e.target, e.kind, e.value).where(
                    and_(e.model_id == model_id, e.metric == f"{method}_path_{mode}_dloss"))):
                a = found.setdefault(r[0], Attribution(method))
                if a.method == method:
                    a.edges.setdefault(mode, {})[(r[1], r[2], r[3])] = r[4]
    return found.get


def probe_model(db: str | os.PathLike[str] | None, model: str, probes: str = "default", *,
                options: EvidenceOptions | None = None, allow_pickle: bool = False,
                progress: Progress | None = None) -> ProbeReport:
    """Run ``probes`` on stored model ``model`` and replace its evidence from them.

    Examples
    --------
    >>> probe_model("/tmp/doctest-headgraph.duckdb", "toy", "repeat(seq=10,batch=4)")
    ... # doctest: +SKIP
    """
    opts = options or EvidenceOptions()
    specs = parse_probes(probes)
    target = resolve_target(db)
    if target.path is not None and not target.path.exists():
        raise DatabaseError(f"{target}: no database file there; ingest the model first.")
    timings: dict[str, float] = {}
    start = time.perf_counter()
    engine = create_db_engine(target, read_only=True)
    try:
        with engine.connect() as conn:
            stored = _model_row(conn, target, model)
            prior = (stored_attribution(conn, stored.model_id) if opts.attribution == "none"
                     else None)
    except DBAPIError as exc:
        raise_db_error(target, exc, read_only=True)
    finally:
        engine.dispose()
    runnable = load_runnable(stored.source, stored.weights_digest, allow_pickle=allow_pickle)
    built = build_probes(specs, runnable.vocab)
    timings["load"] = time.perf_counter() - start
    evidence = collect_evidence(runnable, built, opts, progress, prior=prior)
    timings.update(evidence.timings)
    start = time.perf_counter()
    engine = create_db_engine(target, read_only=False)
    try:
        with begin_writing(engine, target) as conn:  # a server beside it steps aside
            again = _model_row(conn, target, model)
            if again != stored:
                raise DatabaseError(f"{target}: model {model!r} was replaced while it was "
                                    "being probed; nothing was written. Run probe again.")
            agreement = store_evidence(conn, stored.model_id, evidence)
    except DBAPIError as exc:
        raise_db_error(target, exc, read_only=False)
    finally:
        engine.dispose()
    timings["write"] = time.perf_counter() - start
    return ProbeReport(stored.name, str(target), evidence.probes, len(evidence.node_scores),
                       len(evidence.edge_scores), timings, evidence.forward_passes,
                       evidence.notes, tuple(agreement))
