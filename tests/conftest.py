"""Shared fixtures: tiny configs on the teacher source, written under pytest's tmp_path."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

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


def kill_session(pid: int, timeout: float = 30.0) -> None:
    """SIGKILL every process in the session of `pid` (started with start_new_session=True) and wait until they are
    gone: a machine that lost everything at once. `os.killpg` is not enough: Ray puts its trial workers in process
    groups of their own, and they outlive the driver by seconds, long enough to finish a short trial."""
    sid = os.getsid(pid)
    deadline = time.time() + timeout
    while time.time() < deadline:
        alive = []
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    zombie = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"  # dead, not reaped
                    if not zombie and os.getsid(int(proc.name)) == sid:
                        os.kill(int(proc.name), signal.SIGKILL)
                        alive.append(proc.name)
                except (OSError, IndexError):  # gone meanwhile, or another user's
                    pass
        if not alive:
            return
        time.sleep(0.1)
    raise RuntimeError(f"processes of session {sid} outlived SIGKILL for {timeout:g} s")


def crash_at(step: int):
    """A `report` for run_trial that raises at the row of `step`: a real exception from inside the training
    loop, after that row (and the checkpoint due at it) is on disk."""

    def report(row: dict) -> None:
        if row["step"] == step:
            raise RuntimeError(f"injected crash at step {step}")

    return report

