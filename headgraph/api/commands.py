"""CLI commands of the read side (registered onto ``headgraph.cli.app``)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the API's commands (serve, query) to the CLI."""
