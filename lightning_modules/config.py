"""The recipe's typed config and its choice lists, torch-free so that the run schema
(launch/config.py) loads in a fraction of a second; classification.py and schedules.py read them."""

from __future__ import annotations

from dataclasses import dataclass, field

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("constant", "cosine", "step")


@dataclass
class OptimConfig:
    name: str = "sgd"  # sgd | adamw
    lr: float = 0.05  # base learning rate (peak, after warm-up)
    momentum: float = 0.9  # sgd only
    nesterov: bool = False  # sgd only
    weight_decay: float = 5e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adamw only
    schedule: str = "cosine"  # constant | cosine | step; a function of the optimizer step
    warmup_steps: int = 0  # linear warm-up, in optimizer steps
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])  # step schedule: fractions of steps
    gamma: float = 0.1  # step schedule: factor at each milestone
