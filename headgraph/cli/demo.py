"""``headgraph demo``: store the shipped toy model and read its induction circuit back.

Running it again loses nothing: a stored ``toy`` whose weights digest matches the shipped
checkpoint is kept as it is, with its evidence and circuits; a different model stored as
``toy`` is never replaced by the demo (it refuses and says what to do). Everything printed
is read from the database (the read side): the heads that copy most, and for each of them
the heads that feed its keys. With ``--serve`` (the default) it then serves the viewer and
the API on the first free port from ``--port`` on.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from headgraph.cli.common import DbOption, console, run
from headgraph.errors import ModelExistsError

EXAMPLE_QUERIES = (
    '{ node(model: "toy", name: "L1H2") { feeders(kind: K, top: 3) { source { name } score z } } }',
    '{ model(name: "toy") { heads(orderBy: COPYING_RATIO, first: 4) { name copying { ratio } } } }',
)
PORTS_TRIED = 20


def free_port(preferred: int, host: str = "127.0.0.1") -> int:
    """``preferred`` if nothing listens there, else the next free one of
    :data:`PORTS_TRIED`, else one the system picks."""
    for port in [*range(preferred, preferred + PORTS_TRIED), 0]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise OSError(f"no free port on {host}")


def activation_hint() -> str | None:
    """How to put ``headgraph`` on PATH, when this process was started by a path that
    is not on it (``make demo`` runs ``.venv/bin/headgraph``)."""
    here = Path(sys.argv[0]).resolve().parent
    found = shutil.which("headgraph")
    if found is not None and Path(found).resolve().parent == here:
        return None
    activate = here / "activate"
    if not activate.exists():
        return None
    try:
        shown = activate.relative_to(Path.cwd())
    except ValueError:
        shown = activate
    return f"source {shlex.quote(str(shown))}"


def ensure_toy(db: str | os.PathLike[str] | None, console: Console) -> None:
    """Store the shipped toy model as ``toy`` unless the same weights are stored already."""
    from headgraph.ingest.digest import digest_files, weight_files
    from headgraph.queries.models import stored_digest
    from headgraph.queries.session import open_reader
    from headgraph.schema.database import resolve_target
    from headgraph.toy import checkpoint_dir

    shipped = digest_files(weight_files(checkpoint_dir()))
    where = resolve_target(db)
    stored = None
    if where.path is None or where.path.exists():
        with open_reader(db) as reader:
            stored = stored_digest(reader, "toy")
    if stored == shipped:
        console.print("[bold]1.[/] the shipped toy model is already stored as 'toy' (same "
                      "weights): kept, with its evidence", highlight=False)
        return
    if stored is not None:
        raise ModelExistsError(
            f"{where}: a model named 'toy' is stored whose weights are not the shipped "
            "toy model's; the demo will not replace it. Run it on another database (headgraph "
            "demo --db demo.duckdb), or replace that model yourself (headgraph ingest toy "
            "--replace).")
    console.print(f"[bold]1.[/] storing the shipped toy model as 'toy' in {where} ...",
                  highlight=False, soft_wrap=True)
    from headgraph.ingest.pipeline import ingest  # torch: only when there is work

    report = ingest("toy", db)
    console.print(f"   {report.n_nodes} nodes, {report.n_edges} edges in "
                  f"{sum(report.timings.values()):.1f} s")


def run_demo(db: str | os.PathLike[str] | None, *, console: Console, serve: bool = False,
             port: int = 8000) -> None:
    from headgraph.queries.models import get_model
    from headgraph.queries.nodes import feeders, top_heads
    from headgraph.queries.session import open_reader
    from headgraph.schema.database import resolve_target

    target = resolve_target(db)
    ensure_toy(db, console)
    with open_reader(db) as reader:
        model = get_model(reader, "toy")
        console.print(f"[bold]2.[/] {model.architecture}: {model.n_layers} layers x "
                      f"{model.n_heads} heads, d_model {model.d_model} ({model.processing})")
        console.print("   heads that copy (OV circuit eigenvalues), and what feeds their keys:")
        table = Table()
        for col in ("head", "copying ratio", "top K-feeder", "K score", "z", "2nd feeder"):
            table.add_column(col)
        for head in top_heads(reader, model, "copying_ratio", first=4):
            feeds = feeders(reader, model, head.node, "K", top=2)
            first = feeds[0] if feeds else None
            table.add_row(
                head.node,
                f"{head.copying_ratio:+.3f}",
                first.source if first else "-",
                f"{first.score:.3f}" if first else "-",
                f"{first.z:.1f}" if first and first.z is not None else "-",
                f"{feeds[1].source} ({feeds[1].score:.3f})" if len(feeds) > 1 else "-",
            )
        console.print(table)
    shown = shlex.quote(str(db if db is not None else target))  # as the user named it
    console.print("[bold]3.[/] ask your own questions:")
    hint = activation_hint()
    if hint is not None:
        console.print(f"   {hint}        # once per shell: puts headgraph on PATH",
                      highlight=False, soft_wrap=True)
    console.print(f"   headgraph models --db {shown}", highlight=False, soft_wrap=True)
    for q in EXAMPLE_QUERIES:
        console.print(f"   headgraph query --db {shown} '{q}'", highlight=False, soft_wrap=True)
    if serve:
        from headgraph.server import serve as run_server

        chosen = free_port(port)
        moved = f" (port {port} is taken)" if chosen != port else ""
        console.print(f"[bold]4.[/] serving {target}{moved}:\n"
                      f"   viewer   http://127.0.0.1:{chosen}/\n"
                      f"   GraphiQL http://127.0.0.1:{chosen}/graphql\n"
                      "   Ctrl-C stops it.", highlight=False, soft_wrap=True)
        run_server(db, port=chosen)


def demo(
    db: DbOption = None,
    serve: Annotated[bool, typer.Option("--serve/--no-serve", help="Serve the viewer and the "
                                        "API afterwards, until Ctrl-C.")] = True,
    port: Annotated[int, typer.Option(metavar="PORT", help="First port to try (127.0.0.1); "
                                      "a taken one moves to the next free.")] = 8000,
) -> None:
    """Store the shipped toy model (kept if already stored) and show what its graph says
    about induction; then serve it."""
    run(run_demo, db, console=console, serve=serve, port=port)


def register(app: typer.Typer) -> None:
    app.command()(demo)
