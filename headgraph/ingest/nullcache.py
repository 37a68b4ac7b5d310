"""The Gaussian null of a shape, sampled once per machine and reused by every database.

:func:`headgraph.ingest.null.sample_null` depends only on the edge type's key (the shapes
and kind), its seed, the number of samples and the sampler's version, so its result can be
kept anywhere. An ingest looks for a null in three places, in order:

1. the baselines the database already stores (read at preflight; a database keeps
   what it stored, whatever the sampler's version);
2. this on-disk cache, one small JSON file per (version, key, seed, samples) under
   ``$HEADGRAPH_CACHE_DIR`` (default ``$XDG_CACHE_HOME/headgraph`` or
   ``~/.cache/headgraph``), in a folder named after :data:`~headgraph.ingest.null.NULL_VERSION`;
3. sampling, whose result is then written to both.

The cache is an optimisation only: a file that cannot be read, parses badly or names
another key is ignored (and resampled); a cache folder that cannot be written is skipped.
Files are written to a temporary name and renamed, so a reader never sees half a file,
and writers racing on one key write the same bytes. ``HEADGRAPH_CACHE_DIR=off`` turns the
cache off.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from headgraph.ingest.null import (
    NULL_VERSION,
    NullStat,
    OperandShape,
    null_key,
    null_samples,
    null_seed,
    sample_null,
)

CACHE_ENV = "HEADGRAPH_CACHE_DIR"
NullProvider = Callable[[OperandShape, OperandShape, str], NullStat]


def cache_dir() -> Path | None:
    """The folder of this sampler version's nulls, or ``None`` when the cache is off."""
    root = os.environ.get(CACHE_ENV)
    if root is not None and root.strip().lower() in ("", "off", "0", "none"):
        return None
    if root is None:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = str(Path(base) / "headgraph")
    return Path(root).expanduser() / f"null-v{NULL_VERSION}"


def _file(folder: Path, key: str, seed: int, samples: int) -> Path:
    name = hashlib.sha256(f"{key}|{seed}|{samples}".encode()).hexdigest()[:32]
    return folder / f"{name}.json"


def load_cached(key: str, seed: int, samples: int) -> NullStat | None:
    """The cached null of ``key``, or ``None`` (no cache, no file, or a bad one)."""
    folder = cache_dir()
    if folder is None:
        return None
    try:
        data = json.loads(_file(folder, key, seed, samples).read_text())
        stat = NullStat(str(data["key"]), float(data["mean"]), float(data["std"]),
                        int(data["samples"]), int(data["seed"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return stat if (stat.key, stat.seed, stat.samples) == (key, seed, samples) else None


def store_cached(stat: NullStat) -> None:
    """Keep ``stat`` for later ingests (silently skipped where the folder is not writable)."""
    folder = cache_dir()
    if folder is None:
        return
    body = json.dumps({"key": stat.key, "mean": stat.mean, "std": stat.std,
                       "samples": stat.samples, "seed": stat.seed,
                       "version": NULL_VERSION}, sort_keys=True)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".null-", suffix=".tmp")
        with os.fdopen(fd, "w") as out:
            out.write(body)
        os.replace(tmp, _file(folder, stat.key, stat.seed, stat.samples))
    except OSError:
        return


class CachedNull:
    """A null provider: ``known`` (the database's baselines, updated in place), then the
    disk cache, then :func:`~headgraph.ingest.null.sample_null` (stored on disk).
    ``seconds`` is the time spent finding and sampling nulls (the ingest's "null" stage,
    which happens inside composition as edge types turn up)."""

    def __init__(self, known: dict[str, NullStat]) -> None:
        self.known = known
        self.seconds = 0.0
        self.sampled = 0

    def __call__(self, writer: OperandShape, reader: OperandShape, kind: str) -> NullStat:
        key = null_key(writer, reader, kind)
        stat = self.known.get(key)
        if stat is not None:
            return stat
        start = time.perf_counter()
        stat = load_cached(key, null_seed(key), null_samples(writer, reader))
        if stat is None:
            stat = sample_null(writer, reader, kind)
            store_cached(stat)
            self.sampled += 1
        self.known[key] = stat
        self.seconds += time.perf_counter() - start
        return stat


def cached_null(known: dict[str, NullStat]) -> CachedNull:
    """:class:`CachedNull` over ``known``."""
    return CachedNull(known)


def missing_nulls(keys: list[tuple[OperandShape, OperandShape, str]],
                  known: dict[str, NullStat] | None = None) -> list[str]:
    """The keys among ``keys`` that neither ``known`` nor the disk cache holds: what an
    ingest would sample (``headgraph plan`` counts their cost)."""
    out = []
    for writer, reader, kind in keys:
        key = null_key(writer, reader, kind)
        if known and key in known:
            continue
        if load_cached(key, null_seed(key), null_samples(writer, reader)) is None:
            out.append(key)
    return out
