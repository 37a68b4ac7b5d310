"""Whole-database maintenance with every feature's tables: ``headgraph check`` and
``headgraph copy``.

:mod:`headgraph.schema.check` and :mod:`headgraph.schema.transfer` know the core tables;
each feature adds its own check and carrier here (attribution graphs:
:mod:`headgraph.attribution.check`, :mod:`headgraph.attribution.transfer`).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from headgraph.attribution.check import graph_problems
from headgraph.attribution.transfer import GraphCarrier
from headgraph.schema import check, transfer

CHECKS = (graph_problems,)
CARRIERS = (GraphCarrier(),)


def check_database(db: str | os.PathLike[str] | None) -> check.CheckReport:
    """Prove ``db`` whole: the core checks and every feature's (see
    :mod:`headgraph.schema.check`)."""
    return check.check_database(db, CHECKS)


def copy_models(source: str | os.PathLike[str], dest: str | os.PathLike[str],
                names: list[str] | None = None, *, replace: bool = False,
                progress: Callable[[str], None] | None = None) -> list[transfer.CopyResult]:
    """Copy models with everything tied to them, attribution graphs included (see
    :func:`headgraph.schema.transfer.copy_models`)."""
    return transfer.copy_models(source, dest, names, replace=replace, progress=progress,
                                carriers=CARRIERS)
