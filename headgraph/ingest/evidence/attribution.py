"""Attribution patching: every head's and every Q/K/V edge's effect, from gradients.

Exact ablation needs a forward pass per head and mode, path patching one per edge; the
first-order approximations below need one forward and one backward pass per probe batch
for *all* of them (Nanda 2023, attribution patching; Syed et al. 2023, edge attribution
patching, EAP). With ``M`` the probe's metric (mean next-token loss, see
:mod:`headgraph.ingest.evidence.causal`), ``a`` an activation of the clean run and ``â`` its
ablated value, ``M(â) - M(a) ≈ ∇_a M · (â - a)``:

* **node** ``attrib_ablation_{zero,mean}_dloss`` of head ``h``:
  ``Σ_{seq,pos} ∂M/∂z_h · (ẑ_h - z_h)``, with ``ẑ_h = 0`` or ``z̄_h`` (its per-position
  mean), estimating ``ablation_{zero,mean}_dloss``;
* **edge** ``attrib_path_{zero,mean}_dloss`` of ``s -> t`` of kind ``X`` in Q/K/V (EAP):
  ``-Σ_{seq,pos} <∂M/∂x_t^X, w_s - ŵ_s>``, the gradient at the residual copy that ``t``'s
  ``X`` projection reads (``hook_{q,k,v}_input``) times the source's write difference
  (a head's ``(z_s - ẑ_s) W_O^s``, an MLP's output, an embedding), estimating
  ``path_{zero,mean}_dloss``. Sources are every writer before ``t``: heads, MLPs, ``EMBED``
  and ``POS_EMBED``.

**Grouped-query attention.** The K and V input copies are one per *KV* head, so their
gradient sums what flows through every query head of the group. The part that flows
through query head ``h`` alone is split off exactly: at the rotated keys ``k``, the
gradient is ``Σ_h s ∂M/∂S_h^T q_h`` (``S_h`` the head's attention scores, ``s`` the
attention scale, found from the total and checked to 1e-3), and at the values
``Σ_h P_h^T ∂M/∂z_h`` (``P_h`` its pattern); each head's term is carried back to the KV
input copy through the projection (a vector-Jacobian product on the recorded graph).
A stored K/V number on ``s -> h`` is then the effect through ``h``'s own keys or values.

**EAP-IG** (Hanna et al. 2024; ``method="ig"``): the gradient is averaged over ``steps``
runs, ``α = (k + 1/2) / steps``, in which *every* source's write is shifted by
``α (â - a)`` at once (the forward pass goes on from the shifted writes): integrated
gradients along the path from the clean run toward all-ablated, stored as
``ig_ablation_*`` / ``ig_path_*``. The node numbers then share out the effect of ablating
everything, not single-head effects; they trade cost (``2 steps`` gradient passes) for
less of the first-order error where the loss is curved.

Encoders' ``embed`` metric is 0 with a zero gradient at the clean run (its minimum), so
attribution says nothing there; :mod:`.collect` measures them exactly instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from headgraph.ingest.evidence.causal import CleanRun, Hook, ProbeRunner, chunks
from headgraph.ingest.evidence.probes import ProbeBatch

ATTRIBUTION_BYTES = 256 << 20
"""Budget of one chunk's stacked source writes (``[sources, tokens, d_model]`` floats)."""
GQA_TOLERANCE = 1e-3
MODES = ("zero", "mean")


