"""A rich progress display with one bar per ingest stage."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

STAGE_LABELS = {
    "load": "load weights",
    "factors": "factors & head metrics",
    "compose": "composition scores",
    "rank": "rank edges",
    "virtual": "virtual heads (exact)",
    "probes": "evidence (probes)",
    "write": "write (one transaction)",
}


class StageProgress:
    """Context manager whose ``update(stage, done, total)`` drives one bar per stage."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            TextColumn("{task.description:<26}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
            disable=not console.is_terminal,
        )
        self._tasks: dict[str, int] = {}

    def __enter__(self) -> StageProgress:
        self._progress.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._progress.__exit__(exc_type, exc, tb)

    def update(self, stage: str, done: int, total: int) -> None:
        if stage not in self._tasks:
            self._tasks[stage] = self._progress.add_task(STAGE_LABELS.get(stage, stage),
                                                         total=total)
        self._progress.update(self._tasks[stage], completed=done, total=total)
