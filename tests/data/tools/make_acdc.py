"""Run ACDC (ArthurConmy/Automatic-Circuit-Discovery) on headgraph's toy model and save its
circuits with ACDC's own methods.

Source: ArthurConmy/Automatic-Circuit-Discovery, HEAD bc99ace817974b5584b7ee203d596a8e2bbcd399,
extracted to /work/scratch/toolsrc/ACDC and imported unchanged (TL 2.16 in /work/scratch/venv;
``pygraphviz`` is replaced by an import shim in /work/scratch/shims, used only for drawing).

What is written, exactly as acdc/main.py does (lines 365-411):
  * ``exp.step()`` until ``exp.current_node is None`` (main.py 365-390);
  * after the first step ``exp.save_edges("edges.pkl")`` (main.py 381-382): effect sizes of
    edges not yet tested are still ``None``;
  * at the end ``exp.save_edges("another_final_edges.pkl")`` (main.py 392) -- and the wandb
    artifact ``edges.pth`` is the same function (main.py 394-396; a pickle despite ``.pth``);
  * ``exp.save_subgraph(fpath=...)`` (TLACDCExperiment.py 795-811; main.py calls it with
    return_it=True, we pass fpath, which must end in ``.pth``).
Two runs: ``use_pos_embed=False`` (embedding node ``blocks.0.hook_resid_pre``) and
``use_pos_embed=True`` (``hook_embed`` + ``hook_pos_embed``). ACDC's ``positions=`` raises
NotImplementedError (TLACDCExperiment.py 103-105): ACDC has no per-token circuits.

Run: /work/scratch/venv/bin/python make_acdc.py   (writes circuits/acdc/*)
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
OUT = HERE / "circuits" / "acdc"
sys.path.insert(0, str(HERE))
sys.path.insert(0, "/work/scratch/shims")
sys.path.insert(0, "/work/scratch/toolsrc/ACDC")
from toy_tl import induction_batch, load_toy  # noqa: E402

from acdc.TLACDCExperiment import TLACDCExperiment  # noqa: E402

SPAN = 31


def kl_metric(base_logits: torch.Tensor):
    """ACDC metrics are losses (lower = closer to the model); this is the KL divergence from
    the full model on the second copy, as ACDC's induction task does (acdc/induction/utils.py
    uses kl_div on the positions that matter)."""
    base = base_logits[:, SPAN + 1:-1].log_softmax(-1)

    def metric(logits: torch.Tensor) -> torch.Tensor:
        lp = logits[:, SPAN + 1:-1].log_softmax(-1)
        return torch.nn.functional.kl_div(lp, base, log_target=True, reduction="none").sum(-1).mean()

    return metric


def run(use_pos_embed: bool, threshold: float, tag: str) -> None:
    model = load_toy(use_attn_result=True, use_split_qkv_input=True, use_hook_mlp_in=True)
    clean, corrupt = induction_batch(n=8, span=SPAN, seed=0)
    with torch.no_grad():
        base = model(clean)
    exp = TLACDCExperiment(
        model=model, ds=clean, ref_ds=corrupt, threshold=threshold, metric=kl_metric(base),
        verbose=False, indices_mode="reverse", names_mode="normal", use_pos_embed=use_pos_embed,
        add_sender_hooks=True, add_receiver_hooks=False, remove_redundant=False,
        show_full_index=use_pos_embed, online_cache_cpu=True, corrupted_cache_cpu=True)
    for i in range(1000):
        exp.step(testing=False)
        if i == 0:
            exp.save_edges(str(OUT / f"{tag}_edges_after_step1.pkl"))
        if exp.current_node is None:
            break
    exp.save_edges(str(OUT / f"{tag}_another_final_edges.pkl"))
    exp.save_subgraph(fpath=str(OUT / f"{tag}_subgraph.pth"))
    print(tag, "steps", i + 1, "edges kept (count_no_edges)", exp.count_no_edges())


def main() -> None:
    import os

    OUT.mkdir(parents=True, exist_ok=True)
    work = Path("/work/scratch/acdc_workdir")  # ACDC's show() writes ims/img_new_N.* under cwd
    (work / "ims").mkdir(parents=True, exist_ok=True)
    os.chdir(work)
    run(False, 0.02, "toy-induction_acdc_thr0.02")
    run(True, 0.02, "toy-induction_acdc_posembed_thr0.02")


if __name__ == "__main__":
    main()
