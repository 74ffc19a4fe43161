"""Runs on image sources in their published formats (tiny files), with on-device augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from image_fixtures import write_tiny_cifar5m, write_tiny_cifar10
from twoworlds.launch.run import build, run_trial


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("images")
    write_tiny_cifar5m(d)
    write_tiny_cifar10(d)
    x = np.random.default_rng(0).integers(0, 256, (600, 32, 32, 3), dtype=np.uint8)
    np.savez(d / "mine.npz", x=x, y=np.arange(600) % 5)
    return d


SOURCES = {"cifar5m": [], "cifar10": [], "arrays": ["data.npz=mine.npz"]}


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_real_and_ideal_runs_on_each_image_source(make_cfg, data_dir, source):
    for world in ("real", "ideal"):
        cfg = make_cfg(f"source={source}", f"data.data_dir={data_dir}", f"world={world}", "model.name=cnn",
                       "model.width=8", "model.depth=2", "n=200", "steps=12", "augment=2", *SOURCES[source])
        summary = run_trial(cfg)
        assert summary["status"] == "completed" and summary["steps_done"] == 12
        assert np.isfinite(summary["final"]["test/soft_error"])
        if source == "cifar5m":  # the paper reports CIFAR-10's test set beside CIFAR-5m's
            assert "test_cifar10/soft_error" in summary["final"]


def test_augmentation_is_per_step_and_never_touches_train_metrics(make_cfg, data_dir):
    cfg = make_cfg("source=cifar5m", f"data.data_dir={data_dir}", "world=real", "model.name=cnn",
                   "model.width=8", "model.depth=2", "n=200", "steps=12", "augment=2")
    _, dm, plan = build(cfg)
    dm.setup("fit")
    x, _, _ = dm.real
    assert x.dtype == torch.uint8  # images stay uint8 until the batch is on the device
    a, b, c = dm.train_transform(x[:64], 3), dm.train_transform(x[:64], 3), dm.train_transform(x[:64], 4)
    assert torch.equal(a, b) and not torch.equal(a, c)  # a function of (seed, step)
    assert not torch.equal(a, dm.eval_transform(x[:64]))  # training batches are augmented...
    tx, _ = dm.eval_sets["train"]  # ...the Real World's train metrics are taken on the n raw samples
    assert torch.equal(tx, dm.source.get(plan.real_subset())[0])


def test_augmenting_a_non_image_source_is_a_config_error(make_cfg):
    from twoworlds.launch.config import ConfigError
    with pytest.raises(ConfigError, match="augment=2 needs an image source; teacher is not one"):
        build(make_cfg("augment=2"))


@pytest.mark.parametrize("world", ["real", "ideal"])
def test_ffcv_and_tensor_backends_train_on_the_same_batches(make_cfg, data_dir, world):
    pytest.importorskip("ffcv")
    finals = {}
    for loader in ("tensor", "ffcv"):
        cfg = make_cfg("source=cifar5m", f"data.data_dir={data_dir}", f"data.cache_dir={data_dir / 'cache'}",
                       f"world={world}", "model.name=cnn", "model.width=8", "model.depth=2", "n=200",
                       "steps=12", "augment=2", f"loader={loader}", f"name={loader}")
        finals[loader] = run_trial(cfg)["final"]
    # the same ids step by step and the same augmentation: the same run, up to float rounding
    # (the batches arrive with other memory layouts, so kernels may sum in another order)
    assert finals["ffcv"] == pytest.approx(finals["tensor"], rel=1e-5)


def test_auto_loader_explains_its_choice(make_cfg, data_dir, capsys):
    cfg = make_cfg("source=cifar5m", f"data.data_dir={data_dir}", "loader=auto", "progress=true",
                   "model.name=cnn", "model.width=8", "model.depth=2")
    build(cfg)
    assert "[loader] tensor: the pool of 1,500 samples is 0.00 GB, cpu has" in capsys.readouterr().out
    cfg = make_cfg("loader=auto", "progress=true")
    build(cfg)
    assert "[loader] tensor: the teacher pool is generated on demand" in capsys.readouterr().out
