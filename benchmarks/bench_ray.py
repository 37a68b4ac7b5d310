"""Ray executor overheads, a toy fleet serial vs Ray, and the ingest cost model (issue:
beyond one machine). Figures are recorded in SCALING.md.

Prints, in one run:
1. Ray's start-up, the round trip of a no-op task, and the overhead of one layer task (a
   model with almost no matmul work, composed by the local executor and by Ray);
2. the shipped toy fleet (8 checkpoints) ingested serially in this process vs through Ray on
   this machine's cores (cold: workers import torch and TransformerLens; warm: again);
3. the cost model ``seconds = a + FLOPs / rate`` fitted to ``compose`` of
   ``random:L{l}H{h}D{d}V{v}`` shapes over a ~13x range of FLOPs (``plan.stage_flops``),
   in CPU-seconds on one torch thread (the machine is shared: wall clock moves 2-5x with
   other people's load, one thread's CPU time much less), best of ``--repeats``, against
   the 1-thread matmul floor; then the largest shape's full ingest (first of its shape, so
   null sampling included) and its composition by layer tasks, local vs Ray.

``--table CPU_GFLOPS EFFICIENCY`` prints only the SCALING.md planning table (arithmetic).

Run: ``.venv/bin/python -m benchmarks.bench_ray [--repeats 3] [--parts overhead,fleet,fit]``
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

SHAPES = ("L4H8D512V4096", "L6H8D512V8192", "L8H12D768V4096", "L12H12D768V4096")


def bench_overhead() -> None:
    from headgraph.ingest.compose import compose
    from headgraph.ingest.nullcache import cached_null
    from headgraph.ingest.ray_executor import RayExecutor
    from headgraph.ingest.sources import open_source

    t = time.perf_counter()
    ex = RayExecutor(num_cpus=os.cpu_count()).start()
    print(f"Ray start (local, {os.cpu_count()} CPUs, loopback): {time.perf_counter() - t:.2f} s")
    ray = ex._ray
    noop = ray.remote(num_cpus=1)(lambda: None)
    ray.get([noop.remote() for _ in range(20)])  # warm workers
    n = 300
    t = time.perf_counter()
    ray.get([noop.remote() for _ in range(n)])
    batch = (time.perf_counter() - t) / n
    t = time.perf_counter()
    for _ in range(50):
        ray.get(noop.remote())
    serial = (time.perf_counter() - t) / 50
    print(f"no-op task: {serial * 1e3:.2f} ms round trip one at a time, "
          f"{batch * 1e3:.2f} ms each in a batch of {n}")
    import torch

    source, cache, n_layers = "random:L24H4D64V1000", {}, 24
    one_at_a_time = RayExecutor(in_flight=1)  # joins the session started above
    compose(open_source(source), null=cached_null(cache))  # nulls cached, kernels warm
    compose(open_source(source), null=cached_null(cache), executor=ex)  # workers warm
    threads = torch.get_num_threads()
    best = {"local": float("inf"), "ray, 1 in flight": float("inf"), "ray": float("inf")}
    for _ in range(3):
        for name, executor in (("local", None), ("ray, 1 in flight", one_at_a_time),
                               ("ray", ex)):
            torch.set_num_threads(1 if name == "local" else threads)  # as in a worker
            t = time.perf_counter()
            compose(open_source(source), null=cached_null(cache), executor=executor)
            best[name] = min(best[name], time.perf_counter() - t)
    torch.set_num_threads(threads)
    per_task = (best["ray, 1 in flight"] - best["local"]) / n_layers
    print(f"layer tasks ({source}: {n_layers} tasks with almost no matmul work), best of 3: "
          + ", ".join(f"{k} {v:.2f} s" for k, v in best.items())
          + f" -> overhead {per_task * 1e3:.1f} ms per layer task (factors put once, "
          "weights shipped, blocks returned)")
    ex.close()


def bench_fleet(repeats: int) -> None:
    from headgraph.ingest.manifest import fleet_items
    from headgraph.ingest.pipeline import ingest_fleet
    from headgraph.ingest.ray_executor import RayExecutor
    from headgraph.toy import checkpoint_steps

    sources = [f"toy@{s}" for s in checkpoint_steps()[:-1]] + ["toy"]
    items = fleet_items(sources)
    with tempfile.TemporaryDirectory() as tmp:
        ingest_fleet(fleet_items(["toy@0"]), Path(tmp) / "warm.duckdb")  # imports, kernels
        with RayExecutor(num_cpus=os.cpu_count()) as ex:
            t = time.perf_counter()
            assert not ingest_fleet(items, Path(tmp) / "cold.duckdb", executor=ex).failed
            cold = time.perf_counter() - t
            best = {"serial": float("inf"), "ray": float("inf")}
            for i in range(repeats):  # alternate, best of: the machine is shared
                for name, executor in (("serial", None), ("ray", ex)):
                    t = time.perf_counter()
                    report = ingest_fleet(items, Path(tmp) / f"{name}{i}.duckdb",
                                          executor=executor)
                    best[name] = min(best[name], time.perf_counter() - t)
                    assert not report.failed
    print(f"toy fleet, {len(items)} checkpoints, fresh database each run (best of {repeats}): "
          f"serial in-process {best['serial']:.2f} s; Ray with {os.cpu_count()} workers "
          f"{best['ray']:.2f} s = {best['ray'] / best['serial']:.2f}x serial "
          f"(cold, workers importing torch + TransformerLens: {cold:.2f} s)")


def _flat_null(writer, reader, kind):
    """A constant null: the fit measures composition, not the one-off null sampling."""
    from headgraph.ingest.null import NullStat, null_key

    return NullStat(null_key(writer, reader, kind), 0.0, 1.0, 0, 0)


def bench_fit(repeats: int) -> None:
    """Fit CPU-seconds of ``compose`` (one torch thread, so a busy shared machine moves the
    figures less) against ``plan.stage_flops``; then one shape's full ingest and Ray run."""
    import torch

    from headgraph.ingest.compose import compose
    from headgraph.ingest.pipeline import ingest
    from headgraph.ingest.plan import matmul_rate, shape_of, stage_flops
    from headgraph.ingest.ray_executor import RayExecutor
    from headgraph.ingest.sources import open_source

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rate = matmul_rate(1.0)
    print(f"matmul floor (plan.matmul_rate, fp32, 1 thread): {rate:.1f} GFLOP/s per core")
    compose(open_source("random:L2H2D64V100"), null=_flat_null)
    rows = []
    for shape in SHAPES:
        source = f"random:{shape}"
        flops = sum(stage_flops(shape_of(source)).values())
        cpu = wall = float("inf")
        for _ in range(repeats):
            reader = open_source(source)
            c, w = time.process_time(), time.perf_counter()
            compose(reader, null=_flat_null)
            cpu = min(cpu, time.process_time() - c)
            wall = min(wall, time.perf_counter() - w)
        rows.append((shape, flops, cpu))
        print(f"    {shape:<18} {flops / 1e9:7.1f} GFLOP  compose {cpu:6.2f} CPU-s "
              f"({wall:6.2f} s wall), best of {repeats}", flush=True)
    flops = np.array([r[1] for r in rows])
    secs = np.array([r[2] for r in rows])
    slope, intercept = np.polyfit(flops, secs, 1)
    fit_rate = 1 / slope / 1e9
    print(f"fit: CPU-seconds = {intercept:.2f} + FLOPs / ({fit_rate:.1f} GFLOP/s)  "
          f"[FLOPs range {flops.max() / flops.min():.1f}x; fitted rate = "
          f"{fit_rate / rate:.2f} of the 1-thread matmul floor]")
    for (shape, f, sec), pred in zip(rows, intercept + slope * flops, strict=True):
        print(f"    {shape:<18} measured {sec:6.2f} s  model {pred:6.2f} s  "
              f"residual {sec - pred:+6.2f} s ({(sec - pred) / sec:+.0%});  "
              f"plan (FLOPs / floor) {f / rate / 1e9:6.2f} s")
    torch.set_num_threads(threads)
    source = f"random:{SHAPES[-1]}"
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "one.duckdb"
        t = time.perf_counter()
        first = ingest(source, db)
        print(f"full ingest of {source}, {threads} threads, first of its shape: "
              f"{time.perf_counter() - t:.2f} s wall: " + ", ".join(
                  f"{k} {v:.2f} s" for k, v in first.timings.items())
              + " (compose includes sampling the shape's nulls, cached afterwards)")
        best = {"local": float("inf"), "ray": float("inf")}
        with RayExecutor(num_cpus=os.cpu_count()) as ex:
            compose(open_source(source), null=_flat_null, executor=ex)  # warm workers
            for _ in range(repeats):
                for name, executor in (("local", None), ("ray", ex)):
                    t = time.perf_counter()
                    compose(open_source(source), null=_flat_null, executor=executor)
                    best[name] = min(best[name], time.perf_counter() - t)
        print(f"compose {source} by layer tasks, best of {repeats}: local ({threads} threads) "
              f"{best['local']:.2f} s, Ray ({os.cpu_count()} workers x 1 thread) "
              f"{best['ray']:.2f} s = {best['ray'] / best['local']:.2f}x")


