"""Ingest a fleet of models (checkpoints of a training run, a zoo): one task per model.

Each model is one task, :func:`compute_model` (load, compose, virtual heads, optional
evidence), which returns plain numpy/dataclass records: a :class:`ModelResult`. The tasks
run on an executor (:mod:`.executors`: in this process, or one per Ray worker), at most a
few in flight so the driver's memory stays flat. The driver is the *one committer*: it
writes each result as it arrives with :func:`headgraph.ingest.writer.write_model`, one
transaction per model, exactly as a single ingest does. The database never holds half a
model; a fleet that fails half-way keeps the models that finished and reports the others
(:class:`FleetReport`).

Sources come from the command line (``headgraph ingest A B C --family F``) or from a CSV
manifest (:func:`read_manifest`, columns ``source,name,family,step``). A step not given is
read from a directory name such as ``checkpoint-1500`` or ``step1500``
(:func:`headgraph.ingest.sources.step_from_name`).

Fault injection (tests only)
----------------------------
:func:`inject_fault` is the one switch; Ray tasks call it once they have started work. The
driver reads ``HEADGRAPH_FAULT`` when it builds each task and ships the value with it, so it
reaches workers that were started before it was set. Values:

``worker_exit_once:PATH``
    the first task to get here creates the marker file ``PATH`` and kills its own worker
    process with ``os._exit(1)`` (mid-task: no cleanup, as a crash or an OOM kill would);
    later attempts find the marker and carry on. Ray retries the task (``max_retries``).
``worker_exit:UNIT``
    every attempt of task ``UNIT`` kills its worker, so it fails once the retries run out.
``task_fail:UNIT``
    every attempt of task ``UNIT`` raises ``RuntimeError``.

``UNIT`` is a model name (fleet tasks) or ``layerN`` (the scoring task of layer N). Other
values (such as the writer's ``before_commit``, see :func:`.writer.fault_point`) are ignored
here. The local executor never calls the switch: killing the driver is what
``before_commit`` is for.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from headgraph.errors import BadInputError, HeadgraphError, ModelExistsError
from headgraph.ingest.compose import ComposedGraph, compose
from headgraph.ingest.evidence import (
    Evidence,
    EvidenceOptions,
    collect_evidence,
    feeders_from_graph,
)
from headgraph.ingest.executors import FleetExecutor, LocalExecutor, TaskFailedError
from headgraph.ingest.null import NullStat
from headgraph.ingest.pipeline import cached_null, preflight
from headgraph.ingest.probes import build_probes, parse_probes
from headgraph.ingest.runnable import runnable_from_reader
from headgraph.ingest.sources import describe, open_source, step_from_name
from headgraph.ingest.spec import SourceInfo
from headgraph.ingest.virtual import VirtualHead, score_virtual_heads
from headgraph.ingest.writer import FAULT_ENV, ModelLabel, write_model
from headgraph.schema.database import resolve_target

Progress = Callable[[str, int, int], None]

MANIFEST_COLUMNS = ("source", "name", "family", "step")


def inject_fault(spec: str | None, unit: str) -> None:
    """Test-only switch (see the module docstring): maybe kill this worker or fail ``unit``."""
    mode, _, arg = (spec or "").partition(":")
    if mode == "worker_exit_once" and arg:
        try:
            fd = os.open(arg, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, f"{unit} pid={os.getpid()}\n".encode())
        os.close(fd)
        os._exit(1)
    if mode == "worker_exit" and arg == unit:
        os._exit(1)
    if mode == "task_fail" and arg == unit:
        raise RuntimeError(f"injected failure of {unit} ({FAULT_ENV}={spec})")


@dataclass(frozen=True)
class FleetItem:
    """One model of a fleet: where its weights are and what to call it."""

    source: str
    label: ModelLabel


@dataclass(frozen=True)
class ModelJob:
    """Everything one model's task needs (picklable; built by the driver)."""

    index: int
    item: FleetItem
    device: str = "cpu"
    allow_pickle: bool = False
    virtual_top: int = 100
    probes: str | None = None
    evidence_options: EvidenceOptions | None = None
    nulls: tuple[NullStat, ...] = ()  # baselines the driver already knows
    fault: str | None = None  # HEADGRAPH_FAULT as the driver saw it


@dataclass(frozen=True)
class ModelResult:
    """What a model's task returns: everything :func:`write_model` needs."""

    index: int
    graph: ComposedGraph
    info: SourceInfo
    virtual: tuple[VirtualHead, ...]
    evidence: Evidence | None
    timings: dict[str, float] = field(default_factory=dict)
    host: str = ""  # hostname:pid of the process that computed it


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


def fleet_items(sources: Sequence[str], family: str | None = None) -> list[FleetItem]:
    """Default labels for each source: its name, ``family`` (or the source's own), and the
    step its name gives (``toy@1000``, ``.../checkpoint-1500``, ``step1500``)."""
    items = []
    for source in sources:
        d = describe(source)
        step = d.step if d.step is not None else step_from_name(source.rstrip("/"))
        items.append(FleetItem(source, ModelLabel(d.name, family or d.family, step)))
    return items


