"""Single runs end to end: outputs, the pair table, learning, divergence, determinism, schedules."""

from __future__ import annotations

import csv
import json

import pytest
import torch
import yaml
from conftest import crash_at
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from twoworlds.launch.cli import main
from twoworlds.launch.loop import Checkpoints
from twoworlds.launch.run import run_trial
from twoworlds.lightning_modules.schedules import eval_steps


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """One `twoworlds run world=both` on teacher data, shared by the output tests."""
    out = tmp_path_factory.mktemp("pair")
    import io
    from contextlib import redirect_stdout
    buf = io.StringIO()
    with redirect_stdout(buf):
        code = main(["run", "source=teacher", "world=both", "n=128", "steps=60", "batch_size=16",
                     "data.test_size=256", "eval.points=12", "model.width=32", "model.depth=2",
                     "study=pairtest", f"out_dir={out}", "progress=false"])
    assert code == 0
    return out / "pairtest", buf.getvalue()


def test_world_both_prints_the_step_by_step_table(pair):
    _, printed = pair
    assert "Real World (mlp-w32-d2-bs16-real-n128-s0, n=128) vs Ideal World (mlp-w32-d2-bs16-ideal-s0)" in printed
    table = [line.split() for line in printed.splitlines() if line.strip()[:1].isdigit()]
    assert [int(r[0].replace(",", "")) for r in table] == eval_steps(60, 12)
    for _step, _, real, ideal, gap, _ in table:  # the gap column is real - ideal
        assert float(gap) == pytest.approx(float(real) - float(ideal), abs=2e-4)


def test_run_directory_holds_config_metrics_events_and_summary(pair):
    study, _ = pair
    real, ideal = study / "mlp-w32-d2-bs16-real-n128-s0", study / "mlp-w32-d2-bs16-ideal-s0"
    for run in (real, ideal):
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        assert cfg["provenance"]["git_commit"] and cfg["provenance"]["versions"]["torch"]
        assert cfg["provenance"]["torch_threads"] == torch.get_num_threads()  # the last digits depend on it
        assert cfg["steps"] == 60 and cfg["name"] == run.name
        rows = read_csv(run / "metrics.csv")
        assert [int(r["step"]) for r in rows] == eval_steps(60, 12)
        summary = json.loads((run / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["steps_done"] == 60
        assert summary["samples_seen"] == 60 * 16
        assert summary["final"]["test/soft_error"] == pytest.approx(float(rows[-1]["test/soft_error"]))
    assert json.loads((real / "summary.json").read_text())["distinct_samples_seen"] == 128
    assert json.loads((ideal / "summary.json").read_text())["distinct_samples_seen"] == 960
    assert "train/soft_error" in read_csv(real / "metrics.csv")[0]  # train metrics: Real World only
    assert "train/soft_error" not in read_csv(ideal / "metrics.csv")[0]
    pair_keys = {json.loads((r / "summary.json").read_text())["pair_key"] for r in (real, ideal)}
    assert len(pair_keys) == 1


def test_tensorboard_events_read_back_match_metrics_csv(pair):
    study, _ = pair
    run = study / "mlp-w32-d2-bs16-real-n128-s0"
    acc = EventAccumulator(str(run), size_guidance={"scalars": 0})
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"test/soft_error", "test/error", "test/loss", "train/soft_error", "lr"} <= set(tags)
    rows = read_csv(run / "metrics.csv")
    events = acc.Scalars("test/soft_error")
    assert [e.step for e in events] == [int(r["step"]) for r in rows]
    assert [e.value for e in events] == pytest.approx([float(r["test/soft_error"]) for r in rows], rel=1e-5)
    assert any(t.startswith("final/") for t in tags)  # the hparams' final metrics


def test_both_worlds_follow_the_same_lr_schedule_by_step(pair):
    study, _ = pair
    real = read_csv(study / "mlp-w32-d2-bs16-real-n128-s0" / "metrics.csv")
    ideal = read_csv(study / "mlp-w32-d2-bs16-ideal-s0" / "metrics.csv")
    assert [r["lr"] for r in real] == [r["lr"] for r in ideal]
    assert float(real[-1]["lr"]) < float(real[0]["lr"])  # cosine decays over steps, not epochs


def test_a_small_run_learns(make_cfg):
    # 4-class teacher (chance: 75% error); fresh samples, a few hundred steps.
    summary = run_trial(make_cfg("world=ideal", "steps=300", "batch_size=64", "optim.lr=0.1"))
    assert summary["final"]["test/error"] < 0.25, summary["final"]


def test_same_seed_same_run_other_seed_other_run(make_cfg):
    a = run_trial(make_cfg("world=real", "name=a"))
    b = run_trial(make_cfg("world=real", "name=b"))
    c = run_trial(make_cfg("world=real", "name=c", "seed=1"))
    key = "test/soft_error"
    assert [r[key] for r in a["rows"]] == [r[key] for r in b["rows"]]
    assert [r[key] for r in a["rows"]] != [r[key] for r in c["rows"]]


def test_a_diverging_run_stops_as_diverged_and_keeps_its_rows(make_cfg, capsys):
    cfg = make_cfg("world=real", "optim.lr=1e6", "optim.momentum=0.99", "steps=400", "check_every=10")
    summary = run_trial(cfg)
    assert summary["status"] == "diverged"
    assert summary["steps_done"] < 400 and summary["diverged_at_step"] <= summary["steps_done"]
    run_dir = cfg.out_dir + "/t/" + summary["trial"]
    on_disk = json.loads(open(run_dir + "/summary.json").read())
    assert on_disk["status"] == "diverged" and "NaN" in on_disk["diverged_reason"]
    assert len(read_csv(run_dir + "/metrics.csv")) == len(summary["rows"]) >= 1
    assert "diverged at step" in capsys.readouterr().err


def test_resuming_from_a_checkpoint_reproduces_the_uninterrupted_run(make_cfg, tmp_path):
    full = run_trial(make_cfg("world=real", "steps=60", "eval.points=10", "name=full"))
    steps = [r["step"] for r in full["rows"]]
    assert 19 in steps
    cfg = make_cfg("world=real", "steps=60", "eval.points=10", "name=resume")
    with pytest.raises(RuntimeError, match="injected crash at step 19"):  # checkpoints at every evaluation
        run_trial(cfg, checkpoints=Checkpoints(every_s=0), report=crash_at(19))
    run_dir = tmp_path / "runs" / "t" / "resume"
    resumed = run_trial(cfg, resume_from=str(run_dir / "last.ckpt"))
    assert resumed["resumed_from_step"] == 19 and resumed["steps_done"] == 60
    # the same id schedule, optimizer and lr state: bit-for-bit the same numbers after step 19
    assert resumed["final"] == full["final"]
    assert [r["step"] for r in resumed["rows"]] == [s for s in steps if s > 19]
    rows = read_csv(run_dir / "metrics.csv")
    assert [int(r["step"]) for r in rows] == steps  # rows up to 19 kept, the rest written once
    assert float(rows[-1]["wall_time"]) >= float(rows[steps.index(19)]["wall_time"])
