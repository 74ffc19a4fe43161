"""Results: the analysis on constructed curves with known answers, then aggregation and the report
on a tiny real study made by the framework (checked against the runs' own metrics.csv files)."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest

from results.analysis import (
    TEST_SOFT,
    TRAIN_ERR,
    align,
    first_step_below,
    fmt_pm,
    mean_std,
    pair_stats,
    power_law_fit,
    steps_to_target,
    value_at,
)

# ---------------------------------------------------------------- constructed curves


def test_align_matches_identical_schedules_and_interpolates_in_log_step_otherwise():
    s, r, i = align([1, 10, 100], [0.5, 0.4, 0.3], [1, 10, 100], [0.6, 0.5, 0.2])
    assert list(s) == [1, 10, 100] and list(r - i) == pytest.approx([-0.1, -0.1, 0.1])
    # b is linear in log10(step): 1 - 0.1 * log10(step); a's steps 30 and 300 fall between b's points
    sb = np.array([1, 10, 100, 1000])
    s, r, i = align([3, 30, 300, 5000], [0, 0, 0, 0], sb, 1 - 0.1 * np.log10(sb))
    assert list(s) == [3, 30, 300]  # 5000 lies outside b's range: dropped, never extrapolated
    assert i == pytest.approx(1 - 0.1 * np.log10([3, 30, 300]))


def test_convergence_step_and_steps_to_target():
    steps = [1, 2, 5, 10, 20, 50]
    assert first_step_below(steps, [0.9, 0.5, 0.2, 0.009, 0.0, 0.0], 0.01) == 10
    assert first_step_below(steps, [0.9] * 6, 0.01) is None
    assert steps_to_target(steps, [0.9, 0.5, 0.3, 0.3, 0.2, 0.1], 0.3) == 5  # at or below
    assert value_at([1, 10, 100], [0.0, 1.0, 2.0], 1000) != value_at([1, 10, 100], [0.0, 1.0, 2.0], 1000)  # NaN
    assert value_at([1, 10, 100], [0.0, 1.0, 2.0], 31.6227766) == pytest.approx(1.5)


def test_pair_stats_on_a_constructed_pair():
    steps = np.array([1, 10, 100, 1000, 2000])
    ideal = pd.DataFrame({"step": steps, TEST_SOFT: [0.9, 0.6, 0.40, 0.30, 0.28]})
    real = pd.DataFrame({"step": steps, TEST_SOFT: [0.9, 0.62, 0.43, 0.36, 0.36],  # gaps 0, .02, .03, .06, .08
                         TRAIN_ERR: [0.9, 0.5, 0.05, 0.0, 0.0]})
    st = pair_stats(real, ideal)
    assert st.converged_at == 1000
    assert st.max_gap_before == pytest.approx(0.06)  # steps <= 1000
    assert st.gap_at_convergence == pytest.approx(0.06) and st.gap_final == pytest.approx(0.08)
    assert (st.real_final, st.ideal_final, st.last_step) == (0.36, 0.28, 2000)
    never = pair_stats(real.assign(**{TRAIN_ERR: 0.5}), ideal)
    assert never.converged_at is None and never.max_gap_before == pytest.approx(0.08)


def test_power_law_fit_recovers_a_known_exponent_and_its_uncertainty():
    s = np.logspace(2, 6, 40)
    exact = power_law_fit(s, 3.0 * s ** -0.5)
    assert exact.exponent == pytest.approx(0.5) and exact.prefactor == pytest.approx(3.0)
    assert exact.exponent_se == pytest.approx(0.0, abs=1e-9) and exact.r2 == pytest.approx(1.0)
    assert exact.points == (s >= 1e4).sum() < len(s)  # default: the last two decades only
    rng = np.random.default_rng(0)
    noisy = power_law_fit(s, 3.0 * s ** -0.5 * np.exp(rng.normal(0, 0.1, s.size)), min_samples=0)
    assert noisy.points == 40 and 0 < noisy.exponent_se < 0.05
    assert abs(noisy.exponent - 0.5) < 3 * noisy.exponent_se
    assert power_law_fit([10, 10], [0.1, 0.2]) is None


def test_mean_and_std_over_seeds():
    df = pd.DataFrame({"cfg": ["a", "a", "b"], "gap": [0.01, 0.03, 0.05]})
    out = mean_std(df, ["cfg"], ["gap"]).set_index("cfg")
    assert out.loc["a", "gap_mean"] == pytest.approx(0.02) and out.loc["a", "gap_std"] == pytest.approx(math.sqrt(2e-4))
    assert list(out.seeds) == [2, 1] and out.loc["b", "gap_std"] == 0.0
    assert fmt_pm(0.02, 0.014, 2) == "2.0% ± 1.4%" and fmt_pm(0.02, 0.0, 1, sign=True) == "+2.0%"


# ---------------------------------------------------------------- a tiny real study

SWEEP = """
name: tiny
base: {source: teacher, steps: 40, batch_size: 16, data.test_size: 256, eval.points: 8,
       model.width: 32, model.depth: 2, optim.lr: 0.1}
grid: {model.name: [mlp, cnn]}
zip: {world: [real, real, ideal], n: [64, 256, 64]}
seeds: 2
claims:
  - {kind: gap_before_convergence, claim: both worlds agree, max: 0.5}
  - {kind: monotone, claim: more data never hurts much, key: n, metric: real_final, tolerance: 1.0}
  - {kind: gap_before_convergence, claim: the worlds agree to 0.001%, max: 0.00001}
