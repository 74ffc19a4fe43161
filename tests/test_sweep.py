"""Sweeps: file validation and dry runs in-process; real Ray Tune sweeps as the user runs them
(`twoworlds sweep` in a subprocess): the smoke studies, retry from a checkpoint, and resume after
the driver is killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import kill_session
from twoworlds.launch.cli import main
from twoworlds.launch.config import ConfigError
from twoworlds.launch.sweep_spec import load_sweep
from twoworlds.lightning_modules.schedules import eval_steps

from twoworlds.errors import UserError

REPO = Path(__file__).resolve().parent.parent
SWEEPS = sorted((REPO / "sweeps").glob("*.yaml"))
# the report's study-specific plots: the model-size section where the width varies, the predictor's
# scatter from 3 configurations on
STUDY_PLOTS = {"double_descent": {"f_model_size.png", "e_predictor.png"}, "zoo_scatter": {"e_predictor.png"}}

TINY = """
name: {name}
base: {{source: teacher, steps: {steps}, batch_size: 32, n: 256, eval.points: 12, data.test_size: 256,
        model.width: 32, model.depth: 2}}
grid: {{world: [real, ideal]{extra_grid}}}
seeds: {seeds}
resources: {{cpu: 1}}
max_failures: 1
"""


def write_sweep(tmp_path, name="tiny", steps=200, seeds=1, extra_grid=""):
    path = tmp_path / f"{name}.yaml"
    path.write_text(TINY.format(name=name, steps=steps, seeds=seeds, extra_grid=extra_grid))
    return path


def cli(*args, env=None, timeout=300, **popen):
    cmd = [sys.executable, "-m", "twoworlds.launch.cli", "sweep", *map(str, args)]
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    if popen:
        return subprocess.Popen(cmd, env=full_env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, **popen)
    return subprocess.run(cmd, env=full_env, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def summaries(study_dir: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in study_dir.glob("*/summary.json")}


def metric_steps(run_dir: Path) -> list[int]:
    lines = (run_dir / "metrics.csv").read_text().splitlines()[1:]
    return [int(line.split(",")[0]) for line in lines]


# --- files and dry runs (no Ray) ------------------------------------------------------------------

@pytest.mark.parametrize("path", SWEEPS, ids=[p.name for p in SWEEPS])
def test_every_shipped_sweep_and_its_smoke_variant_validate(path):
    full, smoke = load_sweep(path), load_sweep(path, smoke=True)
    assert full.trials and smoke.trials and smoke.name == f"{full.name}-smoke"
    assert len({t.name for t in full.trials}) == len(full.trials)


@pytest.mark.parametrize("text,match", [
    ("name: x\ngird: {world: [real]}\n", r"unknown key 'gird' in .*x\.yaml\. Did you mean: grid"),
    ("name: x\nbase: {optim.lrr: 0.1}\n", r"unknown config key 'optim\.lrr' under 'base' in .*x\.yaml.*optim\.lr"),
    ("name: x\ngrid: {model: {widht: [8, 16]}}\n", r"'model\.widht' under 'grid' in .*model\.width"),
    ("name: x\nresources: {gpus: 1}\n", r"unknown key 'gpus' under 'resources' in .*Did you mean: gpu"),
    ("name: x\nzip: {world: [real, ideal], n: [100]}\n", r"equal lengths, got world: 2, n: 1"),
    ("name: x\nbase: {world: both}\n", r"world=both is for single runs"),
    ("name: x\nbase: {steps: many}\n", r"bad value for 'steps' under 'base'"),
    ("grid: {world: [real]}\n", r"needs a 'name'"),
    ("name: x\nclaims: [{kind: gap_before_convergance, max: 0.1}]\n", r"unknown claim kind 'gap_before_convergance'; known: .* Did you mean: gap_before_convergence"),
    ("name: x\nclaims: [{kind: monotone, key: n, metric: real_final, tolerence: 0}]\n",
     r"unknown key\(s\) tolerence; valid: .*tolerance"),
    ("name: x\nclaims: [{kind: effect, key: n, from: 1, to: 2, metric: final}]\n", r"metric 'final' is not one of"),
])
def test_a_bad_sweep_file_fails_before_anything_runs_naming_file_and_key(tmp_path, text, match):
    path = tmp_path / "x.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=match):  # a ConfigError, or a ClaimError for the claims
        load_sweep(path)


def test_a_shipped_study_loads_by_name_and_an_unknown_one_lists_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not beside sweeps/: the name resolves to the package's copy
    assert load_sweep("quickstart").path.resolve() == REPO / "sweeps" / "quickstart.yaml"
    assert load_sweep("quickstart.yaml", smoke=True).name == "quickstart-smoke"
    with pytest.raises(ConfigError, match=r"sweep file 'sweeps/nope.yaml' not found \(shipped studies, by name: "
                                          r"augmentation, .*quickstart"):
        load_sweep("sweeps/nope.yaml")


def test_dry_run_prints_the_trial_table_count_and_samples(tmp_path, capsys):
    path = write_sweep(tmp_path, seeds=2, extra_grid=", n: [128, 256]")
    assert main(["sweep", str(path), "--dry-run", "model.width=16"]) == 0
    out = capsys.readouterr().out
    # real x 2 n x 2 seeds + ideal x 2 seeds (the Ideal World ignores n: one per seed, not per n)
    assert "6 trials in study 'tiny'" in out
    for name in ("mlp-w16-d2-bs32-real-n128-s0", "mlp-w16-d2-bs32-real-n256-s1", "mlp-w16-d2-bs32-ideal-s1"):
        assert name in out
    assert "real world 25,600 draws of 768 distinct samples" in out  # 4 trials x 200 x 32; 2 x (128 + 256)
    assert "ideal world 12,800 samples, all distinct" in out


def test_varying_keys_outside_the_default_name_are_appended_to_trial_names(tmp_path):
    path = write_sweep(tmp_path, extra_grid=", optim.lr: [0.1, 0.01]")
    names = [t.name for t in load_sweep(path).trials]
    assert "mlp-w32-d2-bs32-real-n256-s0-lr0.1" in names and "mlp-w32-d2-bs32-ideal-s0-lr0.01" in names


def test_zip_groups_advance_together_and_cross_each_other(tmp_path):
    path = tmp_path / "z.yaml"
    path.write_text("name: z\nbase: {source: teacher, steps: 10, n: 64}\n"
                    "zip:\n  - {model.name: [mlp, cnn], model.width: [32, 8]}\n"
                    "  - {corrupt.random_labels: [true, false], corrupt.pixels: [none, shuffled]}\n")
    trials = load_sweep(path).trials
    got = {(t.cfg.model.name, t.cfg.model.width, t.cfg.corrupt.random_labels, t.cfg.corrupt.pixels) for t in trials}
    assert got == {(m, w, r, p) for m, w in (("mlp", 32), ("cnn", 8)) for r, p in ((True, "none"), (False, "shuffled"))}
    assert "mlp-w32-d3-bs128-real-n64-s0-randlabels" in {t.name for t in trials}  # corruptions: one short tag


# --- real sweeps on a local Ray instance -------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("path", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_every_shipped_study_runs_its_smoke_variant_end_to_end(tmp_path, path):
    expected = load_sweep(path, smoke=True)
    k, study = len(expected.trials), expected.name
    extra = []
    if expected.trials[0].cfg.source == "cifar5m":  # tiny files in the published formats
        from image_fixtures import write_tiny_cifar5m, write_tiny_cifar10
        write_tiny_cifar5m(tmp_path / "data")
        write_tiny_cifar10(tmp_path / "data")
        extra = [f"data.data_dir={tmp_path / 'data'}"]
    result = cli(path, "--smoke", "--report", f"out_dir={tmp_path}", *extra)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    runs = summaries(tmp_path / study)
    assert sorted(runs) == sorted(t.name for t in expected.trials)
    assert {s["status"] for s in runs.values()} == {"completed"}
    assert all(s["steps_done"] == s["steps"] for s in runs.values())
    assert f"study {study}: {k} completed" in result.stdout
    assert "final bootstrap error" in result.stdout
    assert f"[sweep {study}] {k}/{k} done" in result.stdout
    for trial in runs:  # provenance names the command that was typed, not the Ray worker's own
        argv = yaml.safe_load((tmp_path / study / trial / "config.yaml").read_text())["provenance"]["argv"]
        assert argv.startswith(f"twoworlds sweep {path} --smoke --report"), argv
    report = tmp_path / study / "report"  # the study report, with all four plot kinds
    assert f"[report] written: {report / 'index.html'}" in result.stdout
    pngs = {p.name for p in report.glob("*.png")}
    assert pngs >= {"a_curves.png", "b_scatter.png", "c_heatmaps.png", "d_speed_vs_generalization.png",
                    "g_weight_movement.png"}  # every run logs its weight movement
    assert pngs >= STUDY_PLOTS.get(path.stem, set())
    if path.stem == "zoo_scatter":  # widths differ between families, never within one: no model-size section
        assert "f_model_size.png" not in pngs
    if extra:  # CIFAR-5m runs are also evaluated on CIFAR-10's test set, as in the paper
        assert all("test_cifar10/soft_error" in s["final"] for s in runs.values())


@pytest.mark.slow
def test_a_failing_trial_is_retried_from_its_checkpoint_and_a_diverged_one_is_not(tmp_path):
    path = write_sweep(tmp_path, name="faults", extra_grid=", optim.lr: [0.05, 1.0e+6]")
    victim = "mlp-w32-d2-bs32-real-n256-s0-lr0.05"
    result = cli(path, f"out_dir={tmp_path}", "check_every=5", "checkpoint_every_s=0",
                 env={"TWOWORLDS_FAULT_AT": f"{victim}:100"})
    assert result.returncode == 0, result.stdout[-3000:]
    runs = summaries(tmp_path / "faults")
    assert runs[victim]["status"] == "completed"
    assert 0 < runs[victim]["resumed_from_step"] < 100  # resumed from its last evaluation, not step 0
    assert metric_steps(tmp_path / "faults" / victim) == sorted(set(metric_steps(tmp_path / "faults" / victim)))
    assert f"retrying {victim} from its last checkpoint" in result.stdout
    diverged = [n for n, s in runs.items() if s["status"] == "diverged"]
    assert sorted(diverged) == ["mlp-w32-d2-bs32-ideal-s0-lr1000000.0", "mlp-w32-d2-bs32-real-n256-s0-lr1000000.0"]
    assert not any(f"retrying {n}" in result.stdout for n in diverged)
    # the retried run continues exactly where it stopped: same numbers as its uninterrupted twin
    from twoworlds.launch.run import run_trial
    twin = run_trial(_twin_cfg(tmp_path, victim))
    assert runs[victim]["final"]["test/soft_error"] == pytest.approx(twin["final"]["test/soft_error"], rel=1e-4)
    # w0 is rebuilt from the seed on the retry: the weight movement continues as in the uninterrupted twin
    assert runs[victim]["final"]["weight_movement"] == pytest.approx(twin["final"]["weight_movement"], rel=1e-4)


def _twin_cfg(tmp_path, victim):
    import yaml
    from twoworlds.launch import config
    doc = yaml.safe_load((tmp_path / "faults" / victim / "config.yaml").read_text())
    doc.pop("provenance")
    doc["out_dir"] = str(tmp_path / "twin")
    return config.merge(config.schema(), doc)


@pytest.mark.slow
def test_a_killed_sweep_resumes_without_rerunning_finished_trials(tmp_path):
    path = write_sweep(tmp_path, name="killme", steps=2500, seeds=2)
    study = tmp_path / "killme"
    driver = cli(path, f"out_dir={tmp_path}", "checkpoint_every_s=0", start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:  # wait until one trial has finished and another is midway
            done = [s for s in summaries(study).values() if s["status"] == "completed"]
            midway = [p for p in study.glob("*/metrics.csv")
                      if not (p.parent / "summary.json").exists() and len(metric_steps(p.parent)) > 6]
            if done and midway:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the sweep never reached a state with finished and running trials")
    finally:
        kill_session(driver.pid)  # the driver, the Ray instance it started and its trial workers, at once
        driver.wait()
    finished = {n: (study / n / "summary.json").stat().st_mtime_ns for n, s in summaries(study).items()}
    interrupted = midway[0].parent.name
    rows_before = metric_steps(study / interrupted)

    result = cli(path, f"out_dir={tmp_path}", "checkpoint_every_s=0", "--resume")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "resuming from" in result.stdout
    runs = summaries(study)
    assert len(runs) == 4 and {s["status"] for s in runs.values()} == {"completed"}
    for name, mtime in finished.items():  # finished trials were kept, not re-run
        assert (study / name / "summary.json").stat().st_mtime_ns == mtime, name
    steps = metric_steps(study / interrupted)
    assert steps == sorted(set(steps)) and steps[-1] == 2500
    assert set(rows_before) <= set(steps)  # nothing already written was lost
    assert runs[interrupted]["resumed_from_step"] > 0


@pytest.mark.slow
def test_a_resumed_sweep_counts_the_trials_finished_before_it_was_stopped(tmp_path):
    """Tune restores the progress callback as it was pickled: without a reset, a resumed sweep said "0/6 done"
    beside three finished trials, never reached 6/6, and counted its elapsed time from the first run's start."""
    path = write_sweep(tmp_path, name="again", steps=2500, seeds=3)
    study = tmp_path / "again"
    driver = cli(path, f"out_dir={tmp_path}", start_new_session=True)
    try:
        deadline = time.time() + 240
        while len([s for s in summaries(study).values() if s["status"] == "completed"]) < 3:
            assert time.time() < deadline, "three trials never finished"
            time.sleep(0.2)
        driver.send_signal(signal.SIGINT)
        driver.communicate(timeout=240)
    finally:
        if driver.poll() is None:
            kill_session(driver.pid)
    done_before = sum(s["status"] == "completed" for s in summaries(study).values())
    result = cli(path, f"out_dir={tmp_path}", "--resume")
    assert result.returncode == 0, result.stdout[-3000:]
    progress = [line for line in result.stdout.splitlines() if line.startswith("[sweep again] ") and " done " in line]
    # at least the 3 Tune saw end (a trial cut off after its last row is completed, but Tune starts it again, and
    # it ends at once on its finished summary)
    assert 3 <= int(progress[0].split()[2].split("/")[0]) <= done_before, progress[0]
    assert progress[-1].startswith("[sweep again] 6/6 done"), progress[-1]


