"""Derived files (NOT written by ACDC): ACDC's save_edges pickles as text edge lists, in the
names ACDC itself prints -- ``str(TLACDCInterpNode)`` = ``f"{name}{index}"`` with
``TorchIndex.__repr__`` giving ``[:]`` / ``[:, :, h]`` (acdc/TLACDCInterpNode.py ``__str__``,
acdc/TLACDCEdge.py ``TorchIndex.__repr__``) -- and with ACDC's own wandb wording
``"{parent} to {child}"`` (acdc/TLACDCExperiment.py 636-643 logs parent_name/child_name;
notebooks/roc_plot_generator.py parses ``edge.split(" to ")``).

One line per pickled edge: ``SENDER->RECEIVER SCORE`` (headgraph's documented edge-list form),
score omitted when ACDC's effect_size is None. Unpickling needs ACDC's classes (the pickle
holds acdc.TLACDCEdge.TorchIndex objects), so this runs with ACDC on the path.

Run: /work/scratch/venv/bin/python derive_acdc_text.py
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

sys.path.insert(0, "/work/scratch/toolsrc/ACDC")
sys.path.insert(0, "/work/scratch/shims")

DIR = Path(__file__).resolve().parent / "circuits" / "acdc"

for pkl in sorted(DIR.glob("*.pkl")):
    edges = pickle.load(pkl.open("rb"))
    lines, adds = [], []
    for (recv, recv_idx, send, send_idx), effect in edges:
        name = f"{send}{send_idx!r}->{recv}{recv_idx!r}"
        lines.append(name if effect is None else f"{name} {effect!r}")
        if not (recv.endswith(("attn.hook_q", "attn.hook_k", "attn.hook_v"))):
            adds.append(lines[-1])  # drop ACDC's internal hook_X_input -> attn.hook_X edges
    out = DIR / f"{pkl.stem}.derived.txt"
    out.write_text("\n".join(lines) + "\n")
    (DIR / f"{pkl.stem}.derived-no-internal.txt").write_text("\n".join(adds) + "\n")
    print(out.name, len(lines), "lines;", len(adds), "without internal q/k/v edges")
