"""``headgraph serve`` and ``query``: the API over HTTP, or one query in-process.

``headgraph query`` runs the same schema in-process and prints the JSON response, errors
included with their codes; its exit status is 0 without errors, 1 when the response has
errors, 2 when the command itself is refused (no database, a bad ``--var``).
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from headgraph.cli.common import DbOption
from headgraph.errors import DatabaseLockedError, HeadgraphError

SettingOption = Annotated[list[str] | None, typer.Option(
    "--setting", "-s", metavar="NAME=VALUE",
    help="Change a limit or switch (repeat for several); `headgraph settings` lists them.")]


def _refuse(exc: HeadgraphError) -> None:
    typer.echo(f"error [{exc.code}]: {exc}", err=True)
    raise typer.Exit(exc.exit_status)


def serve(
    db: DbOption = None,
    host: Annotated[str, typer.Option(
        metavar="ADDRESS", help="Interface to listen on. The default serves this machine only; give 0.0.0.0 "
             "(with --auth-token) to share the server on a network.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(metavar="PORT", help="TCP port.")] = 8000,
    setting: SettingOption = None,
    auth_token: Annotated[str | None, typer.Option(
        "--auth-token", metavar="TOKEN", envvar="HEADGRAPH_AUTH_TOKEN", show_envvar=True,
        help="Require `Authorization: Bearer TOKEN` on every route but /healthz (the "
             "auth_token setting). Prefer the environment variable: a command line is "
             "visible to other users of the machine.")] = None,
) -> None:
    """Serve the GraphQL API read-only (GraphiQL at /graphql, /healthz, /schema.graphql)."""
    from headgraph.api.settings import parse_pairs
    from headgraph.server import serve as run_server

    try:
        pairs: dict[str, Any] = dict(parse_pairs(setting or []))
        if auth_token is not None:
            pairs["auth_token"] = auth_token
        run_server(db, host=host, port=port, **pairs)
    except HeadgraphError as exc:
        _refuse(exc)


def query(
    document: Annotated[str, typer.Argument(metavar="QUERY",
                                            help="GraphQL query text, or - to read stdin.")],
    db: DbOption = None,
    var: Annotated[list[str] | None, typer.Option(
        "--var", metavar="NAME=VALUE",
        help="A variable; VALUE is read as JSON when it parses (3, true, [1]), else as a "
             "string.")] = None,
    operation: Annotated[str | None, typer.Option(help="Operation to run (operationName).")] = None,
    setting: SettingOption = None,
) -> None:
    """Run a GraphQL query in-process and print the JSON response."""
    from headgraph.api.settings import Settings, parse_pairs
    from headgraph.server import make_service

    text = sys.stdin.read() if document == "-" else document
    try:
        variables = {name: _value(raw) for name, raw in parse_pairs(var or []).items()}
        service = make_service(db, Settings.of(parse_pairs(setting or [])))
        service.reader()  # a missing or foreign database is refused here, with status 2
    except DatabaseLockedError:
        pass  # answered below as a response with code DATABASE_LOCKED (status 1)
    except HeadgraphError as exc:
        _refuse(exc)
    try:
        outcome = service.execute_sync(text, variables or None, operation)
    finally:
        service.close()
    typer.echo(json.dumps(outcome.body, indent=2, default=str))
    if not outcome.ok:
        raise typer.Exit(1)


def _value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def settings() -> None:
    """List the server's settings (for --setting NAME=VALUE) with their defaults."""
    from rich.table import Table

    from headgraph.api.settings import SETTINGS
    from headgraph.cli.common import console

    table = Table("setting", "default", "what it does")
    for s in SETTINGS:
        table.add_row(s.name, s.shown, s.help)
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add the API's commands (serve, query, settings) to the CLI."""
    app.command("serve")(serve)
    app.command("query")(query)
    app.command("settings")(settings)