@pytest.mark.slow
def test_a_two_worker_ddp_trial_runs_through_a_torch_trainer_and_retries_from_its_checkpoint(tmp_path):
    path = tmp_path / "ddp.yaml"
    path.write_text("name: ddp\nbase: {source: teacher, world: ideal, steps: 40, batch_size: 32, eval.points: 5,"
                    " data.test_size: 256, model.width: 32, model.depth: 2}\nresources: {cpu: 1, workers: 2}\n"
                    "max_failures: 1\n")
    trial = "mlp-w32-d2-bs32-ideal-s0"
    result = cli(path, f"out_dir={tmp_path}", "checkpoint_every_s=0", env={"TWOWORLDS_FAULT_AT": f"{trial}:20"})
    assert result.returncode == 0, result.stdout[-3000:]
    assert f"retrying {trial} from its last checkpoint" in result.stdout
    run = summaries(tmp_path / "ddp")[trial]
    assert run["status"] == "completed" and run["steps_done"] == 40
    assert run["resumed_from_step"] == 11  # the last evaluation before the failure at step 20
    # the global batch of 32 is split over 2 ranks: 40 x 32 distinct samples, as in one process
    assert run["samples_seen"] == run["distinct_samples_seen"] == 40 * 32
    assert metric_steps(tmp_path / "ddp" / trial) == eval_steps(40, 5)
    assert not (tmp_path / "ddp" / trial / "last.ckpt").exists()


