"""Faults injected for real into runs, sweeps and reports: each is refused in one line (exit 2) before
anything is written, or recorded exactly as it happened (invariant 8 of docs/invariants.md)."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import TINY, kill_session
from test_sweep import REPO, cli, summaries, write_sweep
from twoworlds.launch import config, trial_state
from twoworlds.launch.cli import main
from twoworlds.launch.recorder import RunRecorder
from twoworlds.launch.run import run_trial
from twoworlds.launch.sweep_spec import load_sweep
from twoworlds.results.aggregate import load_study


class Payload:
    """A pickle that runs code when unpickled: it touches `marker`."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def plant_checkpoint(run_dir: Path, marker: Path) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt = run_dir / trial_state.CKPT_FILE
    ckpt.write_bytes(pickle.dumps({"global_step": Payload(marker)}))
    return ckpt


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def files(run_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run_dir.iterdir()) if p.is_file()}


@pytest.fixture
def finished(make_cfg):
    """A finished tiny Real World run: (its config, its run directory)."""
    cfg = make_cfg("world=real")
    summary = run_trial(cfg)
    return cfg, Path(cfg.out_dir) / "t" / summary["trial"]


# --- A: a changed config under an existing trial name ----------------------------------------------


def test_a_changed_config_under_an_existing_name_is_refused_and_nothing_is_overwritten(finished, capsys):
    cfg, run_dir = finished
    before = files(run_dir)
    stored = yaml.safe_load(before["config.yaml"])
    assert stored["provenance"]["config_hash"] == json.loads(before["summary.json"])["config_hash"] \
        == config.config_hash(cfg)
    assert main(["run", *TINY, f"out_dir={cfg.out_dir}", "steps=30", "optim.lr=0.1"]) == 2
    err = one_line_error(capsys)
    assert str(run_dir) in err and "steps: 40 -> 30" in err and "optim.lr: 0.05 -> 0.1" in err
    assert "new study name" in err and "delete that trial directory" in err
    assert files(run_dir) == before  # metrics, summary, config and events untouched, no new events file
    # the same config (progress and out_dir aside) is still the same trial: a sweep keeps it
    kept = cfg.copy()
    kept.progress = True
    kept.name = run_dir.name
    assert trial_state.finished_summary(kept)["status"] == "completed"
    run_trial(cfg)  # and a single run of it starts afresh, replacing (never mixing) its rows and curves
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == sum(n.startswith("events.") for n in before)


def test_a_sweep_whose_trials_hold_other_configs_is_refused_before_ray_starts(tmp_path, capsys):
    path = write_sweep(tmp_path, name="clash", steps=40)
    sweep = load_sweep(path, [f"out_dir={tmp_path}"])
    for t in sweep.trials:  # the study ran before at steps=40 (written as a trial writes it)
        rec = RunRecorder(trial_state.run_dir(t.cfg))
        rec.enable(True)
        rec.write_config(t.cfg, {"config_hash": config.config_hash(t.cfg)})
    assert main(["sweep", str(path), f"out_dir={tmp_path}", "steps=30"]) == 2
    err = one_line_error(capsys)
    assert "2 trial directories" in err and all(t.name in err for t in sweep.trials) and "steps: 40 -> 30" in err
    assert not (tmp_path / "clash" / "sweep.json").exists() and not (tmp_path / "clash" / "_tune").exists()


# --- B: --resume with new overrides -----------------------------------------------------------------


def test_resume_refuses_overrides_other_than_the_stored_ones_and_keeps_sweep_json(tmp_path, capsys):
    path = write_sweep(tmp_path, name="resumed", steps=40)
    started = [f"out_dir={tmp_path}", "optim.lr=0.05"]
    load_sweep(path, started).write_manifest(started, smoke=False)
    manifest = (tmp_path / "resumed" / "sweep.json").read_bytes()
    assert main(["sweep", str(path), "--resume", f"out_dir={tmp_path}", "optim.lr=0.2"]) == 2
    err = one_line_error(capsys)
    assert "optim.lr=0.2" in err and "optim.lr=0.05" in err and "new study" in err
    assert (tmp_path / "resumed" / "sweep.json").read_bytes() == manifest
    path.write_text(path.read_text().replace("max_failures: 1", "max_failures: 2"))  # an edited sweep file
    assert main(["sweep", str(path), "--resume", f"out_dir={tmp_path}"]) == 2
    assert "changed since" in one_line_error(capsys)


# --- C: torn and malformed files --------------------------------------------------------------------


def _write_many(path: Path, text: str, times: int) -> None:
    from twoworlds.results.records import atomic_write_text
    for _ in range(times):
        atomic_write_text(path, text)


