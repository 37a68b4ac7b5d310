"""headgraph: a graph database of transformer circuit structure."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from headgraph.api.python import Graph

__version__ = "0.1.0"


def open(db: str | os.PathLike[str] | None = None) -> Graph:  # noqa: A001
    """Open a headgraph database read-only for notebooks:
    ``headgraph.open("file.duckdb").node("toy", "L1H2").feeders("K")``.

    Imported lazily, so ``import headgraph`` stays cheap (and torch-free).
    """
    from headgraph.api.python import open_graph

    return open_graph(db)
