"""Importing an attribution graph bloated with blanks, in bounded memory (issue: the real
tools' files; the import side of the hostile-input review).

Writes a synthetic graph of ``--links`` links (:mod:`headgraph.attribution.synth`) three
ways: plain; with ``--blank-mb`` MB of spaces between one link's ``}`` and its comma; with
as many newlines after a comma, before the next link. Each is imported by ``import_graph``
in a child process, and the child's wall seconds and peak RSS are printed. ``--tree``
names another checkout (say the one before this change) whose import runs on the same
files in the same run, as the reference; an import that fails is printed as such.

Run: ``.venv/bin/python benchmarks/bench_import_blanks.py [--links 1000000] [--blank-mb 1024]
[--tree /path/to/other/checkout]``
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import run_measured  # noqa: E402
from headgraph.attribution.synth import SynthSpec, write_graph  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
IMPORT = ("import json, sys; sys.path.insert(0, sys.argv[3]); "
          "from headgraph.attribution.importer import import_graph; "
          "r = import_graph(sys.argv[1], sys.argv[2]); print(json.dumps(r.rows))")
MB = 1 << 20


def bloat(plain: Path, out: Path, blank_mb: int, where: str) -> None:
    """``plain`` with ``blank_mb`` MB of blanks before (``"before"``) or after (``"after"``)
    the comma that follows the 1000th link, copied in 8 MB pieces."""
    text = plain.read_bytes()
    links = text.index(b'"links": [')
    cut = links
    for _ in range(1000):
        cut = text.index(b"}, {", cut + 1)
    cut += 1  # just after the link's "}"
    blank = (b" " if where == "before" else b"\n") * (8 * MB)
    with out.open("wb") as f:
        f.write(text[:cut] if where == "before" else text[:cut + 1])
        for _ in range(blank_mb // 8):
            f.write(blank)
        f.write(text[cut:] if where == "before" else text[cut + 1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--links", type=int, default=1_000_000)
    parser.add_argument("--blank-mb", type=int, default=1024)
    parser.add_argument("--tree", help="another checkout to import with, as the reference")
    parser.add_argument("--dir", default=tempfile.gettempdir())
    args = parser.parse_args()
    folder = Path(args.dir) / "headgraph-blanks"
    folder.mkdir(exist_ok=True)
    plain = folder / "plain.json"
    write_graph(plain, SynthSpec(n_links=args.links, slug="blanks"))
    files = {"plain": plain}
    for where in ("before", "after"):
        files[f"{args.blank_mb} MB of blanks {where} a comma"] = folder / f"{where}.json"
        bloat(plain, files[f"{args.blank_mb} MB of blanks {where} a comma"], args.blank_mb, where)
    trees = {"this checkout": ROOT} | ({"reference": Path(args.tree)} if args.tree else {})
    print(f"load average {os.getloadavg()[0]:.1f}; {args.links:,} links, plain file "
          f"{plain.stat().st_size / MB:.0f} MB", flush=True)
    for label, path in files.items():
        for tree_name, tree in trees.items():
            db = folder / "b.duckdb"
            db.unlink(missing_ok=True)
            try:
                rows, wall, peak = run_measured(IMPORT, str(path), str(db), str(tree))
                result = f"{wall:6.1f} s, peak RSS {peak:5.2f} GB, {rows['links']:,} links"
            except RuntimeError as exc:
                last = str(exc).strip().splitlines()[-1][:100]
                result = f"failed: {last}"
            print(f"{label:40s} {tree_name:14s} {result}", flush=True)
            db.unlink(missing_ok=True)
        if path != plain:
            path.unlink()
    plain.unlink()


if __name__ == "__main__":
    main()
