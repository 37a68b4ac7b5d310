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

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
"""Click settings of every command: ``-h`` as well as ``--help``."""

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)
state = {"debug": False}
"""Global flags set by the top-level callback (``--debug``)."""

T = TypeVar("T")

DbOption = Annotated[
    str | None,
    typer.Option("--db", metavar="FILE|URL", help="DuckDB file or SQLAlchemy URL (default: "
                 "$HEADGRAPH_DB or headgraph.duckdb)."),
]

ThreadsOption = Annotated[int | None, typer.Option(
    metavar="N", help="torch CPU threads (default: one per core). Beside a server on the same "
    "machine, leave it a core.")]

ModelOption = Annotated[str, typer.Option("--model", metavar="NAME", help="Model name.")]


def readable_help() -> None:
    """Show parameters as their names (``--db FILE|URL``, ``SOURCE...``, a bare ``--replace``)
    in help: typer prints the Python type (``<str>``, ``<list[str]>``, ``<bool>``) beside
    every parameter whose metavar it makes up, flags and arguments included."""
    from typer.core import TyperArgument, TyperOption

    def option_type(self, ctx) -> str | None:
        if self.is_flag or self.count:
            return None
        if self.metavar is not None:
            return self.metavar
        return self.name.upper()

    TyperOption.display_type_rich = option_type
    TyperArgument.display_type_rich = lambda self, ctx: None


def fail(exc: BaseException) -> NoReturn:
    """Print ``exc`` as one coded line and exit with its status (see
    :mod:`headgraph.errors`; re-raise it under ``--debug``)."""
    if state["debug"]:
        raise exc
    code = getattr(exc, "code", "ERROR")
    err_console.print(f"[bold red]error[/] [{code}]: {exc}", markup=True, highlight=False,
                      soft_wrap=True)
    raise typer.Exit(getattr(exc, "exit_status", 2))


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
