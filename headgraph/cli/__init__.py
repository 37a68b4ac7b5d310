"""The ``headgraph`` command line: one module per group of commands.

=================  ===============================================================
module             commands
=================  ===============================================================
:mod:`.ingest`     ``ingest``, ``plan``, ``probe`` (the write side)
:mod:`.database`   ``models``, ``check``, ``copy``
:mod:`.importing`  ``import`` (attribution graphs, discovered circuits)
:mod:`.graph`      ``paths``, ``compare``, ``series``, ``export``, ``plot``
:mod:`.summary`    ``summary`` (a model's first findings, weights beside evidence)
:mod:`.serve`      ``serve``, ``query`` (the API)
:mod:`.demo`       ``demo``
=================  ===============================================================

The CLI imports every feature and no feature imports it; what the command modules share
(consoles, the one-line refusal, common options) is :mod:`.common`. Every refusal is one
line ``error [CODE]: message`` on stderr with exit status 2 (no traceback unless
``--debug``); see :mod:`headgraph.errors`.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from headgraph.cli import database, demo, graph, importing, ingest, serve, summary
from headgraph.cli.common import CONTEXT, err_console, readable_help, state
from headgraph.errors import HeadgraphError
from headgraph.version import __version__

readable_help()
app = typer.Typer(
    help="headgraph: a graph database of transformer circuit structure.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings=CONTEXT,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"headgraph {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.",
                                          callback=_version, is_eager=True)] = False,
) -> None:
    state["debug"] = debug


for _group in (ingest, database, demo, importing, serve, graph, summary):
    _group.register(app)


def main() -> None:  # pragma: no cover - entry point
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        app()
    except HeadgraphError as exc:
        err_console.print(f"error [{exc.code}]: {exc}")
        sys.exit(exc.exit_status)
