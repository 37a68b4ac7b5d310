"""Exact causal evidence: what a probe's metric does when a head's write is removed.

Runs are batched twice over: a probe's sequences go through the model in chunks of at
most ``max_tokens`` tokens (and a bounded attention-pattern size), and many interventions
share one forward pass, each on its own copy of the chunk along the batch dimension
(:meth:`ProbeRunner.effects`). Every effect is a mean over the whole probe. Notation per
head ``h`` of layer ``l``: ``z_h [n, T, d_head]`` is its ``hook_z`` (attention-weighted
values), its write is ``z_h W_O^h``; ``z̄_h [T, d_head]`` is the mean of ``z_h`` over the
probe's sequences at each position (the *mean* reference).

Metric ``M`` (computed on the whole probe):

* causal LMs: ``loss`` = mean next-token cross-entropy over the probe's ``loss_mask``
  positions (for ``repeat``: predictions of ``x[1:]`` in the second copy, the tokens only
  induction can predict; for file probes: every next token). The pass stops at the final
  residual and only the loss positions are unembedded. Effects are ``dloss``.
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
  LayerNorm, which is recomputed): ``x_t^X <- x_t^X - (w_s - ŵ_s)`` with ``w_s`` the
  source's write (a head's ``z_s W_O^s``, an MLP's output, the token or position
  embedding) and ``ŵ_s = 0`` or its per-position mean. Every other reader of ``s``, and
  ``t``'s other inputs, see the clean write. This turns "``s`` K-composes with ``t``" into
  "removing that route costs Δ nats".

**Grouped-query attention.** Query heads of one group share a key/value head, so the
bridge's ``hook_k_input`` / ``hook_v_input`` hold one residual copy per *KV* head. Patching
that copy would change every query head of the group; the effect stored against ``t`` is
the effect through ``t`` alone: the KV copy is patched, and the other query heads of the
group get back their clean attention scores (K) or clean ``z`` (V), cached from the clean
run. Query inputs are per query head already.

Path patching needs pre-LN blocks (a head's write is then a summand of later layers' input)
and a bridge that exposes split Q/K/V inputs; it is skipped for encoders (post-LN: BERT
normalises after each block, so a head's write is not additive downstream) and wherever
the bridge refuses ``use_split_qkv_input``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from headgraph.errors import UnsupportedArchitectureError
from headgraph.ingest.evidence.controls import CONTROLS, null_shares
from headgraph.ingest.evidence.probes import Probe, ProbeBatch
from headgraph.ingest.evidence.roles import RoleAccumulator, detection_patterns
from headgraph.ingest.evidence.runnable import RunnableModel

Hook = tuple[str, Callable[..., torch.Tensor | None]]
Edit = Callable[[torch.Tensor], torch.Tensor | None]  # one replica's slice -> new or None
MAX_PATTERN_ELEMENTS = 64_000_000  # n * H * T * T per chunk: ~256 MB of fp32 patterns
CACHE_BYTES = 1 << 30
"""The clean pass caches each block's input and every source's write (so interventions
resume at their layer) when they fit this; else every intervention runs the whole model."""


class _Stop(Exception):
    """Ends a forward pass at the final residual (or an encoder's last block output)."""

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
class SourceRef:
    """A writer into the residual stream that Q/K/V edges start from: a head, ``MLP{l}``,
    ``EMBED`` or ``POS_EMBED``; ``hook`` is where its write is read."""

    name: str

    @property
    def head(self) -> HeadRef | None:
        return HeadRef.parse(self.name) if self.name.startswith("L") else None

    @property
    def layer(self) -> int:
        """The layer whose heads it feeds first minus one (-1 for embeddings)."""
        if self.name.startswith("L"):
            return HeadRef.parse(self.name).layer
        if self.name.startswith("MLP"):
            return int(self.name[3:])
        return -1

    @property
    def hook(self) -> str:
        if self.name.startswith("L"):
            return f"blocks.{self.layer}.attn.hook_z"
        if self.name.startswith("MLP"):
            return f"blocks.{self.layer}.hook_mlp_out"
        return "hook_embed" if self.name == "EMBED" else "hook_pos_embed"


@dataclass
class CleanRun:
    """The unintervened pass: role scores ``{metric: [L, H]}``, per-position means of every
    source's write (``z`` per layer ``[T_max, H, d_head]``; MLP, embedding ``[T_max, d]``),
    the clean metric (``None`` when the probe has none), and per-chunk caches (keys
    ``(chunk, layer)`` or ``(chunk, hook)``): each layer's attention scores (grouped-query
    path patching restores them), every source's write (path patching's ``w_s``), each
    block's input residual and the blocks' other arguments (an intervention at layer ``l``
    resumes the forward pass there, :meth:`ProbeRunner.effects`)."""

    role_scores: dict[str, torch.Tensor]
    means: dict[str, torch.Tensor]  # source hook name -> mean activation per position
    metric: float | None
    scores: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)
    writes: dict[tuple[int, str], torch.Tensor] = field(default_factory=dict)
    resid: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)
    block_args: dict[int, tuple[tuple, dict]] = field(default_factory=dict)
    resumable: bool = False
    notes: list[str] = field(default_factory=list)

    def mean(self, hook: str, architecture: str) -> torch.Tensor:
        found = self.means.get(hook)
        if found is None:
            raise UnsupportedArchitectureError(
                f"{architecture}: the bridge exposes no {hook}, so that write cannot be "
                "ablated or patched; probe this model with attribution only.")
        return found

    def head_mean_z(self, head: HeadRef, architecture: str) -> torch.Tensor:
        """``z̄_h [T_max, d_head]``."""
        return self.mean(f"blocks.{head.layer}.attn.hook_z", architecture)[:, head.head]


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