@dataclass
class Attribution:
    """Attributions of one probe: ``nodes[mode][head]`` and
    ``edges[mode][(source, target, kind)]``; ``method`` is ``attrib`` or ``ig``."""

    method: str
    nodes: dict[str, dict[str, float]] = field(default_factory=dict)
    edges: dict[str, dict[tuple[str, str, str], float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    passes: int = 0


@dataclass(frozen=True)
class _Source:
    name: str  # node name
    hook: str
    layer: int  # for heads and MLPs; -1 for embeddings
    head: int | None  # head index (heads only)
    position: int  # residual-stream position (docs/science.md)


def _sources(runner: ProbeRunner) -> list[_Source]:
    """Every writer of the model, in residual order (heads before their layer's MLP)."""
    model = runner.model
    parallel = bool(getattr(model.bridge.cfg, "parallel_attn_mlp", False))
    out = []
    for hook in model.source_hooks():
        if hook in ("hook_embed", "hook_pos_embed"):
            out.append(_Source("EMBED" if hook == "hook_embed" else "POS_EMBED", hook, -1,
                               None, -1))
            continue
        layer = int(hook.split(".")[1])
        if hook.endswith("hook_z"):
            out += [_Source(f"L{layer}H{h}", hook, layer, h, 2 * layer)
                    for h in range(model.n_heads)]
        else:
            out.append(_Source(f"MLP{layer}", hook, layer, None,
                               2 * layer if parallel else 2 * layer + 1))
    return out


def _reference(clean: CleanRun, hook: str, mode: str, T: int, like: torch.Tensor
               ) -> torch.Tensor:
    if mode == "zero":
        return torch.zeros_like(like)
    return clean.means[hook][:T].to(like.dtype).expand_as(like)


class _Pass:
    """One forward and backward pass of one chunk, with every activation attribution needs
    recorded. For EAP-IG, ``fixed`` holds the chunk's clean writes, and every source's
    write gets the offset ``α (reference - clean)`` (all at once; downstream writes are
    computed from the shifted ones, so gradients still reach every reader's input)."""

    def __init__(self, runner: ProbeRunner, batch: ProbeBatch, n_loss: int, *,
                 fixed: dict[str, torch.Tensor] | None = None, alpha: float = 0.0,
                 mode: str = "zero") -> None:
        self.runner, self.batch = runner, batch
        model = runner.model
        self.L, self.H = model.n_layers, model.n_heads
        self.group = model.n_heads // model.n_kv_heads
        clean = runner.clean()
        T = int(batch.tokens.shape[1])
        self.acts: dict[str, torch.Tensor] = {}
        self.clean_acts: dict[str, torch.Tensor] = {}
        self.consts: dict[str, torch.Tensor] = {}  # not differentiated: rotary cos/sin
        rotary = "blocks.0.attn.hook_rot_k" in model.bridge.hook_dict
        self.rotary = rotary

        def keep(x: torch.Tensor, hook: object) -> torch.Tensor:
            y = x.clone()  # returned, so the model goes on from it (see ``source``)
            self.acts[hook.name] = y  # type: ignore[attr-defined]
            return y

        def source(x: torch.Tensor, hook: object) -> torch.Tensor:
            name = hook.name  # type: ignore[attr-defined]
            if fixed is None:
                # a fresh tensor, returned: the bridge then computes on from it (some hook
                # points see a view of a tensor the model goes on with, whose gradient
                # would not reach the view)
                y = x.clone()
                self.acts[name] = self.clean_acts[name] = y
                return y
            base = fixed[name]  # the clean write; the model goes on computing from x
            y = x + alpha * (_reference(clean, name, mode, T, base) - base)
            self.acts[name], self.clean_acts[name] = y, base
            return y

        hooks: list[Hook] = [(h, source) for h in model.source_hooks()]
        self.q_name, self.k_name = ("hook_rot_q", "hook_rot_k") if rotary else \
            ("hook_q", "hook_k")
        for layer in range(1, self.L):
            hooks += [(f"blocks.{layer}.hook_{x}_input", keep) for x in "qkv"]
            if self.group > 1:
                hooks += [(f"blocks.{layer}.attn.{n}", keep) for n in dict.fromkeys(
                          ("hook_attn_scores", "hook_pattern", self.q_name, self.k_name,
                           "hook_k", "hook_v"))]
                if rotary:
                    hooks += [(f"blocks.{layer}.attn.hook_{n}", self._grab) for n in
                              ("cos", "sin")]
        with torch.enable_grad():
            x = runner.final_residual(batch.tokens, hooks)
            loss, _ = runner.loss_sums(x, batch)
            self.loss = loss[0] / n_loss  # this chunk's share of the probe's mean loss
            names = list(self.acts)
            grads = torch.autograd.grad(self.loss, [self.acts[n] for n in names],
                                        retain_graph=self.group > 1, allow_unused=True)
        self.grads = {n: (torch.zeros_like(self.acts[n]) if g is None else g.detach())
                      for n, g in zip(names, grads, strict=True)}

    def _grab(self, x: torch.Tensor, hook: object) -> None:
        self.consts[hook.name] = x.detach()  # type: ignore[attr-defined]

    def read_gradients(self, layer: int, kind: str) -> torch.Tensor:
        """``∂M/∂x_t^X`` per query head of ``layer``: ``[n, T, H, d_model]``."""
        name = f"blocks.{layer}.hook_{kind.lower()}_input"
        g = self.grads[name]
        if kind == "Q" or self.group == 1:
            return g.detach()
        return self._split(layer, kind, g)

    def _split(self, layer: int, kind: str, total: torch.Tensor) -> torch.Tensor:
        """The KV copy's gradient ``[n, T, kv, d]``, split into what flows through each
        query head ``[n, T, H, d]`` (module docstring). Each step is checked against the
        gradient autograd gives for the whole group."""
        a, g = self.acts, self.grads
        p = f"blocks.{layer}.attn."
        bridge = self.runner.model.bridge
        n, T, n_kv, d = total.shape
        G = self.group
        with torch.no_grad():
            if kind == "K":  # at the rotated keys: s * dS_h^T q_h
                per_head = torch.einsum("bhij,bihe->bjhe", g[p + "hook_attn_scores"],
                                        a[p + self.q_name].detach())
                want = g[p + self.k_name]
            else:  # at the values: P_h^T dz_h
                per_head = torch.einsum("bhij,bihe->bjhe", a[p + "hook_pattern"].detach(),
                                        g[p + "hook_z"])
                want = g[p + "hook_v"]
            dh = per_head.shape[-1]
            per_head = per_head.reshape(n, T, n_kv, G, dh)
            summed = per_head.sum(3)
            scale = float((want * summed).sum() / (summed * summed).sum().clamp_min(1e-30))
            _check(want, scale * summed, f"layer {layer} {kind}: per-head gradients")
            per_head = scale * per_head
            if kind == "K" and self.rotary:  # back through the rotation (adjoint)
                cos = self.consts[p + "hook_cos"].reshape(-1, T, 1, 1, dh)
                sin = self.consts[p + "hook_sin"].reshape(-1, T, 1, 1, dh)
                half = dh // 2
                rot = per_head * sin
                per_head = per_head * cos + torch.cat([rot[..., half:], -rot[..., :half]], -1)
                _check(g[p + "hook_k"], per_head.sum(3), f"layer {layer} K: rotary")
            W = (bridge.W_K if kind == "K" else bridge.W_V)[layer].detach()  # [kv, d, dh]
            normed = torch.einsum("btkge,kde->btkgd", per_head, W.to(per_head.dtype))
            # through the copy's own normalisation (the adjoint of its Jacobian)
            x = a[f"blocks.{layer}.hook_{kind.lower()}_input"].detach()
            out = _norm_adjoint(bridge, layer, x.unsqueeze(3), normed)  # [n, T, kv, G, d]
            out = out.reshape(n, T, self.H, d)  # query head kv * G + j reads KV head kv
        _check(total, out.view(n, T, n_kv, G, d).sum(3), f"layer {layer} {kind}: input copies")
        return out


def _norm_adjoint(bridge, layer: int, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``J^T g`` of the block's first norm at ``x`` (folded: no scale left): for RMSNorm
    ``y = x / r``, ``r = sqrt(mean(x^2) + eps)``, it is ``(g - y mean(g y)) / r``; for
    LayerNorm ``y = (x - mean x) / s`` it is ``(g - mean g - y mean(g y)) / s``."""
    cfg = bridge.cfg
    eps = float(getattr(cfg, "eps", 1e-5))
    weight = getattr(bridge.blocks[layer].ln1, "weight", None)
    if weight is not None:
        g = g * weight.detach().to(g.dtype)
    if str(getattr(cfg, "normalization_type", "LN")).startswith("RMS"):
        r = (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()
        y = x / r
        return (g - y * (g * y).mean(-1, keepdim=True)) / r
    xc = x - x.mean(-1, keepdim=True)
    s = (xc.pow(2).mean(-1, keepdim=True) + eps).sqrt()
    y = xc / s
    return (g - g.mean(-1, keepdim=True) - y * (g * y).mean(-1, keepdim=True)) / s


def _check(want: torch.Tensor, got: torch.Tensor, what: str) -> None:
    err = float((want - got).norm() / want.norm().clamp_min(1e-30))
    if err > GQA_TOLERANCE:
        raise _NotSplit(f"{what} miss autograd's total by {err:.1e}")


class _NotSplit(Exception):
    pass


def _clean_writes(runner: ProbeRunner, batch: ProbeBatch) -> dict[str, torch.Tensor]:
    """The chunk's clean source writes (EAP-IG interpolates from them)."""
    got: dict[str, torch.Tensor] = {}

    def grab(x: torch.Tensor, hook: object) -> None:
        got[hook.name] = x.detach().clone()  # type: ignore[attr-defined]

    with torch.inference_mode():
        runner.final_residual(batch.tokens, [(h, grab) for h in runner.model.source_hooks()])
    return {k: v.clone() for k, v in got.items()}  # out of inference mode


def attribute(runner: ProbeRunner, *, method: str = "attrib", steps: int = 5,
              edges: bool = True) -> Attribution:
    """Node and (with ``edges``) Q/K/V-edge attributions of every head for both ablation
    modes: one forward and backward pass per chunk (``method="attrib"``), or one clean
    pass and ``2 * steps`` gradient passes (``"ig"``). Edges need the bridge's split Q/K/V
    inputs on (:func:`~headgraph.ingest.evidence.causal.split_qkv_inputs`).

    With one gradient for both modes, the mean mode's write difference is the zero mode's
    minus the mean write, so ``EAP_mean = EAP_zero + Σ_pos <Σ_seq ∂M/∂x[pos], w̄[pos]>``:
    one contraction over every token, and one over positions."""
    model = runner.model
    clean = runner.clean()
    sources = _sources(runner)
    heads = [s for s in sources if s.head is not None]
    out = Attribution(method)
    H, d = model.n_heads, int(model.bridge.cfg.d_model)
    T_max = max(int(c.tokens.shape[1]) for c in runner.chunks)
    tokens = max(1, ATTRIBUTION_BYTES // (4 * d * max(1, len(sources))))
    parts = chunks(runner.probe, H, max(T_max, tokens))
    n_loss = sum(int(b.loss_mask[:, :-1].sum()) for b in parts)
    node_sum = {m: torch.zeros(len(heads), dtype=torch.float64) for m in MODES}
    kinds = ["Q", "K", "V"] if edges else []
    n_src = {layer: sum(s.position < 2 * layer for s in sources)
             for layer in range(1, model.n_layers)} if edges else {}
    edge_sum = {m: {layer: torch.zeros(n, 3 * H, dtype=torch.float64)
                    for layer, n in n_src.items()} for m in MODES}
    by_position = {layer: torch.zeros(T_max, 3 * H, d, dtype=torch.float64)
                   for layer in n_src}  # Σ_seq ∂M/∂x per position (the mean-mode term)
    runs = [(m, (k + 0.5) / steps) for m in MODES for k in range(steps)] \
        if method == "ig" else [(None, 0.0)]
    weight = 1.0 / steps if method == "ig" else 1.0
    for batch in parts:
        fixed = _clean_writes(runner, batch) if method == "ig" else None
        T = int(batch.tokens.shape[1])
        for mode, alpha in runs:
            p = _Pass(runner, batch, n_loss, fixed=fixed, alpha=alpha, mode=mode or "zero")
            out.passes += 1
            for m in MODES if mode is None else (mode,):
                _add_nodes(node_sum[m], p, clean, m, T, weight)
            if n_src:
                D = _writes(sources, p, clean, model, T, mode or "zero")  # [S, n T d]
            for layer, n in n_src.items():
                grads: dict[str, torch.Tensor] = {}
                for kind in kinds:
                    try:
                        grads[kind] = p.read_gradients(layer, kind)
                    except _NotSplit as exc:
                        out.notes.append(f"{runner.probe.name}: K and V edges are not "
                                         f"attributed ({exc}).")
                        kinds = ["Q"]
                        break
                zero = torch.zeros_like(grads["Q"])
                G = torch.stack([grads.get(k, zero) for k in "QKV"], 2).flatten(2, 3)
                score = -(D[:n] @ G.permute(2, 0, 1, 3).reshape(3 * H, -1).T).double()
                edge_sum[mode or "zero"][layer] += score * weight
                if mode is None:
                    edge_sum["mean"][layer] += score
                    by_position[layer][:T] += G.sum(0).double()
            del p
    if method != "ig" and n_src:
        means = _mean_writes(sources, clean, model, T_max)  # [S, T_max d]
        for layer, n in n_src.items():
            edge_sum["mean"][layer] += means[:n] @ by_position[layer].permute(1, 0, 2).reshape(
                3 * H, -1).T
    for m in MODES:
        out.nodes[m] = {s.name: float(v) for s, v in zip(heads, node_sum[m], strict=True)}
        out.edges[m] = {}
        for layer, values in edge_sum[m].items():
            for i, src in enumerate(sources[: values.shape[0]]):
                for k, kind in enumerate(kinds):
                    for h in range(H):
                        out.edges[m][(src.name, f"L{layer}H{h}", kind)] = \
                            float(values[i, k * H + h])
    return out


def _mean_writes(sources: list[_Source], clean: CleanRun, model, T: int) -> torch.Tensor:
    """Every source's mean write per position, ``[S, T d]`` in source order (float64)."""
    W_O = model.bridge.W_O.detach().double()
    rows = []
    for hook in dict.fromkeys(s.hook for s in sources):
        mean = clean.means[hook][:T].double()
        if hook.endswith("hook_z"):
            layer = int(hook.split(".")[1])
            rows.append(torch.einsum("the,hed->htd", mean, W_O[layer]).flatten(1))
        else:
            rows.append(mean.flatten()[None])
    return torch.cat(rows)


def _add_nodes(acc: torch.Tensor, p: _Pass, clean: CleanRun, mode: str, T: int,
               weight: float) -> None:
    """``Σ ∂M/∂z_h · (ẑ_h - z_h)`` per head into ``acc`` (heads in layer order)."""
    for layer in range(p.L):
        name = f"blocks.{layer}.attn.hook_z"
        z = p.clean_acts[name].detach()
        ref = _reference(clean, name, mode, T, z)
        acc[layer * p.H: (layer + 1) * p.H] += \
            (p.grads[name] * (ref - z)).sum(dim=(0, 1, 3)).double() * weight


def _writes(sources: list[_Source], p: _Pass, clean: CleanRun, model, T: int, mode: str
            ) -> torch.Tensor:
    """Every source's clean write minus its reference, ``[S, n T d]`` in source order."""
    W_O = model.bridge.W_O.detach()  # [L, H, d_head, d_model]
    rows = []
    for hook in dict.fromkeys(s.hook for s in sources):
        a = p.clean_acts[hook].detach()
        diff = a - _reference(clean, hook, mode, T, a)
        if hook.endswith("hook_z"):
            layer = int(hook.split(".")[1])
            rows.append(torch.einsum("bthe,hed->hbtd", diff, W_O[layer]).flatten(1))
        else:
            rows.append(diff.flatten()[None])
    return torch.cat(rows)
