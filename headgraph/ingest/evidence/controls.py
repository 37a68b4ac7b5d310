"""The null of every attention role: the same head, on the same rows, with the role's
defining relation taken away.

A role share (:mod:`headgraph.ingest.evidence.roles`) says how much attention a query pays
to its target. On its own it cannot say *why*: a head that rests on the first token, attends
to the last few positions, or spreads its attention evenly pays some of it to any target. So
every share gets a *control*: the model is run again on the probe's sequences with the one
thing that defines the role's targets destroyed, and the head's attention to the *same*
positions (the detection pattern ``D`` of the real tokens) is measured there:

=================  ==========  ===========================================================
role               control     what is taken away
=================  ==========  ===========================================================
previous_token     positions   which key is the previous one: every position's encoding
first_token                    is moved to a random index (one permutation per sequence,
                               the first index included; the causal mask stays), so a
                               head that finds ``i - 1`` or ``0`` by its position
                               encoding cannot find it
induction          tokens      which keys hold copies: every ordinary token is redrawn
duplicate_token                uniformly from the ordinary ids (special tokens such as
                               BOS, CLS or SEP stay where they are), so the positions where
                               a copy was hold unrelated tokens
=================  ==========  ===========================================================

``<role>_null_share`` is the share on the control; a role is then read as the attention the
relation itself draws, ``<role>_share - <role>_null_share`` (the rules:
:data:`headgraph.queries.roles.ROLE_RULES`). Positions are moved by permuting, along the
sequence axis, what the model adds or rotates by position: the rotary ``cos``/``sin``
tables where the bridge exposes them (``rotary_emb.hook_cos``/``hook_sin``: Llama, Qwen,
SmolLM2) or the learned position embedding (``hook_pos_embed``: GPT-2, BERT). A model with
neither (GPT-J, whose rotary tables the bridge does not expose), or with more position
tables than these (a second, local rotary table), gets no positional null: its
previous/first-token roles stay on the fixed, uncalibrated thresholds, and the evidence
run says so.

What the positional control cannot take away is the causal order itself: index 0 is still
the only key its own query sees. A sink on the first token that comes from being first,
not from the position encoding, keeps its attention in the control and plays no
``first_token`` role (docs/science.md, "Roles").

Both controls are seeded per sequence (:data:`SEED` and the sequence's place in the
probe), so a probe's nulls regenerate bit for bit however it is cut into chunks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from headgraph.ingest.evidence.probes import ProbeBatch, Vocab
from headgraph.ingest.evidence.roles import RoleAccumulator, detection_patterns
from headgraph.ingest.evidence.runnable import RunnableModel

SEED = 20231207
CONTROLS: dict[str, str] = {
    "previous_token": "positions",
    "first_token": "positions",
    "induction": "tokens",
    "duplicate_token": "tokens",
}
"""role -> the control whose share is the role's null (module docstring)."""

_ROTARY = ("rotary_emb.hook_cos", "rotary_emb.hook_sin")


class ControlError(RuntimeError):
    """A position table of a shape the positional control does not know."""


def generators(first: int, n: int, control: str) -> list[torch.Generator]:
    """One seeded generator per sequence ``first .. first + n - 1`` of a probe (so a null
    does not depend on how the probe is cut into chunks)."""
    offset = SEED + (control == "tokens") * 1_000_003
    return [torch.Generator().manual_seed(offset + 2 * (first + k)) for k in range(n)]


def redrawn_tokens(tokens: torch.Tensor, vocab: Vocab, gens: list[torch.Generator]
                   ) -> torch.Tensor:
    """``tokens [n, T]`` with every ordinary token redrawn uniformly from the model's
    ordinary ids (sequence ``k`` from ``gens[k]``); special tokens (BOS, CLS, SEP, ...: any
    id that is not ordinary) stay where they are."""
    T = int(tokens.shape[1])
    idx = torch.stack([torch.randint(0, len(vocab.ordinary), (T,), generator=g) for g in gens])
    out = vocab.ordinary[idx].to(tokens.dtype)
    special = ~torch.isin(tokens, vocab.ordinary)
    out[special] = tokens[special]
    return out


def permutations(T: int, gens: list[torch.Generator]) -> torch.Tensor:
    """``[n, T]``: a random order of the ``T`` positions per sequence."""
    return torch.stack([torch.randperm(T, generator=g) for g in gens])


