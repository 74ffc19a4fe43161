"""The oldest Ray that pyproject.toml admits really runs a sweep: installed into a scratch venv (no site-packages
of this one), with twoworlds from this checkout, it runs the quick-start study's smoke variant end to end."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from twoworlds.launch import compat

REPO = Path(__file__).resolve().parent.parent


def _oldest_admitted() -> str:
    """The lower bound of Ray in pyproject.toml, which must be compat.RAY_OLDEST."""
    text = (REPO / "pyproject.toml").read_text()
    (low,) = re.findall(r'"ray\[[^\]]*\]>=([0-9.]+),<', text)
    assert tuple(int(p) for p in low.split(".")[:2]) == compat.RAY_OLDEST, "pyproject.toml and launch/compat.py disagree"
    return f"{low}.0" if low.count(".") == 1 else low


def _run(*cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)


@pytest.mark.slow
def test_the_oldest_supported_ray_runs_a_smoke_sweep(tmp_path):
    import torch

    ray_version = _oldest_admitted()
    venv = tmp_path / "venv"
    assert _run(sys.executable, "-m", "venv", venv, timeout=300).returncode == 0
    pip = [venv / "bin" / "python", "-m", "pip", "install", "-q"]
    # torch first, the build this venv has (the CPU wheel here), so that pip never pulls another one
    steps = [[*pip, f"torch=={torch.__version__.split('+')[0]}"],
             [*pip, "-e", REPO, f"ray[default,tune,train]=={ray_version}"]]
    for step in steps:
        done = _run(*step, timeout=1500)
        if done.returncode != 0:
            if os.environ.get("CI") == "true":
                pytest.fail(f"installing into a scratch venv failed: {' '.join(map(str, step))}\n{done.stderr[-3000:]}")
            pytest.skip(f"could not install into a scratch venv (registry unreachable?): {done.stderr.strip()[-300:]}")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS")}
    got = _run(venv / "bin" / "python", "-c", "import ray; print(ray.__version__)", env=env, timeout=300)
    assert got.stdout.strip() == ray_version, got.stderr[-2000:]

    out = tmp_path / "runs"
    sweep = _run(venv / "bin" / "twoworlds", "sweep", "quickstart", "--smoke", f"out_dir={out}", env=env, cwd=tmp_path,
                 timeout=1200)
    assert sweep.returncode == 0, sweep.stdout[-3000:] + sweep.stderr[-3000:]
    study = out / "quickstart-smoke"
    configs = sorted(study.glob("*/config.yaml"))
    assert configs, sweep.stdout[-2000:]
    for path in configs:
        assert yaml.safe_load(path.read_text())["provenance"]["versions"]["ray"] == ray_version
        assert '"status": "completed"' in (path.parent / "summary.json").read_text()
