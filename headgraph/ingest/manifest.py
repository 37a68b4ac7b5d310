"""Which models an ingest stores and under which labels: SOURCE arguments or a manifest.

Sources come from the command line (``headgraph ingest A B C --family F``) or from a CSV
manifest (:func:`read_manifest`, columns ``source,name,family,step``). A step not given is
read from a directory name such as ``checkpoint-1500`` or ``step1500``
(:func:`headgraph.ingest.sources.step_from_name`).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from headgraph.errors import BadInputError
from headgraph.ingest.sources import describe, step_from_name
from headgraph.ingest.writer import ModelLabel

MANIFEST_COLUMNS = ("source", "name", "family", "step")


@dataclass(frozen=True)
class FleetItem:
    """One model of an ingest: where its weights are and what to call it."""

    source: str
    label: ModelLabel


def fleet_items(sources: Sequence[str], family: str | None = None) -> list[FleetItem]:
    """Default labels for each source: its name, ``family`` (or the source's own), and the
    step its name gives (``toy@1000``, ``.../checkpoint-1500``, ``step1500``)."""
    items = []
    for source in sources:
        d = describe(source)
        step = d.step if d.step is not None else step_from_name(source.rstrip("/"))
        items.append(FleetItem(source, ModelLabel(d.name, family or d.family, step)))
    return items


def read_manifest(path: str | os.PathLike[str], family: str | None = None) -> list[FleetItem]:
    """Fleet items from a CSV file with a header row of ``source,name,family,step``.

    Only ``source`` is required; an empty cell takes the default of :func:`fleet_items`
    (``family`` falls back to the ``family`` argument). A relative directory is read
    relative to the manifest's folder.
    """
    path = Path(path)
    try:
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
            header = rows and list(rows[0]) or []
    except OSError as exc:
        raise BadInputError(f"--manifest {path}: cannot read it ({exc.strerror}).") from None
    unknown = [c for c in header if c not in MANIFEST_COLUMNS]
    if not rows or "source" not in header or unknown:
        raise BadInputError(
            f"--manifest {path}: expected a CSV header with columns {','.join(MANIFEST_COLUMNS)} "
            f"(only 'source' required) and at least one row; got {header or 'nothing'}."
        )
    items = []
    for line, row in enumerate(rows, start=2):
        source = (row.get("source") or "").strip()
        if not source:
            raise BadInputError(f"--manifest {path}, line {line}: the source is empty.")
        local = path.parent / source
        if not Path(source).is_absolute() and local.exists() and not Path(source).exists():
            source = str(local)
        (item,) = fleet_items([source], family)
        step_text = (row.get("step") or "").strip()
        try:
            step = int(step_text) if step_text else item.label.step
        except ValueError:
            raise BadInputError(f"--manifest {path}, line {line}: step {step_text!r} is not "
                                "an integer.") from None
        label = ModelLabel((row.get("name") or "").strip() or item.label.name,
                           (row.get("family") or "").strip() or item.label.family, step)
        items.append(FleetItem(source, label))
    return items


def check_fleet(items: Sequence[FleetItem]) -> None:
    """Refuse an empty ingest, or one whose model names repeat (they would overwrite each
    other)."""
    if not items:
        raise BadInputError("no models to ingest: give SOURCE arguments or --manifest.")
    seen: dict[str, str] = {}
    for item in items:
        if item.label.name in seen:
            raise BadInputError(
                f"two sources would be stored as {item.label.name!r} ({seen[item.label.name]} "
                f"and {item.source}); name them in a --manifest (column 'name')."
            )
        seen[item.label.name] = item.source
