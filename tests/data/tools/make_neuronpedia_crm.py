"""Faithful minimal reproduction of Neuronpedia's newer graph generator (the CRM / llamascopium
backend, lorsa + transcoder features, QK tracing), which cannot run here (needs llamascopium
and GPU models).

Source: hijohnnylin/neuronpedia @ ebb8426fc550ad5d1f76d52c271a624af3c08a57,
apps/graph/neuronpedia_graph/format_converter.py (last changed in
17bc39171bf11c68bf5bf52013b11afe8e8b1f81). Copied below, unchanged except that llamascopium's
AttributionResult / NodeIndexedMatrix are replaced by plain lists:
  * ``cantor_pair`` (lines 16-17) and ``_compute_node_influence`` (19-62): the node influence
    is circuit-tracer's *cumulative* share, computed on the pruned graph that is written;
  * ``make_node`` (inside convert_to_neuronpedia_graph, 225-360): ids
    ``E_{token_id}_{pos}``, ``{n_layers}_{vocab}_{ctx}`` (logit; integer ``layer``),
    ``{layer}_error_{mlp|attn}_{pos}``, ``{layer}_{cro|lor}_{feature}_{pos}`` (feature_type[:3]),
    ``{layer}_bias_{kind}_{pos}``, ``{layer}_unknown_{key}_{pos}``; ``feature`` is null except
    for features (cantor pair) and logits (vocab index); ``layer`` is an integer except "E";
  * the result dict (lines 405-435): ``qParams`` is ``{}``, ``qk_only_nodes`` is a top-level
    object keyed by node_id, ``qk_tracing_results`` sits on lorsa nodes.
The graph content (which nodes, weights) is made up: 2 layers, 3 positions.

Run: python3 make_neuronpedia_crm.py   (plain python + torch: /work/main/.venv/bin/python)
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

OUT = Path(__file__).resolve().parent / "graphs" / "neuronpedia-crm-repro"


# --- format_converter.py 16-17 ---
def cantor_pair(layer: int, index: int) -> int:
    return ((layer + index) * (layer + index + 1)) // 2 + index


# --- format_converter.py 19-62 ---
def _compute_node_influence(
    node_entries: list[dict[str, Any]],
    links: list[dict[str, Any]],
    logit_probs: torch.Tensor,
    max_iter: int = 1000,
) -> list[float]:
    n = len(node_entries)
    if n == 0:
        return []

    node_id_to_idx = {entry["node_id"]: i for i, entry in enumerate(node_entries)}

    adjacency = torch.zeros(n, n)
    for link in links:
        src_idx = node_id_to_idx.get(link["source"])
        tgt_idx = node_id_to_idx.get(link["target"])
        if src_idx is not None and tgt_idx is not None:
            adjacency[tgt_idx, src_idx] = link["weight"]

    normalized = adjacency.abs()
    row_sums = normalized.sum(dim=1, keepdim=True).clamp(min=1e-10)
    normalized = normalized / row_sums

    logit_weights = torch.zeros(n)
    for i, entry in enumerate(node_entries):
        if entry["feature_type"] == "logit" and entry.get("token_prob") is not None:
            logit_weights[i] = entry["token_prob"]

    current = logit_weights @ normalized
    raw_influence = current.clone()
    for _ in range(max_iter):
        if not current.any():
            break
        current = current @ normalized
        raw_influence += current

    sorted_scores, sorted_indices = torch.sort(raw_influence, descending=True)
    total = sorted_scores.sum()
    cumulative = torch.cumsum(sorted_scores, dim=0) / total if total > 0 else torch.zeros_like(sorted_scores)
    final_scores = torch.zeros_like(raw_influence)
    final_scores[sorted_indices] = cumulative

    return final_scores.tolist()


def _parse_hook_layer(hook_key: str) -> int:  # format_converter.py 65-67
    match = re.search(r"blocks\.(\d+)\.", hook_key)
    return int(match.group(1)) if match else 0


# --- inputs that llamascopium's AttributionResult would carry ---
PROMPT_TOKENS = ["<bos>", "The", " cat"]
PROMPT_IDS = [2, 651, 4401]
LOGITS = {"token_ids": [603, 235265], "tokens": [" sat", "."], "probs": [0.6, 0.1]}
SAE_METADATA = {  # hook_point_out -> {is_lorsa, layer_idx}  (_build_sae_metadata, 70-84)
    "blocks.0.hook_attn_out": {"is_lorsa": True, "layer_idx": 0},
    "blocks.0.hook_mlp_out": {"is_lorsa": False, "layer_idx": 0},
    "blocks.1.hook_attn_out": {"is_lorsa": True, "layer_idx": 1},
    "blocks.1.hook_mlp_out": {"is_lorsa": False, "layer_idx": 1},
}
N_LAYERS = max(int(m["layer_idx"]) for m in SAE_METADATA.values()) + 1  # line 211


def make_node(node_key: str, indices_tuple: tuple[int, ...], activation: float) -> dict[str, Any]:
    """format_converter.py 225-360, with ``ar.*`` read from the constants above."""
    logit_token_map = dict(zip(LOGITS["token_ids"], LOGITS["tokens"]))
    logit_prob_map = dict(zip(LOGITS["token_ids"], LOGITS["probs"]))
    sae_metadata, n_layers = SAE_METADATA, N_LAYERS
    indices = list(indices_tuple)

    if node_key == "hook_embed":
        pos = indices[0]
        token_id = int(PROMPT_IDS[pos]) if pos < len(PROMPT_IDS) else -1
        token = PROMPT_TOKENS[pos] if pos < len(PROMPT_TOKENS) else ""
        node_id = f"E_{token_id}_{pos}"
        return {"node_id": node_id, "jsNodeId": node_id, "feature": None,
                "feature_type": "embedding", "layer": "E", "ctx_idx": pos,
                "clerp": f'Emb: "{token}"', "token": token, "activation": None}

    if node_key == "logits":
        vocab_idx = indices[0]
        ctx_idx = max(len(PROMPT_IDS) - 1, 0)
        layer = n_layers
        token = logit_token_map.get(vocab_idx, "?")
        prob = logit_prob_map.get(vocab_idx, 0.0)
        node_id = f"{layer}_{vocab_idx}_{ctx_idx}"
        return {"node_id": node_id, "jsNodeId": node_id, "feature": vocab_idx,
                "feature_type": "logit", "layer": layer, "ctx_idx": ctx_idx,
                "clerp": f'Logit "{token}" (p={prob:.3f})', "token_prob": prob, "token": token,
                "activation": None}

    if node_key.endswith(".error"):
        hook_point_out = node_key.removesuffix(".error")
        metadata = sae_metadata.get(hook_point_out)
        is_lorsa = bool(metadata["is_lorsa"]) if metadata else False
        layer = int(metadata["layer_idx"]) if metadata else _parse_hook_layer(hook_point_out)
        pos = indices[0]
        feature_type = "lorsa error" if is_lorsa else "mlp reconstruction error"
        token = PROMPT_TOKENS[pos] if pos < len(PROMPT_TOKENS) else ""
        prefix = "attn" if is_lorsa else "mlp"
        node_id = f"{layer}_error_{prefix}_{pos}"
        return {"node_id": node_id, "jsNodeId": node_id, "feature": None,
                "feature_type": feature_type, "layer": layer, "ctx_idx": pos,
                "clerp": f'Err: {prefix} "{token}"', "activation": None}

    if node_key.endswith(".sae.hook_feature_acts"):
        hook_point_out = node_key.removesuffix(".sae.hook_feature_acts")
        metadata = sae_metadata.get(hook_point_out)
        is_lorsa = bool(metadata["is_lorsa"]) if metadata else False
        layer = int(metadata["layer_idx"]) if metadata else _parse_hook_layer(hook_point_out)
        pos = indices[0] if len(indices) > 0 else 0
        feature_idx = indices[1] if len(indices) > 1 else 0
        feature_type = "lorsa" if is_lorsa else "cross layer transcoder"
        cantor_value = cantor_pair(layer, feature_idx)
        node_id = f"{layer}_{feature_type[:3]}_{feature_idx}_{pos}"
        return {"node_id": node_id, "jsNodeId": node_id, "feature": cantor_value,
                "feature_type": feature_type, "layer": layer, "ctx_idx": pos,
                "clerp": f"F{cantor_value}", "activation": activation}

    bias_kind = None
    bias_hook_point_out = None
    for sae_suffix in (".sae.hook_b_Q", ".sae.hook_b_K", ".sae.hook_b_D"):
        if node_key.endswith(sae_suffix):
            bias_hook_point_out = node_key.removesuffix(sae_suffix)
            metadata = sae_metadata.get(bias_hook_point_out)
            is_lorsa = bool(metadata["is_lorsa"]) if metadata else False
            b_letter = sae_suffix[-1]
            bias_kind = f"{'lorsa' if is_lorsa else 'tc'}_b{b_letter}"
            break
    if bias_kind is None:
        if node_key.endswith(".attn.hook_b_O"):
            bias_kind = "attn_bO"
        elif node_key.endswith(".mlp.hook_b_out"):
            bias_kind = "mlp_bout"
    if bias_kind is not None:
        layer = (int(sae_metadata[bias_hook_point_out]["layer_idx"])
                 if bias_hook_point_out and bias_hook_point_out in sae_metadata
                 else _parse_hook_layer(node_key))
        pos = indices[0] if len(indices) > 0 else 0
        node_id = f"{layer}_bias_{bias_kind}_{pos}"
        return {"node_id": node_id, "jsNodeId": node_id, "feature": None,
                "feature_type": "bias", "layer": layer, "ctx_idx": pos,
                "clerp": f"L{layer} Bias ({bias_kind})", "activation": None}

    layer = _parse_hook_layer(node_key)
    pos = indices[0] if len(indices) > 0 else 0
    safe_key = node_key.replace(".", "_")
    fallback_id = f"{layer}_unknown_{safe_key}_{pos}"
    return {"node_id": fallback_id, "jsNodeId": fallback_id, "feature": None,
            "feature_type": "unknown", "layer": layer, "ctx_idx": pos, "clerp": node_key,
            "activation": None}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    keys = [  # (node key, indices, activation) as llamascopium's nodes would yield them
        ("hook_embed", (0,), 0.0), ("hook_embed", (1,), 0.0), ("hook_embed", (2,), 0.0),
        ("blocks.0.hook_attn_out.sae.hook_feature_acts", (2, 77), 1.5),
        ("blocks.0.hook_mlp_out.sae.hook_feature_acts", (1, 1203), 3.25),
        ("blocks.0.hook_mlp_out.error", (2,), 0.0),
        ("blocks.1.hook_attn_out.sae.hook_feature_acts", (2, 5), 2.0),
        ("blocks.1.hook_attn_out.error", (2,), 0.0),
        ("blocks.1.hook_mlp_out.sae.hook_feature_acts", (2, 999), 0.8),
        ("logits", (603,), 0.0), ("logits", (235265,), 0.0),
    ]
    node_entries = [make_node(k, i, a) for k, i, a in keys]
    ids = [n["node_id"] for n in node_entries]
    w = [("E_651_1", "0_cro_1203_1", 2.0), ("E_4401_2", "0_lor_77_2", 1.2),
         ("0_cro_1203_1", "1_lor_5_2", 0.9), ("0_lor_77_2", "1_lor_5_2", 0.4),
         ("0_error_mlp_2", "1_cro_999_2", 0.3), ("E_4401_2", "1_cro_999_2", 0.7),
         ("1_lor_5_2", "2_603_2", 1.6), ("1_error_attn_2", "2_603_2", 0.2),
         ("1_cro_999_2", "2_603_2", 0.5), ("1_cro_999_2", "2_235265_2", -0.4),
         ("E_2_0", "0_lor_77_2", 0.05)]
    assert all(s in ids and d in ids for s, d, _ in w)
    links = [{"source": s, "target": d, "weight": float(x)} for s, d, x in w]
    for entry, score in zip(node_entries, _compute_node_influence(
            node_entries, links, torch.tensor(LOGITS["probs"]))):
        entry["influence"] = score  # lines 386-388
    # QK tracing on the layer-1 lorsa node (lines 390-391, shape per _attach_qk_tracing_results)
    qk_only_nodes = {"0_bias_lorsa_bQ_2": make_node("blocks.0.hook_attn_out.sae.hook_b_Q", (2,), 0.0)}
    node_entries[ids.index("1_lor_5_2")]["qk_tracing_results"] = {
        "pair_wise_contributors": [["0_cro_1203_1", "E_651_1", 0.31],
                                   ["0_bias_lorsa_bQ_2", "E_651_1", 0.02]],
        "top_q_marginal_contributors": [["0_cro_1203_1", 0.4]],
        "top_k_marginal_contributors": [["E_651_1", 0.35]],
    }
    metadata = {  # lines 393-425
        "slug": "crm-repro", "scan": "gemma-2-2b", "prompt": "".join(PROMPT_TOKENS),
        "prompt_tokens": PROMPT_TOKENS, "schema_version": 1, "node_threshold": 0.8,
        "info": {"generator": {"name": "llamascopium (CRM) by OpenMOSS", "version": "repro",
                               "url": "https://github.com/OpenMOSS/Language-Model-SAEs"}},
        "pruning_settings": {"node_threshold": 0.8, "edge_threshold": 0.98},
        "feature_details": {"neuronpedia_source_set": "clt-hp",
                            "neuronpedia_lorsa_source_set": "lorsa-repro"},
    }
    result = {"metadata": metadata, "qParams": {}, "nodes": node_entries, "links": links,
              "qk_only_nodes": qk_only_nodes}
    (OUT / "crm-repro.json").write_text(json.dumps(result, indent=2))
    print("written", OUT / "crm-repro.json")


if __name__ == "__main__":
    main()
