"""Progress of a long command: one bar per stage on a terminal, plain timestamped log lines
anywhere else (``nohup``, CI, ``ssh host cmd > log``), so a run of hours never looks hung.

Stages report ``progress(stage, done, total)`` in their own unit of work (layers, forward
passes, models); :data:`STAGES` names each stage and its unit. On a terminal the bars are
drawn by rich and removed from the screen's live region when the command ends or fails, so
an error is printed below them, never into them. Without a terminal each stage logs a line
when it starts, at most every :data:`LOG_EVERY_S` seconds while it runs, and when it ends,
with the time it took::

    2026-12-07 10:31:02  composition scores: started (0/12 layers)
    2026-12-07 10:31:32  composition scores: 7/12 layers
    2026-12-07 10:31:51  composition scores: done, 12 layers in 49.0 s
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

STAGES: dict[str, tuple[str, str]] = {
    "load": ("load weights", "steps"),
    "factors": ("factors & head metrics", "layers"),
    "compose": ("composition scores", "layers"),
    "rank": ("rank edges", "steps"),
    "null": ("structural null", "layers"),
    "virtual": ("virtual heads (exact)", "steps"),
    "evidence": ("evidence", "forward passes"),
    "probes": ("evidence (probes)", "probes"),
    "write": ("write (one transaction)", "steps"),
    "tasks finished": ("tasks finished", "models"),
    "models written": ("models written", "models"),
}
"""Stage -> (label, unit of work). A stage not listed is shown by its own name."""

LOG_EVERY_S = 30.0


def describe(stage: str) -> tuple[str, str]:
    """The label and unit of ``stage`` (an import's ``file: stage`` keeps its prefix)."""
    prefix, _, base = stage.rpartition(": ")
    label, unit = STAGES.get(base, (base, "steps"))
    return (f"{prefix}: {label}" if prefix else label), unit


@dataclass
class _Logged:
    label: str
    unit: str
    total: int
    started: float = field(default_factory=time.monotonic)
    last: float = field(default_factory=time.monotonic)
    finished: bool = False


class StageProgress:
    """Context manager whose ``update(stage, done, total)`` shows each stage's progress:
    bars on a terminal, log lines on ``log`` (stderr by default) otherwise."""

    def __init__(self, console: Console, log: Console | None = None) -> None:
        self._live = console.is_terminal
        self._log = log or Console(stderr=True, highlight=False, soft_wrap=True)
        self._progress = Progress(
            TextColumn("{task.description:<28}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[unit]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
            disable=not self._live,
        )
        self._tasks: dict[str, int] = {}
        self._logged: dict[str, _Logged] = {}

    def __enter__(self) -> StageProgress:
        self._progress.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._progress.__exit__(exc_type, exc, tb)

    def update(self, stage: str, done: int, total: int) -> None:
        label, unit = describe(stage)
        if self._live:
            if stage not in self._tasks:
                self._tasks[stage] = self._progress.add_task(label, total=total, unit=unit)
            self._progress.update(self._tasks[stage], completed=done, total=total)
        else:
            self._line(stage, label, unit, done, total)

    def _line(self, stage: str, label: str, unit: str, done: int, total: int) -> None:
        now = time.monotonic()
        entry = self._logged.get(stage)
        if entry is None:
            entry = self._logged[stage] = _Logged(label, unit, total)
            if done < total or not total:
                self._say(f"{label}: started" + (f" ({done}/{total} {unit})" if total > 1
                                                 else ""))
        if entry.finished:
            return
        if total and done >= total:
            entry.finished = True
            count = f", {total} {unit}" if total > 1 else ""
            self._say(f"{label}: done{count} in {max(now - entry.started, 0.0):.1f} s")
        elif now - entry.last >= LOG_EVERY_S:
            entry.last = now
            self._say(f"{label}: {done}/{total} {unit}")

    def _say(self, text: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        self._log.print(f"{stamp}  {text}", markup=False, highlight=False)
