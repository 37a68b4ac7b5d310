"""What every command module of the CLI shares: the consoles, the refusal format, the
options several commands take, and the thread setting.

Every refusal is one line ``error [CODE]: message`` on stderr with exit status 2 (no
traceback unless ``--debug``); see :mod:`headgraph.errors`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, NoReturn, TypeVar

import typer
from rich.console import Console

from headgraph.errors import BadInputError, HeadgraphError

console = Console()
err_console = Console(stderr=True)
state = {"debug": False}
"""Global flags set by the top-level callback (``--debug``)."""

T = TypeVar("T")

DbOption = Annotated[
    str | None,
    typer.Option("--db", help="DuckDB file or SQLAlchemy URL (default: $HEADGRAPH_DB or "
                 "headgraph.duckdb)."),
]

ThreadsOption = Annotated[int | None, typer.Option(
    help="torch CPU threads (default: torch's choice, one per core). Beside a server on the "
    "same machine, leave it a core: the API's p99 under load doubled with an ingest on every "
    "core, whatever its nice level (BENCHMARKS.md).")]


def fail(exc: BaseException) -> NoReturn:
    """Print ``exc`` as one coded line and exit 2 (re-raise it under ``--debug``)."""
    if state["debug"]:
        raise exc
    code = getattr(exc, "code", "ERROR")
    err_console.print(f"[bold red]error[/] [{code}]: {exc}", markup=True, highlight=False,
                      soft_wrap=True)
    raise typer.Exit(2)


def run(fn: Callable[..., T], *args, **kwargs) -> T:
    """Call ``fn``; a refusal becomes :func:`fail`'s one line, Ctrl-C exit status 130."""
    try:
        return fn(*args, **kwargs)
    except HeadgraphError as exc:
        fail(exc)
    except KeyboardInterrupt:
        err_console.print("interrupted: nothing was written.")
        raise typer.Exit(130) from None


def seconds_since_process_start() -> float | None:
    """Wall seconds since this process started (Linux ``/proc``), or ``None`` elsewhere:
    what the interpreter and the imports cost before a command's own work."""
    try:
        import os

        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])  # field 22: starttime, in clock ticks since boot
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


def set_threads(threads: int | None) -> None:
    """Apply ``--threads`` (refused below 1) before any torch work starts."""
    if threads is None:
        return
    if threads < 1:
        fail(BadInputError(f"--threads must be at least 1, got {threads}."))
    import torch

    torch.set_num_threads(threads)
