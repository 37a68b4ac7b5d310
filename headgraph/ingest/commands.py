"""CLI commands of the write side beyond ``ingest`` (registered onto ``headgraph.cli.app``)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add write-side commands (probe, ...) to the CLI."""
