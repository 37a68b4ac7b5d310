"""headgraph: a graph database of transformer circuit structure.

``headgraph.open(db)`` opens a database read-only for notebooks and scripts
(:mod:`headgraph.notebook`); ``headgraph.serve(db)`` serves it over HTTP
(:mod:`headgraph.server`). Both are imported lazily, so ``import headgraph`` stays cheap
and torch-free.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from headgraph.version import __version__

if TYPE_CHECKING:
    from headgraph.notebook import Graph

__all__ = ["__version__", "open", "serve"]


def open(db: str | os.PathLike[str] | None = None) -> Graph:  # noqa: A001
    """Open a headgraph database read-only for notebooks:
    ``headgraph.open("file.duckdb").node("toy", "L1H2").feeders("K")``."""
    from headgraph.notebook import open_graph

    return open_graph(db)


def serve(db: str | os.PathLike[str] | None = None, host: str = "127.0.0.1", port: int = 8000,
          **settings: Any) -> None:
    """Serve ``db`` read-only over HTTP until interrupted (:func:`headgraph.server.serve`)."""
    from headgraph.server import serve as run

    run(db, host=host, port=port, **settings)
