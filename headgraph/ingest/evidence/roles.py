"""Role scores of attention heads, read from their attention patterns on a probe.

The definitions are TransformerLens's ``head_detector`` (``error_measure="mul"``,
``exclude_bos=False``, ``exclude_current_token=False``), batched. For one sequence of
length ``T`` with attention pattern ``P [T, T]`` (rows are queries) and a 0/1
lower-triangular *detection pattern* ``D``:

    score(P, D) = sum_ij P_ij D_ij / sum_ij P_ij            (sum_ij P_ij = T)

and a head's ``<role>_score`` is the mean of ``score`` over the probe's sequences (as
``detect_head`` averages over a list of prompts). The detection patterns, for tokens ``t``:

=================  ===================================================================
role               ``D_ij = 1`` where
=================  ===================================================================
previous_token     ``j = i - 1``
duplicate_token    ``j < i`` and ``t_j = t_i`` (an earlier copy of the query's token)
induction          ``1 <= j <= i`` and ``t_{j-1} = t_i`` (the token after an earlier copy;
                   TransformerLens's duplicate pattern rolled one column right)
first_token        ``j = 0 < i`` (headgraph's own, same form; not in head_detector)
=================  ===================================================================

Two more patterns are measured for ``previous_token`` only, its *rivals*: attention to the
query itself (``j = i``) and to the token before the previous one (``j = i - 2``).
``previous_token_rival_share`` is the larger of their shares, so a head that spreads its
attention over the last few positions (a local head) is told from one that picks ``i - 1``.

``score`` cannot reach 1: only queries that *have* a target can score, so its ceiling is
the share of such rows (about 1/2 for induction on ``B x x``). Role labels therefore use
the probe-independent

    <role>_share = sum_seq sum_ij P_ij D_ij / sum_seq #{i : D_i. != 0}

the mean attention that a query with a target pays to its target(s); it is stored only
when at least :data:`MIN_TARGET_ROWS` query rows of the probe have a target. Each share
has a null, ``<role>_null_share``: the same head's share on the same rows with the role's
defining relation taken away (:mod:`headgraph.ingest.evidence.controls`).

Encoders attend both ways; the same lower-triangular ``D`` is used (as head_detector's
``tril`` does), so ``previous_token`` is attention to ``i - 1`` only (not ``i + 1``) and
``sum_ij P_ij = T`` still holds, because each row of ``P`` sums to 1 over all keys.
"""

from __future__ import annotations

import torch

ROLE_SCORES = ("previous_token", "duplicate_token", "induction", "first_token")
RIVALS = ("current_token", "second_previous_token")
"""The patterns whose larger share is ``previous_token_rival_share`` (module docstring)."""
MIN_TARGET_ROWS = 16


def detection_patterns(tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """The 0/1 detection patterns of a batch: ``tokens [n, T]`` -> ``{role: [n, T, T]}``
    (float, lower triangular), as defined in the module docstring, with the two
    :data:`RIVALS` of ``previous_token``."""
    n, T = tokens.shape
    below = torch.ones(T, T, dtype=torch.bool).tril(-1)  # j < i
    same = tokens[:, :, None] == tokens[:, None, :]  # [n, T, T]: t_i == t_j
    dup = same & below
    ind = torch.zeros_like(dup)
    ind[:, :, 1:] = dup[:, :, :-1]  # D_ind[i, j] = dup[i, j - 1]
    ind &= torch.ones(T, T, dtype=torch.bool).tril()
    prev = torch.zeros(T, T, dtype=torch.bool)
    prev[1:, :-1] = torch.eye(T - 1, dtype=torch.bool)
    first = torch.zeros(T, T, dtype=torch.bool)
    first[1:, 0] = True
    current = torch.zeros(T, T, dtype=torch.bool)
    current[1:, 1:] = torch.eye(T - 1, dtype=torch.bool)  # j = i, rows that have an i - 1
    second = torch.zeros(T, T, dtype=torch.bool)
    second[2:, :-2] = torch.eye(T - 2, dtype=torch.bool)  # j = i - 2
    return {
        "previous_token": prev.expand(n, T, T).float(),
        "duplicate_token": dup.float(),
        "induction": ind.float(),
        "first_token": first.expand(n, T, T).float(),
        "current_token": current.expand(n, T, T).float(),
        "second_previous_token": second.expand(n, T, T).float(),
    }


class RoleAccumulator:
    """Sums the role statistics of every head over the batches of one probe.

    ``add(layer, pattern, patterns)`` takes one layer's ``pattern [n, H, T, T]`` and the
    batch's detection patterns; :meth:`scores` returns ``{metric: [L, H]}`` tensors for
    ``<role>_score`` and (where defined) ``<role>_share``, and
    ``previous_token_rival_share``. Patterns of other names are ignored; a batch may bring
    a subset of them (the controls measure only the roles they are the null of).
    """

    def __init__(self, n_layers: int, n_heads: int) -> None:
        self.n_layers, self.n_heads = n_layers, n_heads
        names = (*ROLE_SCORES, *RIVALS)
        zeros = {r: torch.zeros(n_layers, n_heads, dtype=torch.float64) for r in names}
        self._score_sum = {r: z.clone() for r, z in zeros.items()}
        self._hit_sum = {r: z.clone() for r, z in zeros.items()}
        self._rows = dict.fromkeys(names, 0)
        self._seqs = 0

    def start_batch(self, patterns: dict[str, torch.Tensor]) -> None:
        """Count one batch's sequences and target rows (call once per batch)."""
        for role, D in patterns.items():
            self._rows[role] += int((D.sum(-1) > 0).sum())
        self._seqs += int(next(iter(patterns.values())).shape[0])

    def has_share(self, role: str) -> bool:
        """Whether enough query rows had a target for ``<role>_share`` to be stored."""
        return self._rows[role] >= MIN_TARGET_ROWS

    def add(self, layer: int, pattern: torch.Tensor, patterns: dict[str, torch.Tensor]) -> None:
        P = pattern.detach().double()  # [n, H, T, T]
        total = P.sum(dim=(-1, -2))  # [n, H]
        for role, D in patterns.items():
            hits = torch.einsum("nhij,nij->nh", P, D.double())  # [n, H]
            self._score_sum[role][layer] += (hits / total).sum(0)
            self._hit_sum[role][layer] += hits.sum(0)

    def scores(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for role in ROLE_SCORES:
            out[f"{role}_score"] = (self._score_sum[role] / max(self._seqs, 1)).float()
            if self.has_share(role):
                out[f"{role}_share"] = self._share(role)
        if "previous_token_share" in out and all(self.has_share(r) for r in RIVALS):
            out["previous_token_rival_share"] = torch.maximum(*(self._share(r) for r in RIVALS))
        return out

    def _share(self, name: str) -> torch.Tensor:
        return (self._hit_sum[name] / self._rows[name]).float()
