"""Config errors name the problem and the fix; they never surface as library tracebacks."""

from __future__ import annotations

import pytest
from twoworlds.launch import config
from twoworlds.launch.cli import main
from twoworlds.launch.config import ConfigError


def test_an_unknown_key_names_the_key_and_the_nearest_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown config key 'optim\.lrr'.*Did you mean: optim\.lr"):
        config.load(None, ["optim.lrr=0.1"])
    with pytest.raises(ConfigError, match=r"unknown config key 'widht'.*model\.width"):
        config.load(None, ["widht=3"])


def test_an_unknown_key_in_a_yaml_file_names_the_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("steps: 10\nmodel:\n  depht: 3\n")
    with pytest.raises(ConfigError, match=rf"'model\.depht' in {path}.*model\.depth"):
        config.load(path)


def test_yaml_then_overrides_merge_in_order(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("steps: 10\nmodel:\n  name: cnn\n  width: 8\n")
    cfg = config.load(path, ["model.width=16"])
    assert (cfg.steps, cfg.model.name, cfg.model.width) == (10, "cnn", 16)


@pytest.mark.parametrize("override,match", [
    ("steps=abc", r"bad value for 'steps'"),
    ("world=sideways", r"world=sideways is not one of: real, ideal, both"),
    ("optim.schedule=linear", r"optim.schedule=linear is not one of: constant, cosine, step"),
    ("batch_size=0", r"batch_size must be >= 1"),
    ("optim.nesterov=true", r"nesterov=true needs optim.momentum > 0"),
    ("nosuchthing", r"not a key=value override"),
])
def test_bad_values_are_named(override, match):
    overrides = ["optim.momentum=0", override] if "nesterov" in override else [override]
    with pytest.raises(ConfigError, match=match):
        config.load(None, overrides)


@pytest.mark.parametrize("override,match", [
    ("source=mnist2d", r"unknown source 'mnist2d'; known: arrays, cifar10, cifar5m, mnist1d, teacher"),
    ("model.name=transformer", r"unknown network 'transformer'; known: cnn, mlp, resnet, vit"),
    ("model.depth=12", r"resnet depth"),
])
def test_cli_reports_config_errors_in_one_line_with_exit_code_2(make_cfg, capsys, tmp_path, override, match):
    overrides = ["model.name=resnet", override] if "depth" in override else [override]
    code = main(["run", "source=teacher", f"out_dir={tmp_path}", *overrides])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and "Traceback" not in err
    assert __import__("re").search(match, err), err


def test_cli_refuses_a_pool_too_small_before_training(capsys, tmp_path):
    code = main(["run", "source=teacher", "world=ideal", "data.pool_size=1000", "steps=100", "batch_size=32",
                 f"out_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 2
    assert "3,200 distinct samples" in err and "1,000" in err and "steps to at most 31" in err
    assert not list(tmp_path.rglob("metrics.csv")), "nothing may be trained or written"


def test_keys_lists_every_key_with_its_default(capsys):
    assert main(["keys"]) == 0
    out = capsys.readouterr().out
    assert "optim.lr = 0.05" in out and "data.teacher_classes = 4" in out and "eval.points = 40" in out


def test_trial_names_are_readable_and_pair_keys_ignore_world_and_n():
    real = config.load(None, ["world=real", "n=512", "model.name=cnn", "model.width=64", "model.depth=3"])
    ideal = config.load(None, ["world=ideal", "n=999", "model.name=cnn", "model.width=64", "model.depth=3"])
    other = config.load(None, ["world=ideal", "model.name=cnn", "model.width=32", "model.depth=3"])
    assert config.trial_name(real) == "cnn-w64-d3-bs128-real-n512-s0"
    assert config.trial_name(ideal) == "cnn-w64-d3-bs128-ideal-s0"
    assert config.pair_key(real) == config.pair_key(ideal) != config.pair_key(other)
