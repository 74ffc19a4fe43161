"""Training FLOPs per sample: the counter against hand computations, the paper's ResNet-18 figure
quoted in the README, and the train_flops column a run writes."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from twoworlds.lightning_modules.flops import training_flops_per_sample
from twoworlds.lightning_modules.metrics import TRAIN_FLOPS
from twoworlds.lightning_modules.networks import build_network

# Convention (lightning_modules/flops.py): 2 FLOPs per multiply-add; training = forward + the weight
# gradients of every layer + the input gradients of every layer but the first.


def linear(i: int, o: int) -> int:
    return 2 * i * o


def conv(c_in: int, c_out: int, kernel: int, positions: int) -> int:
    return 2 * c_in * c_out * kernel * positions  # kernel: elements (3 in 1-D, 9 for 3x3); positions: output size


def training(forward: int, first_layer: int) -> int:
    return 3 * forward - first_layer


def test_mlp_flops_match_the_hand_count():
    net = build_network("mlp", (1, 40), 10, width=32, depth=3)  # 40 -> 32 -> 32 -> 32 -> 10
    forward = linear(40, 32) + 2 * linear(32, 32) + linear(32, 10)
    assert training_flops_per_sample(net, (1, 40), 10) == training(forward, linear(40, 32)) == 19_328


@pytest.mark.parametrize("shape", [(1, 40), (3, 8, 8)], ids=["1d", "2d"])
def test_cnn_flops_match_the_hand_count(shape):
    # conv3(c) at full size -> conv3(2c), then max-pool /2 -> conv3(4c) -> global max -> linear
    net = build_network("cnn", shape, 10, width=4, depth=3)
    k = 3 ** (len(shape) - 1)
    full = 40 if len(shape) == 2 else 8 * 8
    half = full // 2 if len(shape) == 2 else full // 4
    first = conv(shape[0], 4, k, full)
    forward = first + conv(4, 8, k, full) + conv(8, 16, k, half) + linear(16, 10)
    assert training_flops_per_sample(net, shape, 10) == training(forward, first)


def test_resnet18_k64_on_cifar_is_the_readme_figure():
    net = build_network("resnet", (3, 32, 32), 10, width=64, depth=18)
    assert net.num_parameters == 11_171_146  # the paper's ResNet-18
    stem = conv(3, 64, 9, 32 * 32)  # its input gradient is not computed
    assert training_flops_per_sample(net, (3, 32, 32), 10) == 3_328_997_376 == training(1_110_845_440, stem)


def test_counting_leaves_the_network_and_the_random_stream_alone():
    net = build_network("cnn", (1, 40), 10, width=4, depth=3)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    rng = torch.get_rng_state()
    training_flops_per_sample(net, (1, 40), 10)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng) and next(net.parameters()).device.type == "cpu"


def test_a_run_records_flops_per_sample_and_train_flops_per_row(make_cfg):
    from twoworlds.launch.run import run_trial
    cfg = make_cfg("model.name=mlp")
    summary = run_trial(cfg)
    # the teacher source's default input (1, 32) and 4 classes; TINY's MLP: 32 -> 32 -> 32 -> 4
    assert summary["flops_per_sample"] == training(2 * linear(32, 32) + linear(32, 4), linear(32, 32)) == 11_008
    trial = f"{cfg.out_dir}/{cfg.study}/{summary['trial']}"
    assert json.loads(open(f"{trial}/summary.json").read())["flops_per_sample"] == summary["flops_per_sample"]
    rows = pd.read_csv(f"{trial}/metrics.csv")
    assert (rows[TRAIN_FLOPS] == rows.samples_seen * summary["flops_per_sample"]).all()
