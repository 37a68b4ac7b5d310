"""One model's task: load, compose, virtual heads, optional evidence (no writing).

Every ingest runs models through :func:`compute_model`, a single one in the driver or a
fleet's on an executor (:mod:`.executors`: in this process, or one per Ray worker). It
returns plain numpy/dataclass records, a :class:`ModelResult`, which the driver commits
(:mod:`.pipeline`).

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

``UNIT`` is a model name (model tasks) or ``layerN`` (the scoring task of layer N). Other
values (such as the writer's ``before_commit``, see :func:`.writer.fault_point`) are ignored
here. The local executor never calls the switch: killing the driver is what
``before_commit`` is for.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from headgraph.errors import HeadgraphError
from headgraph.ingest.compose import ComposedGraph, compose_model
from headgraph.ingest.evidence.collect import Evidence, EvidenceOptions, collect_evidence
from headgraph.ingest.evidence.probes import build_probes, parse_probes
from headgraph.ingest.evidence.runnable import runnable_from_reader
from headgraph.ingest.heap import trim_heap
from headgraph.ingest.null import NullStat
from headgraph.ingest.nullcache import cached_null
from headgraph.ingest.scoring import LayerScorer
from headgraph.ingest.sources import open_source
from headgraph.ingest.spec import SourceInfo
from headgraph.ingest.stages import STAGES
from headgraph.ingest.virtual import VirtualHead, VirtualSearch, score_virtual_heads
from headgraph.ingest.writer import FAULT_ENV, ModelLabel

Progress = Callable[[str, int, int], None]


class TaskFailedError(HeadgraphError):
    """A task that could not finish on the executor (its worker died on every retry)."""

    code = "TASK_FAILED"


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
class ModelJob:
    """Everything one model's task needs (picklable; built by the driver)."""

    index: int
    source: str
    label: ModelLabel
    device: str = "cpu"
    allow_pickle: bool = False
    virtual_top: int = 100
    probes: str | None = None
    evidence_options: EvidenceOptions | None = None
    nulls: tuple[NullStat, ...] = ()  # baselines the driver already knows
    fault: str | None = None  # HEADGRAPH_FAULT as the driver saw it


@dataclass(frozen=True)
class ModelResult:
    """What a model's task returns: everything :func:`.writer.write_model` needs."""

    index: int
    graph: ComposedGraph
    info: SourceInfo
    virtual: tuple[VirtualHead, ...]
    evidence: Evidence | None
    virtual_search: VirtualSearch | None = None
    timings: dict[str, float] = field(default_factory=dict)
    host: str = ""  # hostname:pid of the process that computed it


def compute_model(job: ModelJob, progress: Progress | None = None,
                  layers: LayerScorer | None = None) -> ModelResult:
    """One model's task: load, compose, score virtual heads, collect evidence (no writing).

    ``layers`` runs the per-layer scoring tasks of the composition (default: here, in
    order). Probes are built against the model's vocabulary before any matrix work."""
    tick = progress or (lambda stage, done, total: None)
    timings: dict[str, float] = {}
    nulls = {s.key: s for s in job.nulls}
    start = time.perf_counter()
    specs = parse_probes(job.probes) if job.probes is not None else None
    tick("load", 0, 1)
    reader = open_source(job.source, allow_pickle=job.allow_pickle)
    try:
        inject_fault(job.fault, job.label.name)
        runnable, built = None, ()
        if specs is not None:
            runnable = runnable_from_reader(reader)
            built = build_probes(specs, runnable.vocab)
        timings["load"] = time.perf_counter() - start
        tick("load", 1, 1)
        start = time.perf_counter()
        null = cached_null(nulls)
        graph, factors = compose_model(reader, device=job.device, null=null, progress=tick,
                                       executor=layers)
        timings["null"] = null.seconds  # spent inside composition, as edge types turn up
        timings["compose"] = time.perf_counter() - start - null.seconds
        start = time.perf_counter()
        tick("virtual", 0, 1)
        factors = factors.without_dense()  # the composition's Grams go before the search
        trim_heap()
        found, search = score_virtual_heads(reader, graph, factors, top=job.virtual_top)
        virtual = tuple(found)
        del factors
        tick("virtual", 1, 1)
        timings["virtual heads"] = time.perf_counter() - start
        evidence = None
        start = time.perf_counter()
        if runnable is not None:
            evidence = collect_evidence(runnable, built, job.evidence_options, progress=tick)
        timings["probes"] = time.perf_counter() - start
    finally:
        reader.close()
    timings = {stage: timings[stage] for stage in STAGES if stage in timings}  # plan's order
    return ModelResult(index=job.index, graph=graph, info=reader.info, virtual=virtual,
                       evidence=evidence, virtual_search=search, timings=timings,
                       host=f"{socket.gethostname()}:{os.getpid()}")
