"""GGUF files (llama.cpp's format): real checkpoints as people download them.

``headgraph ingest model.gguf`` reads the file's tensors with the ``gguf`` package (the
optional extra ``headgraph[gguf]``) and dequantizes them to float32; the quantization is
recorded in ``models.processing``
(``gguf:Q4_1x210+Q8_0x1+F32x61;headgraph:fold_rms,center_unembed``: each tensor type with
its count, then the processing and who applied it), since a score describes the dequantized
weights, not the original checkpoint.

Two readers:

* **Streamed** (:class:`GGUFReader`), for the Llama family (``llama``, ``mistral``, ``qwen2``
  architectures in the file): the header is parsed here, tensors are memory-mapped and
  dequantized one layer at a time, and processed as TransformerLens's compatibility mode
  processes the same model loaded by transformers (RMSNorm: the norm scales are folded into
  the reading weights, ``W_{Q,K,V} <- diag(attn_norm) W``, ``[W_gate, W_in] <-
  diag(ffn_norm) [...]``, ``W_U <- diag(output_norm) W_U``; the unembedding is centred over
  the vocabulary; nothing is centred over d_model). Query and key rows are put back in
  Hugging Face's rotary order (llama.cpp permutes them; transformers' ``reverse_permute``),
  so every matrix equals the bridge's. Tied embeddings (no ``output.weight``) give all
  vocabulary products from one Gram. No transformers, no bridge: seconds, not tens.
* **Through transformers** (:func:`bridge_from_gguf`): ``from_pretrained(gguf_file=...)``
  and the TransformerBridge, for every other architecture transformers reads from GGUF, and
  to *run* any GGUF model (evidence needs a forward pass).

``tests/test_gguf.py`` writes small GGUF files with the ``gguf`` package and checks the
streamed reader against the bridge over transformers' load of the same file.
"""

from __future__ import annotations

import hashlib
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from headgraph.errors import BadWeightsError, SourceError, UnsupportedArchitectureError
from headgraph.ingest.kernel import tied_vocab_grams
from headgraph.ingest.reader import check_finite
from headgraph.ingest.spec import GlobalWeights, LayerWeights, ModelSpec, SourceInfo, VocabGrams

STREAMED = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
            "qwen2": "Qwen2ForCausalLM"}
"""GGUF architectures read by the streamed reader, with the HF class they load as."""
PERMUTED = ("llama",)
"""Architectures whose Q/K rows llama.cpp permuted (transformers' LlamaTensorProcessor)."""
PROCESSING = "headgraph:fold_rms,center_unembed"
ATTENTION_CACHE_BYTES = 512 << 20
_MAGIC = b"GGUF"
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q",
            11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


def _gguf():
    try:
        import gguf
    except ImportError:
        raise SourceError("reading GGUF files needs the gguf package: pip install "
                          "'headgraph[gguf]' (or pip install gguf).") from None
    return gguf


@dataclass(frozen=True)
class TensorInfo:
    name: str
    qtype: int  # GGMLQuantizationType value
    shape: tuple[int, ...]  # numpy order (the reverse of GGUF's dims): [out, in] for linears
    offset: int  # absolute byte offset in the file
    nbytes: int


@dataclass(frozen=True)
class GGUFFile:
    """A parsed GGUF header: scalar metadata (arrays are skipped, their lengths kept as
    ``<key>#len``), tensor infos, and the file memory-mapped."""

    path: Path
    metadata: dict[str, Any]
    tensors: dict[str, TensorInfo]
    data: np.memmap

    def array(self, name: str) -> np.ndarray:
        """A tensor dequantized to float32, in numpy order."""
        info = self.tensors[name]
        gguf = _gguf()
        qtype = gguf.GGMLQuantizationType(info.qtype)
        raw = self.data[info.offset: info.offset + info.nbytes]
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        rows = int(np.prod(info.shape[:-1])) if len(info.shape) > 1 else 1
        out = gguf.quants.dequantize(raw.reshape(rows, -1), qtype)
        return np.asarray(out, np.float32).reshape(info.shape)

    def tensor(self, name: str) -> torch.Tensor:
        return torch.from_numpy(np.array(self.array(name), np.float32))  # a writable copy

    def quantization(self) -> str:
        """``Q4_1x210+Q8_0x1+F32x61``: each tensor type with its count, most used first."""
        gguf = _gguf()
        counts = Counter(gguf.GGMLQuantizationType(t.qtype).name for t in self.tensors.values())
        return "+".join(f"{name}x{n}" for name, n in counts.most_common())


