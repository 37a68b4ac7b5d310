"""Reduce a real attribution graph file to a test fixture: every node kept as it is, and of
the links those of the named nodes plus the strongest (|weight|), in file order. The header
(metadata, qParams) is kept as it is. Provenance of the inputs: tests/data/README.md.

    python tests/data/reduce_graph.py SRC.json OUT.json --links 2000 --keep 0_2_1 [--keep ...]

Links of weight 0 are kept when --zeros is given (the files that list them explicitly).
"""

from __future__ import annotations

import argparse
import json


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("src")
    parser.add_argument("out")
    parser.add_argument("--links", type=int, default=2000)
    parser.add_argument("--keep", action="append", default=[])
    parser.add_argument("--pinned", action="store_true", help="also keep the pinned nodes' links")
    parser.add_argument("--zeros", action="store_true", help="also keep links of weight 0")
    args = parser.parse_args()
    doc = json.load(open(args.src, encoding="utf-8"))
    keep = set(args.keep)
    if args.pinned:
        keep |= set(doc.get("qParams", {}).get("pinnedIds", []))
    links = doc["links"]
    chosen = {i for i, x in enumerate(links) if x["source"] in keep or x["target"] in keep}
    if args.zeros:
        chosen |= {i for i, x in enumerate(links) if x["weight"] == 0}
    strongest = sorted(range(len(links)), key=lambda i: -abs(links[i]["weight"]))
    chosen |= set(strongest[:args.links])
    doc["links"] = [links[i] for i in sorted(chosen)]
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, separators=(",", ":"))


if __name__ == "__main__":
    main()
