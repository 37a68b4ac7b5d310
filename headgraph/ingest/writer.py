"""Write one composed model into the database in a single transaction.

Readers never see half a model and a failed or killed ingest leaves the database exactly
as it was: the model row, its nodes and edges (and, with ``replace``, the removal of the
old version) commit together or not at all. A replace keeps the old version's evidence and
circuits when the weights are unchanged (same ``weights_digest``) and drops them, saying
so, when they differ (:mod:`headgraph.schema.carry`).
"""

from __future__ import annotations

import datetime as dt
import os
import signal
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
from sqlalchemy import insert, select
from sqlalchemy.exc import DBAPIError

from headgraph.errors import ModelExistsError
from headgraph.ingest.compose import EDGE_KINDS, ComposedGraph
from headgraph.ingest.evidence.collect import Evidence, store_evidence
from headgraph.ingest.null import NullStat
from headgraph.ingest.spec import SourceInfo
from headgraph.ingest.virtual import VirtualHead
from headgraph.schema import arrays
from headgraph.schema import tables as t
from headgraph.schema.bulk import bulk_insert
from headgraph.schema.carry import attached_rows, describe_rows, put_rows, take_rows
from headgraph.schema.database import (
    DatabaseTarget,
    begin_writing,
    create_db_engine,
    ensure_schema,
    raise_db_error,
)
from headgraph.schema.partitions import delete_model, insert_model_edges, sweep_partitions
from headgraph.version import __version__

FAULT_ENV = "HEADGRAPH_FAULT"


def fault_point(name: str) -> None:
    """Test-only switch: with ``HEADGRAPH_FAULT=name`` the process kills itself here with
    SIGKILL (no cleanup, no rollback handler), as a crash or ``kill -9`` would."""
    if os.environ.get(FAULT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True)
class ModelLabel:
    """How the user names a model: a unique ``name``, and optionally a training-run
    ``family`` and ``step`` for checkpoints."""

    name: str
    family: str | None = None
    step: int | None = None


@dataclass(frozen=True)
class WriteResult:
    """What a write stored; on a replace, the evidence it ``kept`` (weights unchanged) or
    ``dropped`` (weights changed), row counts by table."""

    model_id: int
    n_nodes: int
    n_edges: int
    replaced: bool
    kept: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)


def refusal(target: DatabaseTarget, name: str, same_weights: bool | None,
            attached: dict[str, int]) -> str:
    """Why a model of this name cannot be stored without ``--replace``, and what a replace
    would keep or drop (``same_weights`` None: not known yet)."""
    text = f"{target}: a model named {name!r} is already stored"
    if attached:
        fate = {True: "keeps them (the weights are unchanged)",
                False: "drops them (these weights differ)",
                None: "keeps them if the weights are unchanged, else drops them"}[same_weights]
        text += f", with {describe_rows(attached)}; --replace {fate}"
    return text + (". Pass --replace to overwrite it, or --name to store this one under "
                   "another name.")


def _opt_int(values: np.ndarray) -> pa.Array:
    return arrays.numeric(values, np.int16, null=values < 0)


def _opt_float(values: np.ndarray) -> pa.Array:
    return arrays.numeric(values, np.float32, null=~np.isfinite(values))