def _layer(hook: object) -> int:
    return int(hook.name.split(".")[1])  # type: ignore[attr-defined]


class ProbeRunner:
    """Runs one probe through one model: the clean pass, then interventions, many per
    forward pass.

    ``metric_name`` is ``"loss"`` (causal LMs) or ``"embed"`` (encoders), ``None`` for a
    probe without a task metric (``duplicate``, ``random``).
    """

    def __init__(self, model: RunnableModel, probe: Probe, *, max_tokens: int = 8192) -> None:
        self.model = model
        self.probe = probe
        self.max_tokens = max_tokens
        self.chunks = chunks(probe, model.n_heads, max_tokens)
        self.metric_name: str | None = None
        if probe.causal:
            self.metric_name = "loss" if model.causal_lm else "embed"
        self._clean_embeds: list[torch.Tensor] = []
        self._clean: CleanRun | None = None
        self.forward_passes = 0
        self.grouped = model.n_kv_heads < model.n_heads

    # Forward passes --------------------------------------------------------------------

    def final_residual(self, tokens: torch.Tensor, hooks: list[Hook]) -> torch.Tensor:
        """The residual entering the final norm (causal LMs) or the last block's output
        (encoders): the pass stops there, so no vocabulary-sized logits are formed."""
        bridge = self.model.bridge
        self.forward_passes += 1
        where = "ln_final.hook_in" if self.model.causal_lm else \
            f"blocks.{self.model.n_layers - 1}.hook_out"

        def grab(x: torch.Tensor, hook: object) -> None:
            raise _Stop(x)

        try:
            bridge.run_with_hooks(tokens, fwd_hooks=[*hooks, (where, grab)])
        except _Stop as stop:
            return stop.hidden
        raise RuntimeError(f"the forward pass did not reach {where}")

    def loss_sums(self, x: torch.Tensor, batch: ProbeBatch, replicas: int = 1
                  ) -> tuple[torch.Tensor, int]:
        """Summed next-token cross-entropy per replica ``[replicas]`` over the loss
        positions, and their count per replica; only those positions are unembedded."""
        bridge = self.model.bridge
        n = batch.tokens.shape[0]
        mask = batch.loss_mask[:, :-1]  # [n, T-1]
        targets = batch.tokens[:, 1:][mask]
        x = x.view(replicas, n, *x.shape[1:])[:, :, :-1][:, mask]  # [r, m, d]
        logits = bridge.unembed(bridge.ln_final(x))  # [r, m, V]
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        ce = F.cross_entropy(logits.flatten(0, 1), targets.repeat(replicas),
                             reduction="none").view(replicas, -1)
        return ce.sum(dim=1), int(mask.sum())

    def _embed_sums(self, i: int, x: torch.Tensor, replicas: int) -> tuple[torch.Tensor, int]:
        pooled = x.to(torch.promote_types(x.dtype, torch.float32)).mean(dim=1)  # [r n, d]
        if len(self._clean_embeds) <= i:
            self._clean_embeds.append(pooled)
        n = self._clean_embeds[i].shape[0]
        cos = F.cosine_similarity(pooled.view(replicas, n, -1), self._clean_embeds[i][None],
                                  dim=-1)
        return (1 - cos).sum(dim=1), n

    def _sums(self, i: int, x: torch.Tensor, batch: ProbeBatch, replicas: int
              ) -> tuple[torch.Tensor, int]:
        if self.metric_name == "loss":
            return self.loss_sums(x, batch, replicas)
        return self._embed_sums(i, x, replicas)

    # The clean pass ------------------------------------------------------------------

    def clean(self) -> CleanRun:
        """Role scores, per-position mean writes, the clean metric and the per-chunk caches
        (:class:`CleanRun`), in one pass per chunk; then the roles' nulls, one controlled
        pass per chunk and control (:mod:`headgraph.ingest.evidence.controls`)."""
        if self._clean is not None:
            return self._clean
        L, H = self.model.n_layers, self.model.n_heads
        roles = RoleAccumulator(L, H)
        T_max = max(int(c.tokens.shape[1]) for c in self.chunks)
        sums: dict[str, torch.Tensor] = {}
        count = torch.zeros(T_max, dtype=torch.float64)
        run = CleanRun({}, {}, None)
        total, n = 0.0, 0
        names = self.model.source_hooks()
        causal = self.metric_name is not None
        tokens = sum(int(c.tokens.numel()) for c in self.chunks)
        d = int(self.model.bridge.cfg.d_model)
        cache = causal and 4 * tokens * d * (2 * L + 2) <= CACHE_BYTES
        finals: list[torch.Tensor] = []
        blocks = self.model.bridge.blocks
        for i, batch in enumerate(self.chunks):
            patterns = detection_patterns(batch.tokens)
            roles.start_batch(patterns)
            T = int(batch.tokens.shape[1])
            count[:T] += batch.tokens.shape[0]

            def on_pattern(x: torch.Tensor, hook: object, _p=patterns) -> None:
                roles.add(_layer(hook), x, _p)

            def on_write(x: torch.Tensor, hook: object, _T=T, _i=i) -> None:
                name = hook.name  # type: ignore[attr-defined]
                part = x.detach().double().sum(0)  # [T, ...]
                if name not in sums:
                    sums[name] = torch.zeros((T_max, *part.shape[1:]), dtype=torch.float64)
                sums[name][:_T] += part
                if causal:
                    run.writes[(_i, name)] = x.detach().clone()

            def on_scores(x: torch.Tensor, hook: object, _i=i) -> None:
                run.scores[(_i, _layer(hook))] = x.detach().clone()

            def on_resid(x: torch.Tensor, hook: object, _i=i) -> None:
                run.resid[(_i, _layer(hook))] = x.detach().clone()

            def on_args(module: object, args: tuple, kwargs: dict, _i=i) -> None:
                run.block_args[_i] = (args[1:], kwargs)

            hooks: list[Hook] = [(name, on_write) for name in names]
            for layer in range(L):
                hooks.append((f"blocks.{layer}.attn.hook_pattern", on_pattern))
                if self.grouped and causal:
                    hooks.append((f"blocks.{layer}.attn.hook_attn_scores", on_scores))
                if cache:
                    hooks.append((f"blocks.{layer}.hook_in", on_resid))
            handle = blocks[0].register_forward_pre_hook(on_args, with_kwargs=True) \
                if cache else None
            try:
                with torch.inference_mode():
                    x = self.final_residual(batch.tokens, hooks)
                    if causal:
                        s, c = self._sums(i, x, batch, 1)
                        total, n = total + float(s[0]), n + c
            finally:
                if handle is not None:
                    handle.remove()
            if cache and i == 0:
                finals.append(x.detach().clone())
        run.role_scores = roles.scores()
        nulls, run.notes = null_shares(
            self.chunks, self.model, [r for r in CONTROLS if roles.has_share(r)],
            self.final_residual)
        run.role_scores.update(nulls)
        run.means = {k: (v / count.clamp(min=1).view(-1, *[1] * (v.dim() - 1))).float()
                     for k, v in sums.items()}
        run.metric = total / max(n, 1) if causal else None
        self._clean = run
        if cache:
            run.resumable = self._check_resume(finals[0])
            if not run.resumable:
                run.resid.clear()
        return run

    def _check_resume(self, final: torch.Tensor) -> bool:
        """Whether running the last block from its cached input gives the clean final
        residual back (then interventions may resume at their layer)."""
        L = self.model.n_layers
        with torch.inference_mode():
            try:
                x = self._resume(0, L - 1, 1, [])
            except Exception:  # an architecture whose blocks cannot be called alone
                return False
        scale = float(final.abs().max()) or 1.0
        return bool(x.shape == final.shape and float((x - final).abs().max()) <= 1e-4 * scale)

    def _resume(self, chunk: int, start: int, replicas: int, hooks: list[Hook]
                ) -> torch.Tensor:
        """The final residual of ``replicas`` copies of chunk ``chunk``, computed from the
        cached input of block ``start`` on (blocks below it are clean, so not re-run)."""
        clean = self._clean
        assert clean is not None
        bridge = self.model.bridge
        n = int(self.chunks[chunk].tokens.shape[0])
        args, kwargs = clean.block_args[chunk]

        def widen(v):
            if isinstance(v, torch.Tensor) and v.dim() > 1 and v.shape[0] == n and n > 1:
                return v.repeat(replicas, *[1] * (v.dim() - 1))
            if isinstance(v, tuple):
                return tuple(widen(u) for u in v)
            return v

        args = tuple(widen(a) for a in args)
        kwargs = {k: widen(v) for k, v in kwargs.items()}
        x = clean.resid[(chunk, start)].repeat(replicas, 1, 1)
        self.forward_passes += 1
        with bridge.hooks(fwd_hooks=hooks):
            for layer in range(start, self.model.n_layers):
                out = bridge.blocks[layer](x, *args, **kwargs)
                x = out[0] if isinstance(out, tuple) else out
        return x

    # Interventions, many per pass ----------------------------------------------------

    def effects(self, interventions: Sequence[Intervention]) -> list[float]:
        """``M(intervened) - M(clean)`` over the whole probe for each intervention; as many
        interventions share a forward pass as fit ``max_tokens`` (each on its own copy of
        the chunk along the batch dimension)."""
        clean = self.clean()
        if clean.metric is None:
            raise ValueError(f"probe {self.probe.name} has no metric")
        if not interventions:
            return []
        order = sorted(range(len(interventions)), key=lambda j: interventions[j].start)
        totals = torch.zeros(len(interventions), dtype=torch.float64)
        n_total = 0
        for i, batch in enumerate(self.chunks):
            n, T = batch.tokens.shape
            per_pass = max(1, self.max_tokens // (n * T))
            for first in range(0, len(order), per_pass):
                group = order[first:first + per_pass]
                hooks = _combine([interventions[j].edits(_Ctx(i, T, n, clean)) for j in group], n)
                with torch.inference_mode():
                    if clean.resumable:
                        start = min(interventions[j].start for j in group)
                        x = self._resume(i, start, len(group), hooks)
                    else:
                        x = self.final_residual(batch.tokens.repeat(len(group), 1), hooks)
                    s, count = self._sums(i, x, batch, len(group))
                totals[group] += s.double()
            n_total += count
        return (totals / max(n_total, 1) - clean.metric).tolist()

    def hooks(self, intervention: Intervention, chunk: int = 0) -> list[Hook]:
        """The hooks that apply ``intervention`` to chunk ``chunk`` in a plain forward pass
        (one copy of the chunk)."""
        n, T = self.chunks[chunk].tokens.shape
        return _combine([intervention.edits(_Ctx(chunk, T, n, self.clean()))], n)

    def effect(self, intervention: Intervention) -> float:
        """One intervention's ``M(intervened) - M(clean)``."""
        return self.effects([intervention])[0]

    def ablate(self, head: HeadRef, mode: str, scale: float = 1.0) -> Intervention:
        """Replace ``z_h`` by 0 (``mode="zero"``) or by its per-position mean (``"mean"``);
        ``scale < 1`` moves it only that far (``z + scale (ẑ - z)``: the tests compare
        small steps with attribution patching's gradients)."""
        arch = self.model.architecture

        def make(ctx: _Ctx) -> list[tuple[str, Edit]]:
            mean_z = ctx.clean.head_mean_z(head, arch)[: ctx.T]  # [T, d_head]

            def edit(z: torch.Tensor) -> torch.Tensor:
                z = z.clone()
                ref = 0.0 if mode == "zero" else mean_z.to(z.dtype)
                z[:, :, head.head] += scale * (ref - z[:, :, head.head])
                return z

            return [(f"blocks.{head.layer}.attn.hook_z", edit)]

        return Intervention(head.layer, make)

    def patch_path(self, source: SourceRef | HeadRef, target: HeadRef, kind: str, mode: str,
                   scale: float = 1.0) -> Intervention:
        """Remove ``source``'s write (``mode`` zero) or swap in its mean write (``mean``)
        from the residual copy that ``target``'s ``kind`` (Q, K or V) projection reads,
        and from no other head's (see the module docstring for grouped-query attention);
        ``scale`` as for :meth:`ablate`."""
        src = SourceRef(source.name) if isinstance(source, HeadRef) else source
        if src.layer >= target.layer:
            raise ValueError(f"{src.name} cannot feed {target.name}")
        model, arch = self.model, self.model.architecture
        head = src.head
        W_O = None if head is None else model.bridge.W_O[head.layer, head.head].detach()
        group = model.n_heads // model.n_kv_heads
        slot = target.head if kind == "Q" or group == 1 else target.head // group
        siblings = [] if kind == "Q" or group == 1 else [
            h for h in range(slot * group, (slot + 1) * group) if h != target.head]

        def make(ctx: _Ctx) -> list[tuple[str, Edit]]:
            # the source is upstream of the patch, so its write is the clean run's
            w = ctx.clean.writes[(ctx.index, src.hook)]
            ref = None if mode == "zero" else ctx.clean.mean(src.hook, arch)[: ctx.T]
            if head is not None:
                z = w[:, :, head.head] - (0.0 if ref is None else ref[:, head.head].to(w.dtype))
                delta = z @ W_O.to(z.dtype)  # [n, T, d]
            else:
                delta = w if ref is None else w - ref.to(w.dtype)

            def remove(x: torch.Tensor) -> torch.Tensor:
                x = x.clone()
                x[:, :, slot] -= scale * delta.to(x.dtype)
                return x

            edits: list[tuple[str, Edit]] = [
                (f"blocks.{target.layer}.hook_{kind.lower()}_input", remove)]
            if siblings:  # the KV copy was patched: the other heads of its group see clean
                cached = ctx.clean.scores if kind == "K" else ctx.clean.writes
                name = "attn.hook_attn_scores" if kind == "K" else "attn.hook_z"
                clean = cached[(ctx.index, target.layer) if kind == "K"
                               else (ctx.index, f"blocks.{target.layer}.attn.hook_z")]

                def restore(y: torch.Tensor) -> torch.Tensor:
                    y = y.clone()
                    if kind == "K":
                        y[:, siblings] = clean[:, siblings].to(y.dtype)
                    else:
                        y[:, :, siblings] = clean[:, :, siblings].to(y.dtype)
                    return y

                edits.append((f"blocks.{target.layer}.{name}", restore))
            return edits

        return Intervention(target.layer, make)


@dataclass(frozen=True)
class _Ctx:
    """What an intervention sees of the chunk it edits."""

    index: int
    T: int
    n: int
    clean: CleanRun


@dataclass(frozen=True)
class Intervention:
    """For one chunk, the edits an intervention makes at each hook (on its own copy);
    ``start`` is the first layer it changes (the forward pass may resume there)."""

    start: int
    edits: Callable[[_Ctx], list[tuple[str, Edit]]]


def _combine(per_replica: list[list[tuple[str, Edit]]], n: int) -> list[Hook]:
    """One hook per hook point applying each replica's edits to its slice of the batch,
    in the order the interventions listed them."""
    by_name: dict[str, list[tuple[int, Edit]]] = {}
    for r, edits in enumerate(per_replica):
        for name, edit in edits:
            by_name.setdefault(name, []).append((r, edit))

    def make(edits: list[tuple[int, Edit]]) -> Callable[..., torch.Tensor | None]:
        def hook(x: torch.Tensor, hook: object) -> torch.Tensor | None:
            out = None
            for r, edit in edits:
                part = (out if out is not None else x)[r * n:(r + 1) * n]
                new = edit(part)
                if new is not None:
                    if out is None:
                        out = x.clone()
                    out[r * n:(r + 1) * n] = new
            return out

        return hook

    return [(name, make(edits)) for name, edits in by_name.items()]


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
