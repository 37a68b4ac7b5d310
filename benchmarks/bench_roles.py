"""Attention roles against their null: how many heads each rule marks, read from a database.

For every pattern role of ``headgraph.queries.evidence.ROLE_RULES``: the heads that play it
by the rule (share above the same head's null, ``ROLE_MARGIN``), the heads the fixed share
threshold would mark on the same records (what headgraph did before nulls), the range of
the nulls of the heads that play it, and the largest share-above-null of any head (how far
the strongest head stands out). Per probe too, with ``--per-probe``. Also the weight roles
(fixed thresholds on ``copying_ratio``), for the counts.

With ``--copying-null SOURCE`` (the model's source, e.g. the GGUF path), two nulls of the
copying ratio ``Σλ/Σ|λ|`` of each head's core ``W_O (W_U W_E) W_V``, computed from the
model's own weights (the bridge, folded as the ingest reads them): the *untrained
initialisation* (Gaussian ``W_O``, ``W_V`` of the head's shapes with the model's own
readout; 4 draws per head) and *random orientation* (the readout rotated by a Haar
rotation of the residual, ``W_O U (W_U W_E) U^T W_V``; 8 draws), against the fixed 0.7.

usage: python benchmarks/bench_roles.py --db DB --model NAME [--per-probe] [--list]
                                        [--copying-null SOURCE]

The database needs the model's evidence (``headgraph ingest ... --probes default`` or
``headgraph probe``); ``--model toy`` with ``make demo``'s ``headgraph.duckdb`` works.
"""

from __future__ import annotations

import argparse

from headgraph.queries import evidence as ev
from headgraph.queries.models import get_model
from headgraph.queries.session import open_reader


def role_lines(db, model, probe: str | None, show: bool) -> list[str]:
    out = []
    for r in ev.ROLE_RULES:
        if r.from_weights:
            out.append(f"  {r.role:16s} {len(ev.heads_with_role(db, model, r.role)):4d} "
                       f"(weights: copying_ratio {r.op} {r.threshold:g})")
            continue
        cands = list(ev.role_candidates(db, model.model_id, [r], None, probe).values())
        if not cands:
            out.append(f"  {r.role:16s}    - (no {r.metric} stored)")
            continue
        playing = sorted((c for c in cands if r.holds(c.value, c.null, c.rival)),
                         key=lambda c: -c.strength)
        probes = [probe] if probe is not None else ev.probes_of(db, model)
        fixed = len({c.node for p in probes  # as before nulls: the largest share, any probe
                     for c in ev.role_candidates(db, model.model_id, [r], None, p).values()
                     if c.value >= (r.fixed or 0.0)})
        nulls = [c.null for c in playing if c.null is not None]
        span = f"nulls {min(nulls):.2f}-{max(nulls):.2f}" if nulls else "nulls -"
        best = max(cands, key=lambda c: c.strength)
        out.append(f"  {r.role:16s} {len(playing):4d} by the rule, {fixed:4d} by the fixed "
                   f"share >= {r.fixed:g}; {span}; largest share above null "
                   f"{best.strength:+.2f} ({best.node})")
        if show:
            out.append("      " + " ".join(f"{c.node} {c.value:.2f}/{c.null:.2f}"
                                           if c.null is not None else f"{c.node} {c.value:.2f}"
                                           for c in playing))
    return out


def copying_nulls(source: str) -> list[str]:
    """The two nulls of the copying ratio (module docstring), as printed lines."""
    import torch

    from headgraph.ingest.evidence.runnable import load_runnable
    from headgraph.ingest.kernel import copying_core_scores

    bridge = load_runnable(source).bridge
    with torch.no_grad():
        R = bridge.W_U.double() @ bridge.W_E.double()  # [d, d]
        W_V, W_O = bridge.W_V.double(), bridge.W_O.double()  # [L, kv, d, dh], [L, H, dh, d]
        L, H, dh, d = W_O.shape
        W_V = W_V.repeat_interleave(H // W_V.shape[1], dim=1).reshape(L * H, d, dh)
        W_O = W_O.reshape(L * H, dh, d)
        ratio = copying_core_scores(W_O @ R @ W_V)[1]
        gen = torch.Generator().manual_seed(0)
        init = torch.cat([copying_core_scores(
            torch.randn(L * H, dh, d, generator=gen, dtype=torch.float64) @ R
            @ torch.randn(L * H, d, dh, generator=gen, dtype=torch.float64))[1]
            for _ in range(4)])
        turned = []
        for _ in range(8):
            Q, T = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
            Q = Q * torch.sign(torch.diagonal(T))
            turned.append(copying_core_scores(W_O @ (Q @ R @ Q.T) @ W_V)[1])
        mean = torch.stack(turned).mean(0)
    q = torch.quantile(init, torch.tensor([0.5, 0.999]))
    cop, sup = ratio >= 0.7, ratio <= -0.7
    lines = [f"copying ratio of {L * H} heads: {int(cop.sum())} >= 0.7, {int(sup.sum())} <= -0.7",
             f"  untrained initialisation ({init.numel()} draws): median {q[0]:+.3f}, "
             f"99.9th percentile {q[1]:+.3f}, largest |ratio| {init.abs().max():.3f}"]
    if cop.any():
        lines.append(f"  random orientation, the copying heads: ratio {ratio[cop].min():.2f}-"
                     f"{ratio[cop].max():.2f}, null mean {mean[cop].min():.2f}-"
                     f"{mean[cop].max():.2f}; {int((ratio[cop] - mean[cop] >= 0.25).sum())} "
                     "stand 0.25 above it")
    if sup.any():
        lines.append(f"  random orientation, the suppression heads: ratio {ratio[sup].min():.2f}-"
                     f"{ratio[sup].max():.2f}, null mean {mean[sup].min():.2f}-"
                     f"{mean[sup].max():.2f}; {int((ratio[sup] - mean[sup] <= -0.25).sum())} "
                     "stand 0.25 below it")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--per-probe", action="store_true")
    ap.add_argument("--list", action="store_true", help="name the heads that play each role")
    ap.add_argument("--copying-null", metavar="SOURCE",
                    help="also the copying ratio's nulls, from the model's weights")
    args = ap.parse_args()
    db = open_reader(args.db, release=True)
    try:
        model = get_model(db, args.model)
        heads = model.n_layers * model.n_heads
        print(f"{model.name}: {heads} heads; margin {ev.ROLE_MARGIN:g} above the null")
        print("all probes (each head's best probe):")
        print("\n".join(role_lines(db, model, None, args.list)))
        if args.per_probe:
            for probe in ev.probes_of(db, model):
                print(probe)
                print("\n".join(role_lines(db, model, probe, False)))
    finally:
        db.close()
    if args.copying_null:
        print("\n".join(copying_nulls(args.copying_null)))


if __name__ == "__main__":
    main()
