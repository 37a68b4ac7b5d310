"""Run auto-circuit (UFO-101/auto-circuit) on headgraph's toy model and save circuits in the
formats auto-circuit and its users write.

Source: UFO-101/auto-circuit HEAD 98db58c430a6006dca58bb1751bcaea0c546d42f, extracted to
/work/scratch/toolsrc/auto-circuit and imported unchanged (TL 2.16, /work/scratch/venv).
``patchable_model`` (auto_circuit/utils/graph_utils.py 35-101) builds the edges; node names come
from auto_circuit/model_utils/transformer_lens_utils.py 9-128 ("Resid Start", "A{l}.{h}",
"MLP {l}", "A{l}.{h}.{Q|K|V}" when separate_qkv else "A{l}.{h}", "Resid End"); an edge's
name is ``f"{src.name}->{dest.name}"`` (auto_circuit/types.py, Edge.name) and never holds the
token position (that is ``Edge.seq_idx``). Scores: ``mask_gradient_prune_scores`` (EAP,
auto_circuit/prune_algos/mask_gradient.py 19-140) on the induction task.

Files written (circuits/auto-circuit/):
  1. ``*-DD-MM-YYYY_HH-MM-SS.pkl``: auto-circuit's own ``save_cache`` (auto_circuit/utils/misc.py
     26-41: ``t.save(data_dict, ...)``) of ``TaskPruneScores`` = {task key: {algo key:
     PruneScores}}, PruneScores = {dest module name: tensor}, exactly as
     experiments/circuit_discovery.py 110-114 caches them. Tensor shape per dest module:
     [seq_len]? + [n_heads]? + [n_srcs_before_it] (graph_utils.py 238-245).
  2. ``*_edges.json``: the export of reml-lab/auto-circuit-tests (f7624043bcd52f14f45e9f305357f1453af705df,
     find_and_test_circuit.py 1063-1065): ``save_json([(edge.seq_idx, edge.name) for edge in
     edges], ...)`` with ``edges_from_mask`` (auto_circuit_tests/hypo_tests/utils.py 13-42) and
     ``save_json`` (auto_circuit_tests/utils/utils.py 68-81: json.dump(data, f, indent=4)),
     copied below.
  3. ``*_scores.txt`` (derived, not a tool format): one ``edge.name score`` line per circuit
     edge, the edge-list text headgraph documents, to test auto-circuit names as such.
Variants: separate_qkv True / False (auto-circuit's Sports Players tasks need False:
sports_players_official.py 46), and a token circuit (seq_len set: one edge per position).

Run: /work/scratch/venv/bin/python make_autocircuit.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Dict

import torch
import torch as t

HERE = Path(__file__).resolve().parent
OUT = HERE / "circuits" / "auto-circuit"
sys.path.insert(0, str(HERE))
sys.path.insert(0, "/work/scratch/toolsrc/auto-circuit")
from toy_tl import load_toy  # noqa: E402

from auto_circuit.data import PromptDataLoader, PromptDataset  # noqa: E402
from auto_circuit.prune_algos.mask_gradient import mask_gradient_prune_scores  # noqa: E402
from auto_circuit.types import AblationType, DestNode, Edge, SrcNode  # noqa: E402
from auto_circuit.utils.graph_utils import patchable_model  # noqa: E402
from auto_circuit.utils.misc import save_cache  # noqa: E402
from auto_circuit.utils.tensor_ops import prune_scores_threshold  # noqa: E402

SPAN, PREFIX = 31, 12  # BOS + x (31) + x[:12] -> answer x[12]; corrupt repeats z[:12] instead


# --- reml-lab/auto-circuit-tests @ f7624043, auto_circuit_tests/hypo_tests/utils.py 13-42 ---
def edges_from_mask(srcs: set[SrcNode], dests: set[DestNode], mask: Dict[str, torch.Tensor], token: bool=False) -> list[Edge]:
    #TODO: fix for SAEs
    SRC_IDX_TO_NODE = {src.src_idx: src for src in srcs}
    DEST_MOD_AND_HEAD_TO_NODE = {(dest.module_name, dest.head_idx): dest for dest in dests}
    edges = []
    for mod_name, mask in mask.items():
        for idx in mask.nonzero():
            # src idx
            if len(idx) == 1:
                assert not token
                src_idx = idx.item()
                dest_idx = None
                seq_idx = None
            elif len(idx) == 2 and not token:
                src_idx = idx[1].item()
                dest_idx = idx[0].item()
                seq_idx = None
            elif len(idx) == 2 and token:
                src_idx = idx[1].item()
                dest_idx = None
                seq_idx = idx[0].item()
            else:
                assert token and len(idx) == 3
                src_idx = idx[2].item()
                dest_idx = idx[1].item()
                seq_idx = idx[0].item()
            dest_node = DEST_MOD_AND_HEAD_TO_NODE[(mod_name, dest_idx)]
            src_node = SRC_IDX_TO_NODE[src_idx]
            edges.append(Edge(src=src_node, dest=dest_node, seq_idx=seq_idx))
    return edges


# --- reml-lab/auto-circuit-tests @ f7624043, auto_circuit_tests/utils/utils.py 68-81 (folder
# handling reduced to a Path) ---
def save_json(data, folder: Path, base_filename: str):
    folder.mkdir(parents=True, exist_ok=True)
    file_path = folder / f"{base_filename}.json"
    print(f"Saving json to {file_path}")
    with open(file_path, "w") as f:
        json.dump(data, f, indent=4)


def loader(n: int = 16, batch: int = 8, seed: int = 0) -> PromptDataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 128, (n, SPAN), generator=g)
    z = torch.randint(0, 128, (n, PREFIX), generator=g)
    bos = torch.full((n, 1), 128)
    clean = torch.cat([bos, x, x[:, :PREFIX]], 1)
    corrupt = torch.cat([bos, x, z], 1)
    answers = [x[i, PREFIX:PREFIX + 1] for i in range(n)]
    wrong = [z[i, :1] for i in range(n)]
    ds = PromptDataset(clean, corrupt, answers, wrong)
    return PromptDataLoader(ds, seq_len=clean.shape[1], diverge_idx=0, batch_size=batch)


def run(separate_qkv: bool, token: bool, tag: str, n_edges: int) -> None:
    model = load_toy(use_attn_result=True, use_split_qkv_input=separate_qkv,
                     use_attn_in=not separate_qkv, use_hook_mlp_in=True)
    data = loader()
    pm = patchable_model(model, factorized=True, slice_output="last_seq",
                         seq_len=data.seq_len if token else None, separate_qkv=separate_qkv,
                         device=t.device("cpu"))
    ps = mask_gradient_prune_scores(pm, data, official_edges=None, grad_function="logit",
                                    answer_function="avg_diff", mask_val=0.0,
                                    ablation_type=AblationType.RESAMPLE, clean_corrupt="corrupt")
    task_key = f"Toy Induction {'Token' if token else 'Component'} Circuit"
    save_cache({task_key: {"Edge Attribution Patching": ps}}, str(OUT), f"{tag}_task-prune-scores")

    threshold = prune_scores_threshold(ps, n_edges)
    edge_mask = {k: torch.abs(v) >= threshold for k, v in ps.items()}
    edges = edges_from_mask(pm.srcs, pm.dests, edge_mask, token)
    save_json([(edge.seq_idx, edge.name) for edge in edges], OUT, f"{tag}_edges")
    lines = [f"{e.name} {e.prune_score(ps).item():.8g}" for e in edges]
    (OUT / f"{tag}_scores.txt").write_text("\n".join(lines) + "\n")
    names = [e.name for e in edges]
    print(tag, "edges in model", pm.n_edges, "circuit", len(edges),
          "distinct names", len(set(names)), "shapes", {k: tuple(v.shape) for k, v in ps.items()})


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    run(separate_qkv=True, token=False, tag="toy-induction_eap_qkv", n_edges=20)
    run(separate_qkv=False, token=False, tag="toy-induction_eap_noqkv", n_edges=20)
    run(separate_qkv=True, token=True, tag="toy-induction_eap_qkv_tokens", n_edges=60)


if __name__ == "__main__":
    main()
