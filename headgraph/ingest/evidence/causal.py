"""Causal evidence: what happens to a probe's metric when a head's write is removed.

Runs are batched: a probe's sequences go through the model in chunks of at most
``max_tokens`` tokens (and a bounded attention-pattern size), and every effect is a mean
over the whole probe. Notation per head ``h`` of layer ``l``: ``z_h [n, T, d_head]`` is its
``hook_z`` (attention-weighted values), its write is ``z_h W_O^h``; ``z̄_h [T, d_head]`` is the
mean of ``z_h`` over the probe's sequences at each position (the *mean* reference).

Metric ``M`` (computed on the whole probe):

* causal LMs: ``loss`` = mean next-token cross-entropy over the probe's ``loss_mask``
  positions (for ``repeat``: predictions of ``x[1:]`` in the second copy, the tokens only
  induction can predict; for file probes: every next token). Effects are ``dloss``.
* encoders (BERT/MiniLM, no trained LM head, so no loss): ``embed`` = mean over sequences of
  ``1 - cos(e, e')`` between the mean-pooled final hidden state ``e`` of the clean run
  and ``e'`` of the intervened run (MiniLM's sentence embedding is that mean pool). The
  clean value is 0; effects are ``dembed``.

Effects (``Δ = M(intervened) - M(clean)``, positive: the head helped):

* ``ablation_zero_d<M>``: ``z_h <- 0`` (the head writes only its share of ``b_O``);
* ``ablation_mean_d<M>``: ``z_h <- z̄_h``;
* ``path_{zero,mean}_d<M>`` on an edge ``s -> t`` of kind ``X`` in ``{Q, K, V}``: the
  source's write is removed (or replaced by its mean write) *only* from the residual copy
  that target head ``t``'s ``X`` projection reads (``hook_{q,k,v}_input``, before its
  LayerNorm, which is recomputed):
  ``x_t^X <- x_t^X - (z_s - ẑ_s) W_O^s`` with ``ẑ_s = 0`` or ``z̄_s``. Every other reader of
  ``s``, and ``t``'s other inputs, see the clean write. This turns "``s`` K-composes with
  ``t``" into "removing that route costs Δ nats".

Path patching needs pre-LN blocks (a head's write is then a summand of later layers' input)
and a bridge that exposes split Q/K/V inputs; it is skipped for encoders (post-LN: BERT
normalises after each block, so a head's write is not additive downstream) and wherever
the bridge refuses ``use_split_qkv_input``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from headgraph.errors import UnsupportedArchitectureError
from headgraph.ingest.evidence.probes import Probe, ProbeBatch
from headgraph.ingest.evidence.roles import RoleAccumulator, detection_patterns
from headgraph.ingest.evidence.runnable import RunnableModel

Hook = tuple[str, Callable[..., torch.Tensor | None]]
Intervention = Callable[[int], list[Hook]]  # sequence length -> hooks for one chunk
MAX_PATTERN_ELEMENTS = 64_000_000  # n * H * T * T per chunk: ~256 MB of fp32 patterns


class _Stop(Exception):
    """Ends an encoder's forward pass at its last block's output (``last_hidden_state``)."""

    def __init__(self, hidden: torch.Tensor) -> None:
        super().__init__("stop")
        self.hidden = hidden


@dataclass(frozen=True)
class HeadRef:
    """One attention head; ``name`` is the node name ``L{layer}H{head}``."""

    layer: int
    head: int

    @property
    def name(self) -> str:
        return f"L{self.layer}H{self.head}"

    @classmethod
    def parse(cls, name: str) -> HeadRef:
        layer, head = name[1:].split("H")
        return cls(int(layer), int(head))


@dataclass(frozen=True)
class CleanRun:
    """The unintervened pass: role scores ``{metric: [L, H]}``, per-layer mean ``z``
    (``[T_max, H, d_head]``), and the clean metric (``None`` when the probe has none)."""

    role_scores: dict[str, torch.Tensor]
    mean_z: tuple[torch.Tensor | None, ...]  # None: the bridge has no hook_z there
    metric: float | None

    def head_mean_z(self, head: HeadRef, architecture: str) -> torch.Tensor:
        """``z̄_h [T_max, d_head]``; refuses bridges that expose no ``hook_z``."""
        z = self.mean_z[head.layer]
        if z is None:
            raise UnsupportedArchitectureError(
                f"{architecture}: the bridge exposes no attn.hook_z in layer {head.layer}, so "
                "heads cannot be ablated; probe this model with ablate=False.")
        return z[:, head.head]


def chunks(probe: Probe, n_heads: int, max_tokens: int) -> list[ProbeBatch]:
    """Split a probe's batches so no forward pass exceeds the token or pattern budget."""
    out: list[ProbeBatch] = []
    for batch in probe.batches:
        n, T = batch.tokens.shape
        size = max(1, min(n, max_tokens // T, MAX_PATTERN_ELEMENTS // (n_heads * T * T)))
        for start in range(0, n, size):
            mask = None if batch.loss_mask is None else batch.loss_mask[start:start + size]
            out.append(ProbeBatch(batch.tokens[start:start + size], mask))
    return out


class ProbeRunner:
    """Runs one probe through one model: the clean pass, then any number of interventions.

    ``metric_name`` is ``"loss"`` (causal LMs) or ``"embed"`` (encoders), ``None`` for a
    probe without a task metric (``duplicate``, ``random``).
    """

    def __init__(self, model: RunnableModel, probe: Probe, *, max_tokens: int = 8192) -> None:
        self.model = model
        self.probe = probe
        self.chunks = chunks(probe, model.n_heads, max_tokens)
        self.metric_name: str | None = None
        if probe.causal:
            self.metric_name = "loss" if model.causal_lm else "embed"
        self._clean_embeds: list[torch.Tensor] = []
        self._clean: CleanRun | None = None
        self.forward_passes = 0

    def _forward(self, tokens: torch.Tensor, hooks: list[Hook]) -> torch.Tensor:
        """Logits (causal LM) or the last block's hidden state (encoder)."""
        bridge = self.model.bridge
        self.forward_passes += 1
        if self.model.causal_lm:
            with torch.inference_mode():
                return bridge.run_with_hooks(tokens, fwd_hooks=hooks)

        def grab(x: torch.Tensor, hook: object) -> None:
            raise _Stop(x)  # the (untrained) MLM head would cost more than the encoder

        try:
            with torch.inference_mode():
                bridge.run_with_hooks(tokens, fwd_hooks=[
                    *hooks, (f"blocks.{self.model.n_layers - 1}.hook_out", grab)])
        except _Stop as stop:
            return stop.hidden
        raise RuntimeError("the encoder's last block did not run")

    def _measure(self, i: int, out: torch.Tensor, batch: ProbeBatch) -> tuple[float, int]:
        """(sum, count) of the metric over chunk ``i``."""
        if self.metric_name == "loss":
            mask = batch.loss_mask[:, :-1]  # [n, T-1]
            logp = F.cross_entropy(out[:, :-1][mask].float(), batch.tokens[:, 1:][mask],
                                   reduction="sum")
            return float(logp), int(mask.sum())
        pooled = out.float().mean(dim=1)  # [n, d_model]
        if len(self._clean_embeds) <= i:
            self._clean_embeds.append(pooled)
        cos = F.cosine_similarity(pooled, self._clean_embeds[i], dim=-1)  # [n]
        return float((1 - cos).sum()), int(pooled.shape[0])

    def clean(self) -> CleanRun:
        """Role scores, mean ``z`` per layer and the clean metric, in one pass per chunk."""
        if self._clean is not None:
            return self._clean
        L, H = self.model.n_layers, self.model.n_heads
        roles = RoleAccumulator(L, H)
        T_max = max(int(c.tokens.shape[1]) for c in self.chunks)
        z_sum: list[torch.Tensor | None] = [None] * L
        count = torch.zeros(T_max, dtype=torch.float64)
        total, n = 0.0, 0
        for i, batch in enumerate(self.chunks):
            patterns = detection_patterns(batch.tokens)
            roles.start_batch(patterns)
            T = int(batch.tokens.shape[1])
            count[:T] += batch.tokens.shape[0]

            def on_pattern(x: torch.Tensor, hook: object, _p=patterns) -> None:
                roles.add(_layer(hook), x, _p)

            def on_z(x: torch.Tensor, hook: object, _T=T) -> None:
                layer = _layer(hook)
                part = x.detach().double().sum(0)  # [T, H, d_head]
                if z_sum[layer] is None:
                    z_sum[layer] = torch.zeros((T_max, *part.shape[1:]), dtype=torch.float64)
                z_sum[layer][:_T] += part

            hooks: list[Hook] = []
            for layer in range(L):
                hooks += [(f"blocks.{layer}.attn.hook_pattern", on_pattern),
                          (f"blocks.{layer}.attn.hook_z", on_z)]
            out = self._forward(batch.tokens, hooks)
            if self.metric_name is not None:
                s, c = self._measure(i, out, batch)
                total, n = total + s, n + c
        mean_z = tuple(None if z is None else (z / count.clamp(min=1)[:, None, None]).float()
                       for z in z_sum)
        metric = total / max(n, 1) if self.metric_name is not None else None
        self._clean = CleanRun(roles.scores(), mean_z, metric)
        return self._clean

    def effect(self, intervention: Intervention) -> float:
        """``M(intervened) - M(clean)`` over the whole probe."""
        clean = self.clean()
        if clean.metric is None:
            raise ValueError(f"probe {self.probe.name} has no metric")
        total, n = 0.0, 0
        for i, batch in enumerate(self.chunks):
            out = self._forward(batch.tokens, intervention(int(batch.tokens.shape[1])))
            s, c = self._measure(i, out, batch)
            total, n = total + s, n + c
        return total / max(n, 1) - clean.metric

    # Interventions -------------------------------------------------------------------

    def ablate(self, head: HeadRef, mode: str) -> Intervention:
        """Replace ``z_h`` by 0 (``mode="zero"``) or by its per-position mean (``"mean"``)."""
        mean_z = self.clean().head_mean_z(head, self.model.architecture)  # [T_max, d_head]

        def make(T: int) -> list[Hook]:
            def hook(z: torch.Tensor, hook: object) -> torch.Tensor:
                z = z.clone()
                z[:, :, head.head] = 0.0 if mode == "zero" else mean_z[:T].to(z.dtype)
                return z

            return [(f"blocks.{head.layer}.attn.hook_z", hook)]

        return make

    def patch_path(self, source: HeadRef, target: HeadRef, kind: str, mode: str) -> Intervention:
        """Remove ``source``'s write (``mode`` zero) or swap in its mean write (``mean``)
        from the residual copy that ``target``'s ``kind`` (Q, K or V) projection reads."""
        if source.layer >= target.layer:
            raise ValueError(f"{source.name} cannot feed {target.name}")
        W_O = self.model.bridge.W_O[source.layer, source.head].detach()  # [d_head, d_model]
        mean_z = self.clean().head_mean_z(source, self.model.architecture)  # [T_max, d_head]
        group = self.model.n_heads // int(self.model.bridge.W_K.shape[1])

        def make(T: int) -> list[Hook]:
            store: dict[str, torch.Tensor] = {}

            def grab(z: torch.Tensor, hook: object) -> None:
                ref = 0.0 if mode == "zero" else mean_z[:T].to(z.dtype)
                store["delta"] = (z[:, :, source.head] - ref) @ W_O.to(z.dtype)  # [n, T, d]

            def remove(x: torch.Tensor, hook: object) -> torch.Tensor:
                slot = target.head if x.shape[2] == self.model.n_heads or kind == "Q" \
                    else target.head // group
                x = x.clone()
                x[:, :, slot] -= store["delta"]
                return x

            return [(f"blocks.{source.layer}.attn.hook_z", grab),
                    (f"blocks.{target.layer}.hook_{kind.lower()}_input", remove)]

        return make



def _layer(hook: object) -> int:
    return int(hook.name.split(".")[1])  # type: ignore[attr-defined]


@contextmanager
def split_qkv_inputs(model: RunnableModel) -> Iterator[str | None]:
    """Give Q, K and V their own residual copies for the block; yields ``None`` when that
    worked, else the reason path patching cannot run on this model. Restores the flag."""
    if not model.causal_lm:
        yield ("encoders are post-LN: a head's write is not a summand of later layers' "
               "input, so path patching is not defined here")
        return
    bridge = model.bridge
    before = bool(getattr(bridge.cfg, "use_split_qkv_input", False))
    try:
        bridge.set_use_split_qkv_input(True)
    except (NotImplementedError, ValueError) as exc:
        yield f"the bridge cannot split Q/K/V inputs ({exc})"
        return
    try:
        yield None
    finally:
        bridge.set_use_split_qkv_input(before)
