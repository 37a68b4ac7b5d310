"""Small GGUF files written for the tests with the ``gguf`` package (llama.cpp's format).

:func:`write_llama_gguf` converts a seeded random Hugging Face ``LlamaForCausalLM`` to GGUF
as llama.cpp's converter does: llama.cpp tensor names, the rotary permutation of the query
and key rows, norms in F32 and the other matrices quantized (``Q8_0`` by default).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's ``permute`` of Q/K rows (the inverse of transformers' reverse)."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def write_llama_gguf(path: Path, *, layers: int = 2, heads: int = 4, kv_heads: int = 2,
                     d_model: int = 64, d_mlp: int = 96, vocab: int = 96, tied: bool = True,
                     quant: str = "Q8_0", seed: int = 0):
    """Write a random Llama as GGUF; returns the HF model it was converted from."""
    import gguf
    import transformers as tf

    torch.manual_seed(seed)
    cfg = tf.LlamaConfig(num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=kv_heads, hidden_size=d_model,
                         intermediate_size=d_mlp, vocab_size=vocab, max_position_embeddings=128,
                         tie_word_embeddings=tied, rms_norm_eps=1e-5)
    model = tf.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # norms away from 1, so folding them is tested
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.5 * torch.rand_like(p))
    qtype = getattr(gguf.GGMLQuantizationType, quant)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(layers)
    writer.add_context_length(128)
    writer.add_embedding_length(d_model)
    writer.add_feed_forward_length(d_mlp)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_freq_base(float(cfg.rope_theta if hasattr(cfg, "rope_theta")
                                    else cfg.rope_parameters["rope_theta"]))
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(d_model // heads)
    writer.add_vocab_size(vocab)
    writer.add_file_type(int(qtype) if qtype != gguf.GGMLQuantizationType.F32 else 0)
    writer.add_tokenizer_model("gpt2")
    tokens = [f"t{i}" for i in range(vocab)]
    writer.add_token_list(tokens)
    writer.add_token_types([1] * vocab)
    writer.add_token_merges([])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    state = {k: v.float().numpy() for k, v in model.state_dict().items()}

    def put(name: str, w: np.ndarray) -> None:
        if w.ndim == 1:
            writer.add_tensor(name, w.astype(np.float32))
            return
        data = gguf.quants.quantize(w.astype(np.float32), qtype)
        writer.add_tensor(name, data, raw_dtype=qtype)

    put("token_embd.weight", state["model.embed_tokens.weight"])
    put("output_norm.weight", state["model.norm.weight"])
    if not tied:
        put("output.weight", state["lm_head.weight"])
    for i in range(layers):
        p = f"model.layers.{i}."
        put(f"blk.{i}.attn_norm.weight", state[p + "input_layernorm.weight"])
        put(f"blk.{i}.attn_q.weight", permute(state[p + "self_attn.q_proj.weight"], heads))
        put(f"blk.{i}.attn_k.weight", permute(state[p + "self_attn.k_proj.weight"], kv_heads))
        put(f"blk.{i}.attn_v.weight", state[p + "self_attn.v_proj.weight"])
        put(f"blk.{i}.attn_output.weight", state[p + "self_attn.o_proj.weight"])
        put(f"blk.{i}.ffn_norm.weight", state[p + "post_attention_layernorm.weight"])
        put(f"blk.{i}.ffn_gate.weight", state[p + "mlp.gate_proj.weight"])
        put(f"blk.{i}.ffn_up.weight", state[p + "mlp.up_proj.weight"])
        put(f"blk.{i}.ffn_down.weight", state[p + "mlp.down_proj.weight"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return model
