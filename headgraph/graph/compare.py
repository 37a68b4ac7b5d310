"""Comparing the circuits of two models: head matching and graph diffs.

**Signatures.** Every head gets a vector that means the same thing in models of any shape:
its relative depth, its copying scores, its role scores (where evidence was stored), and a
summary of its composition profile — for each kind and direction, the largest and the mean
z of its in- and out-edges, and its z from the embeddings and into the unembedding. z, not
raw scores, because raw scores shrink with width (about ``1/sqrt(d_model)`` for noise) and
trained models share directions everywhere. z is the stored structural z (``edges.z``);
when either model was ingested before headgraph stored it, both are compared on the
Gaussian z ``(score - baseline) / null_std`` instead, and the comparison's note says so.

**Matching.** Features are standardised over the heads of both models together; the
similarity of two heads is ``1 / (1 + ‖a - b‖ / sqrt(n_features))`` (1 for identical
signatures); heads are paired one-to-one by an optimal assignment
(``scipy.optimize.linear_sum_assignment`` on the negated similarities), and pairs below
``min_similarity`` are left unmatched.

**Diff.** Under a matching, every edge of A is mapped to B's names and compared: edges whose
z crosses ``present_z`` appear or vanish, and all changes are ranked by ``|Δscore|``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from sqlalchemy import select

from headgraph.errors import BadInputError
from headgraph.queries.arrow import fetch_arrow
from headgraph.queries.models import get_model
from headgraph.queries.records import ModelRow
from headgraph.queries.session import GraphDB
from headgraph.queries.structural import z_column
from headgraph.schema.tables import edges, node_scores, nodes

KINDS = ("Q", "K", "V")


@dataclass(frozen=True)
class HeadMatch:
    a: str
    b: str
    similarity: float


@dataclass(frozen=True)
class EdgeChange:
    source_a: str
    target_a: str
    source_b: str
    target_b: str
    kind: str
    score_a: float | None
    score_b: float | None
    change: float
    status: str  # "appeared", "vanished", "changed"


@dataclass(frozen=True)
class Comparison:
    a: ModelRow
    b: ModelRow
    same_shape: bool
    note: str
    matches: tuple[HeadMatch, ...]
    unmatched_a: tuple[str, ...]
    unmatched_b: tuple[str, ...]
    features: tuple[str, ...]
    z_kind: str = "structural"  # which z the profiles and the diff use: or "gaussian"


@dataclass(frozen=True)
class _Profile:
    heads: list[str]
    features: dict[str, np.ndarray]


def _edge_table(db: GraphDB, model: ModelRow, z_kind: str):
    """The model's edges with their ``z`` of ``z_kind`` (0 where it has none)."""
    stmt = select(edges.c.source, edges.c.target, edges.c.kind, edges.c.score,
                  edges.c.baseline, edges.c.null_std, z_column(model.structural_z)
                  ).where(edges.c.model_id == model.model_id)
    e = fetch_arrow(db, stmt).to_pandas()
    if z_kind == "gaussian":
        std = e["null_std"].where(e["null_std"] > 0)
        e["z"] = (e["score"] - e["baseline"]) / std
    e["z"] = e["z"].astype(float).fillna(0.0)
    return e


def _z_kind(a: ModelRow, b: ModelRow) -> tuple[str, str]:
    """The z both models have, and what the note says about it."""
    if a.structural_z and b.structural_z:
        return "structural", ""
    old = ", ".join(m.name for m in (a, b) if not m.structural_z)
    return "gaussian", (f"; compared on the Gaussian z: {old} was ingested before headgraph "
                        "stored the structural z (re-ingest it with --replace)")


