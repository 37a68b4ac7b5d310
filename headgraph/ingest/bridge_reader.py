"""Weights read through TransformerLens's TransformerBridge, for any architecture it supports.

The bridge is the reference: ``enable_compatibility_mode()`` folds LayerNorm into the
reading weights and centres the writing weights (and the unembedding), exactly the
processing that ``all_composition_scores`` sees. The whole model is held in memory, so
this path suits models up to a few hundred million parameters; the streamed readers in
:mod:`headgraph.ingest.gpt2_stream` cover larger ones layer by layer.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from headgraph.errors import BadWeightsError, SourceError, UnsupportedArchitectureError
from headgraph.ingest.digest import digest_files, weight_files
from headgraph.ingest.spec import GlobalWeights, LayerWeights, ModelSpec, SourceInfo


def bridge_processing(bridge: Any) -> str:
    """The weight processing compatibility mode really applied to this bridge.

    Mirrors ``ProcessWeights.process_weights``: post-LN adapters (BERT) cannot fold
    LayerNorm, RMSNorm models fold the scale but centre nothing, and writing weights are
    centred only under LayerNorm.
    """
    adapter = getattr(bridge, "adapter", None)
    norm = getattr(bridge.cfg, "normalization_type", "LN")
    parts = []
    if getattr(adapter, "supports_fold_ln", True):
        if norm in ("LN", "LNPre"):
            parts.append("fold_ln")
        elif norm in ("RMS", "RMSPre"):
            parts.append("fold_rms")
    centre = getattr(adapter, "supports_center_writing_weights", True)
    if centre and norm in ("LN", "LNPre") and not getattr(bridge.cfg, "final_rms", False):
        parts.append("center_writing_weights")
    parts.append("center_unembed")
    return "bridge:" + ",".join(parts)


# Bare encoders (no LM head) load through the adapter of their masked-LM class; their
# (absent) head is then ignored and the model reads out through W_E^T.
_BARE_TO_HEADED = {"BertModel": "BertForMaskedLM"}
_HEADED_SUFFIXES = ("LMHeadModel", "ForCausalLM", "ForMaskedLM", "ForConditionalGeneration")


def supported_architectures() -> list[str]:
    from transformer_lens.factories.architecture_adapter_factory import SUPPORTED_ARCHITECTURES

    return sorted(SUPPORTED_ARCHITECTURES)


def _resolve_architecture(config: Any, where: str) -> tuple[str, bool]:
    """(adapter architecture, has its own LM head) for an HF config."""
    archs = list(getattr(config, "architectures", None) or [])
    if not archs:
        raise UnsupportedArchitectureError(
            f"{where}: config.json names no 'architectures'; headgraph cannot tell which "
            "model class to load. Add e.g. \"architectures\": [\"GPT2LMHeadModel\"]."
        )
    arch = archs[0]
    supported = set(supported_architectures())
    headed = arch.endswith(_HEADED_SUFFIXES)
    adapter_arch = _BARE_TO_HEADED.get(arch, arch)
    if adapter_arch not in supported:
        shown = ", ".join(sorted(a for a in supported if not a.startswith("_"))[:40])
        raise UnsupportedArchitectureError(
            f"{where}: architecture {arch!r} is not supported by TransformerBridge, so "
            f"headgraph cannot read it. Supported include: {shown}, ..."
        )
    return adapter_arch, headed


def load_hf_model(path: Path, *, allow_pickle: bool = False) -> tuple[Any, Any, str, bool]:
    """Load an HF model from a local directory: (model, config, adapter arch, has head).

    Safetensors only, unless ``allow_pickle`` (then ``.bin`` files are read with
    ``weights_only=True`` by transformers). ``trust_remote_code`` is never set.
    """
    from transformers import AutoConfig
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # ingest draws its own progress
    hf_logging.set_verbosity_error()
    where = str(path)
    try:
        config = AutoConfig.from_pretrained(where, local_files_only=True)
    except Exception as exc:  # transformers raises many kinds for a bad config
        raise SourceError(f"{where}: config.json could not be read ({exc}).") from None
    adapter_arch, headed = _resolve_architecture(config, where)
    files = weight_files(path)
    if not files:
        raise SourceError(
            f"{where}: no model weights found (expected model.safetensors). Save the model "
            "with save_pretrained(..., safe_serialization=True)."
        )
    if all(f.suffix == ".bin" for f in files) and not allow_pickle:
        raise SourceError(
            f"{where}: only pickle weights (pytorch_model.bin) found. Pickles can run code "
            "when loaded; convert to safetensors, or pass --allow-pickle to read them with "
            "torch.load(weights_only=True)."
        )
    import transformers

    cls = getattr(transformers, adapter_arch, None)
    if cls is None:
        raise UnsupportedArchitectureError(
            f"{where}: transformers has no class {adapter_arch!r}; upgrade transformers."
        )
    config.architectures = [adapter_arch]
    try:
        model = cls.from_pretrained(
            where,
            config=config,
            local_files_only=True,
            use_safetensors=not all(f.suffix == ".bin" for f in files),
            attn_implementation="eager",
        )
    except Exception as exc:
        raise SourceError(f"{where}: the weights could not be loaded ({exc}).") from None
    model.eval()
    return model, config, adapter_arch, headed


class BridgeReader:
    """A :class:`~headgraph.ingest.reader.WeightReader` over a TransformerBridge."""

    def __init__(self, bridge: Any, info: SourceInfo, *, readout: str, architecture: str) -> None:
        self.bridge = bridge
        self.info = info
        cfg = bridge.cfg
        if int(getattr(cfg, "n_layers", 0) or 0) <= 0 or int(getattr(cfg, "n_heads", 0) or 0) <= 0:
            raise BadWeightsError(
                f"{info.source}: the config has {getattr(cfg, 'n_layers', 0)} layers and "
                f"{getattr(cfg, 'n_heads', 0)} heads; a model needs at least one of each to "
                "have a circuit graph."
            )
        self._W = {
            "W_Q": bridge.W_Q.detach(),
            "W_K": bridge.W_K.detach(),
            "W_V": bridge.W_V.detach(),
            "W_O": bridge.W_O.detach(),
        }
        d_mlp, gated = 0, False
        if not getattr(cfg, "attn_only", False):
            W_in = bridge.W_in.detach()
            W_gate = bridge.W_gate
            if W_gate is not None:
                W_in = torch.cat([W_gate.detach(), W_in], dim=-1)
                gated = True
            self._W["W_in"] = W_in
            self._W["W_out"] = bridge.W_out.detach()
            d_mlp = int(self._W["W_out"].shape[-2])
        try:
            self._W_pos: torch.Tensor | None = bridge.W_pos.detach()
        except AttributeError:
            self._W_pos = None
        n_kv = int(self._W["W_K"].shape[1])
        self.spec = ModelSpec(
            architecture=architecture,
            n_layers=int(cfg.n_layers),
            n_heads=int(cfg.n_heads),
            n_kv_heads=n_kv,
            d_model=int(cfg.d_model),
            d_head=int(cfg.d_head),
            d_mlp=d_mlp,
            d_vocab=int(cfg.d_vocab),
            n_ctx=int(cfg.n_ctx),
            positional=str(getattr(cfg, "positional_embedding_type", "standard")),
            parallel_blocks=bool(getattr(cfg, "parallel_attn_mlp", False)),
            readout=readout,
            has_pos_embed=self._W_pos is not None,
            processing=bridge_processing(bridge),
            gated_mlp=gated,
        )

    def globals(self) -> GlobalWeights:
        W_E = self.bridge.W_E.detach()
        W_U = W_E.T if self.spec.readout == "embed_transpose" else self.bridge.W_U.detach()
        return GlobalWeights(W_E=W_E, W_U=W_U, W_pos=self._W_pos)

    def layer(self, layer: int, *, mlp: bool = True) -> LayerWeights:
        W = self._W
        return LayerWeights(
            layer=layer,
            W_Q=W["W_Q"][layer],
            W_K=W["W_K"][layer],
            W_V=W["W_V"][layer],
            W_O=W["W_O"][layer],
            W_in=W["W_in"][layer] if "W_in" in W else None,
            W_out=W["W_out"][layer] if "W_out" in W else None,
        )

    def close(self) -> None:
        self._W.clear()
        self.bridge = None


def bridge_from_directory(path: Path, *, allow_pickle: bool = False) -> tuple[Any, str, bool]:
    """A compatibility-mode bridge over a local HF directory: (bridge, architecture, headed)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model, config, adapter_arch, headed = load_hf_model(path, allow_pickle=allow_pickle)
    from transformer_lens.model_bridge.sources._bridge_builder import build_bridge_from_module

    try:
        bridge = build_bridge_from_module(model, adapter_arch, hf_config=config)
        bridge.enable_compatibility_mode(disable_warnings=True)
    except Exception as exc:
        raise UnsupportedArchitectureError(
            f"{path}: TransformerBridge could not wrap {adapter_arch} ({exc})."
        ) from None
    return bridge, adapter_arch, headed


def read_directory(path: Path, source: str, *, allow_pickle: bool = False) -> BridgeReader:
    """Open a local HF checkpoint directory for ingest."""
    if not path.exists():
        raise SourceError(f"{path}: no such file or directory.")
    if not path.is_dir() or not (path / "config.json").exists():
        raise SourceError(
            f"{path}: not a Hugging Face model directory (no config.json). Pass a directory "
            "written by save_pretrained, a hub name, 'toy', or a 'random:' shape."
        )
    bridge, arch, headed = bridge_from_directory(path, allow_pickle=allow_pickle)
    info = SourceInfo(source=source, weights_digest=digest_files(weight_files(path)))
    return BridgeReader(bridge, info, readout="unembed" if headed else "embed_transpose",
                        architecture=arch)