def test_two_processes_writing_one_file_at_once_each_leave_a_whole_file(tmp_path):
    """A sweep driver marks a cut-off trial 'interrupted' while the trial records the same: two
    processes write one summary.json at once. Neither may fail (a shared temporary name let one
    rename the other's away: FileNotFoundError, seen in a Ctrl-C test), and the file is always one
    writer's whole text."""
    import multiprocessing
    path = tmp_path / "summary.json"
    texts = [json.dumps({"status": "interrupted", "by": who, "pad": "x" * 20_000}) for who in ("driver", "trial")]
    procs = [multiprocessing.get_context("fork").Process(target=_write_many, args=(path, t, 400)) for t in texts]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert path.read_text() in texts
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temporary file left behind


def test_a_torn_last_row_is_dropped_with_a_warning_naming_the_file(finished, caplog):
    cfg, run_dir = finished
    metrics = run_dir / "metrics.csv"
    rows = metrics.read_text().splitlines()
    torn = rows[-1][: rows[-1].rindex(",") + 4]  # the last value cut short: "6.25e-05" read as "6.2"
    metrics.write_text("\n".join(rows) + "\n" + torn)
    study = load_study(run_dir.parent)
    assert len(study.curves) == len(rows) - 1
    assert f"{metrics}: dropped its torn last row" in caplog.text  # logged (results/records.py)
    # a resume keeps the complete rows only
    rec = RunRecorder(run_dir)
    rec.enable(True)
    rec.start_metrics(rows[0].split(","), keep_until_step=10**9)
    assert metrics.read_text().splitlines() == rows