def _reference_trials(path, overrides=()):
    """The expansion as it was before it was batched: one typed OmegaConf config per grid point, each value set
    by OmegaConf, the overrides merged, then validated. The fast path must give exactly these configs."""
    import itertools

    from omegaconf import OmegaConf
    from twoworlds.launch import config
    from twoworlds.launch.sweep_spec import _flat, _zip_points

    doc = yaml.safe_load(Path(path).read_text())
    grid = _flat(doc.get("grid"), "")
    points = [dict(zip(grid, v, strict=True)) for v in itertools.product(*grid.values())]
    groups = doc.get("zip") if isinstance(doc.get("zip"), list) else [doc.get("zip")]
    zips = [{}]
    for group in groups:
        zips = [{**a, **b} for a in zips for b in _zip_points(_flat(group, ""), "")]
    seeds = doc.get("seeds", 1)
    out = {}
    for g, z, seed in itertools.product(points, zips, range(seeds) if isinstance(seeds, int) else seeds):
        cfg = config.schema()
        cfg.study = doc["name"]
        for values in (_flat(doc.get("base"), ""), g, z):
            for k, v in values.items():
                OmegaConf.update(cfg, k, v, merge=True)
        cfg.seed = seed
        cfg = config.merge(cfg, list(overrides))
        config.validate(cfg)
        plain = config.to_plain(cfg)
        plain.pop("name")
        identity = {**plain, "n": None} if cfg.world == "ideal" else plain
        out.setdefault(json.dumps(identity, sort_keys=True), plain)
    return sorted(out.values(), key=lambda p: json.dumps(p, sort_keys=True))


