"""Shared fixtures: tiny configs on the teacher source, written under pytest's tmp_path."""

from __future__ import annotations

import socket

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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (a gloo rendezvous, a Ray head, a TensorBoard server);
    tests import it: `from conftest import free_port`."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
