"""A model summary (:mod:`headgraph.queries.summary`) as plain text lines. It reads the
summary's records by their fields and imports nothing of :mod:`~headgraph.queries.summary`
(which imports it)."""

from __future__ import annotations

from typing import Any

HeadFinding = EdgeFinding = ModelSummary = Any

ROLE_TITLES = {"previous_token": "Previous-token heads", "induction": "Induction heads",
               "duplicate_token": "Duplicate-token heads", "copying": "Copying heads"}


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _heads(title: str, found: tuple[HeadFinding, ...], total: int, gqa: bool) -> list[str]:
    if not found:
        return [f"{title}: none"]
    shown = ", ".join(f"{h.node} {h.value:.2f}"
                      + (f"/{h.null:.2f}" if h.null is not None else "")
                      + (f" (kv {h.kv_head})" if gqa else "") for h in found)
    more = f" (strongest {len(found)} of {total})" if total > len(found) else f" ({total})"
    metric = found[0].metric + ("/null" if found[0].null is not None else "")
    probes = sorted({h.probe for h in found if h.probe})
    where = f" on {', '.join(probes)}" if probes else ""
    return [f"{title}{more}, by {metric}{where}: {shown}"]


def _edge(e: EdgeFinding, gqa: bool) -> str:
    z = "z -" if e.z is None else f"z {e.z:.1f}"
    place = f", {_ordinal(e.z_rank)} of its K-feeders by z" if e.z_rank else ""
    kv = f", kv head {e.kv_head}" if gqa and e.kv_head is not None else ""
    patch = "".join(f"; {x.metric} {x.value:.2f} nats" for x in e.evidence
                    if x.metric == "path_zero_dloss")
    return f"  {e.source} -> {e.target}  {z} (score {e.score:.3f}{place}{kv}){patch}"


def summary_lines(s: ModelSummary) -> list[str]:
    m = s.model
    gqa = m.n_kv_heads < m.n_heads
    shape = (f"{m.architecture}, {m.n_layers} layers x {m.n_heads} heads"
             + (f" ({m.n_kv_heads} key/value heads)" if gqa else ""))
    out = [f"{m.name} ({shape})"]
    if s.structural_null is not None:
        k = [c for c in s.structural_null.calibration if c.kind == "K" and
             c.family == "head->head"]
        phi = f"; K overdispersion phi {k[0].phi:.2f}" if k else ""
        out.append(f"z: above what the model's structure explains (bands "
                   f"{s.structural_null.bands}{phi})")
    out.append(f"evidence: {', '.join(s.probes)}" if s.probes else "evidence: none stored")
    out.append("")
    out += _heads(ROLE_TITLES["previous_token"], s.previous_token, s.count("previous_token"),
                  gqa)
    out += _heads(ROLE_TITLES["induction"], s.induction, s.count("induction"), gqa)
    if s.induction_keys:
        out.append("Keys of the induction heads (K-composition from previous-token heads):")
        out += [_edge(e, gqa) for e in s.induction_keys]
    out += _heads(ROLE_TITLES["duplicate_token"], s.duplicate_token, s.count("duplicate_token"),
                  gqa)
    out += _heads(ROLE_TITLES["copying"], s.copying, s.count("copying"), gqa)
    if s.strongest_k:
        out.append("Strongest K-composition between heads (weights alone):")
        out += [_edge(e, gqa) for e in s.strongest_k]
    if s.virtual_heads:
        out.append("Strongest virtual heads (V-chains): " + ", ".join(
            f"{' -> '.join(v.heads)} {v.score:.3f}"
            + ("" if v.copying_ratio is None else f" (copying {v.copying_ratio:.2f})")
            for v in s.virtual_heads))
    out.append("")
    if s.disagreements:
        out.append("Where weights and evidence disagree:")
        for d in s.disagreements:
            out.append(f"  {d.subject}: weights: {d.weights}; evidence: {d.evidence}")
    elif s.probes and s.structural_null is not None:
        out.append("Weights and evidence agree on the findings above.")
    out += [f"note: {n}" for n in s.notes]
    return out