class _Cursor:
    def __init__(self, buf: np.memmap) -> None:
        self.buf, self.pos = buf, 0

    def take(self, fmt: str) -> Any:
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        n = self.take("<Q")
        value = bytes(self.buf[self.pos: self.pos + n]).decode("utf-8", "replace")
        self.pos += n
        return value

    def skip_string(self) -> None:
        n = self.take("<Q")  # not `pos += take()`: that adds to the position read before
        self.pos += n

    def value(self, vtype: int, key: str, meta: dict[str, Any]) -> Any:
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            etype, n = self.take("<I"), self.take("<Q")
            meta[f"{key}#len"] = n
            if etype == _STRING:
                for _ in range(n):
                    self.skip_string()
            elif etype in _SCALARS:
                self.pos += n * struct.calcsize(_SCALARS[etype])
            else:
                raise SourceError(f"GGUF array of type {etype} in {key!r} is not understood.")
            return None
        if vtype not in _SCALARS:
            raise SourceError(f"GGUF value type {vtype} in {key!r} is not understood.")
        return self.take(_SCALARS[vtype])


def parse_gguf(path: str | Path) -> GGUFFile:
    """Parse a GGUF file's header (not its tensor data); refuses what is not GGUF."""
    path = Path(path)
    try:
        data = np.memmap(path, dtype=np.uint8, mode="r")
    except (OSError, ValueError) as exc:
        raise SourceError(f"{path}: cannot be read as a GGUF file ({exc}).") from None
    gguf = _gguf()
    cur = _Cursor(data)
    try:
        if bytes(data[:4]) != _MAGIC:
            raise SourceError(f"{path}: not a GGUF file (no GGUF magic bytes).")
        cur.pos = 4
        version = cur.take("<I")
        if version < 2:
            raise SourceError(f"{path}: GGUF version {version} is too old; convert it again "
                              "with a current llama.cpp.")
        n_tensors, n_kv = cur.take("<Q"), cur.take("<Q")
        meta: dict[str, Any] = {"GGUF.version": version}
        for _ in range(n_kv):
            key = cur.string()
            meta[key] = cur.value(cur.take("<I"), key, meta)
        infos = []
        for _ in range(n_tensors):
            name = cur.string()
            dims = [cur.take("<Q") for _ in range(cur.take("<I"))]
            qtype, offset = cur.take("<I"), cur.take("<Q")
            infos.append((name, dims, qtype, offset))
    except struct.error:
        raise SourceError(f"{path}: the GGUF header is truncated.") from None
    align = int(meta.get("general.alignment", 32))
    start = -(-cur.pos // align) * align
    tensors = {}
    for name, dims, qtype, offset in infos:
        try:
            block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(qtype)]
        except (ValueError, KeyError):
            raise SourceError(f"{path}: tensor {name!r} has an unknown type {qtype}.") from None
        n = int(np.prod(dims))
        info = TensorInfo(name, qtype, tuple(reversed(dims)), start + offset,
                          n * size // block)
        if info.offset + info.nbytes > len(data):
            raise SourceError(f"{path}: tensor {name!r} runs past the end of the file; the "
                              "file is truncated.")
        tensors[name] = info
    return GGUFFile(path, meta, tensors, data)


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    h.update(path.name.encode())
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def reverse_permute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Undo llama.cpp's rotary permutation of Q/K rows (``[n_head * d_head, d_model]``)."""
    half = w.shape[0] // n_head // 2
    return w.reshape(n_head, half, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


class GGUFReader:
    """A :class:`~headgraph.ingest.reader.WeightReader` streaming a Llama-family GGUF."""

    def __init__(self, file: GGUFFile, source: str) -> None:
        self.file = file
        m = file.metadata
        arch = str(m.get("general.architecture", ""))
        self._arch = arch

        def key(name: str, default: Any = None) -> Any:
            value = m.get(f"{arch}.{name}", default)
            if value is None:
                raise SourceError(f"{file.path}: GGUF metadata lacks {arch}.{name}.")
            return value

        L, H, d = int(key("block_count")), int(key("attention.head_count")), \
            int(key("embedding_length"))
        n_kv = int(key("attention.head_count_kv", H))
        dh = int(m.get(f"{arch}.attention.key_length", d // H))
        if "token_embd.weight" not in file.tensors:
            raise BadWeightsError(f"{file.path}: no token_embd.weight tensor.")
        vocab = file.tensors["token_embd.weight"].shape[0]
        self.tied = "output.weight" not in file.tensors
        self.spec = ModelSpec(
            architecture=STREAMED[arch], n_layers=L, n_heads=H, n_kv_heads=n_kv, d_model=d,
            d_head=dh, d_mlp=int(key("feed_forward_length")), d_vocab=vocab,
            n_ctx=int(key("context_length")), positional="rotary", readout="unembed",
            has_pos_embed=False,
            processing=f"gguf:{file.quantization()};{PROCESSING}", gated_mlp=True)
        self.info = SourceInfo(source=source, weights_digest=_digest(file.path))
        self._attention: dict[int, tuple[torch.Tensor, ...]] = {}
        per_layer = 4 * d * dh * (2 * H + 2 * n_kv)
        self._keep = per_layer * L <= ATTENTION_CACHE_BYTES
        for layer in range(L):
            for part in ("attn_q", "attn_k", "attn_v", "attn_output", "attn_norm"):
                if f"blk.{layer}.{part}.weight" not in file.tensors:
                    raise BadWeightsError(f"{file.path}: no blk.{layer}.{part}.weight tensor.")

    def _t(self, name: str) -> torch.Tensor:
        return self.file.tensor(name)

    def _unembed_raw(self) -> torch.Tensor:
        return self._t("token_embd.weight" if self.tied else "output.weight")  # [V, d]

    def globals(self) -> GlobalWeights:
        W_E = self._t("token_embd.weight")
        W_U = self._unembed_raw().T * self._t("output_norm.weight")[:, None]
        W_U = W_U - W_U.mean(dim=-1, keepdim=True)  # center_unembed
        return GlobalWeights(W_E=W_E, W_U=W_U, W_pos=None)

    def vocab_grams(self, device: torch.device | str = "cpu") -> VocabGrams | None:
        """Tied embeddings: the three vocabulary products from one Gram."""
        if not self.tied:
            return None
        E = self._t("token_embd.weight").to(device)
        check_finite("token_embd", E)
        embed, unembed, readout = tied_vocab_grams(
            E, self._t("output_norm.weight").to(device), centre_write=False,
            centre_read=False, centre_vocab=True)
        return VocabGrams(embed=embed, unembed=unembed, readout=readout, rows=int(E.shape[0]))

    def _attention_weights(self, layer: int) -> tuple[torch.Tensor, ...]:
        if layer in self._attention:
            return self._attention[layer]
        s, p = self.spec, f"blk.{layer}."
        H, n_kv, d, dh = s.n_heads, s.n_kv_heads, s.d_model, s.d_head
        norm = self._t(p + "attn_norm.weight")[:, None]  # diag(attn_norm) on d_model rows
        q, k = self._t(p + "attn_q.weight"), self._t(p + "attn_k.weight")
        if self._arch in PERMUTED:
            q, k = reverse_permute(q, H), reverse_permute(k, n_kv)

        def heads(w: torch.Tensor, n: int) -> torch.Tensor:  # [n dh, d] -> [n, d, dh]
            return (w.reshape(n, dh, d).transpose(1, 2) * norm).contiguous()

        W_O = self._t(p + "attn_output.weight").reshape(d, H, dh).permute(1, 2, 0).contiguous()
        out = (heads(q, H), heads(k, n_kv), heads(self._t(p + "attn_v.weight"), n_kv), W_O)
        if self._keep:
            self._attention[layer] = out
        return out

    def layer(self, layer: int, *, mlp: bool = True) -> LayerWeights:
        W_Q, W_K, W_V, W_O = self._attention_weights(layer)
        W_in = W_out = None
        if mlp:
            p = f"blk.{layer}."
            norm = self._t(p + "ffn_norm.weight")[:, None]
            W_in = torch.cat([self._t(p + "ffn_gate.weight").T, self._t(p + "ffn_up.weight").T],
                             dim=1) * norm
            W_out = self._t(p + "ffn_down.weight").T.contiguous()
        return LayerWeights(layer=layer, W_Q=W_Q, W_K=W_K, W_V=W_V, W_O=W_O, W_in=W_in,
                            W_out=W_out)

    def close(self) -> None:
        self._attention.clear()


def bridge_from_gguf(path: Path) -> tuple[Any, Any, str]:
    """``(bridge, tokenizer, architecture)``: transformers loads and dequantizes the file
    (``from_pretrained(gguf_file=...)``), and the compatibility-mode TransformerBridge wraps
    the model, as for any Hugging Face checkpoint."""
    _gguf()
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from headgraph.ingest.bridge_reader import _resolve_architecture

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    folder, name = str(path.parent), path.name
    try:
        config = AutoConfig.from_pretrained(folder, gguf_file=name)
    except Exception as exc:  # transformers refuses unknown GGUF architectures many ways
        raise UnsupportedArchitectureError(
            f"{path}: transformers cannot read this GGUF file's architecture ({exc}).") from None
    if not getattr(config, "architectures", None):
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        config.architectures = [MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[config.model_type]]
    arch, _ = _resolve_architecture(config, str(path))
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, config=config,
                                                     dtype=torch.float32,
                                                     attn_implementation="eager")
    except Exception as exc:
        raise SourceError(f"{path}: the GGUF weights could not be loaded ({exc}).") from None
    model.eval()
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    except Exception:  # token-id probes work without one
        tokenizer = None
    from transformer_lens.model_bridge.sources._bridge_builder import build_bridge_from_module

    try:
        bridge = build_bridge_from_module(model, arch, hf_config=model.config)
        bridge.enable_compatibility_mode(disable_warnings=True)
    except Exception as exc:
        raise UnsupportedArchitectureError(
            f"{path}: TransformerBridge could not wrap {arch} ({exc}).") from None
    return bridge, tokenizer, arch


def gguf_shape_fields(path: Path) -> dict[str, Any]:
    """What ``headgraph plan`` needs of a GGUF file, from its header alone: the shape, the
    parameter count, and whether it is streamed (Llama family) or loaded whole."""
    file = parse_gguf(path)
    m = file.metadata
    arch = str(m.get("general.architecture", ""))

    def key(name: str, default: Any = 0) -> int:
        return int(m.get(f"{arch}.{name}", default) or default)

    H, d = key("attention.head_count", 1), key("embedding_length", 1)
    embd = file.tensors.get("token_embd.weight")
    return {
        "architecture": STREAMED.get(arch, arch), "n_layers": key("block_count", 1),
        "n_heads": H, "n_kv_heads": key("attention.head_count_kv", H), "d_model": d,
        "d_head": key("attention.key_length", d // max(H, 1)),
        "d_mlp": key("feed_forward_length"), "d_vocab": embd.shape[0] if embd else 0,
        "n_ctx": key("context_length", 2048), "gated": arch in STREAMED,
        "parallel": False, "pos_embed": arch not in STREAMED and arch in ("gpt2", "starcoder"),
        "n_parameters": int(sum(np.prod(t.shape) for t in file.tensors.values())),
        "loads_whole_model": arch not in STREAMED,
        "processing": PROCESSING if arch in STREAMED else "fold_ln,center_writing_weights",
    }


def read_gguf(path: Path, source: str):
    """The weight reader of a GGUF file: streamed for the Llama family, else a bridge over
    transformers' load of it (processing then records the file's quantization too)."""
    file = parse_gguf(path)
    arch = str(file.metadata.get("general.architecture", ""))
    if arch in STREAMED:
        return GGUFReader(file, source)
    from headgraph.ingest.bridge_reader import BridgeReader

    bridge, tokenizer, hf_arch = bridge_from_gguf(path)
    if tokenizer is not None:
        bridge.tokenizer = tokenizer  # for running it later (probes)
    reader = BridgeReader(bridge, SourceInfo(source=source, weights_digest=_digest(path)),
                          readout="unembed", architecture=hf_arch)
    spec = reader.spec
    reader.spec = ModelSpec(**{**spec.__dict__,
                               "processing": f"gguf:{file.quantization()};{spec.processing}"})
    return reader
