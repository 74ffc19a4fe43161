"""The installed namespace: `twoworlds.<folder>`, nothing top-level that user code could collide with, and the
layering of the packages (no cycles; the config layer without the training stack)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


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


# The layering (results/records.py): each package may import only the ones listed for it.
MAY_IMPORT = {
    "lightning_modules": set(),
    "datamodules": {"lightning_modules"},
    "results": {"lightning_modules"},
}
HEAVY = ("torch", "pytorch_lightning", "lightning", "pandas", "ray", "matplotlib", "scipy")


def _fresh_import(code: str) -> dict:
    """Run `code` in a fresh interpreter, return {'ours': twoworlds packages loaded, 'heavy': heavy ones}."""
    probe = (f"{code}\nimport json, sys\n"
             "ours = {n.split('.')[1] for n in sys.modules if n.startswith('twoworlds.')}\n"
             f"print(json.dumps({{'ours': sorted(ours), 'heavy': [m for m in {HEAVY!r} if m in sys.modules]}}))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_every_module_of_a_package_imports_only_the_packages_below_it(package):
    loaded = _fresh_import(f"import importlib, pkgutil\npkg = importlib.import_module('twoworlds.{package}')\n"
                           f"for m in pkgutil.iter_modules(pkg.__path__):\n"
                           f"    importlib.import_module('twoworlds.{package}.' + m.name)")
    assert set(loaded["ours"]) - {package} <= MAY_IMPORT[package], loaded["ours"]


def test_the_config_schema_and_sweep_checks_load_without_torch_lightning_or_pandas():
    loaded = _fresh_import("import twoworlds.launch.cli, twoworlds.launch.config, twoworlds.launch.sweep_spec")
    assert loaded["heavy"] == [], f"the config layer pulled {loaded['heavy']}: `twoworlds keys` would wait for them"
