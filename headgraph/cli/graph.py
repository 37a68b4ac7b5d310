"""CLI commands of the graph side: paths, compare, series, export, plot."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from headgraph.cli.common import DbOption, console, run

ModelOption = Annotated[str, typer.Option("--model", help="Model name.")]


def _kinds(text: str | None, default: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(k.strip().upper() for k in text.split(",") if k.strip()) if text else default


def register(app: typer.Typer) -> None:
    @app.command()
    def paths(
        db: DbOption = None,
        model: ModelOption = ...,
        source: Annotated[str | None, typer.Option("--from", help="Source node.")] = None,
        target: Annotated[str, typer.Option("--to", help="Target node.")] = ...,
        kinds: Annotated[str | None, typer.Option(help="Allowed kinds, e.g. V,K.")] = None,
        pattern: Annotated[str | None, typer.Option(help="Exact kind sequence, e.g. V,K.")] = None,
        max_length: Annotated[int, typer.Option(help="Longest path in edges.")] = 3,
        top: Annotated[int, typer.Option(help="How many paths.")] = 10,
        min_score: Annotated[float | None, typer.Option(help="Drop weaker edges.")] = None,
        weight: Annotated[str, typer.Option(
            help="score, ratio (score/baseline) or z (structural z floored at 0; rank it "
                 "per_hop).")] = "score",
        rank_by: Annotated[str, typer.Option(help="product or per_hop.")] = "product",
    ) -> None:
        """Top-k composition paths into a node, ranked exactly."""
        from headgraph.graph.paths import top_paths
        from headgraph.graph.view import VIEWS, ViewFilter
        from headgraph.queries.session import open_reader

        def work():
            with open_reader(db) as reader:
                allowed = _kinds(kinds, ("Q", "K", "V"))
                pat = _kinds(pattern, ()) or None
                flt = ViewFilter(kinds=tuple(sorted(set(allowed) | set(pat or ()))),
                                 min_score=min_score)
                view = VIEWS.get(reader, model, flt)
                return top_paths(view, target, source, kinds=allowed, pattern=pat,
                                 max_length=max_length, top=top, weight=weight, rank_by=rank_by)

        found = run(work)
        table = Table(title=f"paths into {target} ({model})")
        shown = "edge scores" if weight == "score" else f"edge {weight}"
        for col in ("#", "path", "kinds", shown, rank_by):
            table.add_column(col)
        for i, p in enumerate(found, 1):
            values = p.scores if weight == "score" else p.weights
            digits = ".3f" if weight == "score" else ".2f"
            table.add_row(str(i), " -> ".join(p.nodes), " ".join(p.kinds),
                          " ".join(f"{s:{digits}}" for s in values), f"{p.value:.4g}")
        console.print(table if found else "no path: nothing reaches it under these filters.")

    @app.command()
    def compare(
        a: Annotated[str, typer.Argument(help="First model.")],
        b: Annotated[str, typer.Argument(help="Second model.")],
        db: DbOption = None,
        top: Annotated[int, typer.Option(help="Changed edges to list.")] = 15,
        min_similarity: Annotated[float, typer.Option(help="Leave weaker pairs unmatched.")] = 0.0,
    ) -> None:
        """Match the heads of two models and list the edges that changed most."""
        from headgraph.graph.compare import diff_edges, match_heads
        from headgraph.queries.session import open_reader

        def work():
            with open_reader(db) as reader:
                cmp = match_heads(reader, a, b, min_similarity=min_similarity)
                return cmp, diff_edges(reader, cmp, top=top)

        cmp, changes = run(work)
        console.print(f"[bold]{a}[/] vs [bold]{b}[/]: {cmp.note}")
        table = Table(title="head matches (most similar first)")
        for col in (a, b, "similarity"):
            table.add_column(col)
        for m in cmp.matches:
            table.add_row(m.a, m.b, f"{m.similarity:.3f}")
        console.print(table)
        if cmp.unmatched_a or cmp.unmatched_b:
            console.print(f"unmatched in {a}: {', '.join(cmp.unmatched_a) or '-'}; "
                          f"in {b}: {', '.join(cmp.unmatched_b) or '-'}")
        table = Table(title="edges that changed most")
        for col in (f"edge in {a}", f"edge in {b}", "kind", "score A", "score B", "change",
                    "status"):
            table.add_column(col)
        for c in changes:
            fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
            table.add_row(f"{c.source_a}->{c.target_a}", f"{c.source_b}->{c.target_b}", c.kind,
                          fmt(c.score_a), fmt(c.score_b), f"{c.change:+.3f}", c.status)
        console.print(table)

    @app.command()
    def series(
        family: Annotated[str, typer.Argument(help="Family of checkpoints.")],
        db: DbOption = None,
        node: Annotated[str | None, typer.Option(help="Node for a node metric.")] = None,
        source: Annotated[str | None, typer.Option("--from", help="Edge source.")] = None,
        target: Annotated[str | None, typer.Option("--to", help="Edge target.")] = None,
        kind: Annotated[str | None, typer.Option(help="Edge kind.")] = None,
        metric: Annotated[str | None, typer.Option(help="Metric (default copying_ratio / "
                                                   "score; edges: score, baseline, rank, z, "
                                                   "gaussian_z).")] = None,
        plot: Annotated[Path | None, typer.Option("-o", help="Also write a PNG here.")] = None,
    ) -> None:
        """A node or edge metric across the checkpoints of a training run."""
        from headgraph.queries.series import series as run_series
        from headgraph.queries.session import open_reader

        def work():
            with open_reader(db) as reader:
                return run_series(reader, family, node=node, source=source, target=target,
                                  kind=kind.upper() if kind else None, metric=metric)

        from headgraph.graph.plot import series_label

        points = run(work)
        what = series_label(node, source, target, kind.upper() if kind else None, metric)
        console.print(f"{family}: {what}", highlight=False)
        table = Table()
        for col in ("step", "model", "value"):
            table.add_column(col)
        for p in points:
            table.add_row(str(p.step), p.model, f"{p.value:.4f}")
        console.print(table)
        if plot is not None:
            from headgraph.graph.plot import series_chart, series_label

            what = series_label(node, source, target, kind.upper() if kind else None, metric)
            plot.write_bytes(run(series_chart, points, what, family))
            console.print(f"wrote {plot}")

    @app.command()
    def export(
        db: DbOption = None,
        model: ModelOption = ...,
        fmt: Annotated[str, typer.Option("--format", help="json, cyjs, graphml or dot.")] = "json",
        kinds: Annotated[str | None, typer.Option(help="Edge kinds, e.g. Q,K,V.")] = None,
        min_score: Annotated[float | None, typer.Option(help="Drop weaker edges.")] = None,
        top_per_target: Annotated[int | None, typer.Option(help="Keep each target's k "
                                                           "strongest feeders.")] = None,
        circuit: Annotated[str | None, typer.Option(help="Only this node's upstream "
                                                    "circuit.")] = None,
        depth: Annotated[int, typer.Option(help="Circuit depth.")] = 2,
        output: Annotated[Path | None, typer.Option("-o", help="File (default stdout).")] = None,
    ) -> None:
        """Export a model's graph (or one node's circuit) for a viewer."""
        from headgraph.graph.export import ExportFilter, write_export
        from headgraph.queries.session import open_reader

        def work():
            with open_reader(db) as reader:
                flt = ExportFilter(kinds=_kinds(kinds, ("Q", "K", "V")), min_score=min_score,
                                   top_per_target=top_per_target)
                if circuit:
                    flt = circuit_filter(reader, model, circuit, depth, flt)
                if output is None:
                    return write_export(reader, model, fmt, sys.stdout, flt)
                with output.open("w") as f:
                    return write_export(reader, model, fmt, f, flt)

        n = run(work)
        if output is not None:
            console.print(f"wrote {n:,} edges to {output}")

    @app.command()
    def plot(
        db: DbOption = None,
        model: ModelOption = ...,
        kind: Annotated[str, typer.Option(help="Q, K, V for a heatmap; COPYING for the "
                                          "copying chart.")] = "K",
        output: Annotated[Path, typer.Option("-o", help="PNG file.")] = Path("plot.png"),
    ) -> None:
        """Draw a composition heatmap or the copying chart as a PNG."""
        from headgraph.graph.plot import composition_heatmap, copying_chart
        from headgraph.queries.session import open_reader

        def work():
            with open_reader(db) as reader:
                if kind.upper() == "COPYING":
                    return copying_chart(reader, model)
                return composition_heatmap(reader, model, kind.upper())

        output.write_bytes(run(work))
        console.print(f"wrote {output}")


def circuit_filter(reader, model: str, node: str, depth: int, flt):
    """An export filter holding exactly the edges of ``node``'s upstream circuit."""
    from dataclasses import replace

    from headgraph.graph.upstream import upstream
    from headgraph.graph.view import VIEWS, ViewFilter

    view = VIEWS.get(reader, model, ViewFilter(kinds=flt.kinds, min_score=flt.min_score,
                                               top_per_target=flt.top_per_target))
    sub = upstream(view, node, depth=depth)
    return replace(flt, edge_keys=frozenset((e.source, e.target, e.kind) for e in sub.edges))