@pytest.mark.parametrize("study", ["random_labels", "label_noise_width", "width_depth", "lazy_rich", "tricky"])
def test_the_batched_expansion_gives_the_configs_one_omegaconf_config_per_trial_gives(tmp_path, study):
    """Typed values converted once per distinct (key, value) (ints for floats, null, lists, zip groups, seeds,
    overrides on the command line) equal, trial by trial, what OmegaConf gives one config at a time."""
    from twoworlds.launch.sweep_spec import shipped_sweeps
    overrides = ["optim.lr=0.2", "data.teacher_shape=[1,16]", "model.output_scale=3"]
    path = shipped_sweeps().get(study)
    if study == "tricky":
        path = tmp_path / "tricky.yaml"
        path.write_text("name: tricky\nbase: {source: teacher, steps: 40, optim: {lr: 1, betas: [0.8, 0.9]}}\n"
                        "grid: {model.output_scale: [null, 2, 10.5], corrupt.label_noise: [0, 0.1]}\n"
                        "zip: [{world: [real, ideal], n: [100, 100]}, {batch_size: [16, 32], eval.points: [3, 4]}]\n"
                        "seeds: [3, 5]\n")
        overrides = ["optim.momentum=0", "eval.train_size=50"]
    sweep = load_sweep(path, overrides)
    got = sorted(({k: v for k, v in t.plain.items() if k != "name"} for t in sweep.trials),
                 key=lambda p: json.dumps(p, sort_keys=True))
    assert got == _reference_trials(path, overrides)
    assert all(t.plain["name"] == t.name == t.cfg.name for t in sweep.trials)