def nodes_table(model_id: int, graph: ComposedGraph) -> pa.Table:
    n = graph.nodes
    kv = np.where(n.heads >= 0, n.heads // graph.spec.group, -1)
    cols = {
        "model_id": arrays.constant(model_id, len(n.names)),
        "node": arrays.strings(n.names),
        "kind": arrays.strings(n.kinds),
        "layer": _opt_int(n.layers),
        "head": _opt_int(n.heads),
        "kv_head": _opt_int(kv),
    }
    for metric, values in graph.metrics.items():
        cols[metric] = _opt_float(values)
    return pa.table(cols)


def edges_table(model_id: int, graph: ComposedGraph) -> pa.Table:
    e = graph.edges
    names = arrays.strings(graph.nodes.names)
    kinds = arrays.strings(EDGE_KINDS)
    return pa.table(
        {
            "model_id": arrays.constant(model_id, len(e)),
            "source": names.take(arrays.numeric(e.source, np.int32)),
            "target": names.take(arrays.numeric(e.target, np.int32)),
            "kind": kinds.take(arrays.numeric(e.kind, np.int32)),
            "score": arrays.numeric(e.score, np.float32),
            "baseline": arrays.numeric(e.baseline, np.float32),
            "null_std": arrays.numeric(e.null_std, np.float32),
            "rank": arrays.numeric(e.rank, np.int32),
            "z": _structural_z(graph),
        }
    )


def _structural_z(graph: ComposedGraph) -> pa.Array:
    """The calibrated structural z of every edge (NULL where undefined or not computed)."""
    if graph.structural is None:
        return pa.nulls(len(graph.edges), pa.float32())
    return _opt_float(graph.structural.z)


def calibration_rows(model_id: int, graph: ComposedGraph) -> list[dict]:
    """``null_calibration`` rows of the model (none without a structural null)."""
    if graph.structural is None:
        return []
    return [{"model_id": model_id, "kind": c.kind, "family": c.family, "edges": c.edges,
             "delta": c.delta, "phi": c.phi, "basis": c.basis}
            for c in graph.structural.calibration]


def virtual_table(model_id: int, virtual: tuple[VirtualHead, ...]) -> pa.Table:
    def floats(values: list[float]) -> pa.Array:
        return arrays.numeric(np.asarray(values, np.float32))

    return pa.table({
        "model_id": arrays.constant(model_id, len(virtual)),
        "heads": arrays.strings([",".join(v.heads) for v in virtual]),
        "length": arrays.numeric(np.asarray([len(v.heads) for v in virtual], np.int16)),
        "score": floats([v.score for v in virtual]),
        "heuristic": floats([v.heuristic for v in virtual]),
        "copying_positive_fraction": floats([v.copying_positive_fraction for v in virtual]),
        "copying_ratio": floats([v.copying_ratio for v in virtual]),
    })


def write_model(
    target: DatabaseTarget,
    graph: ComposedGraph,
    info: SourceInfo,
    label: ModelLabel,
    *,
    replace: bool = False,
    virtual: tuple[VirtualHead, ...] = (),
    evidence: Evidence | None = None,
) -> WriteResult:
    """Store ``graph`` as model ``label.name`` in one transaction (with its ``evidence``
    rows, ``node_scores`` and ``edge_scores``, when given)."""
    engine = create_db_engine(target, read_only=False)
    spec = graph.spec
    try:
        with begin_writing(engine, target) as conn:
            ensure_schema(conn, target)
            old = conn.execute(
                select(t.models.c.model_id, t.models.c.weights_digest)
                .where(t.models.c.name == label.name)
            ).first()
            carried, dropped = None, {}
            if old is not None:
                same = old.weights_digest == info.weights_digest
                if not replace:
                    raise ModelExistsError(refusal(target, label.name, same,
                                                   attached_rows(conn, old.model_id)))
                if same:
                    carried = take_rows(conn, old.model_id)
                else:
                    dropped = attached_rows(conn, old.model_id)
                delete_model(conn, old.model_id)
            _store_nulls(conn, graph.nulls)
            model_id = conn.execute(
                insert(t.models)
                .values(
                    name=label.name,
                    family=label.family,
                    step=label.step,
                    source=info.source,
                    architecture=spec.architecture,
                    n_layers=spec.n_layers,
                    n_heads=spec.n_heads,
                    n_kv_heads=spec.n_kv_heads,
                    d_model=spec.d_model,
                    d_head=spec.d_head,
                    d_mlp=spec.d_mlp,
                    d_vocab=spec.d_vocab,
                    n_ctx=spec.n_ctx,
                    position_scheme=spec.positional,
                    parallel_blocks=spec.parallel_blocks,
                    readout=spec.readout,
                    processing=spec.processing,
                    weights_digest=info.weights_digest,
                    ingested_at=dt.datetime.now(dt.UTC),
                    headgraph_version=__version__,
                    n_nodes=len(graph.nodes.names),
                    n_edges=len(graph.edges),
                    null_bands=(None if graph.structural is None
                                else graph.structural.bands_text()),
                )
                .returning(t.models.c.model_id)
            ).scalar_one()
            bulk_insert(conn, "nodes", nodes_table(model_id, graph))
            insert_model_edges(conn, model_id, edges_table(model_id, graph))
            bulk_insert(conn, "virtual_heads", virtual_table(model_id, virtual))
            if graph.structural is not None and graph.structural.calibration:
                conn.execute(insert(t.null_calibration), calibration_rows(model_id, graph))
            kept = {} if carried is None else put_rows(conn, model_id, carried)
            if evidence is not None:
                store_evidence(conn, model_id, evidence)
            fault_point("before_commit")
        sweep_partitions(engine)  # PostgreSQL: drop the partition a replace left empty
    except DBAPIError as exc:
        raise_db_error(target, exc, read_only=False)
    finally:
        engine.dispose()
    return WriteResult(
        model_id=model_id,
        n_nodes=len(graph.nodes.names),
        n_edges=len(graph.edges),
        replaced=old is not None,
        kept=kept,
        dropped=dropped,
    )


def _store_nulls(conn, nulls: tuple[NullStat, ...]) -> None:
    if not nulls:
        return
    have = {r[0] for r in conn.execute(select(t.baselines.c.key))}
    rows = [
        {"key": s.key, "mean": s.mean, "std": s.std, "samples": s.samples, "seed": s.seed}
        for s in nulls
        if s.key not in have
    ]
    if rows:
        conn.execute(insert(t.baselines), rows)
