"""Learning-rate and evaluation schedules, both functions of the optimizer step (never the epoch),
so the Real and Ideal Worlds follow the same schedule (invariant 1)."""

from __future__ import annotations

import math

import numpy as np


def lr_factor(step: int, steps: int, schedule: str, warmup_steps: int = 0,
              milestones: tuple[float, ...] = (0.5, 0.75), gamma: float = 0.1) -> float:
    """Multiplier of the base learning rate at optimizer step `step` (0-based) of `steps`.

    Linear warm-up over `warmup_steps`, then the schedule over the remaining steps. `milestones`
    of the step schedule are fractions of `steps` (so a study that scales steps keeps its shape).
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        progress = (step - warmup_steps) / max(1, steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    assert schedule == "step", schedule  # config.SCHEDULES, validated by launch/config.py
    return gamma ** sum(step >= m * steps for m in milestones)


def eval_steps(steps: int, points: int = 40, dense: int = 10) -> list[int]:
    """About `points` optimizer steps in [1, steps] at which to evaluate.

    The first `dense` steps are all taken (the error moves fastest there), the rest are spaced
    evenly in log(step), and the last step is always included. Rounding may merge a few log-spaced
    points when `steps` is small, hence "about".
    """
    if steps < 1 or points < 1:
        raise ValueError(f"steps and eval points must be >= 1, got steps={steps}, points={points}")
    if points >= steps:
        return list(range(1, steps + 1))
    first = list(range(1, min(dense, points // 2) + 1))
    start = len(first) + 1
    grid = np.round(np.geomspace(start, steps, points - len(first))).astype(int)
    return sorted(set(first) | {int(s) for s in grid} | {steps})
