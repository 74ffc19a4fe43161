"""The installed namespace: `twoworlds.<folder>`, and nothing top-level that user code could collide with."""

from __future__ import annotations

import subprocess
import sys


def test_subpackages_live_under_the_twoworlds_namespace_only(tmp_path):
    code = ("import importlib.util, twoworlds, twoworlds.launch.config as c\n"
            "assert all(importlib.util.find_spec(n) is None for n in ('launch', 'results', 'datamodules', "
            "'lightning_modules')), 'a bare top-level package is importable'\n"
            "print(sorted(twoworlds.__all__))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['load_config', 'load_study', 'run']"


def test_the_notebook_api_loads_a_config_runs_a_trial_and_loads_its_study(tmp_path):
    import twoworlds

    cfg = twoworlds.load_config(overrides=["source=teacher", "progress=false", "n=64", "steps=10", "batch_size=16",
                                           "data.test_size=64", "eval.points=3", "model.width=8", "study=nb",
                                           f"out_dir={tmp_path}"])
    summary = twoworlds.run(cfg)
    assert summary["status"] == "completed"
    study = twoworlds.load_study(tmp_path / "nb")
    assert list(study.trials.trial) == [summary["trial"]]
    assert study.curves.step.max() == 10
