"""Bad inputs a hostile new user would try, each injected for real through the command line: a bad optimizer
value, nan or inf, a seed out of range, a key given twice in a YAML file, data files that are not real numbers or
not whole. Each is refused in one line naming the key or the file (exit 2), before anything is trained or written."""

from __future__ import annotations

import numpy as np
import pytest
from twoworlds.launch.cli import main


def _refused(capsys, tmp_path, argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert not list(tmp_path.rglob("metrics.csv")), "nothing may be trained or written"
    return err


@pytest.mark.parametrize("overrides,match", [
    (["optim.name=adamw", "optim.betas=[2,2]"], "optim.betas=[2.0, 2.0] must be two numbers in [0, 1)"),
    (["optim.name=adamw", "optim.betas=[0.9]"], "optim.betas=[0.9] must be two numbers"),
    (["optim.momentum=-0.5"], "optim.momentum=-0.5 must be in [0, 1)"),
    (["optim.momentum=1.5"], "optim.momentum=1.5 must be in [0, 1)"),
    (["optim.weight_decay=-1"], "optim.weight_decay=-1.0 must be >= 0"),
    (["optim.schedule=step", "optim.milestones=[0.5,2]"], "optim.milestones=[0.5, 2.0] must be fractions"),
    (["optim.gamma=0"], "optim.gamma=0.0 must be > 0"),
    (["optim.warmup_steps=-3"], "optim.warmup_steps=-3 must be in [0, steps=2000)"),
    # nan and inf, like lr=-1: a learning rate, a momentum, a scale, a probability, a threshold, a list entry
    (["optim.lr=nan"], "optim.lr=nan must be a finite number"),
    (["optim.lr=inf"], "optim.lr=inf must be a finite number"),
    (["optim.lr=-inf"], "optim.lr=-inf must be a finite number"),
    (["optim.momentum=nan"], "optim.momentum=nan must be a finite number"),
    (["model.output_scale=inf"], "model.output_scale=inf must be a finite number"),
    (["corrupt.label_noise=nan"], "corrupt.label_noise=nan must be a finite number"),
    (["early_stop.train_error_below=nan"], "early_stop.train_error_below=nan must be a finite number"),
    (["optim.name=adamw", "optim.betas=[0.9,nan]"], "optim.betas=[0.9, nan] must be a finite number"),
    (["data.test_fraction=inf"], "data.test_fraction=inf must be a finite number"),
    # seeds: named, whatever the form of the number
    (["seed=1e23"], "bad value for 'seed' on the command line"),
    (["seed=100000000000000000000000"], "seed must be <= 4294967295 (numpy's seed range)"),
    (["data.seed=4294967296"], "data.seed must be <= 4294967295"),
    (["source=teacher", "data.teacher_shape=[1,0]"], "data.teacher_shape=[1, 0] must be 2 or 3 sizes >= 1"),
])
def test_bad_values_are_refused_at_config_time_in_one_line(capsys, tmp_path, overrides, match):
    err = _refused(capsys, tmp_path, ["run", "steps=2000", f"out_dir={tmp_path}", *overrides])
    assert match in err, err


@pytest.mark.parametrize("text,key,lines", [
    ("name: a\nname: b\nbase: {steps: 20}\n", "name", "lines 1 and 2"),
    ("name: a\nbase: {steps: 20, steps: 30}\n", "steps", "lines 2 and 2"),
    ("name: a\nbase:\n  steps: 20\n  model: {width: 8}\n  steps: 30\n", "steps", "lines 3 and 5"),
    ("name: a\ngrid: {model.width: [8, 16]}\nsmoke: {seeds: 1, seeds: 2}\n", "seeds", "lines 3 and 3"),
])
def test_a_key_given_twice_in_a_sweep_file_is_refused_naming_key_and_lines(capsys, tmp_path, text, key, lines):
    path = tmp_path / "twice.yaml"
    path.write_text(text)
    err = _refused(capsys, tmp_path, ["sweep", str(path), "--dry-run"])
    assert err.strip() == f"error: {path}: key '{key}' is given twice in one mapping ({lines}); keep one"


def test_a_key_given_twice_in_a_run_file_is_refused(capsys, tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("steps: 20\nmodel:\n  width: 8\n  width: 16\n")
    err = _refused(capsys, tmp_path, ["run", str(path), f"out_dir={tmp_path}"])
    assert err.strip() == f"error: {path}: key 'width' is given twice in one mapping (lines 3 and 4); keep one"


@pytest.fixture
def labels(tmp_path):
    path = tmp_path / "y.npy"
    np.save(path, np.arange(64) % 4)
    return path


def _arrays_run(tmp_path, x_path, y_path) -> list[str]:
    return ["run", "source=arrays", f"data.x_file={x_path}", f"data.y_file={y_path}", "steps=5", "n=16",
            "batch_size=8", "data.test_size=8", "progress=false", f"out_dir={tmp_path / 'runs'}"]


def test_complex_inputs_are_refused_not_cast(capsys, tmp_path, labels):
    """torch would keep the real part with only a warning: numbers identical to the real part alone."""
    x = tmp_path / "x.npy"
    np.save(x, (np.ones((64, 4)) + 1j * np.arange(64)[:, None]).astype(np.complex64))
    err = _refused(capsys, tmp_path, _arrays_run(tmp_path, x, labels))
    assert f"x ({x}) must hold real numbers, got dtype complex64" in err


@pytest.mark.parametrize("damage", ["object", "truncated", "not-npy"])
def test_an_unreadable_npy_is_named_in_one_line(capsys, tmp_path, labels, damage):
    x = tmp_path / "x.npy"
    if damage == "object":
        np.save(x, np.array([{"a": i} for i in range(64)], dtype=object), allow_pickle=True)
    else:
        np.save(x, np.ones((64, 4), np.float32))
        x.write_bytes(x.read_bytes()[:200] if damage == "truncated" else b"not an array at all")
    err = _refused(capsys, tmp_path, _arrays_run(tmp_path, x, labels))
    assert err.startswith(f"error: data.x_file={x} is not a readable .npy array ("), err


def test_an_object_array_inside_an_npz_is_named(capsys, tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.array([{"a": i} for i in range(64)], dtype=object), y=np.arange(64) % 4)
    argv = ["run", "source=arrays", f"data.npz={path}", "steps=5", "n=16", "batch_size=8", "data.test_size=8",
            f"out_dir={tmp_path / 'runs'}"]
    err = _refused(capsys, tmp_path, argv)
    assert err.startswith(f"error: {path}: array 'x' cannot be read ("), err