def _profile(db: GraphDB, model: ModelRow, z_kind: str) -> _Profile:
    rows = db.rows(select(nodes).where(nodes.c.model_id == model.model_id,
                                       nodes.c.kind == "head"))
    rows = sorted(rows, key=lambda r: (r["layer"], r["head"]))
    heads = [r["node"] for r in rows]
    idx = {h: i for i, h in enumerate(heads)}
    n = len(heads)
    depth = max(1, model.n_layers - 1)
    feats: dict[str, np.ndarray] = {
        "depth": np.asarray([r["layer"] / depth for r in rows], float),
        "copying_ratio": np.asarray([r["copying_ratio"] or 0.0 for r in rows], float),
        "copying_positive_fraction": np.asarray(
            [r["copying_positive_fraction"] or 0.0 for r in rows], float),
    }
    e = _edge_table(db, model, z_kind)
    for kind in (*KINDS, "MLP", "UNEMBED"):
        k = e[e["kind"] == kind]
        for direction, col in (("in", "target"), ("out", "source")):
            if kind in ("MLP", "UNEMBED") and direction == "in":
                continue  # heads are never read through these kinds
            g = k[k[col].isin(idx)].groupby(col)["z"]
            for stat, series in (("max", g.max()), ("mean", g.mean())):
                arr = np.zeros(n)
                for head, value in series.items():
                    arr[idx[head]] = value
                feats[f"{direction}:{kind}:{stat}"] = arr
    for source in ("EMBED", "POS_EMBED"):
        k = e[(e["source"] == source) & e["target"].isin(idx)]
        for kind in KINDS:
            arr = np.zeros(n)
            for head, value in k[k["kind"] == kind].set_index("target")["z"].items():
                arr[idx[head]] = value
            feats[f"{source}:{kind}"] = arr
    scores = db.rows(select(node_scores.c.node, node_scores.c.metric, node_scores.c.value)
                     .where(node_scores.c.model_id == model.model_id))
    for r in scores:
        if r["node"] in idx and not r["metric"].startswith("role:"):
            feats.setdefault(f"score:{r['metric']}", np.zeros(n))[idx[r["node"]]] = r["value"]
    return _Profile(heads, feats)


def match_heads(db: GraphDB, a: str, b: str, *, min_similarity: float = 0.0,
                by: str = "auto") -> Comparison:
    """Pair the heads of models ``a`` and ``b`` one-to-one.

    ``by="signature"`` pairs by signature similarity (optimal assignment); ``by="names"``
    pairs heads of the same name (checkpoints of one training run keep their heads'
    identity), still reporting each pair's similarity; ``"auto"`` uses names for two
    models of one family and shape, signatures otherwise.
    """
    if by not in ("auto", "names", "signature"):
        raise BadInputError(f"unknown matching {by!r}; use auto, names or signature.")
    model_a, model_b = get_model(db, a), get_model(db, b)
    z_kind, z_note = _z_kind(model_a, model_b)
    pa_, pb = _profile(db, model_a, z_kind), _profile(db, model_b, z_kind)
    names = sorted(set(pa_.features) & set(pb.features))
    dropped = sorted(set(pa_.features) ^ set(pb.features))
    fa = np.stack([pa_.features[f] for f in names], axis=1)
    fb = np.stack([pb.features[f] for f in names], axis=1)
    both = np.concatenate([fa, fb])
    mu, sd = both.mean(axis=0), both.std(axis=0)
    sd[sd == 0] = 1.0
    za, zb = (fa - mu) / sd, (fb - mu) / sd
    dist = np.sqrt(((za[:, None, :] - zb[None, :, :]) ** 2).sum(-1) / len(names))
    sim = 1.0 / (1.0 + dist)
    same = (model_a.n_layers, model_a.n_heads) == (model_b.n_layers, model_b.n_heads)
    if by == "auto":
        by = "names" if same and model_a.family and model_a.family == model_b.family \
            else "signature"
    if by == "names":
        index_b = {h: j for j, h in enumerate(pb.heads)}
        pairs = [(i, index_b[h]) for i, h in enumerate(pa_.heads) if h in index_b]
        rows, cols = (np.asarray([p[k] for p in pairs], int) for k in (0, 1))
    else:
        rows, cols = linear_sum_assignment(-sim)
    matches = [HeadMatch(pa_.heads[i], pb.heads[j], float(sim[i, j]))
               for i, j in zip(rows, cols, strict=True) if sim[i, j] >= min_similarity]
    matched_a = {m.a for m in matches}
    matched_b = {m.b for m in matches}
    note = f"same shape, heads matched by {by}" if same else (
        f"different shapes ({model_a.n_layers}x{model_a.n_heads} vs "
        f"{model_b.n_layers}x{model_b.n_heads}): heads are compared by relative depth and "
        "z-scored composition profiles; at most "
        f"{min(len(pa_.heads), len(pb.heads))} heads can be matched")
    note += z_note
    if dropped:
        note += f"; features only one model has were left out: {', '.join(dropped)}"
    matches.sort(key=lambda m: (-m.similarity, m.a))
    return Comparison(
        a=model_a, b=model_b, same_shape=same, note=note, matches=tuple(matches),
        unmatched_a=tuple(h for h in pa_.heads if h not in matched_a),
        unmatched_b=tuple(h for h in pb.heads if h not in matched_b),
        features=tuple(names), z_kind=z_kind,
    )