"""


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The sweep's trials run in-process (the Ray path is tested in test_sweep), except one that
    is left out (missing); one more trial of the study diverges."""
    from launch.run import run_trial
    from launch.sweep_spec import load_sweep
    root = tmp_path_factory.mktemp("results")
    path = root / "tiny.yaml"
    path.write_text(SWEEP)
    sweep = load_sweep(path, [f"out_dir={root / 'runs'}", "progress=false"])
    sweep.write_manifest(["progress=false"], smoke=False)
    skipped = "cnn-w32-d2-bs16-real-n256-s1"
    for t in sweep.trials:
        if t.name != skipped:
            run_trial(t.cfg)
    bad = sweep.trials[0].cfg.copy()
    bad.name, bad.optim.lr, bad.optim.momentum, bad.steps, bad.check_every = "blowup", 1e6, 0.99, 400, 10
    run_trial(bad)
    return sweep.study_dir, skipped


def test_aggregation_has_every_row_of_every_trial_with_its_config(study):
    from results.aggregate import load_study
    study_dir, skipped = study
    s = load_study(study_dir)
    assert s.missing == [skipped] and "blowup" in s.by_status("diverged")
    assert {"model.name", "n", "seed", "world"} <= set(s.varying)
    for trial in s.trials.trial:
        own = pd.read_csv(study_dir / trial / "metrics.csv")
        rows = s.curves[s.curves.trial == trial].reset_index(drop=True)
        assert len(rows) == len(own) >= 1
        pd.testing.assert_frame_equal(rows[own.columns], own, check_dtype=False)
        cfg = json.loads((study_dir / trial / "summary.json").read_text())
        assert (rows.world == cfg["world"]).all() and (rows.pair_key == cfg["pair_key"]).all()


def test_report_tables_match_the_runs_own_metrics(study):
    from results.report import build_report
    study_dir, skipped = study
    out = build_report(study_dir).index.parent
    curves = pd.read_parquet(out / "curves.parquet")
    assert len(curves) == len(pd.read_csv(out / "curves.csv")) == sum(
        len(pd.read_csv(p / "metrics.csv")) for p in study_dir.iterdir() if (p / "metrics.csv").exists())
    pairs = pd.read_csv(out / "pairs.csv")
    assert len(pairs) == 7  # 4 real trials per seed-0 and 3 for seed 1 (one skipped); each with its ideal twin
    for p in pairs.itertuples():
        real, ideal = (pd.read_csv(study_dir / t / "metrics.csv") for t in (p.real, p.ideal))
        gap = real[TEST_SOFT].to_numpy() - ideal[TEST_SOFT].to_numpy()  # same schedule: step for step
        conv = real.step[real[TRAIN_ERR] < 0.01].min()  # NaN when the Real World never converged
        before = real.step <= conv if conv == conv else real.step > 0
        assert p.converged_at == pytest.approx(conv, nan_ok=True)
        assert p.gap_final == pytest.approx(gap[-1]) and p.max_gap_before == pytest.approx(np.abs(gap[before]).max())
        assert p.real_final == pytest.approx(real[TEST_SOFT].iloc[-1])
    configs = pd.read_csv(out / "configurations.csv").set_index("configuration")
    mlp = pairs[pairs.configuration == "mlp n=64"].gap_final
    assert configs.loc["mlp n=64", "gap_final_mean"] == pytest.approx(mlp.mean())
    assert configs.loc["mlp n=64", "gap_final_std"] == pytest.approx(mlp.std(ddof=1))
    assert configs.loc["cnn n=256", "seeds"] == 1


def test_report_files_plots_and_self_contained_html(study):
    from results.report import build_report
    study_dir, skipped = study
    report = build_report(study_dir)
    index, out = report.index, report.index.parent
    for stem in ("a_curves", "b_scatter", "c_heatmaps", "d_speed_vs_generalization"):
        assert (out / f"{stem}.png").stat().st_size > 10_000
    html = index.read_text()
    assert len(re.findall(r"src='data:image/png;base64,", html)) == 4
    assert not re.search(r"src=['\"](?!data:)", html)  # nothing to fetch: it can be mailed
    md = (out / "report.md").read_text()
    assert "For the MLP:" in md and "For the CNN:" in md
    assert f"missing (expected by the sweep file, never started): {skipped}" in md
    assert "blowup: diverged at step" in md
    assert "zip: {world: [real, real, ideal]" in md  # the sweep file itself
    assert "git commit:" in md and "torch" in md


def test_claims_are_checked_and_report_check_exits_non_zero_when_one_fails(study, capsys):
    from launch.cli import main
    from results.report import build_report
    study_dir, _ = study
    verdicts = build_report(study_dir).verdicts
    assert [v.word for v in verdicts] == ["holds", "holds", "FAILS"]
    assert re.match(r"max \|bootstrap error\| before convergence [\d.]+% \(cnn n=64\), ", verdicts[0].evidence)
    assert main(["report", str(study_dir), "--check"]) == 1
    out = capsys.readouterr()
    assert "[claim]       FAILS: the worlds agree to 0.001%" in out.out and "1 of 3 claims did not hold" in out.err
    manifest = study_dir / "sweep.json"
    doc = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**doc, "claims": doc["claims"][:2]}))
    try:
        assert main(["report", str(study_dir), "--check"]) == 0
        assert "[check] all 2 claims hold" in capsys.readouterr().out
    finally:
        manifest.write_text(json.dumps(doc))


def test_report_of_a_wrong_path_is_a_one_line_error(tmp_path, capsys):
    from launch.cli import main
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "no study directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "holds no trials yet" in capsys.readouterr().err

