"""Where the ingest's tasks run.

An :class:`Executor` runs two kinds of task:

* ``run_models``: one task per model of a fleet (:func:`headgraph.ingest.task.compute_model`:
  load, compose, virtual heads, optional evidence), whose results come back to the driver;
* ``score_layers``: the per-target-layer scoring tasks of one model
  (:func:`headgraph.ingest.scoring.score_layer`), fed the shared factors and each layer's
  attention weights, which the driver reads from the reader (a
  :class:`~headgraph.ingest.scoring.LayerScorer`).

:class:`LocalExecutor` runs both in this process, in order (the default; no Ray import).
:class:`~headgraph.ingest.ray_executor.RayExecutor` (``pip install headgraph[ray]``) runs
the same task functions on a Ray cluster. Either way one committer, the driver, writes each
model in one transaction (:mod:`.pipeline`), so the database semantics do not depend on the
executor. ``make_executor`` picks one by name from :data:`EXECUTORS`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from headgraph.errors import BadInputError
from headgraph.ingest.factors import Factors
from headgraph.ingest.reader import WeightReader
from headgraph.ingest.scoring import ScoreBlock, score_layers_here
from headgraph.ingest.task import ModelJob, ModelResult, compute_model


class Executor(Protocol):
    def score_layers(self, factors: Factors, reader: WeightReader, layers: list[int]
                     ) -> Iterator[list[ScoreBlock]]:
        """Yield the blocks of each layer's task (in any order)."""
        ...

    def run_models(self, jobs: Iterable[ModelJob]
                   ) -> Iterator[tuple[ModelJob, ModelResult | Exception]]:
        """Yield each job with its result, or the exception that failed it (in any order).

        ``jobs`` is consumed lazily, so a job built late sees what the driver learned from
        the results before it (cached null baselines)."""
        ...

    def __enter__(self) -> Executor: ...

    def __exit__(self, *exc: object) -> None: ...


class LocalExecutor:
    """Runs each task here, one after another."""

    def score_layers(self, factors: Factors, reader: WeightReader, layers: list[int]
                     ) -> Iterator[list[ScoreBlock]]:
        return score_layers_here(factors, reader, layers)

    def run_models(self, jobs: Iterable[ModelJob]
                   ) -> Iterator[tuple[ModelJob, ModelResult | Exception]]:
        for job in jobs:
            try:
                result = compute_model(job)
            except Exception as exc:  # one model's failure is reported; the fleet goes on
                yield job, exc
            else:
                yield job, result

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _ray_executor(**options) -> Executor:
    from headgraph.ingest.ray_executor import RayExecutor  # the only module that imports ray

    return RayExecutor(**options)


EXECUTORS: dict[str, Callable[..., Executor]] = {
    "local": lambda **options: LocalExecutor(),
    "ray": _ray_executor,
}
"""Executors by the name ``--executor`` takes."""


def make_executor(name: str, **options) -> Executor:
    """The executor called ``name`` (see :data:`EXECUTORS`); ``options`` go to the Ray one
    (``address``, ``num_cpus``, ``device``, ``max_retries``...) and are ignored locally."""
    if name not in EXECUTORS:
        raise BadInputError(f"--executor {name}: not an executor; use one of "
                            f"{', '.join(EXECUTORS)}.")
    return EXECUTORS[name](**options)
