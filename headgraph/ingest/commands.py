"""CLI commands of the write side beyond ``ingest`` (registered onto ``headgraph.cli.app``).

``headgraph probe --db F --model M [--probes default]`` adds evidence from running the
model (role scores, ablations, path patching) to a model that is already stored, without
recomputing its weight graph; see :mod:`headgraph.ingest.reprobe`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from headgraph.cli_options import DbOption, ThreadsOption


def probe(
    model: Annotated[str, typer.Option("--model", help="Name of the stored model.")],
    db: DbOption = None,
    probes: Annotated[str, typer.Option(help="Probes: 'default', or e.g. "
                                        "'repeat(seq=20,batch=32,seed=0),text(path=F)'.")]
    = "default",
    patch_targets: Annotated[int, typer.Option(help="Heads (by ablation effect) whose weight "
                                               "feeders are path-patched; 0: none.")] = 4,
    patch_sources: Annotated[int, typer.Option(help="Strongest weight feeders per target "
                                               "and kind to path-patch.")] = 4,
    max_tokens: Annotated[int, typer.Option(help="Tokens per forward pass (batching).")]
    = 8192,
    heads: Annotated[str | None, typer.Option(help="Ablate (and path-patch into) only these "
                                              "heads, e.g. 'L0H1,L1H2'; default: all.")]
    = None,
    allow_pickle: Annotated[bool, typer.Option(help="Read pickle .bin weights "
                                               "(weights_only=True).")] = False,
    threads: ThreadsOption = None,
) -> None:
    """Run probes on a stored model and store the evidence, replacing earlier evidence
    from the same probes (one transaction)."""
    from rich.table import Table

    from headgraph.cli import _run, console, set_threads
    from headgraph.ingest.evidence import EvidenceOptions
    from headgraph.ingest.reprobe import probe_model
    from headgraph.progress import StageProgress

    set_threads(threads)
    options = _run(EvidenceOptions, patch_targets=patch_targets, patch_sources=patch_sources,
                   max_tokens=max_tokens,
                   heads=None if heads is None else tuple(h.strip() for h in heads.split(",")))
    with StageProgress(console) as progress:
        report = _run(probe_model, db, model, probes, options=options,
                      allow_pickle=allow_pickle, progress=progress.update)
    table = Table(title=f"probed {report.name!r} in {report.database}", show_header=False)
    for name in report.probes:
        table.add_row("probe", name)
    table.add_row("node scores", f"{report.n_node_scores:,}")
    table.add_row("edge scores", f"{report.n_edge_scores:,}")
    for stage, seconds in report.timings.items():
        passes = report.forward_passes.get(stage)
        table.add_row(f"{stage} (s)", f"{seconds:.2f}" + (f"  ({passes} forward passes)"
                                                           if passes else ""))
    for note in report.notes:
        table.add_row("note", note)
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add write-side commands (probe, ...) to the CLI."""
    app.command("probe")(probe)
