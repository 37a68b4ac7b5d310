"""The shipped toy model: a 2-layer, 4-head attention-only GPT-2 with a known induction circuit.

Checkpoints live in ``checkpoints/step-NNNNN/`` beside this file (HF format, loadable offline);
``checkpoints/manifest.json`` records how they were trained and which heads play which role.
``train.py`` regenerates them.
"""

from __future__ import annotations

from pathlib import Path

CHECKPOINTS = Path(__file__).resolve().parent / "checkpoints"


def checkpoint_steps() -> list[int]:
    """The training steps of the shipped checkpoints, ascending."""
    if not CHECKPOINTS.is_dir():
        return []
    return sorted(
        int(p.name.removeprefix("step-"))
        for p in CHECKPOINTS.iterdir()
        if p.is_dir() and p.name.startswith("step-") and p.name.removeprefix("step-").isdigit()
    )


def checkpoint_dir(step: int | None = None) -> Path:
    """The directory of the shipped checkpoint at ``step``; the final one when ``step`` is None.

    Raises ValueError when no shipped checkpoint has that step.
    """
    steps = checkpoint_steps()
    if not steps:
        raise ValueError(
            f"no toy checkpoints found under {CHECKPOINTS}; "
            f"regenerate them with `python -m headgraph.toy.train --out {CHECKPOINTS}`"
        )
    if step is None:
        step = steps[-1]
    if step not in steps:
        raise ValueError(f"no toy checkpoint at step {step}; shipped steps are {steps}")
    return CHECKPOINTS / f"step-{step:05d}"


__all__ = ["CHECKPOINTS", "checkpoint_dir", "checkpoint_steps"]