def test_seeds_from_the_command_line_make_a_study_of_their_own(tmp_path):
    """`seeds=[100,101]` or `seeds=3` replace the file's seeds and name a study of their own: never a mix with the
    trials of the file's own seeds in one study directory."""
    path = write_sweep(tmp_path, seeds="[0, 1]")
    own = load_sweep(path, [f"out_dir={tmp_path}"])
    other = load_sweep(path, ["seeds=[100,101]", f"out_dir={tmp_path}"])
    counted = load_sweep(path, [f"out_dir={tmp_path}", "seeds=3"])
    assert (own.name, other.name, counted.name) == ("tiny", "tiny-seeds100-101", "tiny-seeds0to2")
    assert {t.plain["seed"] for t in other.trials} == {100, 101} and len(other.trials) == len(own.trials)
    assert {t.plain["seed"] for t in counted.trials} == {0, 1, 2}
    assert own.study_dir != other.study_dir and all(t.plain["study"] == other.name for t in other.trials)
    assert {t.run_dir.parent for t in other.trials} == {other.study_dir}
    assert load_sweep(path, ["seeds=[5]"], smoke=False).name == "tiny-seeds5"


def test_seeds_on_the_command_line_are_checked_and_shown_by_dry_run(tmp_path, capsys):
    path = write_sweep(tmp_path)
    with pytest.raises(ConfigError, match=r"'seeds' on the command line must be a count >= 1 or a non-empty list"):
        load_sweep(path, ["seeds=[-1]"])
    assert main(["sweep", "zoo_scatter", "seeds=[100,101]", "--smoke", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "trials in study 'zoo_scatter-smoke-seeds100-101'" in out and "-s100" in out and "-s0 " not in out


def test_resume_keeps_the_seeds_it_was_started_with(tmp_path):
    """--resume finds the seeded study by the same command; the overrides it stored (sweep.json) include the seeds,
    and the file's own study is another one (nothing to resume there)."""
    from twoworlds.launch.sweep_spec import resume_overrides
    path = write_sweep(tmp_path, seeds="[0, 1]")
    started = ["seeds=[7,8]", f"out_dir={tmp_path}"]
    load_sweep(path, started).write_manifest(started, smoke=False)
    assert resume_overrides(load_sweep(path, started), started, False) == started
    assert resume_overrides(load_sweep(path, started), [], False) == started  # none given: the stored ones
    for other in ([f"out_dir={tmp_path}"], ["seeds=[9]", f"out_dir={tmp_path}"]):  # the file's seeds, other seeds
        with pytest.raises(ConfigError, match="nothing to resume"):
            resume_overrides(load_sweep(path, other), other, False)


@pytest.mark.slow
def test_a_seeded_sweep_runs_in_its_own_study_and_resumes_there(tmp_path):
    path = write_sweep(tmp_path, steps=20)
    done = cli(path, "seeds=[3]", f"out_dir={tmp_path}")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "[sweep tiny-seeds3] 2 trials" in done.stdout
    assert not (tmp_path / "tiny").exists()
    first = summaries(tmp_path / "tiny-seeds3")
    assert {s["status"] for s in first.values()} == {"completed"} and all(n.endswith("-s3") for n in first)
    again = cli(path, "seeds=[3]", f"out_dir={tmp_path}", "--resume")
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert summaries(tmp_path / "tiny-seeds3") == first  # finished trials kept, not re-run
