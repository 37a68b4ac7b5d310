"""One ingest, start to end: check the database, load, compose, write in one transaction.

The database is checked *before* the expensive part (schema version, name clash, a lock
held by another writer), so a doomed ingest fails in a second rather than after minutes
of matrix work; the write re-checks inside its transaction.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

from headgraph.errors import ModelExistsError
from headgraph.ingest.compose import ComposedGraph, compose
from headgraph.ingest.evidence import EvidenceOptions, collect_evidence, feeders_from_graph
from headgraph.ingest.null import NullStat, Shape, null_key, sample_null
from headgraph.ingest.probes import build_probes, parse_probes
from headgraph.ingest.runnable import runnable_from_reader
from headgraph.ingest.sources import describe, open_source
from headgraph.ingest.virtual import score_virtual_heads
from headgraph.ingest.writer import ModelLabel, WriteResult, write_model
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

if TYPE_CHECKING:
    from headgraph.ingest.executors import Executor

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class IngestReport:
    """What an ingest stored and how long each stage took (seconds)."""

    name: str
    database: str
    n_nodes: int
    n_edges: int
    replaced: bool
    timings: dict[str, float] = field(default_factory=dict)
    graph: ComposedGraph | None = None


def preflight(target: DatabaseTarget, name: str, replace: bool) -> dict[str, NullStat]:
    """Fail fast on a bad database; return its cached null baselines."""
    if target.path is not None and not target.path.exists():
        return {}
    engine = create_db_engine(target, read_only=False)
    try:
        with begin_writing(engine, target) as conn:
            version = schema_state(conn)
            check_version(version, target)
            if version is None:
                return {}
            clash = conn.execute(select(t.models.c.model_id).where(t.models.c.name == name)).first()
            if clash is not None and not replace:
                raise ModelExistsError(
                    f"{target}: a model named {name!r} is already stored. Pass --replace to "
                    "overwrite it, or --name to store this one under another name."
                )
            rows = conn.execute(select(t.baselines)).mappings()
            return {
                r["key"]: NullStat(r["key"], r["mean"], r["std"], r["samples"], r["seed"])
                for r in rows
            }
    except DBAPIError as exc:
        raise_db_error(target, exc, read_only=False)
    finally:
        engine.dispose()
    return {}


def cached_null(cache: dict[str, NullStat]) -> Callable[[Shape, Shape, str], NullStat]:
    def provider(writer: Shape, reader: Shape, kind: str) -> NullStat:
        key = null_key(writer, reader, kind)
        if key not in cache:
            cache[key] = sample_null(writer, reader, kind)
        return cache[key]

    return provider


def ingest(
    source: str,
    db: str | os.PathLike[str] | None = None,
    *,
    name: str | None = None,
    family: str | None = None,
    step: int | None = None,
    replace: bool = False,
    device: str = "cpu",
    allow_pickle: bool = False,
    progress: Progress | None = None,
    keep_graph: bool = False,
    virtual_top: int = 100,
    probes: str | None = None,
    evidence_options: EvidenceOptions | None = None,
    executor: Executor | None = None,
) -> IngestReport:
    """Ingest ``source`` into database ``db`` (path or URL) as one model.

    With ``probes`` (e.g. ``"default"``, see :mod:`headgraph.ingest.probes`) the model is
    also run on those probes after composition, and its evidence (role scores, ablations,
    path patching; :mod:`headgraph.ingest.evidence`) is written in the same transaction.
    Probes are checked against the model before any matrix work starts.

    ``executor`` runs the per-layer scoring tasks (default: here, in order; see
    :mod:`headgraph.ingest.executors`); the write is the same either way.

    Examples
    --------
    >>> report = ingest("toy", "/tmp/doctest-headgraph.duckdb", replace=True)
    >>> report.name
    'toy'
    """
    target = resolve_target(db)
    defaults = describe(source)
    label = ModelLabel(
        name=name or defaults.name,
        family=family if family is not None else defaults.family,
        step=step if step is not None else defaults.step,
    )
    timings: dict[str, float] = {}
    tick = progress or (lambda stage, done, total: None)

    start = time.perf_counter()
    specs = parse_probes(probes) if probes is not None else None
    nulls = preflight(target, label.name, replace)
    tick("load", 0, 1)
    reader = open_source(source, allow_pickle=allow_pickle)
    runnable, built = None, ()
    try:
        if specs is not None:
            runnable = runnable_from_reader(reader)
            built = build_probes(specs, runnable.vocab)
    except BaseException:
        reader.close()
        raise
    timings["load"] = time.perf_counter() - start
    tick("load", 1, 1)

    start = time.perf_counter()
    try:
        graph = compose(reader, device=device, null=cached_null(nulls), progress=tick,
                        executor=executor)
        timings["compose"] = time.perf_counter() - start
        start = time.perf_counter()
        tick("virtual", 0, 1)
        virtual = tuple(score_virtual_heads(reader, graph, top=virtual_top, device=device))
        tick("virtual", 1, 1)
        timings["virtual heads"] = time.perf_counter() - start
        evidence = None
        if runnable is not None:
            start = time.perf_counter()
            evidence = collect_evidence(runnable, built, feeders_from_graph(graph),
                                        evidence_options, progress=tick)
            timings["evidence"] = time.perf_counter() - start
    finally:
        reader.close()

    start = time.perf_counter()
    tick("write", 0, 1)
    result: WriteResult = write_model(target, graph, reader.info, label, replace=replace,
                                      virtual=virtual, evidence=evidence)
    timings["write"] = time.perf_counter() - start
    tick("write", 1, 1)
    return IngestReport(
        name=label.name,
        database=str(target),
        n_nodes=result.n_nodes,
        n_edges=result.n_edges,
        replaced=result.replaced,
        timings=timings,
        graph=graph if keep_graph else None,
    )
