"""A small attribution graph written by circuit-tracer's own ``create_graph_files`` from a
hand-built ``circuit_tracer.graph.Graph``, chosen so that circuit-tracer's node ids collide.

Source: decoderesearch/circuit-tracer HEAD 4bb8c0ea10bde09727e14565ec8469656880da53 (extracted
to /work/scratch/toolsrc/circuit-tracer, imported unchanged). ``create_graph_files``
(circuit_tracer/utils/create_graph_files.py 161-211) runs ``prune_graph`` (graph.py 234-308)
and writes ``{slug}.json`` with pydantic ``Model.model_dump_json(indent=2)`` plus
``graph-metadata.json``. Node ids come from frontend/graph_models.py:
  feature  node_id = f"{layer}_{feat_idx}_{pos}"   jsNodeId = f"{layer}_{feat_idx}-0"
  error    node_id = f"0_{layer}_{pos}"            jsNodeId = f"{layer}_{pos}-0"
  token    node_id = f"E_{vocab_idx}_{pos}"        jsNodeId = f"E_{vocab_idx}-{pos}"
  logit    node_id = f"{n_layers+1}_{vocab_idx}_{pos}"  jsNodeId = f"L_{vocab_idx}-{pos}"
so a layer-0 feature with index ``f`` at position ``p`` and the error node of layer ``f`` at
position ``p`` are both ``0_{f}_{p}`` (f < n_layers). The real featured graph gemma-dollar has
one such pair (graphs/gemma-dollar.json, ``0_2_1``); this file has two, small.

The graph: 4 layers, prompt of 4 tokens (the toy's vocabulary), features (layer, pos, feat)
(0,1,2) and (0,2,3) -- colliding with errors (layer 2, pos 1) and (layer 3, pos 2) -- plus
(1,2,40), (2,3,7), (3,3,11); two logit targets. The adjacency matrix is random (seed 0) but
respects the order tokens -> features/errors by layer -> logits, so pruning behaves as usual.
The tokenizer is the toy's (saved to /work/scratch/toy_tokenizer by make_eapig.py).

Run: /work/scratch/venv/bin/python make_circuittracer.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
OUT = HERE / "graphs" / "circuit-tracer-repro"
sys.path.insert(0, "/work/scratch/toolsrc/circuit-tracer")

from circuit_tracer.attribution.targets import LogitTarget  # noqa: E402
from circuit_tracer.graph import Graph  # noqa: E402
from circuit_tracer.utils.create_graph_files import create_graph_files  # noqa: E402
from transformer_lens import HookedTransformerConfig  # noqa: E402


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    n_layers = 4
    cfg = HookedTransformerConfig(n_layers=n_layers, d_model=16, n_ctx=8, d_head=4, n_heads=4,
                                  d_mlp=32, d_vocab=129, act_fn="gelu",
                                  tokenizer_name="/work/scratch/toy_tokenizer",
                                  model_name="toy-4layer", original_architecture="GPT2LMHeadModel")
    tokens = torch.tensor([128, 5, 9, 17])
    n_pos = len(tokens)
    feats = torch.tensor([[0, 1, 2], [0, 2, 3], [1, 2, 40], [2, 3, 7], [3, 3, 11]])
    n_f, n_err, n_tok, n_logit = len(feats), n_layers * n_pos, n_pos, 2
    n = n_f + n_err + n_tok + n_logit

    # a rank per node: tokens first, then features/errors by layer, logits last
    rank = torch.empty(n)
    rank[:n_f] = feats[:, 0].float() + 1 + 0.5
    for i in range(n_err):
        rank[n_f + i] = i // n_pos + 1  # error node of layer i // n_pos
    rank[n_f + n_err:n_f + n_err + n_tok] = 0
    rank[n - n_logit:] = n_layers + 2
    g = torch.Generator().manual_seed(0)
    adj = torch.randn(n, n, generator=g)  # rows: targets, columns: sources
    adj = adj * (rank[:, None] > rank[None, :])  # only from lower rank to higher
    adj[:, n - n_logit:] = 0  # logits are never sources
    adj[n_f + n_err:n_f + n_err + n_tok] = 0  # tokens have no inputs
    adj[:n_f + n_err, :n_f] *= 3  # make features matter
    for layer, pos in ((2, 1), (3, 2)):  # the two error nodes whose ids collide: keep them
        adj[n - n_logit:, n_f + layer * n_pos + pos] = 8.0
    adj[n - n_logit:, :2] = 6.0  # ... and the two layer-0 features they collide with
    graph = Graph(
        input_string="<|endoftext|>t5 t9 t17", input_tokens=tokens, active_features=feats,
        adjacency_matrix=adj, cfg=cfg, selected_features=torch.arange(n_f),
        activation_values=torch.tensor([2.5, 1.0, 3.0, 0.7, 4.2]),
        logit_targets=[LogitTarget("t21", 21), LogitTarget("t99", 99)],
        logit_probabilities=torch.tensor([0.7, 0.2]), scan="toy-collision-repro")
    create_graph_files(graph, slug="toy-collision-repro", output_path=str(OUT),
                       node_threshold=0.8, edge_threshold=0.98)
    print("written", sorted(p.name for p in OUT.iterdir()))


if __name__ == "__main__":
    main()
