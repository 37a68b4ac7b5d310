"""``headgraph import --db F FILE... [--model M]``: evidence from other tools, each file in
its own transaction, its format detected from its content (:func:`detect_format`); and
``headgraph convert-circuit``: ACDC's pickled edges as an edge list, read safely.

=====================  ========================================  ===========================
format                 how it is recognised                      stored by
=====================  ========================================  ===========================
attribution-graph      a JSON object whose first telling field   :mod:`headgraph.attribution.
                       is ``metadata``, ``qParams``, ``links``   importer`` (``--model``:
                       or a ``nodes`` *array*                    the model it explains)
eap-ig-json            a JSON object whose first telling field   :mod:`headgraph.circuits.
                       is ``cfg``, ``edges`` or a ``nodes``      importer` (``--model``
                       *object*                                  required: a stored model)
auto-circuit-json      a JSON array                              the same
torch                  a ``torch.save`` zip (EAP-IG ``to_pt``,   the same
                       ACDC ``save_subgraph``)
edge-list              other UTF-8 text                          the same
=====================  ========================================  ===========================

Pickles, model weights, compressed and other binary files are refused before anything is
read further (:func:`headgraph.circuits.files.refuse`), each with one line saying what to
do; every refusal is one coded line.
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
    """``attribution-graph``, ``eap-ig-json``, ``auto-circuit-json``, ``torch`` or
    ``edge-list`` (see the module table); :class:`BadInputError` for a file none of them
    is."""
    from headgraph.attribution.jsonstream import JsonStream
    from headgraph.circuits.files import refuse, sniff

    kind = sniff(path)
    refuse(path, kind)
    if kind in ("torch", "json-array"):
        return {"torch": "torch", "json-array": "auto-circuit-json"}[kind]
    if kind == "text":
        return "edge-list"
    with path.open("rb") as f:
        s = JsonStream(f, chunk=1 << 16)
        s.skip_ws()
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
            if key == "graphs":
                raise BadInputError(f"{path} is circuit-tracer's index of graphs "
                                    "(graph-metadata.json): import the graph files it lists.")
            s.value()
            s.skip_ws()
            if s.peek() != b",":
                break
            s.take(b",")
    raise BadInputError(f"{path}: a JSON object that is neither an attribution graph "
                        "(metadata, nodes, links) nor an EAP-IG circuit (cfg, nodes, edges).")


def import_files(
    files: Annotated[list[Path], typer.Argument(help="Attribution graph JSON; circuits: "
                                                "EAP-IG JSON or .pt, ACDC .pth, auto-circuit "
                                                "JSON, edge-list text.")],
    db: Annotated[str | None, typer.Option("--db", help="DuckDB file or SQLAlchemy URL "
                                           "(default: $HEADGRAPH_DB or headgraph.duckdb).")]
    = None,
    model: Annotated[str | None, typer.Option(help="Circuits: the stored model they are "
                                              "about (required). Graphs: the model they "
                                              "explain (default: the one metadata.scan "
                                              "names).")] = None,
    task: Annotated[str | None, typer.Option(help="Circuits: the task (default: the file "
                                             "name).")] = None,
    tool: Annotated[str | None, typer.Option(help="Circuits: the tool that found them "
                                             "(default by naming: eap-ig, acdc, "
                                             "auto-circuit).")] = None,
    replace: Annotated[bool, typer.Option(help="Overwrite a stored graph (same model and "
                                          "slug) or circuit (same model, tool, task).")]
    = False,
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
        if fmt != "attribution-graph" and model is None:
            fail(BadInputError(f"{path} is a circuit ({fmt}): pass --model with the stored "
                               "model it was found on."))
        with StageProgress(console) as progress:
            def update(stage: str, done: int, total: int, name: str = path.name) -> None:
                progress.update(f"{name}: {stage}", done, total)

            if fmt == "attribution-graph":
                report = run(import_graph, path, db, model=model, replace=replace,
                              progress=update)
            else:
                report = run(import_circuit, path, db, model=model, task=task, tool=tool,
                              replace=replace, progress=update)
        console.print(f"imported {path.name} ({fmt}) as {report.name} into {report.database}",
                      soft_wrap=True, highlight=False, markup=False)
        table = Table(show_header=False)
        for key, value in report.rows.items():
            table.add_row(key, f"{value:,}")
        for stage, seconds in report.timings.items():
            table.add_row(f"{stage} (s)", f"{seconds:.2f}")
        if report.replaced:
            table.add_row("replaced", "the earlier one of this name")
        console.print(table)
        for note in report.notes:
            console.print(f"note: {note}", soft_wrap=True, highlight=False, markup=False)


def convert_circuit(
    file: Annotated[Path, typer.Argument(help="ACDC's save_edges pickle (edges.pkl, "
                                         "another_final_edges.pkl, edges.pth).")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="The edge-list file "
                                                "to write (default: print it).")] = None,
) -> None:
    """Turn ACDC's pickled edges into an edge list that `headgraph import` reads. Only ACDC's
    edge tuples are read (no code in the pickle runs); anything else is refused."""
    from headgraph.circuits.acdc_pickle import convert
    from headgraph.circuits.files import sniff

    if not file.is_file():
        fail(BadInputError(f"{file}: no such file."))
    if run(sniff, file) != "pickle":
        fail(BadInputError(f"{file} is not a pickle; convert-circuit reads ACDC's save_edges "
                           "pickles. Import other circuit files directly."))
    text = run(convert, file)
    if output is None:
        console.print(text, end="", soft_wrap=True, highlight=False, markup=False)
        return
    output.write_text(text, encoding="utf-8")
    console.print(f"wrote {output} ({text.count(chr(10)) - 1} edges); import it with "
                  f"`headgraph import {output} --model MODEL`", soft_wrap=True,
                  highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    """Add ``import`` and ``convert-circuit`` to the CLI."""
    app.command("import")(import_files)
    app.command("convert-circuit")(convert_circuit)
