"""What TensorBoard shows of a study agrees with metrics.csv and summary.json: the event files read
back with TensorBoard's reader, the run naming of a study's logdir, and a real `tensorboard` server's
HTTP data API (runs, scalars, the HPARAMS tab's config, final metrics and each trial's status)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import TINY, crash_at, free_port
from tb_read import read_hparams, read_scalars
from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
from twoworlds.launch import config, trial_state
from twoworlds.launch.loop import Checkpoints
from twoworlds.launch.run import run_trial
from twoworlds.lightning_modules.metrics import (
    KINDS,
    TEST,
    TEST_SOFT_ERROR,
    TRAIN,
    TRAIN_FLOPS,
    TRAIN_SOFT_ERROR,
    WEIGHT_MOVEMENT,
    metric_name,
)

# every trial declares all
FINAL_TAGS = [f"final/{metric_name(s, k)}" for s in (TEST, TRAIN) for k in KINDS] + [f"final/{WEIGHT_MOVEMENT}"]
SERVER_DEADLINE_S = 60  # start-up and first load of the logdir; a tiny study loads in a few seconds
TRIALS = ("real", "ideal", "diverged")
# The HPARAMS session status each trial's summary.json status must show as.
SESSION_STATUS = {"real": "STATUS_SUCCESS", "ideal": "STATUS_SUCCESS", "diverged": "STATUS_FAILURE"}
BLOWUP = ["optim.lr=1e6", "optim.momentum=0.99", "check_every=5", "name=blowup"]  # NaN within a few steps


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> dict[str, Path]:
    """One tiny study: its Real World and Ideal World trials, and a Real World trial that diverges:
    {'real' | 'ideal' | 'diverged': trial directory}."""
    out = tmp_path_factory.mktemp("tb") / "runs"
    trials = {}
    for key, overrides, status in (("real", ["world=real"], "completed"), ("ideal", ["world=ideal"], "completed"),
                                   ("diverged", ["world=real", *BLOWUP], "diverged")):
        summary = run_trial(config.load(None, [*TINY, f"out_dir={out}", *overrides]))
        assert summary["status"] == status
        trials[key] = out / summary["study"] / summary["trial"]
    return trials


def logged_columns(csv: pd.DataFrame) -> list[str]:
    """The metrics.csv columns the training loop also logs to TensorBoard."""
    return [c for c in csv.columns if "/" in c or c in ("lr", TRAIN_FLOPS, WEIGHT_MOVEMENT)]


def f32(values) -> np.ndarray:
    """TensorBoard stores scalars as float32; compare at that precision (NaN equals NaN)."""
    return np.asarray([float(v) for v in values], dtype=np.float32)


def tensorboard_value(value):
    """A config value as it comes back from the hparams plugin (see launch/tensorboard_log.py):
    bools as bools, numbers as floats, None and lists as text."""
    if isinstance(value, bool | str):
        return value
    return float(value) if isinstance(value, int | float) else str(value)


def expected_hparams(trial: Path) -> dict:
    """The config, then summary.json's status and FLOPs per sample."""
    cfg = yaml.safe_load((trial / "config.yaml").read_text())
    cfg.pop("provenance")
    summary = json.loads((trial / "summary.json").read_text())
    cfg.update(status=summary["status"], flops_per_sample=summary["flops_per_sample"])
    return {k: tensorboard_value(v) for k, v in config.flatten(cfg).items()}


def same_values(got: dict, expected: dict) -> None:
    """Equal, and of the same type: True == 1.0 in Python, but a bool must come back as a bool."""
    assert got == expected
    assert {k: type(v) for k, v in got.items()} == {k: type(v) for k, v in expected.items()}


def expected_finals(trial: Path) -> dict[str, float]:
    final = json.loads((trial / "summary.json").read_text())["final"]
    return {tag: float(final.get(tag.removeprefix("final/"), "nan")) for tag in FINAL_TAGS}


# ---- event files --------------------------------------------------------------------------------


