"""The ``headgraph`` command line: ingest models, list them, run the demo.

Every refusal is one line ``error [CODE]: message`` on stderr with exit status 2 (no
traceback unless ``--debug``); see :mod:`headgraph.errors`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from headgraph.cli_options import DbOption, ThreadsOption
from headgraph.errors import HeadgraphError

app = typer.Typer(
    help="headgraph: a graph database of transformer circuit structure.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)
_state = {"debug": False}



@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    _state["debug"] = debug


def _fail(exc: BaseException) -> None:
    if _state["debug"]:
        raise exc
    code = getattr(exc, "code", "ERROR")
    err_console.print(f"[bold red]error[/] [{code}]: {exc}", markup=True, highlight=False,
                      soft_wrap=True)
    raise typer.Exit(2)


def set_threads(threads: int | None) -> None:
    """Apply ``--threads`` (refused below 1) before any torch work starts."""
    if threads is None:
        return
    from headgraph.errors import BadInputError

    if threads < 1:
        _fail(BadInputError(f"--threads must be at least 1, got {threads}."))
    import torch

    torch.set_num_threads(threads)


def _run(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except HeadgraphError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        err_console.print("interrupted: nothing was written.")
        raise typer.Exit(130) from None


@app.command()
def ingest(
    sources: Annotated[list[str] | None, typer.Argument(
        help="Model directory, hub name, 'toy', 'toy@STEP' or 'random:SHAPE'; several make a "
        "fleet (one task and one transaction per model).", show_default=False)] = None,
    db: DbOption = None,
    name: Annotated[str | None, typer.Option(help="Name to store it under (unique).")] = None,
    family: Annotated[str | None, typer.Option(help="Training-run family of checkpoints.")] = None,
    step: Annotated[int | None, typer.Option(help="Training step of this checkpoint (default: "
                                             "read from a name like checkpoint-1500).")] = None,
    manifest: Annotated[Path | None, typer.Option(help="CSV of the fleet: columns source,"
                                                  "name,family,step (only source needed).")]
    = None,
    replace: Annotated[bool, typer.Option(help="Overwrite a stored model of that name.")] = False,
    device: Annotated[str, typer.Option(help="Where the matrix work runs: cpu, cuda.")] = "cpu",
    allow_pickle: Annotated[bool, typer.Option(help="Read pickle .bin weights "
                                               "(weights_only=True).")] = False,
    probes: Annotated[str | None, typer.Option(help="Also run the model on these probes "
                                               "('default', 'repeat(seq=20)', ...) and store "
                                               "the evidence.")] = None,
    executor: Annotated[str, typer.Option(help="Where tasks run: local (this process) or ray "
                                          "(one task per layer, or per model of a fleet).")]
    = "local",
    ray_address: Annotated[str | None, typer.Option(help="Join this Ray cluster (HOST:PORT of "
                                                    "`ray start --head`); default: start Ray "
                                                    "here, on loopback.")] = None,
    ray_cpus: Annotated[int | None, typer.Option(help="CPUs of the Ray started here "
                                                 "(default: all).")] = None,
    threads: ThreadsOption = None,
) -> None:
    """Compute a model's circuit graph and store it in one transaction; with several
    SOURCEs (or --manifest), a fleet, each model in its own transaction. A fleet in which
    some models failed stores the rest, lists the failures and exits with status 1."""
    from headgraph.errors import BadInputError
    from headgraph.ingest.executors import make_executor
    from headgraph.progress import StageProgress

    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            _fail(HeadgraphError(f"--device {device}: no CUDA device is available here; "
                                 "use --device cpu."))
    if executor != "ray" and (ray_address or ray_cpus):
        _fail(BadInputError("--ray-address and --ray-cpus need --executor ray."))
    if ray_address and ray_cpus:
        _fail(BadInputError("--ray-cpus sizes a Ray started here; a cluster joined with "
                            "--ray-address has the CPUs its `ray start` gave it."))
    fleet = manifest is not None or len(sources or []) > 1
    if not sources and manifest is None:
        _fail(BadInputError("give a SOURCE (or several), or --manifest FILE.csv."))
    if fleet and (name is not None or step is not None):
        _fail(BadInputError("--name and --step label one model; for a fleet put them in a "
                            "--manifest (columns source,name,family,step)."))
    set_threads(threads)
    options = {"address": ray_address, "num_cpus": ray_cpus, "device": device}
    runner = _run(make_executor, executor, **options)  # Ray starts at the first task
    try:
        with StageProgress(console) as progress:
            if not fleet:
                report = _run(_ingest_one, sources[0], db, name=name, family=family,
                              step=step, replace=replace, device=device,
                              allow_pickle=allow_pickle, progress=progress.update,
                              probes=probes, executor=runner)
            else:
                report = _run(_ingest_fleet, sources or [], manifest, db, family=family,
                              replace=replace, device=device, allow_pickle=allow_pickle,
                              probes=probes, executor=runner, tick=progress.update)
    finally:
        runner.__exit__(None, None, None)
    if not fleet:
        _print_report(report)
        return
    _print_fleet(report)
    if report.failed:
        raise typer.Exit(1)


def _ingest_one(source, db, *, executor, **kwargs):
    from headgraph.ingest.executors import LocalExecutor
    from headgraph.ingest.pipeline import ingest as run_ingest

    layers = None if isinstance(executor, LocalExecutor) else executor
    return run_ingest(source, db, executor=layers, **kwargs)


def _ingest_fleet(sources, manifest, db, *, family, tick, **kwargs):
    from headgraph.ingest.fleet import fleet_items, ingest_fleet, read_manifest

    items = fleet_items(sources, family)
    if manifest is not None:
        items += read_manifest(manifest, family)
    written = [0]

    def progress(stage: str, done: int, total: int) -> None:
        if stage == "models written":
            written[0] = done
        tick(stage, done, total)

    try:
        return ingest_fleet(items, db, progress=progress, **kwargs)
    except KeyboardInterrupt:
        err_console.print(f"interrupted: {written[0]} of {len(items)} models were stored, "
                          "each whole; nothing of the others was written.")
        raise typer.Exit(130) from None


def _print_report(report) -> None:
    table = Table(title=f"ingested {report.name!r} into {report.database}", show_header=False)
    table.add_row("nodes", f"{report.n_nodes:,}")
    table.add_row("edges", f"{report.n_edges:,}")
    for stage, seconds in report.timings.items():
        table.add_row(f"{stage} (s)", f"{seconds:.2f}")
    table.add_row("total (s)", f"{sum(report.timings.values()):.2f}")
    if report.replaced:
        table.add_row("replaced", "the earlier model of this name")
    console.print(table)


def _print_fleet(report) -> None:
    table = Table(title=f"fleet into {report.database}: {len(report.stored)} stored, "
                  f"{len(report.failed)} failed, {report.seconds:.1f} s")
    for col in ("model", "nodes", "edges", "compute (s)", "write (s)", "result"):
        table.add_column(col)
    for o in report.outcomes:
        if o.error is None:
            table.add_row(o.name, f"{o.n_nodes:,}", f"{o.n_edges:,}",
                          f"{o.compute_seconds:.2f}", f"{o.write_seconds:.2f}", "stored")
        else:
            table.add_row(o.name, "", "", "", "", "[red]failed[/] (below)")
    console.print(table)
    for o in report.failed:
        console.print(f"[red]failed[/] {o.name} ({o.source}): {o.error}", highlight=False,
                      soft_wrap=True)


@app.command()
def plan(
    source: Annotated[str, typer.Argument(help="Model directory, 'toy' or 'random:SHAPE'.")],
) -> None:
    """Print what an ingest of SOURCE will cost (edges, FLOPs, memory, size, time)."""
    from headgraph.ingest.plan import make_plan

    p = _run(make_plan, source)
    s = p.shape
    table = Table(title=f"plan for {source}", show_header=False)
    table.add_row("architecture", s.architecture)
    table.add_row("shape", f"{s.n_layers} layers x {s.n_heads} heads ({s.n_kv_heads} KV), "
                  f"d_model {s.d_model}, d_head {s.d_head}, d_mlp {s.d_mlp}, vocab {s.d_vocab}")
    table.add_row("parameters", f"{s.n_parameters / 1e6:,.0f} M"
                  + (" (loaded whole, through the bridge)" if s.loads_whole_model
                     else " (streamed layer by layer)"))
    table.add_row("edges", f"{p.edges['total']:,} ({p.edges['head->head (Q+K+V)']:,} head->head)")
    table.add_row("head pairs by", "block Grams (fewer FLOPs for this shape)"
                  if p.head_method == "gram" else "QR-reduced products")
    for stage, flops in p.flops.items():
        table.add_row(f"FLOPs: {stage}", f"{flops / 1e12:,.3f} T")
    table.add_row("peak memory", f"{p.peak_bytes / 2**30:,.1f} GiB")
    table.add_row("database", f"{p.database_bytes / 2**20:,.0f} MiB")
    table.add_row("time here", f"{p.seconds:,.0f} s at {p.gflops_rate:,.0f} GFLOP/s (CPU)")
    console.print(table)


@app.command()
def models(db: DbOption = None) -> None:
    """List the models stored in a database."""
    from headgraph.queries.models import list_models
    from headgraph.queries.session import open_reader

    rows = _run(lambda: list_models(open_reader(db)))
    table = Table(title="models")
    for col in ("name", "family", "step", "architecture", "layers x heads", "d_model",
                "nodes", "edges", "ingested"):
        table.add_column(col)
    for m in rows:
        table.add_row(m.name, m.family or "", "" if m.step is None else str(m.step),
                      m.architecture, f"{m.n_layers} x {m.n_heads}", str(m.d_model),
                      f"{m.n_nodes:,}", f"{m.n_edges:,}", m.ingested_at.strftime("%Y-%m-%d %H:%M"))
    console.print(table)


@app.command()
def check(db: DbOption = None) -> None:
    """Check a database's integrity: schema, complete models, ranks, no orphans."""
    from headgraph.schema.check import check_database

    report = _run(check_database, db)
    console.print(f"{report.database}: {len(report.models)} model(s)")
    for problem in report.problems:
        err_console.print(f"[red]problem[/]: {problem}")
    if not report.ok:
        raise typer.Exit(1)
    console.print("ok: schema version, complete models, consistent ranks, no orphan rows")


