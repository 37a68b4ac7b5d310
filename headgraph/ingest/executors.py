"""Where the per-layer scoring tasks run.

:class:`LocalExecutor` runs them in this process, in order (the default; no Ray import).
The Ray executor (:mod:`headgraph.ingest.ray_executor`, installed with
``pip install headgraph[ray]``) runs the same task function on a cluster. Either way the
driver reads each layer's attention weights from the reader and hands them to the task
with the shared factors, and one committer writes the model in one transaction, so the
database semantics do not depend on the executor.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from headgraph.ingest.factors import Factors
from headgraph.ingest.reader import WeightReader, check_layer
from headgraph.ingest.scoring import ScoreBlock, score_layer


class Executor(Protocol):
    def score_layers(self, factors: Factors, reader: WeightReader, layers: list[int]
                     ) -> Iterator[list[ScoreBlock]]:
        """Yield the blocks of each layer's task (in any order)."""
        ...


class LocalExecutor:
    """Runs each layer's task here, one after another."""

    def score_layers(self, factors: Factors, reader: WeightReader, layers: list[int]
                     ) -> Iterator[list[ScoreBlock]]:
        for layer in layers:
            lw = check_layer(reader.layer(layer, mlp=False), factors.spec)
            yield score_layer(factors, lw)