def position_hooks(hook_names: set[str] | dict, positional: str, perms: torch.Tensor
                   ) -> list[tuple[str, Callable[..., torch.Tensor]]] | None:
    """Hooks that give token ``i`` of sequence ``k`` the encoding of position
    ``perms[k, i]`` (``perms [n, T]``), or ``None`` where the bridge exposes no positional
    input.

    ``positional`` is the bridge's ``positional_embedding_type`` (``"rotary"`` reads the
    ``cos``/``sin`` tables, anything else the learned ``hook_pos_embed``). The tables may
    come once for the batch (``[1, T, ...]``); they are widened to one per sequence. A
    table of another shape raises :class:`ControlError` when the model runs."""
    others = [n for n in hook_names if "rotary" in n and n.endswith(("hook_cos", "hook_sin"))
              and not n.startswith("blocks.") and n not in _ROTARY]
    if others:
        return None  # a second rotary table (e.g. local attention): a partial shuffle
    if positional == "rotary":
        names = [n for n in _ROTARY if n in hook_names]
        if len(names) != 2:
            return None
    elif "hook_pos_embed" in hook_names:
        names = ["hook_pos_embed"]
    else:
        return None
    n, T = perms.shape

    def shuffle(x: torch.Tensor, hook: object) -> torch.Tensor:
        if x.dim() == 2:
            x = x[None]
        if x.dim() != 3 or x.shape[1] != T or x.shape[0] not in (1, n):
            raise ControlError(f"{hook.name} has shape {tuple(x.shape)}, not "  # type: ignore[attr-defined]
                               f"[batch, {T}, width]")
        index = perms.to(x.device)[:, :, None].expand(n, T, x.shape[2])
        return torch.gather(x.expand(n, T, x.shape[2]), 1, index)

    return [(name, shuffle) for name in names]


def null_shares(chunks: Sequence[ProbeBatch], model: RunnableModel, roles: Sequence[str],
                forward: Callable[[torch.Tensor, list], object]
                ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """``{"<role>_null_share": [L, H]}`` for each of ``roles`` (those whose share the
    probe stores), from one controlled pass per chunk and control, and the notes of nulls
    that could not be made. ``forward(tokens, hooks)`` runs the model (the caller's pass,
    which stops before the logits)."""
    bridge = model.bridge
    positional = str(getattr(bridge.cfg, "positional_embedding_type", "standard"))
    out: dict[str, torch.Tensor] = {}
    notes: list[str] = []
    for control in ("positions", "tokens"):
        mine = [r for r in roles if CONTROLS[r] == control]
        if not mine:
            continue
        acc = RoleAccumulator(model.n_layers, model.n_heads)
        first = 0
        for batch in chunks:
            patterns = {r: D for r, D in detection_patterns(batch.tokens).items() if r in mine}
            n, T = (int(x) for x in batch.tokens.shape)
            gens = generators(first, n, control)
            first += n
            tokens, hooks = batch.tokens, []
            if control == "tokens":
                tokens = redrawn_tokens(batch.tokens, model.vocab, gens)
            else:
                found = position_hooks(bridge.hook_dict, positional, permutations(T, gens))
                if found is None:
                    notes.append(_no_null(model, mine, "the bridge exposes no position "
                                          "table that can be shuffled whole"))
                    break
                hooks = found
            acc.start_batch(patterns)

            def on_pattern(x: torch.Tensor, hook: object, _p=patterns, _a=acc) -> None:
                _a.add(int(hook.name.split(".")[1]), x, _p)  # type: ignore[attr-defined]

            hooks = [*hooks, *((f"blocks.{layer}.attn.hook_pattern", on_pattern)
                               for layer in range(model.n_layers))]
            try:
                with torch.inference_mode():
                    forward(tokens, hooks)
            except ControlError as exc:
                notes.append(_no_null(model, mine, str(exc)))
                break
        else:
            shares = acc.scores()
            out.update({f"{r}_null_share": shares[f"{r}_share"] for r in mine
                        if f"{r}_share" in shares})
    return out, notes


def _no_null(model: RunnableModel, roles: list[str], why: str) -> str:
    return (f"{model.architecture}: {why}, so {' and '.join(roles)} have no null; their "
            "roles use the fixed (uncalibrated) thresholds.")
