"""Shared measuring tools for the benchmark scripts: the machine's matmul floor, and
running a command while sampling its peak memory (FLOP counts: ``headgraph.ingest.plan``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time


def matmul_floor(n: int = 2048, k: int = 1024, m: int = 4096, reps: int = 5) -> float:
    """Best-of-``reps`` fp32 GFLOP/s of one ``[n, k] @ [k, m]`` product (the kernel's shape)."""
    import torch

    a, b = torch.randn(n, k), torch.randn(k, m)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n * k * m / best / 1e9


def run_measured(code: str, *args: str, env: dict | None = None) -> tuple[dict, float, float]:
    """Run ``python -c code args``; return (its last stdout line as JSON, wall seconds, peak
    RSS in GB of the child and its descendants, sampled every 20 ms).

    Sampling, not ``RUSAGE_CHILDREN``: a forked child's ``ru_maxrss`` counts the parent's
    pages it inherited before ``exec``, which overstates a small child of a big parent.
    """
    import psutil

    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
    peak = 0
    ps = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            rss = ps.memory_info().rss + sum(c.memory_info().rss
                                             for c in ps.children(recursive=True))
            peak = max(peak, rss)
        except psutil.Error:
            pass
        time.sleep(0.02)
    out, err = proc.communicate()
    wall = time.perf_counter() - t
    if proc.returncode:
        raise RuntimeError(err[-3000:])
    return json.loads(out.strip().splitlines()[-1]), wall, peak / 2**30