@pytest.mark.parametrize("key", TRIALS)
def test_event_files_hold_every_logged_metrics_csv_column_step_for_step(study, key):
    csv = pd.read_csv(study[key] / "metrics.csv")
    scalars = read_scalars(study[key])
    assert TRAIN_FLOPS in logged_columns(csv)
    assert set(scalars.tag) == set(logged_columns(csv)) | set(FINAL_TAGS)
    for tag in logged_columns(csv):
        points = scalars[scalars.tag == tag]
        assert points.step.tolist() == csv.step.tolist(), tag
        np.testing.assert_array_equal(f32(points.value), f32(csv[tag]), err_msg=tag)
    final = scalars[scalars.tag.str.startswith("final/")]
    assert final.step.tolist() == [csv.step.iloc[-1]] * len(FINAL_TAGS)  # at the last step, not at 0


def test_trials_of_a_study_share_one_logdir_with_one_events_file_each(study):
    study_dir = {trial.parent for trial in study.values()}.pop()
    assert {trial.parent for trial in study.values()} == {study_dir}
    files = sorted(p.parent.name for p in study_dir.rglob("events.out.tfevents.*"))
    assert files == sorted(trial.name for trial in study.values())  # one each: curves, hparams, finals together
    mux = EventMultiplexer().AddRunsFromDirectory(str(study_dir))  # TensorBoard's own run discovery
    assert set(mux.Runs()) == {trial.name for trial in study.values()}


def test_hparams_hold_each_trials_config_and_final_metrics_declared_alike(study):
    for trial in study.values():
        hp = read_hparams(trial)
        same_values(hp["hparams"], expected_hparams(trial))
        assert hp["hparams"]["optim.nesterov"] is False and hp["hparams"]["optim.milestones"] == "[0.5, 0.75]"
        assert list(hp["metrics"]) == FINAL_TAGS  # same columns whichever trial TensorBoard reads them from
        np.testing.assert_array_equal(f32(hp["metrics"].values()), f32(expected_finals(trial).values()))
    assert np.isnan(read_hparams(study["ideal"])["metrics"][f"final/{TRAIN_SOFT_ERROR}"])
    assert read_hparams(study["diverged"])["hparams"]["status"] == "diverged"
    assert {key: read_hparams(trial)["status"] for key, trial in study.items()} == SESSION_STATUS


def test_a_failed_trial_shows_failure_and_its_retry_success_in_one_events_file(make_cfg):
    cfg = make_cfg("name=crash")
    with pytest.raises(RuntimeError, match="injected crash"):  # checkpoints at each evaluation, as in a sweep
        run_trial(cfg, report=crash_at(5), checkpoints=Checkpoints(every_s=0, run_id="sweep-1"))
    trial = Path(cfg.out_dir) / cfg.study / "crash"
    assert len(list(trial.glob("events.out.tfevents.*"))) == 1
    hp = read_hparams(trial)
    assert (hp["status"], hp["hparams"]["status"]) == ("STATUS_FAILURE", "failed")
    last = pd.read_csv(trial / "metrics.csv").step.iloc[-1]
    assert last <= 6 and set(read_scalars(trial).query("tag.str.startswith('final/')").step) == {last}
    # Retried from its last checkpoint (as a sweep does): still one events file, now the retry's,
    # with the kept rows and the rest, and the session status of the attempt that finished.
    summary = run_trial(cfg, resume_from=trial_state.resume_checkpoint(cfg, "sweep-1"))
    assert summary["status"] == "completed" and 0 < summary["resumed_from_step"] < 6
    assert len(list(trial.glob("events.out.tfevents.*"))) == 1
    assert read_hparams(trial)["status"] == "STATUS_SUCCESS"
    csv, scalars = pd.read_csv(trial / "metrics.csv"), read_scalars(trial)
    for tag in logged_columns(csv):
        points = scalars[scalars.tag == tag]
        assert points.step.tolist() == csv.step.tolist(), tag
        np.testing.assert_array_equal(f32(points.value), f32(csv[tag]), err_msg=tag)


# ---- a real TensorBoard server ------------------------------------------------------------------


