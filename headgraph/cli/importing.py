"""``headgraph import --db F FILE... [--model M]``: evidence from other tools, each file in
its own transaction, its format detected from its content (:func:`detect_format`).

=====================  ========================================  ===========================
format                 how it is recognised                      stored by
=====================  ========================================  ===========================
attribution-graph      a JSON object whose first telling field   :mod:`headgraph.attribution.
                       is ``metadata``, ``qParams``, ``links``   importer`` (``--model``:
                       or a ``nodes`` *array*                    the model it explains)
eap-ig-json            a JSON object whose first telling field   :mod:`headgraph.circuits.
                       is ``cfg``, ``edges`` or a ``nodes``      importer`` (``--model``
                       *object*                                  required: a stored model)
edge-list              anything that does not start with ``{``   the same
=====================  ========================================  ===========================
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from headgraph.cli.common import console, fail, run
from headgraph.errors import BadInputError

ATTRIBUTION_KEYS = {"metadata", "qParams", "links"}
EAP_KEYS = {"cfg", "edges"}


def detect_format(path: Path) -> str:
    """``attribution-graph``, ``eap-ig-json`` or ``edge-list`` (see the module table)."""
    from headgraph.attribution.jsonstream import JsonStream

    with path.open("rb") as f:
        s = JsonStream(f, chunk=1 << 16)
        s.skip_ws()
        if s.peek() != b"{":
            return "edge-list"
        s.take(b"{")
        while True:
            s.skip_ws()
            if s.peek() != b'"':
                break
            key = s.value()
            s.skip_ws()
            s.take(b":")
            s.skip_ws()
            if key in ATTRIBUTION_KEYS or (key == "nodes" and s.peek() == b"["):
                return "attribution-graph"
            if key in EAP_KEYS or (key == "nodes" and s.peek() == b"{"):
                return "eap-ig-json"
            s.value()
            s.skip_ws()
            if s.peek() != b",":
                break
            s.take(b",")
    raise BadInputError(f"{path}: a JSON object that is neither an attribution graph "
                        "(metadata, nodes, links) nor an EAP-IG circuit (cfg, nodes, edges).")


def import_files(
    files: Annotated[list[Path], typer.Argument(help="Attribution graph JSON, EAP-IG circuit "
                                                "JSON or edge-list text files.")],
    db: Annotated[str | None, typer.Option("--db", help="DuckDB file or SQLAlchemy URL "
                                           "(default: $HEADGRAPH_DB or headgraph.duckdb).")]
    = None,
    model: Annotated[str | None, typer.Option(help="Circuits: the stored model they are "
                                              "about (required). Graphs: the model they "
                                              "explain (default metadata.scan).")] = None,
    task: Annotated[str | None, typer.Option(help="Circuits: the task (default: the file "
                                             "name).")] = None,
    tool: Annotated[str | None, typer.Option(help="Circuits: the tool that found them "
                                             "(default by naming: eap-ig, acdc, "
                                             "auto-circuit).")] = None,
    replace: Annotated[bool, typer.Option(help="Overwrite a stored graph (same slug) or "
                                          "circuit (same model, tool, task).")] = False,
) -> None:
    """Import attribution graphs and discovered circuits, detecting each file's format."""
    from rich.table import Table

    from headgraph.attribution.importer import import_graph
    from headgraph.circuits.importer import import_circuit
    from headgraph.cli.progress import StageProgress

    for path in files:
        if not path.is_file():
            fail(BadInputError(f"{path}: no such file."))
        fmt = run(detect_format, path)
        with StageProgress(console) as progress:
            def update(stage: str, done: int, total: int, name: str = path.name) -> None:
                progress.update(f"{name}: {stage}", done, total)

            if fmt == "attribution-graph":
                report = run(import_graph, path, db, model=model, replace=replace,
                              progress=update)
            else:
                if model is None:
                    fail(BadInputError(f"{path} is a circuit ({fmt}): pass --model with the "
                                        "stored model it was found on."))
                report = run(import_circuit, path, db, model=model, task=task, tool=tool,
                              replace=replace, progress=update)
        table = Table(title=f"imported {path.name} ({fmt}) as {report.name!r} into "
                            f"{report.database}", show_header=False)
        for key, value in report.rows.items():
            table.add_row(key, f"{value:,}")
        for stage, seconds in report.timings.items():
            table.add_row(f"{stage} (s)", f"{seconds:.2f}")
        if report.replaced:
            table.add_row("replaced", "the earlier one of this name")
        console.print(table)


def register(app: typer.Typer) -> None:
    """Add ``import`` to the CLI."""
    app.command("import")(import_files)
