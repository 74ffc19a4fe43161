"""The installed namespace: `twoworlds.<folder>`, nothing top-level that user code could collide with, and the
layering of the packages (no cycles; the config layer without the training stack)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml


def test_subpackages_live_under_the_twoworlds_namespace_only(tmp_path):
    code = ("import importlib.util, twoworlds, twoworlds.launch.config as c\n"
            "assert all(importlib.util.find_spec(n) is None for n in ('launch', 'results', 'datamodules', "
            "'lightning_modules')), 'a bare top-level package is importable'\n"
            "print(sorted(twoworlds.__all__))")
    # Without PYTHONPATH: a checkout on the path (as in a worktree) makes its folders importable by itself.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env=env)
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


# The layering (results/records.py): each package may import only the ones listed for it, and `errors`
# (twoworlds/errors.py, the one base class of user errors: import-free, so every layer may raise it).
MAY_IMPORT = {
    "lightning_modules": {"errors"},
    "datamodules": {"lightning_modules", "errors"},
    "results": {"lightning_modules", "errors"},
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


# Modules of the twoworlds package itself that every layer may use: they import nothing of ours.
SHARED = {"errors", "identity"}


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_every_module_of_a_package_imports_only_the_packages_below_it(package):
    loaded = _fresh_import(f"import importlib, pkgutil\npkg = importlib.import_module('twoworlds.{package}')\n"
                           f"for m in pkgutil.iter_modules(pkg.__path__):\n"
                           f"    importlib.import_module('twoworlds.{package}.' + m.name)")
    assert set(loaded["ours"]) - {package} <= MAY_IMPORT[package] | SHARED, loaded["ours"]


def test_the_shared_modules_import_nothing_of_ours_and_nothing_heavy():
    loaded = _fresh_import("; ".join(f"import twoworlds.{m}" for m in sorted(SHARED)))
    assert set(loaded["ours"]) <= SHARED and loaded["heavy"] == [], loaded


def test_the_config_schema_and_sweep_checks_load_without_torch_lightning_or_pandas():
    loaded = _fresh_import("import twoworlds.launch.cli, twoworlds.launch.config, twoworlds.launch.sweep_spec, "
                           "twoworlds.launch.ray_start, twoworlds.launch.compat")
    assert loaded["heavy"] == [], f"the config layer pulled {loaded['heavy']}: `twoworlds keys` would wait for them"


def test_importing_any_module_sets_nothing_global():
    """No environment variable, matplotlib backend or rcParam changes when a module is imported: Ray's and Tune's
    switches are set when a sweep starts Ray (launch/ray_start.py), the report's style while a plot is drawn."""
    code = ("import os, matplotlib, importlib, pkgutil\n"
            # the libraries' own import-time settings first (ray, torch and Lightning set a few variables)
            "import torch, pytorch_lightning, pandas, ray, ray.tune, ray.train, matplotlib.pyplot\n"
            "env, rc, backend = dict(os.environ), dict(matplotlib.rcParams), matplotlib.get_backend()\n"
            "import twoworlds\n"
            "for package in ('lightning_modules', 'datamodules', 'results', 'launch'):\n"
            "    pkg = importlib.import_module('twoworlds.' + package)\n"
            "    for m in pkgutil.iter_modules(pkg.__path__):\n"
            "        importlib.import_module(f'twoworlds.{package}.{m.name}')\n"
            "changed = sorted(k for k in env.keys() | os.environ.keys() if env.get(k) != os.environ.get(k))\n"
            "changed += [k for k, v in rc.items() if matplotlib.rcParams[k] != v and k != 'backend']\n"
            "changed += ['backend'] if matplotlib.get_backend() != backend else []\n"
            "print('CHANGED', changed)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "CHANGED []", out.stdout[-2000:]


@pytest.mark.skipif(os.environ.get("CI") != "true", reason="CI only (CI=true), whose set-up must have built FFCV")
def test_ci_set_up_built_ffcv():
    """Elsewhere the FFCV tests skip when launch/install_ffcv.sh could not build it; in CI they must run,
    so a missing FFCV fails here instead of skipping them quietly."""
    try:
        import ffcv  # noqa: F401
    except ImportError as e:
        pytest.fail(f"CI=true but FFCV cannot be imported ({e}): launch/install_ffcv.sh did not build it", pytrace=False)


REPO = Path(__file__).resolve().parent.parent
# What a checkout holds besides its sources (.gitignore): the wheel must build without any of it.
_NOT_SOURCES = shutil.ignore_patterns(".git", ".venv", "runs", "build", "*.egg-info", "__pycache__", ".pytest_cache",
                                      ".ruff_cache", "*.beton")


def _ok(*cmd, **kw) -> str:
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=900, **kw)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.mark.slow
def test_a_wheel_install_runs_the_demo_outside_the_repository(tmp_path):
    """`pip install .` (a wheel, not editable), then `twoworlds demo --smoke` from an unrelated folder:
    the shipped sweeps are package data and nothing needs the repository at run time.

    The wheel is built from a copy (pip builds in the source tree) and installed alone into a fresh
    venv; only then does a .pth line lend it this venv's site-packages for the dependencies. A folder
    named in a .pth is appended to sys.path, but the .pth files inside it are not run, so this venv's
    editable-install finder (__editable__*.pth) never loads; with PYTHONPATH unset, `twoworlds` can
    only come from the wheel, which is checked."""
    src, dist, venv, work = (tmp_path / d for d in ("src", "dist", "venv", "work"))
    shutil.copytree(REPO, src, ignore=_NOT_SOURCES)
    _ok(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index", "-w", dist, src)
    (wheel,) = dist.glob("twoworlds-*.whl")
    _ok(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    # Installed before the .pth exists, so pip sees no other twoworlds (it would try to replace it).
    _ok(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index", wheel)
    site = _ok(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip()
    Path(site, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS")}
    where = _ok(python, "-c", "import twoworlds.launch.cli as c; print(c.__file__)", cwd=work, env=env)
    assert where.startswith(site), where
    assert "quickstart-smoke" in _ok(venv / "bin" / "twoworlds", "sweep", "quickstart", "--smoke", "--dry-run",
                                     cwd=work, env=env)
    _ok(venv / "bin" / "twoworlds", "demo", "--smoke", cwd=work, env=env)
    study = work / "runs" / "quickstart-smoke"
    assert (study / "report" / "index.html").is_file()
    config = yaml.safe_load(next(study.glob("*/config.yaml")).read_text())
    assert config["provenance"]["git_commit"] == "unknown" and config["provenance"]["versions"]["twoworlds"] == "0.1.0"
