"""Shared fixtures: tiny configs on the teacher source, written under pytest's tmp_path."""

from __future__ import annotations

import pytest
from twoworlds.launch import config

TINY = ["source=teacher", "progress=false", "n=128", "steps=40", "batch_size=16", "data.test_size=256",
        "eval.points=8", "model.width=32", "model.depth=2", "study=t"]


@pytest.fixture
def make_cfg(tmp_path):
    """make_cfg('key=value', ...) -> a validated tiny run config writing under tmp_path."""

    def make(*overrides: str):
        return config.load(None, [*TINY, f"out_dir={tmp_path / 'runs'}", *overrides])

    return make
