"""Attribution graphs at scale (issue: one home for circuit evidence).

Generates a circuit-tracer-shaped graph of ``--links`` links (default 16M, ~1.7 GB of
JSON; :mod:`headgraph.attribution.synth`: 26 layers, 16 positions, ``--features``
transcoder features, heavy-tailed weights) in ``--dir`` (default /tmp), then prints:

* import: seconds, links/s and peak RSS of ``import_graph`` in a child process (goals:
  >= 1M links/s, <= 2 GB);
* the reference: ``json.load`` of the same file with the standard library, seconds and
  peak RSS, in the same run. When ~6x the file would not fit in the memory available,
  the reference loads a graph of the same shape with a quarter of the links and says so;
* the pruned view: p50 latency over ``--reps`` calls on a warm read-only connection,
  computed each time (``cache=False``) and answered from the process's view cache, and
  its size (goal <= 50 ms computed at circuit-tracer's node 0.8 / edge 0.98). At the
  default node threshold the edge scores stored at import are read
  (:mod:`headgraph.attribution.default_view`); node 0.5 / edge 0.9, node 0.7 / edge 0.98
  and node 0.9 / edge 0.98 compute the edge step from the links (another node threshold
  is another pruned graph), and node 0.8 / edge 0.98 is computed that way too, for
  comparison;
* the influence view (Neuronpedia's rule on the stored influence,
  :mod:`headgraph.attribution.views`), computed each time, at node 0.8 and 0.3, and at 0.8
  keeping the strongest 1,000 links (what a GraphQL ``pruned(first: 1000)`` reads): it
  reads every link of the graph (the file's links between the shown nodes);
* a node's neighbourhood (top 10 in and out links, depth 1) over ``--reps`` random
  nodes: p50 (goal <= 5 ms), and depth 2;
* database size.

Each latency is printed as wall-clock p50 and, in brackets, the p50 of the process's CPU
time (DuckDB's threads included): on a machine shared with other work the CPU figure
moves less. The load average is printed before each stage.

The JSON and database are deleted at the end unless ``--keep``.

Run: ``.venv/bin/python benchmarks/bench_attribution.py [--links 16000000] [--reps 21]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import run_measured  # noqa: E402
from headgraph.attribution.synth import SynthSpec, write_graph  # noqa: E402

IMPORT = ("import json, sys; from headgraph.attribution.importer import import_graph; "
          "r = import_graph(sys.argv[1], sys.argv[2]); print(json.dumps(r.timings))")
STDLIB = ("import json, sys, time; t = time.perf_counter(); d = json.load(open(sys.argv[1])); "
          "print(json.dumps({'seconds': time.perf_counter() - t, 'links': len(d['links'])}))")


def p50(fn, reps: int) -> tuple[float, float]:
    """Median wall-clock and process CPU milliseconds of ``reps`` calls."""
    wall, cpu = [], []
    for _ in range(reps):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return statistics.median(wall) * 1000, statistics.median(cpu) * 1000


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def available_gb() -> float:
    import psutil

    return psutil.virtual_memory().available / 2**30


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--links", type=int, default=16_000_000)
    ap.add_argument("--features", type=int, default=20_000)
    ap.add_argument("--dir", default="/tmp")
    ap.add_argument("--reps", type=int, default=21)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    spec = SynthSpec(slug="bench", scan="bench-model", n_layers=26, n_pos=16,
                     n_features=args.features, n_logits=10, n_links=args.links)
    folder = Path(args.dir)
    graph, db = folder / "headgraph-bench-graph.json", folder / "headgraph-bench.duckdb"
    small = folder / "headgraph-bench-graph-quarter.json"
    try:
        t = time.perf_counter()
        size = write_graph(graph, spec)
        print(f"graph: {args.links:,} links, {spec.n_features + 26 * 16 + 16 + 10:,} nodes, "
              f"{size / 1e9:.2f} GB JSON (written in {time.perf_counter() - t:.0f} s)")
        db.unlink(missing_ok=True)
        print(load())
        timings, wall, peak = run_measured(IMPORT, str(graph), str(db))
        print(f"import: {wall:.1f} s ({args.links / wall / 1e6:.2f}M links/s), peak RSS "
              f"{peak:.2f} GB; stages {json.dumps({k: round(v, 1) for k, v in timings.items()})}")
        target, scale = graph, 1.0
        if 6 * size / 2**30 > 0.6 * available_gb():
            write_graph(small, SynthSpec(**{**spec.__dict__, "n_links": args.links // 4}))
            target, scale = small, 4.0
        ref, ref_wall, ref_peak = run_measured(STDLIB, str(target))
        note = "" if scale == 1 else (f" (on a quarter-size graph, {ref['links']:,} links: "
                                      "not enough free memory for the whole file)")
        print(f"stdlib json.load: {ref['seconds']:.1f} s ({ref['links'] / ref['seconds'] / 1e6:.2f}"
              f"M links/s), peak RSS {ref_peak:.2f} GB{note}")
        print(load())
        latencies(db, args.reps)
        print(load())
        print(f"database: {os.path.getsize(db) / 1e9:.2f} GB")
    finally:
        if not args.keep:
            for path in (graph, small, db, Path(str(db) + ".wal")):
                path.unlink(missing_ok=True)


def latencies(db: Path, reps: int) -> None:
    import numpy as np
    from sqlalchemy import select

    from headgraph.attribution.graphs import get_graph
    from headgraph.attribution.neighbourhood import neighbourhood
    from headgraph.attribution.pruned import compute_pruned, pruned_view
    from headgraph.attribution.views import ViewAsk, graph_view
    from headgraph.queries.session import open_reader
    from headgraph.schema.tables import attribution_nodes

    with open_reader(db) as reader, reader.session() as s:
        for nt, et in ((0.8, 0.98), (0.5, 0.9), (0.7, 0.98), (0.9, 0.98)):
            view = pruned_view(s, "bench", nt, et, cache=False)
            cold = p50(lambda nt=nt, et=et: pruned_view(s, "bench", nt, et, cache=False), reps)
            warm = p50(lambda nt=nt, et=et: pruned_view(s, "bench", nt, et), reps)
            how = "stored edge scores" if (nt, et) == (0.8, 0.98) else "edge step computed"
            print(f"pruned view node {nt} / edge {et}: p50 {cold[0]:.1f} ms ({how}) "
                  f"[cpu {cold[1]:.1f}], {warm[0]:.1f} ms from the view cache "
                  f"({len(view.nodes):,} nodes, {view.links.num_rows:,} links)")
        for t, first in ((0.8, None), (0.3, None), (0.8, 1000)):
            ask = ViewAsk(prune="influence", node_threshold=t)
            view = graph_view(s, "bench", ask, max_links=first, cache=False)
            cold = p50(lambda a=ask, f=first: graph_view(s, "bench", a, max_links=f,
                                                         cache=False), reps)
            print(f"influence view (Neuronpedia's rule) node {t}"
                  f"{'' if first is None else f', strongest {first} links'}: p50 {cold[0]:.1f} ms"
                  f" [cpu {cold[1]:.1f}] ({len(view.nodes):,} nodes, {view.links.num_rows:,} "
                  "links)")
        graph = get_graph(s, "bench")
        ms = p50(lambda: compute_pruned(s, graph, 0.8, 0.98, None, stored=False), reps)
        print(f"pruned view node 0.8 / edge 0.98, edge step computed: p50 {ms[0]:.1f} ms "
              f"[cpu {ms[1]:.1f}]")
        ids = [r["node_id"] for r in s.rows(select(attribution_nodes.c.node_id))]
        rng = np.random.default_rng(0)
        picks = iter(rng.choice(ids, size=4 * reps + 4).tolist())
        for depth in (1, 2):
            neighbourhood(s, "bench", next(picks), top=10, depth=depth)
            ms = p50(lambda depth=depth: neighbourhood(s, "bench", next(picks), top=10,
                                                       depth=depth), reps)
            print(f"neighbourhood top 10, depth {depth}: p50 {ms[0]:.1f} ms [cpu {ms[1]:.1f}]")


if __name__ == "__main__":
    main()