class Server:
    def __init__(self, url: str, proc: subprocess.Popen, stderr: Path):
        self.url, self.proc, self.stderr = url, proc, stderr

    def get(self, route: str, **query):
        url = f"{self.url}{route}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.loads(r.read())

    def post(self, route: str, body: dict):
        req = urllib.request.Request(f"{self.url}{route}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def wait_until(self, ready, what: str) -> None:
        """Poll ready() (True once the data is served) until the deadline; fail with the server's stderr."""
        deadline, last = time.monotonic() + SERVER_DEADLINE_S, None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"tensorboard exited ({self.proc.returncode}) before {what}:\n{self.stderr.read_text()}")
            try:
                if ready():
                    return
            except (urllib.error.URLError, ConnectionError) as e:
                last = e
            time.sleep(0.2)
        pytest.fail(f"tensorboard did not serve {what} within {SERVER_DEADLINE_S}s (last error: {last}):\n"
                    f"{self.stderr.read_text()}")


@pytest.fixture(scope="module", params=["auto", "false"], ids=["load_fast=auto", "load_fast=false"])
def server(request, study, tmp_path_factory):
    """`tensorboard --logdir <study>` on a free port, once its data API serves every trial's scalars.

    Both loaders: the Rust data server (auto, where installed) and the Python one pick different
    trials' hparams summaries, which once hid the Real World's train metrics under one of them."""
    study_dir = study["real"].parent
    exe = Path(sys.executable).with_name("tensorboard")
    stderr = tmp_path_factory.mktemp("tensorboard") / "stderr.txt"
    port = free_port()
    with stderr.open("w") as err:
        proc = subprocess.Popen([str(exe), "--logdir", str(study_dir), "--host", "127.0.0.1", "--port", str(port),
                                 f"--load_fast={request.param}"], stdout=subprocess.DEVNULL, stderr=err)
    server = Server(f"http://127.0.0.1:{port}", proc, stderr)
    try:
        names = {trial.name for trial in study.values()}
        server.wait_until(lambda: set(server.get("/data/runs")) == names, "both trials as runs")
        # final/* go into each trial's last events file: once one is served, the trial is loaded.
        loaded = lambda tags: any(t.startswith("final/") for t in tags)  # noqa: E731
        server.wait_until(lambda: all(loaded(tags) for tags in server.get("/data/plugin/scalars/tags").values()),
                          "every trial's final metrics")
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_server_lists_each_trial_as_a_run(server, study):
    assert sorted(server.get("/data/runs")) == sorted(trial.name for trial in study.values())


@pytest.mark.parametrize("key", TRIALS)
def test_server_serves_the_metrics_csv_curves(server, study, key):
    csv = pd.read_csv(study[key] / "metrics.csv")
    assert TEST_SOFT_ERROR in logged_columns(csv)
    for tag in logged_columns(csv):
        points = server.get("/data/plugin/scalars/scalars", run=study[key].name, tag=tag)  # [wall, step, value]
        assert [step for _, step, _ in points] == csv.step.tolist(), tag
        np.testing.assert_array_equal(f32(v for _, _, v in points), f32(csv[tag]), err_msg=tag)


def test_server_hparams_tab_shows_each_trials_config_final_metrics_and_status(server, study):
    experiment = server.post("/data/plugin/hparams/experiment", {"experimentName": ""})
    assert [m["name"]["tag"] for m in experiment["metricInfos"]] == FINAL_TAGS
    assert {h["name"] for h in experiment["hparamInfos"]} == set(expected_hparams(study["real"]))
    groups = server.post("/data/plugin/hparams/session_groups", {
        "experimentName": "", "startIndex": 0, "sliceSize": 100,
        "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]})
    by_trial = {g["sessions"][0]["name"]: g for g in groups["sessionGroups"]}
    assert set(by_trial) == {trial.name for trial in study.values()}
    for key, trial in study.items():
        group = by_trial[trial.name]
        same_values(group["hparams"], expected_hparams(trial))
        assert group["sessions"][0]["status"] == SESSION_STATUS[key], key
        values = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}  # NaN comes as "NaN"
        assert list(values) == FINAL_TAGS
        np.testing.assert_array_equal(f32(values.values()), f32(expected_finals(trial).values()), err_msg=key)
    failed = server.post("/data/plugin/hparams/session_groups", {
        "experimentName": "", "startIndex": 0, "sliceSize": 100, "allowedStatuses": ["STATUS_FAILURE"]})
    assert [g["name"] for g in failed["sessionGroups"]] == [study["diverged"].name]  # the tab's status filter