# The shapes SCALING.md plans for (real checkpoints: loaded whole through the bridge).
def _reference_shapes():
    from headgraph.ingest.plan import ModelShape

    return {
        "gpt2-small": ModelShape("GPT2LMHeadModel", 12, 12, 12, 768, 64, 3072, 50257, 1024, False,
                            False, True, 124_000_000, True),
        "gpt2-xl": ModelShape("GPT2LMHeadModel", 48, 25, 25, 1600, 64, 6400, 50257, 1024, False,
                         False, True, 1_558_000_000, True),
        "llama-2-7b": ModelShape("LlamaForCausalLM", 32, 32, 32, 4096, 128, 11008, 32000, 4096,
                            True, False, False, 6_738_000_000, True),
        "llama-2-70b": ModelShape("LlamaForCausalLM", 80, 64, 8, 8192, 128, 28672, 32000, 4096,
                             True, False, False, 68_977_000_000, True),
    }


DRIVER_STAGES = ("head factors", "dense Grams", "readout and copying")  # pass 1, one process
TASK_STAGES = ("head->head", "Gram pairs")  # pass 2, one task per target layer


def task_profile(s) -> dict[str, float]:
    """FLOPs and fp32 bytes of the largest layer task (the last layer: every earlier head is
    a source), and the factors every task holds."""
    from headgraph.ingest.plan import stage_flops

    L, H, kv, d, dh = s.n_layers, s.n_heads, s.n_kv_heads, s.d_model, s.d_head
    n = (L - 1) * H
    q = 2 * n * dh * d * H * dh
    kv_cost = (2 * n * dh * d * kv * dh + 2 * n * dh * H * dh * dh) if kv < H else q
    gram_pairs = stage_flops(s)["Gram pairs"] / L
    n_grams = (2 if s.pos_embed else 1) + 1 + (2 * L if s.d_mlp else 0)
    factors = 4 * (L * H * dh * d + n_grams * d * d)
    d_in = s.d_mlp * (2 if s.gated else 1)
    layer = 4 * (2 * H + 2 * kv) * d * dh
    grams_copy = 4 * (n_grams - 1) * d * d  # grams[dense] / grams[later] index copies
    temps = 4 * ((1 << 25) + (1 << 26)) + 4 * 3 * H * d * dh
    return {"flops": q + 2 * kv_cost + gram_pairs, "factors": factors,
            "peak": factors + layer + grams_copy + temps, "layer_in": layer,
            "d_in": d_in}


