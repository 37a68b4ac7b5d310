"""An ingest, start to end: check the database, compute each model, commit each one.

One code path takes every model from its source to a committed transaction:

1. *preflight*: the database is checked before the expensive part (schema version, name
   clashes, a lock held by another writer), so a doomed ingest fails in a second rather
   than after minutes of matrix work; the write re-checks inside its transaction;
2. *compute*: each model's task (:func:`headgraph.ingest.task.compute_model`: load,
   compose, virtual heads, evidence). A single model runs here, in the driver, with its
   per-layer scoring tasks on the executor (a big model spread over a cluster); a fleet
   runs one task per model on the executor, at most a few in flight;
3. *commit*: the driver is the one committer. It writes each result as it arrives with
   :func:`headgraph.ingest.writer.write_model`, one transaction per model, so the
   database never holds half a model.

:func:`ingest` is a fleet of one that raises its model's error; :func:`ingest_fleet`
keeps the models that finished and reports the others (:class:`FleetReport`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

from headgraph.errors import HeadgraphError, ModelExistsError
from headgraph.ingest.compose import ComposedGraph
from headgraph.ingest.evidence.collect import EvidenceOptions
from headgraph.ingest.evidence.probes import parse_probes
from headgraph.ingest.executors import Executor, LocalExecutor
from headgraph.ingest.manifest import FleetItem, check_fleet
from headgraph.ingest.null import NullStat
from headgraph.ingest.sources import describe
from headgraph.ingest.task import ModelJob, ModelResult, TaskFailedError, compute_model
from headgraph.ingest.virtual import VirtualSearch
from headgraph.ingest.writer import FAULT_ENV, ModelLabel, WriteResult, refusal, write_model
from headgraph.schema import tables as t
from headgraph.schema.carry import attached_rows
from headgraph.schema.database import (
    DatabaseTarget,
    begin_writing,
    check_version,
    create_db_engine,
    raise_db_error,
    resolve_target,
    schema_state,
)

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class IngestReport:
    """What an ingest of one model stored and how long each stage took (seconds)."""

    name: str
    database: str
    n_nodes: int
    n_edges: int
    replaced: bool
    timings: dict[str, float] = field(default_factory=dict)
    graph: ComposedGraph | None = None
    kept: dict[str, int] = field(default_factory=dict)  # evidence a replace carried over
    dropped: dict[str, int] = field(default_factory=dict)  # ... or dropped (weights changed)
    virtual: VirtualSearch | None = None  # how the chains of 3 were searched


@dataclass(frozen=True)
class ModelOutcome:
    """One model's line of the fleet summary; ``error`` is set when it was not stored."""

    name: str
    source: str
    n_nodes: int = 0
    n_edges: int = 0
    compute_seconds: float = 0.0
    write_seconds: float = 0.0
    host: str = ""
    error: str | None = None


@dataclass(frozen=True)
class FleetReport:
    database: str
    outcomes: tuple[ModelOutcome, ...]  # in the order the fleet was given
    seconds: float

    @property
    def stored(self) -> tuple[ModelOutcome, ...]:
        return tuple(o for o in self.outcomes if o.error is None)

    @property
    def failed(self) -> tuple[ModelOutcome, ...]:
        return tuple(o for o in self.outcomes if o.error is not None)


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
                raise ModelExistsError(refusal(target, name, None,
                                               attached_rows(conn, clash.model_id)))
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


def describe_failure(exc: BaseException) -> str:
    """One line for the summary: a headgraph refusal's code and message, else the type."""
    if isinstance(exc, HeadgraphError):
        return f"[{exc.code}] {exc.message}"
    return f"{type(exc).__name__}: {exc}".strip().splitlines()[0][:500]


@dataclass(frozen=True)
class _Committed:
    job: ModelJob
    result: ModelResult | None
    written: WriteResult | None
    error: BaseException | None
    write_seconds: float = 0.0


def _commit_each(target: DatabaseTarget, results: Iterable[tuple[ModelJob, ModelResult |
                                                                   Exception]],
                 nulls: dict[str, NullStat], replace: bool, tick: Progress
                 ) -> Iterator[_Committed]:
    """The one committer: write each result in its own transaction as it arrives, and
    learn its null baselines for the jobs still to be built."""
    for job, result in results:
        if isinstance(result, Exception):
            yield _Committed(job, None, None, result)
            continue
        nulls.update({s.key: s for s in result.graph.nulls})
        start = time.perf_counter()
        tick("write", 0, 1)
        try:
            written = write_model(target, result.graph, result.info, job.label,
                                  replace=replace, virtual=result.virtual,
                                  evidence=result.evidence)
        except HeadgraphError as exc:
            yield _Committed(job, result, None, exc)
            continue
        tick("write", 1, 1)
        yield _Committed(job, result, written, None, time.perf_counter() - start)