@app.command("copy")
def copy_cmd(
    source: Annotated[str, typer.Option("--from", help="Source database (path or URL).")],
    dest: Annotated[str, typer.Option("--to", help="Destination database (path or URL).")],
    model: Annotated[list[str] | None, typer.Option("--model", help="Model to copy "
                                                    "(repeat; default: all).")] = None,
    replace: Annotated[bool, typer.Option(help="Overwrite models of the same name.")] = False,
) -> None:
    """Copy models between databases (DuckDB <-> PostgreSQL), one transaction per model."""
    from headgraph.schema.transfer import copy_models

    results = _run(copy_models, source, dest, model or None, replace=replace,
                   progress=lambda name: console.print(f"copied {name}"))
    for r in results:
        console.print(f"{r.name}: " + ", ".join(f"{k} {v:,}" for k, v in r.rows.items())
                      + (" (replaced)" if r.replaced else ""))


@app.command()
def demo(
    db: DbOption = None,
    serve: Annotated[bool, typer.Option(help="Serve the API (and viewer) afterwards, until "
                                        "Ctrl-C.")] = True,
    port: Annotated[int, typer.Option(help="Port to serve on (127.0.0.1).")] = 8000,
) -> None:
    """Ingest the shipped toy model and show what its graph says about induction."""
    from headgraph.demo import run_demo

    _run(run_demo, db, console=console, serve=serve, port=port)


def _register_extensions() -> None:
    """Commands defined next to the code they drive (the API's serve/query...)."""
    from headgraph.api.commands import register as register_api
    from headgraph.graph.commands import register as register_graph
    from headgraph.ingest.commands import register as register_ingest
    from headgraph.ingest.import_command import register as register_import

    register_api(app)
    register_ingest(app)
    register_import(app)
    register_graph(app)


_register_extensions()


def main() -> None:  # pragma: no cover - entry point
    try:
        app()
    except HeadgraphError as exc:
        err_console.print(f"error [{exc.code}]: {exc}")
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()

__all__ = ["app", "Path"]
