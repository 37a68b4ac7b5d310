"""Command-line options that several command groups share (``headgraph.cli`` and the
``commands`` modules of the ingest, graph and api packages), defined once."""

from __future__ import annotations

from typing import Annotated

import typer

DbOption = Annotated[
    str | None,
    typer.Option("--db", help="DuckDB file or SQLAlchemy URL (default: $HEADGRAPH_DB or "
                 "headgraph.duckdb)."),
]

ThreadsOption = Annotated[int | None, typer.Option(
    help="torch CPU threads (default: torch's choice, one per core). Beside a server on the "
    "same machine, leave it a core: the API's p99 under load doubled with an ingest on every "
    "core, whatever its nice level (BENCHMARKS.md).")]