def scaling_table(cpu_rate: float, efficiency: float, gpu_fp32: float = 50e12,
                  gpu_tf32: float = 400e12, fetch: float = 10e9) -> None:
    """The SCALING.md table: FLOPs by kind, edges, database size, memory per task and
    expected times (``efficiency``: measured ingest rate / matmul floor, applied to every
    device; ``fetch``: bytes/s at which a worker gets the factors from the object store)."""
    from headgraph.ingest.plan import BYTES_PER_EDGE, edge_counts, peak_bytes, stage_flops

    print(f"assumed: CPU box {cpu_rate / 1e9:.0f} GFLOP/s (this machine's floor), GPU "
          f"{gpu_fp32 / 1e12:.0f} TFLOP/s fp32 / {gpu_tf32 / 1e12:.0f} TFLOP/s tf32, "
          f"efficiency {efficiency:.2f} of peak, factors fetched at {fetch / 1e9:.0f} GB/s")
    for name, s in _reference_shapes().items():
        f = stage_flops(s)
        edges = edge_counts(s)
        total_edges = sum(v for k, v in edges.items() if len(k) <= 7)
        driver = sum(f[k] for k in DRIVER_STAGES)
        tasks = sum(f[k] for k in TASK_STAGES)
        t = task_profile(s)
        print(f"\n## {name}: {s.n_layers} layers x {s.n_heads} heads ({s.n_kv_heads} KV), "
              f"d_model {s.d_model}")
        print("FLOPs: " + ", ".join(f"{k} {v / 1e12:,.2f} T" for k, v in f.items())
              + f"; total {sum(f.values()) / 1e12:,.2f} T (driver pass {driver / 1e12:,.2f} T, "
              f"layer tasks {tasks / 1e12:,.2f} T; largest task {t['flops'] / 1e12:,.3f} T)")
        print(f"edges {total_edges:,} ({edges['head->head (Q+K+V)']:,} head->head); database "
              f"~{(total_edges * BYTES_PER_EDGE + 1e6) / 2**20:,.0f} MiB")
        print(f"memory: factors {t['factors'] / 2**30:,.2f} GiB (held by every worker), "
              f"largest task peak {t['peak'] / 2**30:,.2f} GiB, a layer's attention weights "
              f"{t['layer_in'] / 2**20:,.0f} MiB; driver peak (plan) "
              f"{peak_bytes(s) / 2**30:,.1f} GiB")
        rows = [("1 CPU box", cpu_rate, 1), ("1 GPU fp32", gpu_fp32, 1),
                ("8 GPUs fp32", gpu_fp32, 8), ("1 GPU tf32", gpu_tf32, 1),
                ("8 GPUs tf32", gpu_tf32, 8)]
        for label, rate, workers in rows:
            r = rate * efficiency
            ship = t["factors"] / fetch if workers > 1 else 0.0
            layer_time = max(tasks / workers, t["flops"]) / r
            print(f"    {label:<12} {(driver / r + ship + layer_time):>12,.2f} s  (driver "
                  f"{driver / r:,.2f} s + factors to workers {ship:,.2f} s + layer tasks "
                  f"{layer_time:,.2f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--parts", default="overhead,fleet,fit",
                        help="comma-separated: overhead, fleet, fit")
    parser.add_argument("--table", nargs=2, type=float, metavar=("CPU_GFLOPS", "EFFICIENCY"),
                        help="only print the SCALING.md table for this CPU rate and "
                        "measured efficiency (arithmetic, no measuring)")
    args = parser.parse_args()
    if args.table:
        scaling_table(args.table[0] * 1e9, args.table[1])
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    parts = {p.strip() for p in args.parts.split(",")}
    if "overhead" in parts:
        bench_overhead()
    if "fleet" in parts:
        bench_fleet(args.repeats)
    if "fit" in parts:
        bench_fit(args.repeats)


if __name__ == "__main__":
    main()
