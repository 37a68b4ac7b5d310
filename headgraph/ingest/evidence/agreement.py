"""How well the estimates agree with the exact measurements, per model and probe.

Wherever a head (or an edge) has both an estimate (``attrib_*``, ``ig_*``;
:mod:`headgraph.schema.metrics`) and the exact number of the same quantity, the pair
counts. Over those ``n`` pairs, for each quantity and method:

* ``spearman``: the rank correlation of estimate and exact value (ties share their mean
  rank; ``NULL`` for ``n < 3``);
* ``overlap``: how many of the ``k = min(10, n)`` largest by ``|estimate|`` are among the
  ``k`` largest by ``|exact|``.

The exact numbers usually exist only where attribution pointed (the top heads and edges
it found), so ``n`` says what the statistics cover: over a confirmed top-10 they say how
the estimate ranks the heads that matter; with every head measured exactly
(``headgraph probe --exact-heads all``) they cover the model. Rows are recomputed from the
stored evidence whenever a probe's evidence is written, so confirmations added later by
``headgraph probe`` count.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from sqlalchemy import Connection, and_, delete, insert, select

from headgraph.schema import tables as t
from headgraph.schema.metrics import APPROXIMATIONS, quantity_of

TOP_K = 10
NODE_QUANTITIES = ("ablation_zero_dloss", "ablation_mean_dloss", "ablation_zero_dembed",
                   "ablation_mean_dembed")
EDGE_QUANTITIES = ("path_zero_dloss", "path_mean_dloss")


@dataclass(frozen=True)
class Agreement:
    """One ``evidence_agreement`` row (without the model id)."""

    probe: str
    quantity: str
    method: str
    n: int
    spearman: float | None
    k: int
    overlap: int


def ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties sharing their mean rank."""
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], len(x)]
    out = np.empty(len(x))
    for a, b in zip(starts, ends, strict=True):
        out[order[a:b]] = (a + b + 1) / 2
    return out


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman's rank correlation (``None`` for fewer than 3 pairs or a constant side)."""
    if len(a) < 3:
        return None
    ra, rb = ranks(np.asarray(a, float)), ranks(np.asarray(b, float))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / den) if den > 0 else None


def agreement(probe: str, quantity: str, method: str, estimate: np.ndarray,
              exact: np.ndarray) -> Agreement:
    """The statistics of one (quantity, method) over paired values."""
    n = len(exact)
    k = min(TOP_K, n)
    top_est = set(np.argsort(-np.abs(estimate), kind="stable")[:k].tolist())
    top_exact = set(np.argsort(-np.abs(exact), kind="stable")[:k].tolist())
    return Agreement(probe, quantity, method, n, spearman(estimate, exact), k,
                     len(top_est & top_exact))


def _pairs(conn: Connection, table, keys: list[str], model_id: int, probe: str,
           estimate: str, exact: str) -> tuple[np.ndarray, np.ndarray]:
    a, e = table.alias("a"), table.alias("e")
    on = and_(*(a.c[k] == e.c[k] for k in ["model_id", "probe", *keys]))
    rows = conn.execute(select(a.c.value, e.c.value.label("exact")).select_from(a.join(e, on))
                        .where(and_(a.c.model_id == model_id, a.c.probe == probe,
                                    a.c.metric == estimate, e.c.metric == exact))).all()
    return (np.asarray([r[0] for r in rows], float), np.asarray([r[1] for r in rows], float))


def measure(conn: Connection, model_id: int, probe: str) -> list[Agreement]:
    """The agreement of every stored estimate with the stored exact numbers of ``probe``."""
    out = []
    for table, keys, quantities in ((t.node_scores, ["node"], NODE_QUANTITIES),
                                    (t.edge_scores, ["source", "target", "kind"],
                                     EDGE_QUANTITIES)):
        for quantity in quantities:
            for method, prefix in APPROXIMATIONS.items():
                est, exact = _pairs(conn, table, keys, model_id, probe, prefix + quantity,
                                    quantity)
                if len(exact):
                    out.append(agreement(probe, quantity_of(prefix + quantity), method, est,
                                         exact))
    return out


def refresh_agreement(conn: Connection, model_id: int, probes: Iterable[str]
                      ) -> list[Agreement]:
    """Recompute and replace the model's agreement rows of ``probes`` (caller's
    transaction); returns them."""
    found: list[Agreement] = []
    for probe in probes:
        conn.execute(delete(t.evidence_agreement).where(and_(
            t.evidence_agreement.c.model_id == model_id,
            t.evidence_agreement.c.probe == probe)))
        rows = measure(conn, model_id, probe)
        if rows:
            conn.execute(insert(t.evidence_agreement), [
                {"model_id": model_id, **r.__dict__} for r in rows])
        found += rows
    return found
