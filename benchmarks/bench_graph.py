"""Graph-side speed: paths, comparison and exports (issues: paths; comparison; viewers).

Prints, in one run:
1. top-10 paths of length <= 3 into heads of ``random:gpt2-xl`` (1,200 heads), cold (the
   edge view loaded from the database) and warm (cached view), against networkx's naive
   ranking (enumerate ``all_simple_paths(cutoff=3)`` and sort) on the same graph, given a
   time budget;
2. matching and diffing two ``random:gpt2-small`` models (seconds);
3. exports of ``random:gpt2-xl``: peak RSS of a process exporting every Q/K/V edge and a
   thresholded set, against the in-memory size of those edges.

Run: ``.venv/bin/python benchmarks/bench_graph.py --db /tmp/headgraph-xl.duckdb``
(the gpt2-xl database from ``bench_ingest.py --keep``; made if missing).
"""

from __future__ import annotations

import argparse
import itertools
import math
import random
import tempfile
import time
from pathlib import Path

from benchmarks.common import run_measured

EXPORT = """
import json, sys
from headgraph.graph.export import ExportFilter, write_export
from headgraph.queries.session import open_reader
flt = ExportFilter(min_score=float(sys.argv[3]) if sys.argv[3] != "none" else None)
with open_reader(sys.argv[1]) as r, open(sys.argv[2], "w") as f:
    n = write_export(r, "xl", "json", f, flt)
print(json.dumps({"edges": n}))
"""


def bench_paths(db: str, budget: float) -> None:
    import networkx as nx

    from headgraph.graph.paths import top_paths
    from headgraph.graph.view import VIEWS, ViewFilter
    from headgraph.queries.session import open_reader

    reader = open_reader(db)
    targets = [f"L{layer}H{h}" for layer, h in ((47, 3), (30, 11), (12, 0))]
    flt = ViewFilter(kinds=("Q", "K", "V"))
    start = time.perf_counter()
    view = VIEWS.get(reader, "xl", flt)
    load_s = time.perf_counter() - start
    for t in targets:
        start = time.perf_counter()
        best = top_paths(view, t, max_length=3, top=10)
        warm = time.perf_counter() - start
        print(f"paths into {t}: top-10 of length <= 3 in {warm * 1000:.0f} ms warm "
              f"(+{load_s:.2f} s to load the {len(view):,}-edge view once, cold); best "
              f"{' -> '.join(best[0].nodes)} {best[0].value:.4f}")
    # naive reference: networkx enumeration of every simple path, then sort
    g = nx.MultiDiGraph()
    for s, d, k, w in zip(view.src.tolist(), view.dst.tolist(), view.kind.tolist(),
                          view.score.tolist(), strict=True):
        g.add_edge(s, d, key=k, w=w)
    t = view.index[targets[0]]
    start = time.perf_counter()
    found = []
    for path in itertools.takewhile(lambda _: time.perf_counter() - start < budget,
                                    _all_sources(g, t)):
        found.append(math.prod(g.edges[e]["w"] for e in path))
    elapsed = time.perf_counter() - start
    total = _count_paths(view, t)
    print(f"networkx naive all_simple_paths ranking into {targets[0]}: enumerated "
          f"{len(found):,} of {total:,.0f} paths in {elapsed:.0f} s budget "
          f"({'finished' if len(found) >= total else 'did not finish'}; at this rate all "
          f"would take ~{total / max(1, len(found)) * elapsed / 3600:.1f} h)")
    reader.close()


def _all_sources(g, target):
    import networkx as nx

    for s in g.nodes:
        if s != target:
            yield from nx.all_simple_edge_paths(g, s, target, cutoff=3)


def _count_paths(view, target: int) -> float:
    """Number of paths of length 1..3 into ``target`` (a DP over the edge arrays)."""
    import numpy as np

    n = len(view.names)
    count = np.zeros(n)
    count[target] = 1.0
    total = 0.0
    for _ in range(3):
        nxt = np.zeros(n)
        np.add.at(nxt, view.src, count[view.dst])
        total += nxt.sum()
        count = nxt
    return total


def bench_compare() -> None:
    from headgraph.graph.compare import diff_edges, match_heads
    from headgraph.ingest.pipeline import ingest
    from headgraph.queries.session import open_reader

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "cmp.duckdb"
        ingest("random:gpt2-small", db, name="a")
        ingest("random:gpt2-small,seed=1", db, name="b")
        with open_reader(db) as r:
            start = time.perf_counter()
            cmp = match_heads(r, "a", "b")
            matched = time.perf_counter() - start
            start = time.perf_counter()
            diff_edges(r, cmp, top=20)
            diffed = time.perf_counter() - start
    print(f"compare two random:gpt2-small models: match {matched:.2f} s "
          f"({len(cmp.matches)} heads), diff {diffed:.2f} s")


def bench_export(db: str) -> None:
    from headgraph.queries.session import open_reader

    with open_reader(db) as r:
        from sqlalchemy import text

        n_qkv = r.rows(text("SELECT count(*) AS n FROM edges WHERE kind IN ('Q','K','V')"))[0]["n"]
        cut = r.rows(text("SELECT quantile_cont(score, 0.99) AS q FROM edges"))[0]["q"]
    with tempfile.TemporaryDirectory() as tmp:
        for label, threshold in (("every Q/K/V edge", "none"), ("score >= p99", f"{cut:.6f}")):
            out, wall, peak = run_measured(EXPORT, db, str(Path(tmp) / "x.json"), threshold)
            size = (Path(tmp) / "x.json").stat().st_size
            print(f"export json, {label}: {out['edges']:,} edges, {size / 1e6:.0f} MB in "
                  f"{wall:.1f} s, peak RSS {peak * 1024:.0f} MB (the {n_qkv:,} edges as Python "
                  f"rows would take ~{n_qkv * 400 / 1e6:.0f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", default="/tmp/headgraph-xl.duckdb")
    parser.add_argument("--budget", type=float, default=30.0)
    args = parser.parse_args()
    if not Path(args.db).exists():
        from headgraph.ingest.pipeline import ingest

        ingest("random:gpt2-xl", args.db, name="xl")
    random.seed(0)
    bench_paths(args.db, args.budget)
    bench_compare()
    bench_export(args.db)


if __name__ == "__main__":
    main()