def read_manifest(path: str | os.PathLike[str], family: str | None = None) -> list[FleetItem]:
    """Fleet items from a CSV file with a header row of ``source,name,family,step``.

    Only ``source`` is required; an empty cell takes the default of :func:`fleet_items`
    (``family`` falls back to the ``family`` argument). A relative directory is read
    relative to the manifest's folder.
    """
    path = Path(path)
    try:
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
            header = rows and list(rows[0]) or []
    except OSError as exc:
        raise BadInputError(f"--manifest {path}: cannot read it ({exc.strerror}).") from None
    unknown = [c for c in header if c not in MANIFEST_COLUMNS]
    if not rows or "source" not in header or unknown:
        raise BadInputError(
            f"--manifest {path}: expected a CSV header with columns {','.join(MANIFEST_COLUMNS)} "
            f"(only 'source' required) and at least one row; got {header or 'nothing'}."
        )
    items = []
    for line, row in enumerate(rows, start=2):
        source = (row.get("source") or "").strip()
        if not source:
            raise BadInputError(f"--manifest {path}, line {line}: the source is empty.")
        local = path.parent / source
        if not Path(source).is_absolute() and local.exists() and not Path(source).exists():
            source = str(local)
        (item,) = fleet_items([source], family)
        step_text = (row.get("step") or "").strip()
        try:
            step = int(step_text) if step_text else item.label.step
        except ValueError:
            raise BadInputError(f"--manifest {path}, line {line}: step {step_text!r} is not "
                                "an integer.") from None
        label = ModelLabel((row.get("name") or "").strip() or item.label.name,
                           (row.get("family") or "").strip() or item.label.family, step)
        items.append(FleetItem(source, label))
    return items


def compute_model(job: ModelJob, progress: Progress | None = None) -> ModelResult:
    """One model's task: load, compose, score virtual heads, collect evidence (no writing).

    The same steps as :func:`headgraph.ingest.pipeline.ingest` up to its write."""
    timings: dict[str, float] = {}
    nulls = {s.key: s for s in job.nulls}
    start = time.perf_counter()
    specs = parse_probes(job.probes) if job.probes is not None else None
    reader = open_source(job.item.source, allow_pickle=job.allow_pickle)
    try:
        inject_fault(job.fault, job.item.label.name)
        runnable, built = None, ()
        if specs is not None:
            runnable = runnable_from_reader(reader)
            built = build_probes(specs, runnable.vocab)
        timings["load"] = time.perf_counter() - start
        start = time.perf_counter()
        graph = compose(reader, device=job.device, null=cached_null(nulls), progress=progress)
        timings["compose"] = time.perf_counter() - start
        start = time.perf_counter()
        virtual = tuple(score_virtual_heads(reader, graph, top=job.virtual_top,
                                            device=job.device))
        timings["virtual heads"] = time.perf_counter() - start
        evidence = None
        if runnable is not None:
            start = time.perf_counter()
            evidence = collect_evidence(runnable, built, feeders_from_graph(graph),
                                        job.evidence_options)
            timings["evidence"] = time.perf_counter() - start
    finally:
        reader.close()
    return ModelResult(index=job.index, graph=graph, info=reader.info, virtual=virtual,
                       evidence=evidence, timings=timings,
                       host=f"{socket.gethostname()}:{os.getpid()}")


def describe_failure(exc: BaseException) -> str:
    """One line for the summary: a headgraph refusal's code and message, else the type."""
    if isinstance(exc, HeadgraphError):
        return f"[{exc.code}] {exc.message}"
    return f"{type(exc).__name__}: {exc}".strip().splitlines()[0][:500]


def check_fleet(items: Sequence[FleetItem]) -> None:
    """Refuse a fleet whose model names repeat (they would overwrite each other)."""
    if not items:
        raise BadInputError("no models to ingest: give SOURCE arguments or --manifest.")
    seen: dict[str, str] = {}
    for item in items:
        if item.label.name in seen:
            raise BadInputError(
                f"two sources would be stored as {item.label.name!r} ({seen[item.label.name]} "
                f"and {item.source}); name them in a --manifest (column 'name')."
            )
        seen[item.label.name] = item.source


def ingest_fleet(
    items: Sequence[FleetItem],
    db: str | os.PathLike[str] | None = None,
    *,
    executor: FleetExecutor | None = None,
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
    fault = os.environ.get(FAULT_ENV)
    base = ModelJob(index=0, item=items[0], device=device, allow_pickle=allow_pickle,
                    virtual_top=virtual_top, probes=probes, evidence_options=evidence_options,
                    fault=fault)

    def jobs() -> Iterator[ModelJob]:
        for i, item in enumerate(items):
            yield dataclasses.replace(base, index=i, item=item, nulls=tuple(nulls.values()))

    outcomes: dict[int, ModelOutcome] = {}
    total = len(items)
    tick("tasks finished", 0, total)
    tick("models written", 0, total)
    run = executor or LocalExecutor()
    finished = written = 0
    for job, result in run.run_models(jobs()):
        finished += 1
        tick("tasks finished", finished, total)
        item = job.item
        if isinstance(result, Exception):
            outcomes[job.index] = ModelOutcome(item.label.name, item.source,
                                               error=describe_failure(result))
            continue
        nulls.update({s.key: s for s in result.graph.nulls})
        start = time.perf_counter()
        try:
            written_result = write_model(target, result.graph, result.info, item.label,
                                         replace=replace, virtual=result.virtual,
                                         evidence=result.evidence)
        except HeadgraphError as exc:
            outcomes[job.index] = ModelOutcome(item.label.name, item.source,
                                               error=describe_failure(exc))
            continue
        written += 1
        tick("models written", written, total)
        outcomes[job.index] = ModelOutcome(
            item.label.name, item.source, n_nodes=written_result.n_nodes,
            n_edges=written_result.n_edges, compute_seconds=sum(result.timings.values()),
            write_seconds=time.perf_counter() - start, host=result.host)
    for i, item in enumerate(items):  # an executor that lost a job must not hide it
        outcomes.setdefault(i, ModelOutcome(item.label.name, item.source,
                                            error=describe_failure(TaskFailedError(
                                                "the executor returned no result"))))
    return FleetReport(database=str(target),
                       outcomes=tuple(outcomes[i] for i in range(len(items))),
                       seconds=time.perf_counter() - started)
