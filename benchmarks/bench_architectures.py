"""Ingest at real shapes across architectures (issue: every architecture).

Prints, in one run:
1. full ingests of the pythia-1.4b and qwen2-0.5b shapes through the bridge (random
   weights of the published shapes): seconds, peak RSS, edges; and the memory
   TransformerLens's ``all_composition_scores`` would need for the same shape (its
   broadcast matmul expands an ``[L, H, L, H, d_head, d_model]`` operand);
2. the composition kernel plus writes for the llama-3-8b attention shape (32 layers,
   32 query / 8 KV heads, d_model 4096) from attention factors generated layer by layer
   (the 8B-parameter HF model does not fit in 24 GB): seconds, peak RSS, and the time
   against the matmul floor for the FLOPs left once shared KV factors are reused.

Run: ``.venv/bin/python benchmarks/bench_architectures.py [--skip-bridge] [--skip-llama]``
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchmarks.common import matmul_floor, run_measured

INGEST = """
import json, sys
from headgraph.ingest.pipeline import ingest
r = ingest(sys.argv[1], sys.argv[2])
print(json.dumps({"timings": r.timings, "edges": r.n_edges}))
"""

LLAMA = """
import json, sys, time, hashlib
import torch
from headgraph.ingest.compose import compose
from headgraph.ingest.spec import GlobalWeights, LayerWeights, ModelSpec, SourceInfo
from headgraph.ingest.writer import ModelLabel, write_model
from headgraph.schema.database import resolve_target

L, H, KV, D, DH, VOCAB = 32, 32, 8, 4096, 128, 256

class AttentionFactors:
    '''Random llama-3-8b attention factors, generated per layer (seeded by layer).'''
    spec = ModelSpec("LlamaForCausalLM", L, H, KV, D, DH, 0, VOCAB, 8192, positional="rotary",
                     has_pos_embed=False, processing="synthetic:attention_only")
    info = SourceInfo("synthetic:llama-3-8b-attention", hashlib.sha256(b"l3").hexdigest())

    def globals(self):
        g = torch.Generator().manual_seed(10**6)
        W_E = torch.randn(VOCAB, D, generator=g) * 0.02
        return GlobalWeights(W_E=W_E, W_U=W_E.T.clone())

    def layer(self, layer, *, mlp=True):
        g = torch.Generator().manual_seed(layer)
        s = 0.02
        return LayerWeights(layer, torch.randn(H, D, DH, generator=g) * s,
                            torch.randn(KV, D, DH, generator=g) * s,
                            torch.randn(KV, D, DH, generator=g) * s,
                            torch.randn(H, DH, D, generator=g) * s)

    def close(self):
        pass

reader = AttentionFactors()
t = time.perf_counter()
graph = compose(reader)
compose_s = time.perf_counter() - t
t = time.perf_counter()
write_model(resolve_target(sys.argv[1]), graph, reader.info, ModelLabel("llama-3-8b-attn"))
print(json.dumps({"compose": compose_s, "write": time.perf_counter() - t,
                  "edges": len(graph.edges)}))
"""


def tl_bytes(L: int, H: int, dh: int, d: int) -> float:
    return L * L * H * H * dh * d * 4


def llama_flops() -> dict[str, float]:
    """FLOPs of composing the llama-3-8b attention shape (the LLAMA reader: 32 layers, 32
    query / 8 KV heads, no MLPs, a 256-token vocabulary) on the QR route (its block Grams
    would need 36 GB, so ``auto`` picks QR): head->head with and without shared KV factors,
    and every stage of ``compose`` (also factors, copying, the embedding and unembedding
    edges)."""
    from headgraph.ingest.cost import choose_head_method, head_pair_flops
    from headgraph.ingest.plan import ModelShape, stage_flops

    assert choose_head_method(32, 32, 8, 4096, 128) == "qr"
    shared = head_pair_flops(32, 32, 8, 4096, 128)["qr"]
    unshared = head_pair_flops(32, 32, 32, 4096, 128)["qr"]
    shape = ModelShape("LlamaForCausalLM", 32, 32, 8, 4096, 128, 0, 256, 8192, False, False,
                  False, 0, False)
    return {"shared": shared, "unshared": unshared, "saved": unshared - shared,
            "compose": sum(stage_flops(shape).values())}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-bridge", action="store_true")
    parser.add_argument("--skip-llama", action="store_true")
    args = parser.parse_args()
    floor = matmul_floor()
    print(f"matmul floor: {floor:.0f} GFLOP/s fp32")
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_bridge:
            for preset, shape in (("pythia-1.4b", (24, 16, 128, 2048)),
                                  ("qwen2-0.5b", (24, 14, 64, 896))):
                db = Path(tmp) / f"{preset}.duckdb"
                out, wall, peak = run_measured(INGEST, f"random:{preset}", str(db))
                t = out["timings"]
                print(f"{preset}: {wall:.1f} s wall ({', '.join(f'{k} {v:.1f} s' for k, v in t.items())}), "
                      f"peak RSS {peak:.2f} GB, {out['edges']:,} edges; TransformerLens "
                      f"all_composition_scores would need {tl_bytes(*shape) / 1e9:,.1f} GB "
                      "for one kind")
        if not args.skip_llama:
            db = Path(tmp) / "llama.duckdb"
            out, wall, peak = run_measured(LLAMA, str(db))
            f = llama_flops()
            print(f"llama-3-8b attention (1,024 query / 256 KV heads): compose "
                  f"{out['compose']:.1f} s, write {out['write']:.1f} s, peak RSS {peak:.2f} GB, "
                  f"{out['edges']:,} edges")
            need = f["compose"] / floor / 1e9
            print(f"  FLOPs: head->head with shared KV factors {f['shared'] / 1e12:.1f} T (vs "
                  f"{f['unshared'] / 1e12:.1f} T unshared), all of compose "
                  f"{f['compose'] / 1e12:.1f} T -> floor time {need:.0f} s; compose (which "
                  f"also samples the null for new shapes) took {out['compose'] / need:.2f}x "
                  f"that; TransformerLens would need {tl_bytes(32, 32, 128, 4096) / 1e12:,.1f} TB")


if __name__ == "__main__":
    main()
