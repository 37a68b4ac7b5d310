"""``headgraph models``, ``check`` and ``copy``: what a database holds, whether it is
whole, and moving models between databases."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from headgraph.cli.common import DbOption, console, err_console, run


def models(db: DbOption = None) -> None:
    """List the models stored in a database."""
    from headgraph.queries.models import list_models
    from headgraph.queries.session import open_reader

    rows = run(lambda: list_models(open_reader(db)))
    table = Table(title="models")
    for col in ("name", "family", "step", "architecture", "layers x heads", "d_model",
                "nodes", "edges", "ingested"):
        table.add_column(col)
    for m in rows:
        table.add_row(m.name, m.family or "", "" if m.step is None else str(m.step),
                      m.architecture, f"{m.n_layers} x {m.n_heads}", str(m.d_model),
                      f"{m.n_nodes:,}", f"{m.n_edges:,}", m.ingested_at.strftime("%Y-%m-%d %H:%M"))
    console.print(table)


def check(db: DbOption = None) -> None:
    """Check a database's integrity: schema, complete models, ranks, no orphans."""
    from headgraph.maintenance import check_database

    report = run(check_database, db)
    console.print(f"{report.database}: {len(report.models)} model(s)")
    for problem in report.problems:
        err_console.print(f"[red]problem[/]: {problem}")
    if not report.ok:
        raise typer.Exit(1)
    console.print("ok: schema version, complete models, consistent ranks, no orphan rows")


def copy_cmd(
    source: Annotated[str, typer.Option("--from", metavar="FILE|URL", help="Source database.")],
    dest: Annotated[str, typer.Option("--to", metavar="FILE|URL", help="Destination database.")],
    model: Annotated[list[str] | None, typer.Option("--model", metavar="NAME", help="Model to copy "
                                                    "(repeat; default: all).")] = None,
    replace: Annotated[bool, typer.Option("--replace", help="Overwrite models of the same "
                                          "name.")] = False,
) -> None:
    """Copy models between databases (DuckDB <-> PostgreSQL), one transaction per model."""
    from headgraph.maintenance import copy_models

    results = run(copy_models, source, dest, model or None, replace=replace,
                   progress=lambda name: console.print(f"copied {name}"))
    for r in results:
        console.print(f"{r.name}: " + ", ".join(f"{k} {v:,}" for k, v in r.rows.items())
                      + (" (replaced)" if r.replaced else ""))



def register(app: typer.Typer) -> None:
    app.command()(models)
    app.command()(check)
    app.command("copy")(copy_cmd)
