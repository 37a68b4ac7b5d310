"""CLI command ``summary``: the findings a researcher looks for first
(:mod:`headgraph.queries.summary`)."""

from __future__ import annotations

from typing import Annotated

import typer

from headgraph.cli.common import DbOption, run


def register(app: typer.Typer) -> None:
    @app.command()
    def summary(
        model: Annotated[str, typer.Argument(help="Model name.")],
        db: DbOption = None,
    ) -> None:
        """Previous-token, induction, duplicate-token and copying heads, the K edges
        between them with their z, the strongest virtual heads, and where weights and
        evidence disagree."""
        from headgraph.queries.models import get_model
        from headgraph.queries.session import open_reader
        from headgraph.queries.summary import summarize

        def work():
            with open_reader(db) as reader:
                return summarize(reader, get_model(reader, model))

        for line in run(work).lines():
            typer.echo(line)
