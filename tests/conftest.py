"""Shared fixtures: tiny configs on the teacher source, written under pytest's tmp_path."""

from __future__ import annotations

import signal
import socket

import pytest
from twoworlds.launch import config

# Ctrl-C as at a terminal. A non-interactive shell starts a background command (`bash .ci/run &`, a CI
# runner's job) with SIGINT ignored; every process the tests start would inherit that, keep training
# through the real SIGINTs of the fault tests, and time out. `twoworlds` itself rightly keeps an
# inherited SIG_IGN (nohup, background jobs): it is the test session that models a person at a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

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


def crash_at(step: int):
    """A `report` for run_trial that raises at the row of `step`: a real exception from inside the training
    loop, after that row (and the checkpoint due at it) is on disk."""

    def report(row: dict) -> None:
        if row["step"] == step:
            raise RuntimeError(f"injected crash at step {step}")

    return report