@pytest.mark.parametrize("victim,damage", [
    ("metrics.csv", lambda t: t.replace("\n", "\n1,2\n", 2)),  # a short row in the middle
    ("metrics.csv", lambda t: t.replace(",", ",abc,", 1).replace("\n", ",x\n", 1)),  # a non-number
    ("summary.json", lambda t: t[: len(t) // 2]),
    ("config.yaml", lambda t: t + "\n  bad: [unclosed\n"),
], ids=["short-row", "not-a-number", "summary", "config"])
def test_a_malformed_trial_file_is_a_one_line_report_error_naming_it(finished, capsys, victim, damage):
    _, run_dir = finished
    path = run_dir / victim
    path.write_text(damage(path.read_text()))
    assert main(["report", str(run_dir.parent)]) == 2
    assert str(path) in one_line_error(capsys)


# --- D: Ctrl-C ---------------------------------------------------------------------------------------


STOPS = [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated (SIGTERM)")]  # Ctrl-C; preemption


@pytest.mark.parametrize(("sig", "code", "said"), STOPS, ids=["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_records_interrupted_exits_130_or_143_and_never_reads_a_planted_checkpoint(
        tmp_path, sig, code, said):
    out = tmp_path / "runs"
    args = [*TINY, f"out_dir={out}", "steps=200000", "progress=true"]
    run_dir = out / "t" / config.trial_name(config.load(None, args))
    marker = tmp_path / "pwned"
    plant_checkpoint(run_dir, marker)  # E: a single run never touches last.ckpt
    proc = subprocess.Popen([sys.executable, "-m", "twoworlds.launch.cli", "run", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        while not (run_dir / "metrics.csv").exists() or len((run_dir / "metrics.csv").read_text().splitlines()) < 2:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == code, err[-2000:]
    assert "Traceback" not in err and f"{said}: summary.json says 'interrupted'" in err
    assert "running the same command again starts it from step 0" in err
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and 1 <= summary["steps_done"] < 200000
    assert not marker.exists()


# --- E: checkpoints are data, never code -------------------------------------------------------------


def test_a_planted_checkpoint_is_never_read_unless_its_own_sweep_wrote_it_and_never_runs_code(finished, tmp_path):
    cfg, run_dir = finished
    cfg = cfg.copy()
    cfg.name = run_dir.name
    marker = tmp_path / "pwned"
    ckpt = plant_checkpoint(run_dir, marker)
    assert trial_state.resume_checkpoint(cfg, "run-1") is None  # nobody vouches for it
    (run_dir / trial_state.OWNER_FILE).write_text("run-0")
    assert trial_state.resume_checkpoint(cfg, "run-1") is None  # another experiment's
    (run_dir / trial_state.OWNER_FILE).write_text("run-1")
    assert trial_state.resume_checkpoint(cfg, "run-1") == str(ckpt)  # a retry or --resume of this one
    with pytest.raises(Exception, match="(?i)weights.only|unpickl"):  # even then: loaded as data
        run_trial(cfg, resume_from=str(ckpt))
    assert not marker.exists()
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "failed"


# --- F: one-line errors, exit 2 ----------------------------------------------------------------------

SWEEP_FAULTS = {"seeds: 0": "'seeds'", "seeds: -3": "'seeds'", "seeds: abc": "'seeds'",
                "max_failures: abc": "'max_failures'", "max_failures: -1": "'max_failures'",
                "resources: {cpu: abc}": "resources.cpu"}


FAULTS = [
    ("eval.batch_size=0", "eval.batch_size must be >= 1"),
    ("data.test_size=0", "data.test_size must be >= 1"),
    ("seed=-1", "seed must be >= 0"),
    ("model.output_scale=-1", "model.output_scale=-1.0 must be > 0"),
    ("study=../../x", "study='../../x' must be a plain directory name"),
    ("name=a/b", "name='a/b' must be a plain directory name"),
    ("yaml", "bad.yaml is not valid YAML"),
    ("sweep-yaml", "bad.yaml is not valid YAML"),
    ("npz", "garbage.npz is not an .npz archive"),
    ("read-only", "cannot write to"),
    *[(f"sweep:{k}", v) for k, v in SWEEP_FAULTS.items()],
]


@pytest.mark.parametrize("fault,match", FAULTS, ids=[f for f, _ in FAULTS])
def test_bad_input_is_one_line_exit_2_naming_the_key_or_file(tmp_path, capsys, fault, match):
    base = [*TINY, f"out_dir={tmp_path / 'runs'}"]
    if fault.startswith("sweep:"):
        path = write_sweep(tmp_path)
        path.write_text("\n".join(line for line in path.read_text().splitlines()
                                  if not line.startswith(fault[6:].split(":")[0])) + f"\n{fault[6:]}\n")
        argv = ["sweep", str(path), "--dry-run"]
    elif fault.endswith("yaml"):
        (tmp_path / "bad.yaml").write_text("steps: 10\nmodel: {width: 8\n")
        argv = ["run", str(tmp_path / "bad.yaml"), *base] if fault == "yaml" else ["sweep", str(tmp_path / "bad.yaml")]
    elif fault == "npz":
        (tmp_path / "garbage.npz").write_bytes(os.urandom(512))
        argv = ["run", *base, "source=arrays", f"data.npz={tmp_path / 'garbage.npz'}"]
    elif fault == "read-only":
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        out = ro if os.geteuid() else Path("/sys/fs/twoworlds-test")  # root writes anywhere but sysfs
        argv = ["run", *base, f"out_dir={out}"]
    else:
        argv = ["run", *base, fault]
    assert main(argv) == 2
    assert match in one_line_error(capsys)


# --- G: world=both checks both worlds first ----------------------------------------------------------


def test_world_both_refuses_a_pool_too_small_for_the_ideal_world_before_the_real_world_trains(tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["run", *TINY, f"out_dir={out}", "world=both", "data.pool_size=600"]) == 2
    assert "640 distinct samples" in one_line_error(capsys)  # 40 steps x 16 fresh samples; the Real World needs 128
    assert not out.exists()  # the Real World never started


# --- D for sweeps (real Ray) -------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code", "said"), STOPS, ids=["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_to_a_sweep_driver_marks_cut_off_trials_interrupted_and_says_how_to_resume(
        tmp_path, sig, code, said):
    path = write_sweep(tmp_path, name="cut", steps=100000)
    study = tmp_path / "cut"
    marker = tmp_path / "pwned"
    # E: a fresh sweep never reads a last.ckpt it did not write, even in a directory of its own config
    victim = load_sweep(path, [f"out_dir={tmp_path}"]).trials[0]
    rec = RunRecorder(trial_state.run_dir(victim.cfg))
    rec.enable(True)
    rec.write_config(victim.cfg, {})
    plant_checkpoint(trial_state.run_dir(victim.cfg), marker)
    driver = cli(path, f"out_dir={tmp_path}", "checkpoint_every_s=0", start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not any(
                len(p.read_text().splitlines()) > 2 for p in study.glob("*/metrics.csv")):
            time.sleep(0.2)
        driver.send_signal(sig)
        out, _ = driver.communicate(timeout=240)
    finally:
        if driver.poll() is None:
            kill_session(driver.pid)
    assert driver.returncode == code, out[-3000:]
    assert f"{said}: finished trials, the rows logged so far and the trials' checkpoints are kept; continue " \
           f"with: twoworlds sweep {path} out_dir={tmp_path} checkpoint_every_s=0 --resume" in out
    runs = summaries(study)
    assert runs and {s["status"] for s in runs.values()} == {"interrupted"}, runs
    for trial in runs:  # kept for --resume: the checkpoint of a trial that logged more than its first row
        if len((study / trial / "metrics.csv").read_text().splitlines()) > 2:
            assert (study / trial / trial_state.CKPT_FILE).exists(), trial
    assert not marker.exists()
