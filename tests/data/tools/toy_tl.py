"""Load headgraph's shipped toy model (a GPT-2: 2 layers x 4 heads, d_model 64, n_inner 16,
vocab 129, BOS = 128) as a TransformerLens 2.x HookedTransformer, so that the circuit tools
(ACDC, EAP-IG, auto-circuit: all written against TL 2.x) run on exactly the model headgraph
stores as ``toy``.

Runs in /work/scratch/venv (transformer-lens 2.16.1; headgraph's own venv has TL 4.3, which no
longer has HookedTransformer). Weights are converted with TL's own
``convert_gpt2_weights`` (the path ``HookedTransformer.from_pretrained("gpt2")`` uses).

Also: the induction task the toy was trained on (BOS + x + x, x random) with a corrupted copy
whose second half is other random tokens; the answer is the next token of the repeat.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformer_lens.pretrained.weight_conversions import convert_gpt2_weights

TOY = Path("/work/wt-research/headgraph/toy/checkpoints/step-05000")


def load_toy(**flags) -> HookedTransformer:
    """The toy as a HookedTransformer; ``flags`` set use_attn_result etc. after loading."""
    hf = json.loads((TOY / "config.json").read_text())
    cfg = HookedTransformerConfig(
        n_layers=hf["n_layer"], d_model=hf["n_embd"], n_heads=hf["n_head"],
        d_head=hf["n_embd"] // hf["n_head"], d_mlp=hf["n_inner"], d_vocab=hf["vocab_size"],
        n_ctx=hf["n_positions"], act_fn="gelu_new", normalization_type="LN",
        eps=hf["layer_norm_epsilon"], model_name="headgraph-toy", original_architecture="GPT2LMHeadModel",
        default_prepend_bos=False, positional_embedding_type="standard", tokenizer_name=None,
    )
    from transformers import GPT2LMHeadModel

    hf_model = GPT2LMHeadModel.from_pretrained(str(TOY))
    state = convert_gpt2_weights(hf_model, cfg)
    model = HookedTransformer(cfg)
    model.load_and_process_state_dict(state, fold_ln=False, center_writing_weights=False,
                                      center_unembed=False, fold_value_biases=False)
    for k, v in flags.items():
        setattr(model.cfg, k, v)
    model.setup()
    model.eval()
    return model


def induction_batch(n: int = 8, span: int = 31, seed: int = 0):
    """(clean, corrupt, answers): clean = BOS x x, corrupt = BOS x y (y random), the answer at
    each position of the second copy is the next token of x. Shapes [n, 1 + 2 span]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 128, (n, span), generator=g)
    y = torch.randint(0, 128, (n, span), generator=g)
    bos = torch.full((n, 1), 128)
    clean = torch.cat([bos, x, x], dim=1)
    corrupt = torch.cat([bos, x, y], dim=1)
    return clean, corrupt


if __name__ == "__main__":
    m = load_toy()
    clean, corrupt = induction_batch()
    with torch.no_grad():
        logits = m(clean)
    # loss on the second copy (positions span+1 .. 2 span - 1 predict x[1:])
    span = 31
    lp = logits.log_softmax(-1)[:, span + 1:-1]
    tgt = clean[:, span + 2:]
    print("induction loss", -lp.gather(-1, tgt[..., None]).mean().item())
