"""``headgraph ingest``, ``plan`` and ``probe``: the write side's commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from headgraph.cli.common import (
    DbOption,
    ThreadsOption,
    console,
    err_console,
    fail,
    run,
    seconds_since_process_start,
    set_threads,
)
from headgraph.errors import HeadgraphError


def ingest(
    sources: Annotated[list[str] | None, typer.Argument(
        metavar="SOURCE...", help="Model directory, .gguf file, hub name, 'toy', 'toy@STEP' or "
        "'random:SHAPE'; several make a fleet (one task and one transaction per model).",
        show_default=False)] = None,
    db: DbOption = None,
    name: Annotated[str | None, typer.Option(metavar="NAME", help="Name to store it under "
                                             "(unique; default from the source).")] = None,
    family: Annotated[str | None, typer.Option(metavar="FAMILY", help="Training-run family "
                                               "of checkpoints.")] = None,
    step: Annotated[int | None, typer.Option(metavar="STEP", help="Training step of this "
                                             "checkpoint (default: read from a name like "
                                             "checkpoint-1500).")] = None,
    manifest: Annotated[Path | None, typer.Option(metavar="FILE.csv", help="CSV of the fleet: "
                                                  "columns source,name,family,step (only "
                                                  "source needed).")] = None,
    replace: Annotated[bool, typer.Option("--replace", help="Store it even if a model of that "
                                          "name is stored: kept evidence if the weights are "
                                          "unchanged, dropped otherwise (the report says "
                                          "which).")] = False,
    device: Annotated[str, typer.Option(metavar="cpu|cuda", help="Where the matrix work "
                                        "runs.")] = "cpu",
    allow_pickle: Annotated[bool, typer.Option("--allow-pickle", help="Read pickle .bin "
                                               "weights (weights_only=True).")] = False,
    probes: Annotated[str | None, typer.Option(metavar="PROBES", help="Also run the model on "
                                               "these probes ('default', 'repeat(seq=20)', "
                                               "...) and store the evidence.")] = None,
    attribution: AttributionOption = "attribution",
    exact_heads: ExactHeadsOption = "10",
    exact_edges: ExactEdgesOption = 20,
    executor: Annotated[str, typer.Option(metavar="local|ray", help="Where tasks run: this "
                                          "process, or Ray (one task per layer, or per model "
                                          "of a fleet).")] = "local",
    ray_address: Annotated[str | None, typer.Option(metavar="HOST:PORT", help="Join this Ray "
                                                    "cluster (`ray start --head`); default: "
                                                    "start Ray here, on loopback.")] = None,
    ray_cpus: Annotated[int | None, typer.Option(metavar="N", help="CPUs of the Ray started "
                                                 "here (default: all).")] = None,
    threads: ThreadsOption = None,
) -> None:
    """Compute a model's circuit graph and store it in one transaction; with several
    SOURCEs (or --manifest), a fleet, each model in its own transaction. A fleet in which
    some models failed stores the rest, lists the failures and exits with status 1."""
    from headgraph.cli.progress import StageProgress
    from headgraph.errors import BadInputError
    from headgraph.ingest.executors import make_executor

    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            fail(HeadgraphError(f"--device {device}: no CUDA device is available here; "
                                "use --device cpu."))
    if executor != "ray" and (ray_address or ray_cpus):
        fail(BadInputError("--ray-address and --ray-cpus need --executor ray."))
    if ray_address and ray_cpus:
        fail(BadInputError("--ray-cpus sizes a Ray started here; a cluster joined with "
                           "--ray-address has the CPUs its `ray start` gave it."))
    fleet = manifest is not None or len(sources or []) > 1
    if not sources and manifest is None:
        fail(BadInputError("give a SOURCE (or several), or --manifest FILE.csv."))
    if fleet and (name is not None or step is not None):
        fail(BadInputError("--name and --step label one model; for a fleet put them in a "
                           "--manifest (columns source,name,family,step)."))
    started = seconds_since_process_start()
    set_threads(threads)
    evidence = evidence_options(attribution, exact_heads, exact_edges)
    options = {"address": ray_address, "num_cpus": ray_cpus, "device": device}
    runner = run(make_executor, executor, **options)  # Ray starts at the first task

    def work():  # the progress display ends before any error is printed
        with StageProgress(console) as progress:
            if not fleet:
                return _ingest_one(sources[0], db, name=name, family=family, step=step,
                                   replace=replace, device=device, allow_pickle=allow_pickle,
                                   progress=progress.update, probes=probes, evidence_options=evidence,
                                   executor=runner)
            return _ingest_fleet(sources or [], manifest, db, family=family, replace=replace,
                                 device=device, allow_pickle=allow_pickle, probes=probes,
                                 evidence_options=evidence, executor=runner,
                                 tick=progress.update)

    try:
        report = run(work)
    finally:
        runner.__exit__(None, None, None)
    if not fleet:
        _print_report(report, started, with_evidence=probes is not None)
        return
    _print_fleet(report)
    if report.failed:
        raise typer.Exit(1)


def _ingest_one(source, db, **kwargs):
    from headgraph.ingest.pipeline import ingest as run_ingest

    return run_ingest(source, db, **kwargs)


def _ingest_fleet(sources, manifest, db, *, family, tick, **kwargs):
    from headgraph.ingest.manifest import fleet_items, read_manifest
    from headgraph.ingest.pipeline import ingest_fleet

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


def _print_report(report, started: float | None = None, with_evidence: bool = False) -> None:
    from headgraph.schema.carry import describe_rows

    console.print(f"ingested {report.name!r} into {report.database}", highlight=False)
    table = Table(show_header=False)
    table.add_row("nodes", f"{report.n_nodes:,}")
    table.add_row("edges", f"{report.n_edges:,}")
    timings = ({"start": started} if started is not None else {}) | report.timings
    for stage, seconds in timings.items():
        table.add_row(f"{stage} (s)", f"{seconds:.2f}")
    table.add_row("total (s)", f"{sum(timings.values()):.2f}"
                  + (" (process start to commit)" if started is not None else ""))
    if report.replaced:
        table.add_row("replaced", "the earlier model of this name")
    if report.virtual is not None:
        v = report.virtual
        table.add_row("virtual heads", (
            f"chains of 3: {v.scored:,} of {v.chains:,} scored exactly; "
            + ("the top list is certified exact" if v.certified else
               f"stored down to {v.bound_left:.4g}, the largest bound left unscored")))
    if with_evidence:
        agreement_table(report.database, report.name, table)
    console.print(table)
    if report.kept:
        console.print(f"kept {describe_rows(report.kept)} of the replaced model: its weights "
                      "are unchanged", highlight=False)
    if report.dropped:
        console.print(f"dropped {describe_rows(report.dropped)} of the replaced model: its "
                      "weights differ from these", highlight=False)


def _print_fleet(report) -> None:
    console.print(f"fleet into {report.database}: {len(report.stored)} stored, "
                  f"{len(report.failed)} failed, {report.seconds:.1f} s", highlight=False)
    table = Table()
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


def plan(
    source: Annotated[str, typer.Argument(metavar="SOURCE", help="Model directory, .gguf file, 'toy' or "
                                          "'random:SHAPE'.")],
    db: DbOption = None,
    probes: Annotated[str | None, typer.Option(metavar="PROBES", help="Plan the evidence run too (as "
                                               "`ingest --probes`).")] = None,
) -> None:
    """Print what an ingest of SOURCE will cost: edges, FLOPs, memory, size, and the
    seconds of every stage on this machine."""
    from headgraph.ingest.plan import make_plan

    known = run(_stored_nulls, db)
    p = run(make_plan, source, probes=probes, known_nulls=known)
    s = p.shape
    console.print(f"plan for {source}", highlight=False)
    table = Table(show_header=False)
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
    table.add_row("Gaussian nulls to sample", f"{p.nulls_to_sample} (the others are cached)")
    for stage, seconds in p.stages.items():
        table.add_row(f"time: {stage}", f"{seconds:,.1f} s")
    table.add_row("time here", f"{p.seconds:,.0f} s, process start to commit "
                  f"(matmul floor {p.gflops_rate:,.0f} GFLOP/s now)")
    console.print(table)


def _stored_nulls(db: str | None) -> dict:
    """The null baselines the target database holds (none if it does not exist yet)."""
    from headgraph.ingest.pipeline import preflight
    from headgraph.schema.database import resolve_target

    target = resolve_target(db)
    if target.path is not None and not target.path.exists():
        return {}
    return preflight(target, "\0plan", replace=True)


AttributionOption = Annotated[str, typer.Option(
    help="Evidence for every head and Q/K/V edge from gradients: 'attribution' (attribution "
    "patching / EAP, one backward pass per batch), 'integrated_gradients' (EAP-IG) or "
    "'none'.")]
ExactHeadsOption = Annotated[str, typer.Option(
    help="Heads with the largest |attribution| to confirm by exact ablation, or 'all'.")]
ExactEdgesOption = Annotated[int, typer.Option(
    help="Q/K/V edges with the largest |attribution| to confirm by exact path patching.")]


def evidence_options(attribution: str, exact_heads: str, exact_edges: int, **more):
    """:class:`EvidenceOptions` from the command line (refusals are one coded line)."""
    from headgraph.errors import BadInputError
    from headgraph.ingest.evidence.collect import EvidenceOptions

    text = exact_heads.strip().lower()
    if text != "all" and not text.isdigit():
        fail(BadInputError(f"--exact-heads takes a number or 'all', not {exact_heads!r}."))
    return run(EvidenceOptions, attribution=attribution, exact_edges=exact_edges,
               exact_heads=None if text == "all" else int(text), **more)


def agreement_table(database: str, model: str, table: Table) -> None:
    """Add the stored agreement of estimates with exact numbers to ``table``."""
    from headgraph.queries.evidence import agreement_of
    from headgraph.queries.models import get_model
    from headgraph.queries.session import open_reader

    with open_reader(database) as db:
        for a in agreement_of(db, get_model(db, model)):
            rho = "n/a" if a.spearman is None else f"{a.spearman:+.2f}"
            table.add_row(f"agreement {a.quantity}",
                          f"{a.method} vs exact on {a.probe}: Spearman {rho} over {a.n}, "
                          f"top-{a.k} overlap {a.overlap}/{a.k}")


def probe(
    model: Annotated[str, typer.Option("--model", metavar="NAME", help="Name of the stored "
                                       "model.")],
    db: DbOption = None,
    probes: Annotated[str, typer.Option(help="Probes: 'default', or e.g. "
                                        "'repeat(seq=20,batch=32,seed=0),text(path=F)'.")]
    = "default",
    attribution: AttributionOption = "attribution",
    exact_heads: ExactHeadsOption = "10",
    exact_edges: ExactEdgesOption = 20,
    heads: Annotated[str | None, typer.Option(help="Ablate exactly these heads instead, e.g. "
                                              "'L0H1,L1H2'.")] = None,
    edges: Annotated[str | None, typer.Option(help="Path-patch exactly these edges instead, "
                                              "e.g. 'L0H2>L1H3:K,MLP0>L1H1:Q'.")] = None,
    ig_steps: Annotated[int, typer.Option(help="Steps of EAP-IG.")] = 5,
    max_tokens: Annotated[int, typer.Option(help="Tokens per forward pass (batching).")]
    = 8192,
    allow_pickle: Annotated[bool, typer.Option("--allow-pickle", help="Read pickle .bin "
                                               "weights (weights_only=True).")] = False,
    threads: ThreadsOption = None,
) -> None:
    """Run probes on a stored model and store the evidence, replacing stored rows of the
    same probe, metric and node or edge (one transaction). With --attribution none, the
    heads and edges that stored attribution ranks first get exact confirmations."""
    from headgraph.cli.progress import StageProgress
    from headgraph.ingest.evidence.collect import parse_edges
    from headgraph.ingest.evidence.reprobe import probe_model

    set_threads(threads)
    options = evidence_options(
        attribution, exact_heads, exact_edges, max_tokens=max_tokens, ig_steps=ig_steps,
        heads=None if heads is None else tuple(h.strip() for h in heads.split(",")),
        edges=None if edges is None else parse_edges(edges))

    def work():  # the progress display ends before any error is printed
        with StageProgress(console) as progress:
            return probe_model(db, model, probes, options=options, allow_pickle=allow_pickle,
                               progress=progress.update)

    report = run(work)
    console.print(f"probed {report.name!r} in {report.database}", highlight=False)
    table = Table(show_header=False)
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
    agreement_table(report.database, report.name, table)
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command()(ingest)
    app.command()(plan)
    app.command()(probe)
