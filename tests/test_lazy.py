"""Lazy against rich training: `model.output_scale` (alpha * (f - f0), the lr divided by alpha**2 for
SGD) and the relative weight movement |w - w0| / |w0| logged at every evaluation."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch
from tb_read import read_hparams, read_scalars
from twoworlds.launch.config import ConfigError, config_hash, pair_key, to_plain
from twoworlds.lightning_modules.classification import (
    ClassificationModule,
    OptimConfig,
    OutputScaled,
    scaled_lr,
)
from twoworlds.lightning_modules.flops import training_flops_per_sample
from twoworlds.lightning_modules.metrics import WEIGHT_MOVEMENT
from twoworlds.lightning_modules.networks import build_network


def test_output_scale_starts_at_zero_trains_only_the_network_and_scales_the_lr():
    torch.manual_seed(0)
    plain = build_network("cnn", (1, 40), 10, width=4, depth=3)
    net = OutputScaled(plain, 100.0)
    x = torch.randn(16, 1, 40)
    for mode in (True, False):  # train mode (batch statistics) and eval mode (running statistics)
        net.train(mode)
        assert torch.equal(net(x), torch.zeros(16, 10))
    net.train()
    module = ClassificationModule(net, OptimConfig(name="sgd", lr=0.5), steps=10, output_scale=100.0)
    assert module.weight_movement() == 0.0
    trainable = {id(p) for p in plain.parameters()}
    opt = module.configure_optimizers()["optimizer"]
    assert {id(p) for g in opt.param_groups for p in g["params"]} == trainable  # never the frozen f0
    assert {g["lr"] for g in opt.param_groups} == {0.5 / 100**2}
    assert scaled_lr(OptimConfig(name="adamw", lr=0.01), 10.0) == pytest.approx(0.001)
    assert scaled_lr(OptimConfig(name="sgd", lr=0.01), None) == 0.01
    y = torch.randint(0, 10, (16,))
    loss = torch.nn.functional.cross_entropy(net(x), y)
    loss.backward()
    assert all(p.grad is None for p in net.init.parameters())
    opt.step()
    with torch.no_grad():  # |w - w0| / |w0|, by hand
        w = torch.cat([p.reshape(-1) for p in plain.parameters()])
        w0 = torch.cat([p.reshape(-1) for p in net.init.parameters()])
        assert module.weight_movement() == pytest.approx(float((w - w0).norm() / w0.norm()), rel=1e-6)
    # FLOPs: the trained network's forward and backward, plus f0's forward (no backward through it)
    assert training_flops_per_sample(net, (1, 40), 10) == training_flops_per_sample(plain, (1, 40), 10) + _forward(plain)


def _forward(net) -> int:
    """Forward FLOPs per sample of `net` alone."""
    from copy import deepcopy

    from torch.utils.flop_counter import FlopCounterMode
    meta = deepcopy(net).to("meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        meta(torch.zeros(2, 1, 40, device="meta"))
    return counter.get_total_flops() // 2


def test_output_scale_is_validated_named_and_hashed_only_when_set(make_cfg):
    with pytest.raises(ConfigError, match=r"model.output_scale=0.0 must be > 0"):
        make_cfg("model.output_scale=0")
    plain, lazy = make_cfg(), make_cfg("model.output_scale=100")
    assert config_hash(plain) != config_hash(lazy) and pair_key(plain) != pair_key(lazy)
    # unset, the key is outside both hashes: trials run before it existed keep their names and hashes
    doc = to_plain(plain)
    del doc["model"]["output_scale"]
    assert config_hash(doc) == config_hash(plain)


def test_weight_movement_is_logged_per_evaluation_and_falls_with_the_output_scale(make_cfg):
    from twoworlds.launch.run import run_trial
    moved = {}
    for alpha in (1, 100):
        cfg = make_cfg("model.name=mlp", f"model.output_scale={alpha}", "optim.name=sgd", "optim.lr=0.5",
                       "optim.schedule=constant")
        summary = run_trial(cfg)
        assert summary["status"] == "completed" and summary["trial"].endswith(f"-a{alpha}")
        trial = f"{cfg.out_dir}/{cfg.study}/{summary['trial']}"
        rows = pd.read_csv(f"{trial}/metrics.csv")
        assert (rows[WEIGHT_MOVEMENT] > 0).all() and rows[WEIGHT_MOVEMENT].notna().all()
        assert rows.lr.iloc[-1] == pytest.approx(0.5 / alpha**2)
        final = json.loads(open(f"{trial}/summary.json").read())["final"]
        assert final[WEIGHT_MOVEMENT] == rows[WEIGHT_MOVEMENT].iloc[-1]
        scalars = read_scalars(trial)  # TensorBoard: every row's value, and the HPARAMS tab's final value
        tb = scalars[scalars.tag == WEIGHT_MOVEMENT].sort_values("step")
        assert list(tb.step) == list(rows.step)
        assert tb.value.to_numpy() == pytest.approx(rows[WEIGHT_MOVEMENT].to_numpy(), rel=1e-6)
        assert read_hparams(trial)["metrics"]["final/weight_movement"] == pytest.approx(final[WEIGHT_MOVEMENT], rel=1e-6)
        moved[alpha] = final[WEIGHT_MOVEMENT]
    # lazy training: 100x the output scale, about 1/100 of the weight movement (linearized dynamics)
    assert moved[100] < moved[1] / 20
    assert not math.isnan(moved[1])
