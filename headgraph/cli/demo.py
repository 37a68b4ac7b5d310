"""``headgraph demo``: ingest the shipped toy model and read its induction circuit back.

Everything printed is read from the database the demo just wrote (the read side, no
torch): the heads that copy most, and for each of them the heads that feed its keys.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from headgraph.cli.common import DbOption, console, run

EXAMPLE_QUERIES = (
    '{ node(model: "toy", name: "L1H2") { feeders(kind: K, top: 3) { source { name } score } } }',
    '{ model(name: "toy") { heads(orderBy: COPYING_RATIO, first: 4) { name copying { ratio } } } }',
)


def run_demo(db: str | os.PathLike[str] | None, *, console: Console, serve: bool = False,
             port: int = 8000) -> None:
    from headgraph.ingest.pipeline import ingest
    from headgraph.queries.models import get_model
    from headgraph.queries.nodes import feeders, top_heads
    from headgraph.queries.session import open_reader
    from headgraph.schema.database import resolve_target

    target = resolve_target(db)
    console.print(f"[bold]1.[/] ingesting the shipped toy model into {target} ...")
    report = ingest("toy", db, replace=True)
    console.print(f"   {report.n_nodes} nodes, {report.n_edges} edges in "
                  f"{sum(report.timings.values()):.1f} s")
    with open_reader(db) as reader:
        model = get_model(reader, "toy")
        console.print(f"[bold]2.[/] {model.architecture}: {model.n_layers} layers x "
                      f"{model.n_heads} heads, d_model {model.d_model} ({model.processing})")
        table = Table(title="heads that copy (OV circuit eigenvalues), and what feeds their keys")
        for col in ("head", "copying ratio", "top K-feeder", "K score", "baseline", "2nd feeder"):
            table.add_column(col)
        for head in top_heads(reader, model, "copying_ratio", first=4):
            feeds = feeders(reader, model, head.node, "K", top=2)
            first = feeds[0] if feeds else None
            table.add_row(
                head.node,
                f"{head.copying_ratio:+.3f}",
                first.source if first else "-",
                f"{first.score:.3f}" if first else "-",
                f"{first.baseline:.3f}" if first else "-",
                f"{feeds[1].source} ({feeds[1].score:.3f})" if len(feeds) > 1 else "-",
            )
        console.print(table)
    console.print("[bold]3.[/] ask your own questions, e.g.")
    console.print(f"   headgraph models --db {target}")
    for q in EXAMPLE_QUERIES:
        console.print(f"   headgraph query --db {target} '{q}'", highlight=False, soft_wrap=True)
    if serve:
        from headgraph.server import serve as run_server

        console.print(f"[bold]4.[/] serving {target} at http://127.0.0.1:{port}/ (viewer) and "
                      f"http://127.0.0.1:{port}/graphql (GraphiQL); Ctrl-C stops it.")
        run_server(db, port=port)


def demo(
    db: DbOption = None,
    serve: Annotated[bool, typer.Option(help="Serve the API (and viewer) afterwards, until "
                                        "Ctrl-C.")] = True,
    port: Annotated[int, typer.Option(help="Port to serve on (127.0.0.1).")] = 8000,
) -> None:
    """Ingest the shipped toy model and show what its graph says about induction."""
    run(run_demo, db, console=console, serve=serve, port=port)


def register(app: typer.Typer) -> None:
    app.command()(demo)
