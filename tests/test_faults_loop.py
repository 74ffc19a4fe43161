"""Faults injected for real into the training loop (launch/loop.py): a second run of a running trial, a
failure before the first row, a checkpoint that is not one, a full disk, an interrupt after the last row.
Each is refused in one line or recorded exactly as it happened (invariant 8 of docs/invariants.md)."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY, crash_at
from test_faults_run import Payload, one_line_error
from test_sweep import REPO, cli, summaries, write_sweep
from twoworlds.launch import config, trial_state
from twoworlds.launch.cli import main
from twoworlds.launch.loop import FAULT_ENV, Checkpoints
from twoworlds.launch.run import run_trial
from twoworlds.launch.sweep_spec import load_sweep
from twoworlds.results.records import read_rows


def rows_of(run_dir: Path) -> list[dict]:
    header, rows = read_rows(run_dir / "metrics.csv")
    return [dict(zip(header, r, strict=True)) for r in rows]


def start_run(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "twoworlds.launch.cli", "run", *args], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def wait_for_rows(proc: subprocess.Popen, run_dir: Path, rows: int) -> None:
    while not (run_dir / "metrics.csv").exists() or len((run_dir / "metrics.csv").read_text().splitlines()) <= rows:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)


# --- one process runs a trial at a time ------------------------------------------------------------


def test_a_second_run_of_a_running_trial_is_refused_in_one_line_and_the_first_is_untouched(tmp_path, capsys):
    args = [*TINY, f"out_dir={tmp_path}", "steps=200000"]
    run_dir = tmp_path / "t" / config.trial_name(config.load(None, args))
    first = start_run(args)
    try:
        wait_for_rows(first, run_dir, 2)
        lock = json.loads((run_dir / trial_state.LOCK_FILE).read_text())
        assert (lock["pid"], lock["host"]) == (first.pid, socket.gethostname())
        assert main(["run", *args]) == 2  # the same command, while the first still trains
        err = one_line_error(capsys)
        assert f"is being run by process {first.pid} on {socket.gethostname()}" in err and str(run_dir) in err
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=120)
    finally:
        first.kill()
    steps = [int(r["step"]) for r in rows_of(run_dir)]
    assert steps == sorted(set(steps))  # one writer: no interleaved rows
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "interrupted"
    assert not (run_dir / trial_state.LOCK_FILE).exists()  # released by its owner on the way out


def test_a_lock_left_by_a_dead_process_is_taken_over(make_cfg, tmp_path):
    cfg = make_cfg("name=stale")
    run_dir = Path(cfg.out_dir) / "t" / "stale"
    run_dir.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (run_dir / trial_state.LOCK_FILE).write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(),
                                                             "run_id": None, "since": time.time() - 60}))
    assert run_trial(cfg)["status"] == "completed"
    assert not (run_dir / trial_state.LOCK_FILE).exists()


# --- failures are recorded with their cause -------------------------------------------------------


def test_a_failure_before_the_first_row_is_recorded_failed_with_its_cause_and_one_traceback(tmp_path):
    args = [*TINY, f"out_dir={tmp_path}", "name=early"]
    proc = subprocess.run([sys.executable, "-m", "twoworlds.launch.cli", "run", *args], cwd=REPO, text=True,
                          capture_output=True, env={**os.environ, FAULT_ENV: "early:1"})  # before row 1 is written
    assert proc.returncode == 1 and proc.stderr.count("Traceback") == 1, proc.stderr[-3000:]
    assert "RuntimeError: injected failure at step 1" in proc.stderr and "FileNotFoundError" not in proc.stderr
    run_dir = tmp_path / "t" / "early"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"] == f"RuntimeError: injected failure at step 1 ({FAULT_ENV})"
    assert summary["steps_done"] == 1 and summary["final"] == {} and rows_of(run_dir) == []
    from tb_read import read_hparams
    assert read_hparams(run_dir)["status"] == "STATUS_FAILURE"  # the events file says how it ended, too


def test_resuming_from_a_checkpoint_replaced_by_a_pickle_is_one_line_and_keeps_the_rows(make_cfg, tmp_path, recwarn):
    cfg = make_cfg("world=real", "name=swapped")
    with pytest.raises(RuntimeError, match="injected crash"):
        run_trial(cfg, checkpoints=Checkpoints(every_s=0), report=crash_at(10))
    run_dir = tmp_path / "runs" / "t" / "swapped"
    rows = rows_of(run_dir)
    marker = tmp_path / "pwned"
    (run_dir / trial_state.CKPT_FILE).write_bytes(pickle.dumps({"step": Payload(marker)}))
    with pytest.raises(trial_state.UserError, match=f"{run_dir / trial_state.CKPT_FILE} is not a checkpoint"):
        run_trial(cfg, resume_from=str(run_dir / trial_state.CKPT_FILE))
    assert not marker.exists()  # loaded as data: the payload never ran
    assert not [w for w in recwarn if "pickle protocol" in str(w.message)]  # the one line, no torch warning first
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and "is not a checkpoint twoworlds can read" in summary["error"]
    assert summary["steps_done"] == int(rows[-1]["step"]) == 10  # consistent with the rows kept
    assert summary["final"]["test/soft_error"] == pytest.approx(float(rows[-1]["test/soft_error"]))
    assert rows_of(run_dir) == rows


@pytest.mark.slow
def test_a_sweep_resumed_onto_a_pickled_checkpoint_fails_that_trial_in_one_line(tmp_path):
    path = write_sweep(tmp_path, name="swap", steps=200)
    path.write_text(re.sub(r"max_failures: \d+", "max_failures: 0", path.read_text()))
    study = tmp_path / "swap"
    trial = load_sweep(path, [f"out_dir={tmp_path}"]).trials[0].name
    first = cli(path, f"out_dir={tmp_path}", "checkpoint_every_s=0", env={FAULT_ENV: f"{trial}:150"})
    assert first.returncode == 1 and f"FAILED {trial}" in first.stdout, first.stdout[-3000:]
    ckpt = study / trial / trial_state.CKPT_FILE
    assert ckpt.exists() and (study / trial / trial_state.OWNER_FILE).exists()
    marker = tmp_path / "pwned"
    ckpt.write_bytes(pickle.dumps({"step": Payload(marker)}))
    resumed = cli(path, f"out_dir={tmp_path}", "checkpoint_every_s=0", "--resume")
    assert resumed.returncode == 1, resumed.stdout[-3000:]
    assert f"failed {trial}: {ckpt} is not a checkpoint twoworlds can read" in resumed.stdout
    assert "Traceback" not in resumed.stdout and not marker.exists()
    run = summaries(study)[trial]
    assert run["status"] == "failed" and run["steps_done"] == int(rows_of(study / trial)[-1]["step"])


# --- a full disk ------------------------------------------------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path):
    """A 12 KB tmpfs: config.yaml fits, a few rows of metrics.csv and the events file do not (root only)."""
    where = tmp_path / "disk"
    where.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount") or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=12k", "tmpfs", str(where)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root")
    yield where
    subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_a_full_disk_is_one_line_naming_the_file_and_leaves_no_temporary_files(tiny_disk, capsys):
    assert main(["run", *TINY, f"out_dir={tiny_disk}", "steps=400", "eval.points=200", "name=full"]) == 2
    err = one_line_error(capsys)
    assert "No space left on device" in err and str(tiny_disk / "t" / "full") in err
    assert not [p for p in (tiny_disk / "t" / "full").iterdir() if ".tmp-" in p.name]


# --- an interrupt that comes after the work is done -------------------------------------------------


def test_an_interrupt_after_the_last_row_leaves_the_trial_completed(make_cfg, tmp_path):
    def stop_at_the_end(row):  # as Tune stops a trial from inside its last report
        if row["step"] == 40:
            raise KeyboardInterrupt

    cfg = make_cfg("world=real", "name=late")
    with pytest.raises(KeyboardInterrupt):
        run_trial(cfg, report=stop_at_the_end)
    summary = json.loads((tmp_path / "runs" / "t" / "late" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps_done"] == 40
