"""The weights digest of a model directory: what tells two versions of a model apart.

Stored on every model row (``models.weights_digest``); a replace keeps a model's evidence
only when the digest is unchanged (:mod:`headgraph.schema.carry`), and the demo keeps a
stored toy model whose digest matches the shipped checkpoint. Plain ``hashlib``: no torch.
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def digest_files(paths: list[Path]) -> str:
    """sha256 over the weight files (name and bytes), so a changed file gives a new digest."""
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.name.encode())
        with p.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()


def weight_files(path: Path) -> list[Path]:
    return sorted(path.glob("*.safetensors")) or sorted(path.glob("pytorch_model*.bin"))