def _jobs(items: Sequence[FleetItem], nulls: dict[str, NullStat], fault: str | None,
          **options) -> Iterator[ModelJob]:
    """One job per item, built as it is asked for (so it carries the baselines known then)."""
    for i, item in enumerate(items):
        yield ModelJob(index=i, source=item.source, label=item.label, fault=fault,
                       nulls=tuple(nulls.values()), **options)


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

    With ``probes`` (e.g. ``"default"``, see :mod:`headgraph.ingest.evidence.probes`) the
    model is also run on those probes after composition, and its evidence (role scores,
    ablations, path patching; :mod:`headgraph.ingest.evidence.collect`) is written in the
    same transaction. Probes are checked against the model before any matrix work starts.

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
    tick = progress or (lambda stage, done, total: None)
    if probes is not None:
        parse_probes(probes)  # a typo fails now, not after the load
    nulls = preflight(target, label.name, replace)
    # the model task runs here, in the driver: the fault switch is for executor workers
    (job,) = _jobs([FleetItem(source, label)], nulls, None, device=device,
                   allow_pickle=allow_pickle, virtual_top=virtual_top, probes=probes,
                   evidence_options=evidence_options)
    layers = None if executor is None or isinstance(executor, LocalExecutor) else executor
    result = compute_model(job, progress=tick, layers=layers)
    (done,) = _commit_each(target, [(job, result)], nulls, replace, tick)
    if done.error is not None:
        raise done.error
    return IngestReport(
        name=label.name,
        database=str(target),
        n_nodes=done.written.n_nodes,
        n_edges=done.written.n_edges,
        replaced=done.written.replaced,
        timings={**result.timings, "write": done.write_seconds},
        graph=result.graph if keep_graph else None,
        kept=done.written.kept,
        dropped=done.written.dropped,
        virtual=result.virtual_search,
    )


def ingest_fleet(
    items: Sequence[FleetItem],
    db: str | os.PathLike[str] | None = None,
    *,
    executor: Executor | None = None,
    replace: bool = False,
    device: str = "cpu",
    allow_pickle: bool = False,
    virtual_top: int = 100,
    probes: str | None = None,
    evidence_options: EvidenceOptions | None = None,
    progress: Progress | None = None,
) -> FleetReport:
    """Ingest every model of ``items`` into ``db``, each in its own transaction.

    Names are checked against the database first (all clashes reported together, before
    any work). A model whose task fails (bad weights, a worker that died on every retry)
    is listed in :attr:`FleetReport.failed` and leaves nothing behind; the others commit.

    Examples
    --------
    >>> from headgraph.ingest.manifest import fleet_items
    >>> report = ingest_fleet(fleet_items(["toy@0", "toy"]), "/tmp/doctest-fleet.duckdb",
    ...                       replace=True)
    >>> [o.name for o in report.stored]
    ['toy@0', 'toy']
    """
    check_fleet(items)
    if probes is not None:
        parse_probes(probes)  # a typo fails now, not in every task
    target = resolve_target(db)
    tick = progress or (lambda stage, done, total: None)
    started = time.perf_counter()
    nulls: dict[str, NullStat] = {}
    clashes = []
    for item in items:
        try:
            nulls.update(preflight(target, item.label.name, replace))
        except ModelExistsError:
            clashes.append(item.label.name)
    if clashes:
        raise ModelExistsError(
            f"{target}: models named {', '.join(map(repr, clashes))} are already stored. Pass "
            "--replace to overwrite them, or name these otherwise (--manifest, column 'name')."
        )
    jobs = _jobs(items, nulls, os.environ.get(FAULT_ENV), device=device,
                 allow_pickle=allow_pickle,
                 virtual_top=virtual_top, probes=probes, evidence_options=evidence_options)
    total = len(items)
    tick("tasks finished", 0, total)
    tick("models written", 0, total)
    counted = {"tasks finished": 0, "models written": 0}

    def count(results):
        for pair in results:
            counted["tasks finished"] += 1
            tick("tasks finished", counted["tasks finished"], total)
            yield pair

    quiet = lambda stage, done, total: None  # noqa: E731 - per-model stages stay silent
    outcomes: dict[int, ModelOutcome] = {}
    run = executor or LocalExecutor()
    for c in _commit_each(target, count(run.run_models(jobs)), nulls, replace, quiet):
        name, source = c.job.label.name, c.job.source
        if c.error is not None:
            outcomes[c.job.index] = ModelOutcome(name, source, error=describe_failure(c.error))
            continue
        counted["models written"] += 1
        tick("models written", counted["models written"], total)
        outcomes[c.job.index] = ModelOutcome(
            name, source, n_nodes=c.written.n_nodes, n_edges=c.written.n_edges,
            compute_seconds=sum(c.result.timings.values()), write_seconds=c.write_seconds,
            host=c.result.host)
    for i, item in enumerate(items):  # an executor that lost a job must not hide it
        outcomes.setdefault(i, ModelOutcome(item.label.name, item.source,
                                            error=describe_failure(TaskFailedError(
                                                "the executor returned no result"))))
    return FleetReport(database=str(target),
                       outcomes=tuple(outcomes[i] for i in range(len(items))),
                       seconds=time.perf_counter() - started)
