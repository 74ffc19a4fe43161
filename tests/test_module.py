"""The recipe: metrics on known logits, schedules as functions of the step, optimizers."""

from __future__ import annotations

import math

import pytest
import torch
from twoworlds.lightning_modules.classification import ClassificationErrors, ClassificationModule, OptimConfig
from twoworlds.lightning_modules.networks import build_network
from twoworlds.lightning_modules.schedules import eval_steps, lr_factor


def test_soft_error_zero_one_error_and_loss_on_known_logits():
    # probabilities of the true class: 0.5, 0.9 (both argmax-correct), 0.2 (wrong)
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.05, 0.9, 0.05], [0.7, 0.1, 0.2]])
    target = torch.tensor([0, 1, 2])
    m = ClassificationErrors()
    m.update(probs.log(), target[:])
    out = m.compute()
    assert float(out["soft_error"]) == pytest.approx(((1 - 0.5) + (1 - 0.9) + (1 - 0.2)) / 3)
    assert float(out["error"]) == pytest.approx(1 / 3)
    assert float(out["loss"]) == pytest.approx(-(math.log(0.5) + math.log(0.9) + math.log(0.2)) / 3)
    m.update(probs[:1].log(), target[:1])  # accumulates until reset: exact mean over all 4 samples
    assert float(m.compute()["soft_error"]) == pytest.approx((0.5 + 0.1 + 0.8 + 0.5) / 4)


def test_lr_schedules_are_functions_of_the_step():
    T = 1000
    assert [lr_factor(s, T, "constant") for s in (0, 500, 999)] == [1.0, 1.0, 1.0]
    assert lr_factor(0, T, "cosine") == 1.0
    assert lr_factor(500, T, "cosine") == pytest.approx(0.5)
    assert lr_factor(999, T, "cosine") == pytest.approx(0.0, abs=1e-4)
    assert [lr_factor(s, T, "step", milestones=(0.5, 0.75)) for s in (499, 500, 750)] == pytest.approx([1, 0.1, 0.01])
    warm = [lr_factor(s, T, "cosine", warmup_steps=10) for s in range(12)]
    assert warm[:10] == pytest.approx([(s + 1) / 10 for s in range(10)]) and warm[10] == 1.0


@pytest.mark.parametrize("steps,points", [(1, 40), (30, 40), (2000, 40), (39000, 40), (39000, 100), (5000, 5)])
def test_eval_schedule_is_dense_early_log_spaced_and_ends_at_the_last_step(steps, points):
    s = eval_steps(steps, points)
    assert s == sorted(set(s)) and s[0] == 1 and s[-1] == steps
    assert abs(len(s) - min(points, steps)) <= max(2, points // 10)
    if steps > 100 and points >= 20:
        ratios = [b / a for a, b in zip(s[10:], s[11:], strict=False)]
        assert max(ratios) / min(ratios) < 1.5  # evenly spaced in log(step) after the dense start


@pytest.mark.parametrize("optim", [OptimConfig(name="sgd", nesterov=True), OptimConfig(name="adamw", lr=1e-3)])
def test_optimizers_decay_weights_only_and_step_the_schedule(optim):
    net = build_network("mlp", (1, 8), 3, 16, 2)
    module = ClassificationModule(net, optim, steps=100)
    conf = module.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]
    assert sched["interval"] == "step"
    decayed, plain = opt.param_groups
    assert all(p.ndim > 1 for p in decayed["params"]) and all(p.ndim <= 1 for p in plain["params"])
    assert plain["weight_decay"] == 0.0 and decayed["weight_decay"] == optim.weight_decay
    assert type(opt).__name__ == {"sgd": "SGD", "adamw": "AdamW"}[optim.name]
