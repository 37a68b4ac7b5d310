"""Write EAP-IG circuit files with EAP-IG's own code (hannamw/EAP-IG), on headgraph's toy model.

Source: hannamw/EAP-IG, extracted to /work/scratch/toolsrc/EAP-IG (HEAD
795f5607b25638935aec89aee3c1cb4bd9ed72f1) and two older commits:
  * 48c37e5fb2ab968b485feb62e654a54fe8063b66 (2024-09-05, eap/graph.py): the 2024 format,
    ``nodes: {name: bool}``, ``cfg`` = 3 keys, edge score ``float`` or ``None``.
  * b1d37eb7bde8033f024227434f6d9418e061e1e2 (2025-04-07, src/eap/graph.py): the
    2025-02-23 .. 2025-04-08 versions, whose ``to_json`` never puts ``edges`` into the dict
    (fixed in 4fad6c678ee45c975ea6072482305a54fe423551).
``Graph.from_model``, ``attribute``/``attribute_node``, ``apply_topn``/``apply_greedy`` and
``to_json`` are EAP-IG's, unchanged. The only runtime change: EAP-IG's attribute functions
allocate their score matrices with a hard-coded ``device='cuda'`` (attribute.py lines 59, 116,
197, 273, 324; attribute_node.py 33, 148-150, 208-210); this script runs on CPU by giving
those modules a ``torch`` whose ``zeros`` maps 'cuda' to 'cpu'. Nothing that writes the file
is touched.

Run: /work/scratch/venv/bin/python make_eapig.py   (writes circuits/eap-ig/*.json)
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import types
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
OUT = HERE / "circuits" / "eap-ig"
SRC = Path("/work/scratch/toolsrc")
sys.path.insert(0, str(HERE))
sys.path.insert(0, "/work/scratch/shims")  # pygraphviz import shim (drawing only; see shims/)
from toy_tl import induction_batch, load_toy  # noqa: E402


def cpu_torch() -> types.ModuleType:
    shim = types.ModuleType("torch_cpu_shim")
    shim.__dict__.update(torch.__dict__)

    def zeros(*a, device=None, **k):
        return torch.zeros(*a, device="cpu" if device == "cuda" else device, **k)

    shim.zeros = zeros
    return shim


def eap_modules(src: Path, pkg_dir: str):
    """Import ``eap`` from ``src/pkg_dir`` fresh (several versions in one process)."""
    for name in list(sys.modules):
        if name == "eap" or name.startswith("eap."):
            del sys.modules[name]
    sys.path.insert(0, str(src / pkg_dir))
    try:
        graph = importlib.import_module("eap.graph")
        attribute = importlib.import_module("eap.attribute")
        attribute.torch = cpu_torch()
        try:
            attribute_node = importlib.import_module("eap.attribute_node")
            attribute_node.torch = cpu_torch()
        except ModuleNotFoundError:
            attribute_node = None
    finally:
        sys.path.pop(0)
    return graph, attribute, attribute_node


def toy_with_tokenizer():
    from transformers import PreTrainedTokenizerFast

    model = load_toy(use_attn_result=True, use_split_qkv_input=True, use_hook_mlp_in=True)
    tok = PreTrainedTokenizerFast(
        tokenizer_file="/work/wt-research/headgraph/toy/checkpoints/step-05000/tokenizer.json",
        bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>",
        unk_token="<|endoftext|>")
    # TL reloads the tokenizer by name (get_tokenizer_with_bos): give it a directory
    from transformers import AutoTokenizer

    tok.save_pretrained("/work/scratch/toy_tokenizer")
    tok = AutoTokenizer.from_pretrained("/work/scratch/toy_tokenizer")
    model.set_tokenizer(tok, default_padding_side="right")
    return model


def dataloader(batches: int = 2, n: int = 4, span: int = 31):
    """EAP-IG's dataloader items: (clean strings, corrupted strings, label); the BOS comes
    from ``tokenize_plus`` (prepend_bos=True)."""
    out = []
    for b in range(batches):
        clean, corrupt = induction_batch(n=n, span=span, seed=10 + b)
        to_s = lambda row: " ".join(f"t{int(t)}" for t in row[1:])  # noqa: E731
        out.append(([to_s(r) for r in clean], [to_s(r) for r in corrupt], clean))
    return out


def metric(logits, clean_logits, input_lengths, label, span: int = 31):
    """Mean log-probability of the induction answers on the second copy (higher = better)."""
    lp = logits.log_softmax(-1)[:, span + 1:-1]
    tgt = label[:, span + 2:].to(logits.device)
    return lp.gather(-1, tgt[..., None]).mean()


def git_extract(commit: str, dest: Path) -> None:
    if dest.exists():
        return
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "--git-dir=/work/.mirror/hannamw+EAP-IG/repo", "archive",
                              commit], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    model = toy_with_tokenizer()
    data = dataloader()

    # 1. Current EAP-IG (HEAD 795f560): EAP-IG-inputs, top-n edges, to_json.
    g_mod, a_mod, an_mod = eap_modules(SRC / "EAP-IG", "src")
    Graph = g_mod.Graph
    g = Graph.from_model(model)
    a_mod.attribute(model, g, data, metric, method="EAP-IG-inputs", ig_steps=5, quiet=True)
    g.apply_topn(20, absolute=True)
    g.to_json(str(OUT / "toy-induction_eapig-inputs_top20.json"))
    g.to_pt(str(OUT / "toy-induction_eapig-inputs_top20.pt"))  # the other format: torch.save
    print("current: in_graph edges", g.count_included_edges(), "nodes", g.count_included_nodes())

    # 1b. Same scores, greedy selection (what MIB / the EAP-IG notebooks use).
    g.apply_greedy(20, absolute=True)
    g.to_json(str(OUT / "toy-induction_eapig-inputs_greedy20.json"))

    # 2. Node-level attribution with node_scores=True: nodes get "score" (float), edges keep
    #    score 0.0 (never attributed) -- the node-level variant of the same format.
    g2 = Graph.from_model(model, node_scores=True)
    an_mod.attribute_node(model, g2, data, metric, method="EAP", quiet=True)
    g2.apply_topn(4, level="node", absolute=True)
    try:  # EAP-IG HEAD bug: to_json indexes nodes_scores with the logits node -> IndexError
        g2.to_json(str(OUT / "toy-induction_eap-node_top4nodes.json"))
    except IndexError as exc:
        print("node_scores=True: to_json raised IndexError:", exc)

    # 3. Neuron-level graph (neuron_level=True) with edge attribution only: every node carries
    #    d_model-long "neurons" (bool) and "neurons_scores" lists; the scores were never set,
    #    so they are NaN and json.dump writes the bare token NaN (not valid JSON).
    g3 = Graph.from_model(model, neuron_level=True)
    a_mod.attribute(model, g3, data, metric, method="EAP", quiet=True)
    g3.apply_topn(20, absolute=True)
    try:  # same bug for neurons_in_graph
        g3.to_json(str(OUT / "toy-induction_eap_neuron-level_top20.json"))
    except IndexError as exc:
        print("neuron_level=True: to_json raised IndexError:", exc)

    # 4. The 2024 format (commit 48c37e5, eap/graph.py): nodes {name: bool}.
    old = SRC / "EAP-IG@48c37e5"
    git_extract("48c37e5fb2ab968b485feb62e654a54fe8063b66", old)
    g_old, a_old, _ = eap_modules(old, ".")
    g4 = g_old.Graph.from_model(model)
    a_old.attribute(model, g4, data, metric, integrated_gradients=5, quiet=True)  # 2024 API
    g4.apply_topn(20, absolute=True)
    g4.prune_dead_nodes()
    g4.to_json(str(OUT / "toy-induction_eap_2024format_top20.json"))

    # 5. The 2025-02-23..2025-04-08 versions (commit b1d37eb): to_json writes no "edges".
    mid = SRC / "EAP-IG@b1d37eb"
    git_extract("b1d37eb7bde8033f024227434f6d9418e061e1e2", mid)
    g_mid, a_mid, _ = eap_modules(mid, "src")
    g5 = g_mid.Graph.from_model(model)
    a_mid.attribute(model, g5, data, metric, method="EAP", quiet=True)
    g5.apply_topn(20, absolute=True)
    g5.to_json(str(OUT / "toy-induction_eap_2025-03-noedges.json"))
    # 6. GPT-2-small shape (12 layers x 12 heads, d_model 768): EAP-IG's usual scale. Random
    #    weights (seed 0; no hub access here), the toy's tokens as input: a real EAP-IG file of
    #    the size people import (32,491 edges), not a meaningful circuit.
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    torch.manual_seed(0)
    cfg = HookedTransformerConfig(n_layers=12, d_model=768, n_heads=12, d_head=64, d_mlp=3072,
                                  d_vocab=50257, n_ctx=1024, act_fn="gelu_new",
                                  normalization_type="LN", model_name="gpt2-small-random")
    big = HookedTransformer(cfg)
    big.set_tokenizer(model.tokenizer, default_padding_side="right")
    for k in ("use_attn_result", "use_split_qkv_input", "use_hook_mlp_in"):
        setattr(big.cfg, k, True)
    big.setup()
    g_mod2, a_mod2, _ = eap_modules(SRC / "EAP-IG", "src")
    g6 = g_mod2.Graph.from_model(big)
    a_mod2.attribute(big, g6, dataloader(batches=1, n=2, span=15), lambda *a: metric(*a, span=15),
                     method="EAP", quiet=True)
    g6.apply_topn(200, absolute=True)
    g6.to_json(str(OUT / "gpt2small-random_eap_top200.json"))
    print("gpt2-small: edges", len(g6.edges), "in graph", g6.count_included_edges())
    print("done")


if __name__ == "__main__":
    main()
