"""Attention roles against their null: how many heads each rule marks, read from a database.

For every pattern role of ``headgraph.queries.evidence.ROLE_RULES``: the heads that play it
by the rule (share above the same head's null, ``ROLE_MARGIN``), the heads the fixed share
threshold would mark on the same records (what headgraph did before nulls), the range of
the nulls of the heads that play it, and the largest share-above-null of any head (how far
the strongest head stands out). Per probe too, with ``--per-probe``. Also the weight roles
(fixed thresholds on ``copying_ratio``), for the counts.

usage: python benchmarks/bench_roles.py --db DB --model NAME [--per-probe] [--list]

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
        playing = sorted((c for c in cands if r.holds(c.value, c.null)),
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--per-probe", action="store_true")
    ap.add_argument("--list", action="store_true", help="name the heads that play each role")
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


if __name__ == "__main__":
    main()