def diff_edges(db: GraphDB, comparison: Comparison, *, top: int = 20,
               kinds: tuple[str, ...] = KINDS, present_z: float = 3.0,
               heads_only: bool = True) -> list[EdgeChange]:
    """Edges that appear, vanish or change between the two models, largest ``|Δscore|``
    first. By default only head-to-head edges (the circuit between heads); with
    ``heads_only=False`` non-head nodes (EMBED, MLP3...) join, mapped to the same name
    where both models have it."""
    if top < 1:
        raise BadInputError("top must be at least 1.")
    mapping = {m.a: m.b for m in comparison.matches}
    ea = _edge_table(db, comparison.a, comparison.z_kind)
    eb = _edge_table(db, comparison.b, comparison.z_kind)
    names_b = set(eb["source"]) | set(eb["target"])
    if not heads_only:
        for name in set(ea["source"]) | set(ea["target"]):
            if name not in mapping and not name.startswith("L") and name in names_b:
                mapping[name] = name
    ea = ea[ea["kind"].isin(kinds) & ea["source"].isin(mapping) & ea["target"].isin(mapping)]
    ea = pd.DataFrame({"source_a": ea["source"], "target_a": ea["target"], "kind": ea["kind"],
                       "source_b": ea["source"].map(mapping),
                       "target_b": ea["target"].map(mapping),
                       "score_a": ea["score"], "z_a": ea["z"]})
    targets_b = set(mapping.values())
    eb = eb[eb["kind"].isin(kinds) & eb["source"].isin(targets_b) & eb["target"].isin(targets_b)]
    eb = pd.DataFrame({"source_b": eb["source"], "target_b": eb["target"], "kind": eb["kind"],
                       "score_b": eb["score"], "z_b": eb["z"]})
    merged = ea.merge(eb, how="outer", on=["source_b", "target_b", "kind"])
    inverse = {v: k for k, v in mapping.items()}
    missing = merged["source_a"].isna()
    merged.loc[missing, "source_a"] = merged.loc[missing, "source_b"].map(inverse)
    merged.loc[missing, "target_a"] = merged.loc[missing, "target_b"].map(inverse)
    merged["change"] = merged["score_b"].fillna(0.0) - merged["score_a"].fillna(0.0)
    merged = merged.reindex(merged["change"].abs().sort_values(ascending=False).index)[:top]
    out = []
    for r in merged.itertuples(index=False):
        za = r.z_a if r.z_a == r.z_a else float("-inf")
        zb = r.z_b if r.z_b == r.z_b else float("-inf")
        status = ("appeared" if za < present_z <= zb else
                  "vanished" if zb < present_z <= za else "changed")
        out.append(EdgeChange(
            source_a=r.source_a, target_a=r.target_a, source_b=r.source_b,
            target_b=r.target_b, kind=r.kind,
            score_a=None if r.score_a != r.score_a else float(r.score_a),
            score_b=None if r.score_b != r.score_b else float(r.score_b),
            change=float(r.change), status=status))
    return out
