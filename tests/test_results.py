"""Results: the analysis on constructed curves with known answers, then aggregation and the report
on a tiny real study made by the framework (checked against the runs' own metrics.csv files)."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
from twoworlds.results.analysis import (
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
    assert st.mean_gap_before == pytest.approx((0.02 + 0.03 + 0.06) / 3)  # from step 10: ideal 10% below its start
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
    # a seed without a value (diverged, target never reached) leaves its group without one, never the other
    # seed's mean passed off as both; a step that never happened (convergence) averages the seeds it happened in
    df = pd.DataFrame({"cfg": ["a", "a"], "gap": [0.01, float("nan")], "converged_at": [100.0, float("nan")]})
    out = mean_std(df, ["cfg"], ["gap", "converged_at"]).set_index("cfg")
    assert math.isnan(out.loc["a", "gap_mean"]) and out.loc["a", "converged_at_mean"] == 100.0
    assert fmt_pm(0.02, 0.014, 2) == "2.0% ± 1.4%" and fmt_pm(0.02, 0.0, 1, sign=True) == "+2.0%"


# ---------------------------------------------------------------- a tiny real study

SWEEP = """
name: tiny
base: {source: teacher, steps: 40, batch_size: 16, data.test_size: 256, eval.points: 8,
       model.width: 32, model.depth: 2, optim.lr: 0.1}
grid: {model.name: [mlp, cnn]}
zip: {world: [real, real, ideal], n: [64, 256, 64]}
seeds: 2
claims:  # the one-off `blowup` run (optim.lr 1e6) has no twin: pair claims leave it out with `where`
  - {kind: gap_before_convergence, claim: both worlds agree, max: 0.5, where: {optim.lr: 0.1}}
  - {kind: monotone, claim: more data never hurts much, key: n, metric: real_final, tolerance: 1.0}
  - {kind: gap_before_convergence, claim: the averaged curves agree, statistic: mean, curves: averaged, max: 0.5,
     where: {model.name: mlp, optim.lr: 0.1}}
  - {kind: gap_before_convergence, claim: the worlds agree to 0.001%, max: 0.00001, where: {optim.lr: 0.1}}
  - {kind: gap_before_convergence, claim: every run agrees with its twin, max: 0.5}
"""


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The sweep's trials run in-process (the Ray path is tested in test_sweep), except one that
    is left out (missing); one more trial of the study diverges."""
    from twoworlds.launch.run import run_trial
    from twoworlds.launch.sweep_spec import load_sweep
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
    from twoworlds.results.aggregate import load_study
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
    from twoworlds.results.report import build_report
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


def test_effective_data_in_the_curves_table_is_read_off_each_ideal_envelope(study):
    """D_eff in curves.csv, checked against the runs' own metrics.csv: where defined, the Ideal World
    twin's running minimum (joined linearly in log samples) comes down to the Real World's error there
    first; where undefined, the Real World's error lies outside everything the Ideal World reached."""
    from twoworlds.results.report import build_report
    study_dir, _ = study
    out = build_report(study_dir).index.parent
    curves = pd.read_csv(out / "curves.csv")
    real = curves[(curves.world == "real") & (curves.trial != "blowup")]  # blowup's config has no Ideal twin
    assert curves[curves.trial == "blowup"].d_eff_twin.isna().all() and curves[curves.world == "ideal"].d_eff.isna().all()
    assert (real.d_eff_metric == TEST_SOFT).all()
    assert real.epochs.to_numpy() == pytest.approx((real.samples_seen / real.n).to_numpy())
    assert real.d_eff_ratio.to_numpy() == pytest.approx((real.d_eff / real.samples_seen).to_numpy(), nan_ok=True)
    checked = 0
    for _, rows in real.groupby("trial"):
        ideal = pd.read_csv(study_dir / rows.d_eff_twin.iloc[0] / "metrics.csv")
        s, env = ideal.samples_seen.to_numpy(float), np.minimum.accumulate(ideal[TEST_SOFT].to_numpy())
        for e, d, status in zip(rows[TEST_SOFT], rows.d_eff, rows.d_eff_status, strict=True):
            if status == "defined":
                assert np.interp(np.log(d), np.log(s), env) == pytest.approx(e, abs=1e-9)
                assert (env[s < d * (1 - 1e-9)] > e - 1e-12).all()  # no earlier evaluation reached it
                checked += 1
            else:
                assert math.isnan(d) and status == ("below" if e < env.min() else "above")
                assert e < env.min() or e > env[0]
    assert checked >= 40  # 44 of the 56 Real World evaluations; the rest lie outside the Ideal World's range
    md = (out / "report.md").read_text()
    assert "## Effective data: what an epoch is worth" in md and "| cnn | 2 |" in md
    law = pd.read_csv(out / "repetition_law.csv")
    assert set(law.group) == {"cnn", "mlp"} and (law.method == "huber").all()


def test_effective_data_claims_on_the_study_and_on_each_seed_alone(study):
    """The study's D_eff/D before convergence is the mean of each seed's own (the seed spread), each margin that
    value minus the bound; a seed whose final D_eff is undefined leaves the seed mean undefined: not checkable."""
    from twoworlds.results.aggregate import load_study
    from twoworlds.results.repetition import with_effective_data
    from twoworlds.results.tables import analyse
    s = load_study(study[0])
    s.curves = with_effective_data(s.trials, s.curves, s.config_keys)
    mlp = {"model.name": "mlp", "optim.lr": 0.1}
    s.manifest["claims"] = [{"kind": "effective_data_before_convergence", "min_ratio": 0.5, "where": {**mlp, "n": 64}},
                            {"kind": "repetition_law_predicts", "tolerance": 1.0, "where": mlp}]
    a = analyse(s)
    before, law = a.verdicts
    ratio = a.configs.set_index("configuration").d_eff_ratio_before_mean["mlp n=64"]
    alone = [v.margins[0].value + 0.5 for v in before.seeds.values()]
    assert before.holds and before.margins[0].value == pytest.approx(ratio - 0.5) and ratio == pytest.approx(np.mean(alone))
    assert before.spread().startswith(f"margin {ratio - 0.5:+.3g}; each seed alone: seed 0 +") and "2 of 2" in before.spread()
    assert law.holds is None and [v.holds for v in law.seeds.values()] == [None, True]


def test_report_files_plots_and_self_contained_html(study):
    from twoworlds.results.report import build_report
    study_dir, skipped = study
    report = build_report(study_dir)
    index, out = report.index, report.index.parent
    # (e): 3 configurations or more; (g): every run logs its weight movement; no (f): the width does not vary
    # (h): the Real Worlds run past their first epoch
    stems = ("a_curves", "b_scatter", "c_heatmaps", "d_speed_vs_generalization", "e_predictor", "g_weight_movement",
             "h_effective_data")
    for stem in stems:
        assert (out / f"{stem}.png").stat().st_size > 10_000
    assert not (out / "f_model_size.png").exists()
    html = index.read_text()
    assert len(re.findall(r"src='data:image/png;base64,", html)) == len(stems)
    assert not re.search(r"src=['\"](?!data:)", html)  # nothing to fetch: it can be mailed
    md = (out / "report.md").read_text()
    assert "For the MLP:" in md and "For the CNN:" in md
    assert f"missing (expected by the sweep file, never started): {skipped}" in md
    assert "blowup: diverged at step" in md
    assert "zip: {world: [real, real, ideal]" in md  # the sweep file itself
    assert "git commit:" in md and "torch" in md


def test_the_html_report_as_a_person_sees_it_at_1280_px(study, tmp_path):
    """index.html in headless Chromium: every plot decodes, nothing runs off the page, and the tables
    are readable and fit it; the screenshot stays in tmp_path to look at."""
    import browser
    from twoworlds.results.report import build_report
    index = build_report(study[0]).index
    seen = browser.inspect(index, tmp_path)
    assert [i["natural_width"] > 0 for i in seen["images"]] == [True] * 7, seen["images"]
    assert seen["scroll_width"] <= seen["width"] <= 1280 and seen["overflow"] == [], seen["overflow"]
    assert len(seen["tables"]) == 6
    for table in seen["tables"]:  # summary, weight movement, power laws, effective data, its law, trials: whole
        assert table["min_font_px"] >= 11 and not table["scrolls"] and table["width"] <= table["shown"] + 0.5, table
    browser.screenshot(index, tmp_path / "report.png", 1280, min(seen["height"], 16_000))


def test_a_table_wider_than_the_page_scrolls_in_its_own_box(tmp_path):
    import browser
    from twoworlds.results.document import Block, to_html
    wide = pd.DataFrame({f"column {i}": ["12.34% ± 5.67%"] * 3 for i in range(30)})
    page = tmp_path / "wide.html"
    page.write_text(to_html([Block("h1", "wide"), Block("table", wide), Block("p", "after")], "wide"))
    seen = browser.inspect(page, tmp_path)
    assert seen["scroll_width"] <= seen["width"] and seen["overflow"] == [], seen["overflow"]
    assert seen["tables"][0]["scrolls"] and seen["tables"][0]["width"] > seen["width"]


def test_claims_are_checked_and_report_check_exits_non_zero_when_one_fails(study, capsys):
    from twoworlds.launch.cli import main
    from twoworlds.results.report import build_report
    study_dir, _ = study
    verdicts = build_report(study_dir).verdicts
    assert [v.word for v in verdicts] == ["holds", "holds", "holds", "FAILS", "not checkable"]
    assert verdicts[2].evidence.startswith("mean |bootstrap error| before convergence of the seed-averaged curves: ")
    assert re.match(r"max \|bootstrap error\| before convergence \(per seed, mean over seeds\): [\d.]+% \(cnn n=64\), ",
                    verdicts[0].evidence)
    assert main(["report", str(study_dir), "--check"]) == 1
    out = capsys.readouterr()
    assert "[claim]       FAILS: the worlds agree to 0.001%" in out.out and "2 of 5 claims did not hold" in out.err
    # a pair claim over a configuration without pairs is not checkable, never passed, and says why
    assert ("not checkable: every run agrees with its twin (the bootstrap error is measured on Real/Ideal pairs, "
            "and mlp steps=400 lr=1000000.0 momentum=0.99 n=64 has none") in out.out
    manifest = study_dir / "sweep.json"
    doc = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**doc, "claims": doc["claims"][:3]}))
    try:
        assert main(["report", str(study_dir), "--check"]) == 0
        assert "[check] all 3 claims hold" in capsys.readouterr().out
    finally:
        manifest.write_text(json.dumps(doc))


def test_report_claims_checks_a_claim_restated_after_the_run_and_says_so(study, tmp_path, capsys):
    """`report --claims FILE`: the claims of the sweep file as written now, not those stored with the run (a bound
    restated after a run, checked on the runs before it); the stored sweep.json is left alone; another study's
    file is refused in one line."""
    from twoworlds.launch.cli import main
    study_dir, _ = study
    stored = (study_dir / "sweep.json").read_text()
    restated = tmp_path / "tiny.yaml"
    restated.write_text(SWEEP.replace("claim: the worlds agree to 0.001%, max: 0.00001",
                                      "claim: the worlds agree to 50%, max: 0.5"))
    try:
        assert main(["report", str(study_dir), "--check", "--claims", str(restated)]) == 1  # one not checkable
        out = capsys.readouterr().out
        assert f"claims as written now in {restated}" in out and "[claim]       holds: the worlds agree to 50%" in out
        assert "the worlds agree to 0.001%" not in out
        md = (study_dir / "report" / "report.md").read_text()
        assert f"The claims as written in {restated} now (`--claims`), not those stored with this run" in md
        assert (study_dir / "sweep.json").read_text() == stored
        other = tmp_path / "other.yaml"
        other.write_text(SWEEP.replace("name: tiny", "name: other"))
        assert main(["report", str(study_dir), "--claims", str(other)]) == 2
        err = capsys.readouterr().err.strip()
        assert err == (f"error: --claims {other} holds the claims of study 'other', not of 'tiny'; give that "
                       "study's own sweep file")
    finally:  # the report as the other tests of this module expect it
        main(["report", str(study_dir)])


def test_report_puts_samples_flops_or_wall_time_on_the_x_axis(study, tmp_path):
    from twoworlds.launch.cli import main
    from twoworlds.results.aggregate import load_study
    from twoworlds.results.report import analyse, build_report
    study_dir, _ = study
    s = load_study(study_dir)
    flops = s.curves.merge(s.trials[["trial", "flops_per_sample"]], on="trial")
    assert (flops.train_flops == flops.samples_seen * flops.flops_per_sample).all() and (flops.train_flops > 0).all()
    for x, column in (("flops", "train_flops"), ("time", "wall_time"), ("samples", "samples_seen")):
        a = analyse(s, x=x, budget=None if x != "time" else 1.0)
        for p in a.pairs.itertuples():  # plot (d): the Ideal World's error at the budget, in x's unit
            ideal = s.curves[s.curves.trial == p.ideal].sort_values("step")
            assert p.ideal_at_budget == pytest.approx(value_at(ideal[column], ideal[TEST_SOFT], a.budget), nan_ok=True)
    assert main(["report", str(study_dir), "--x", "flops"]) == 0
    md = (study_dir / "report" / "report.md").read_text()
    assert "against training FLOPs" in md and re.search(r"Ideal World test soft error at [\d.e+]+ training FLOPs", md)
    out = build_report(study_dir, x="time", budget=1.0, out_dir=tmp_path).index.parent
    assert "at 1.0 s of wall time" in (out / "report.md").read_text()
    for stem in ("a_curves", "d_speed_vs_generalization"):
        assert (out / f"{stem}.png").stat().st_size > 10_000


def test_report_x_flops_refuses_runs_without_train_flops(study, tmp_path, capsys):
    import shutil

    from twoworlds.launch.cli import main
    study_dir, _ = study
    copy = tmp_path / "tiny"
    shutil.copytree(study_dir, copy)
    old = copy / "mlp-w32-d2-bs16-ideal-s0" / "metrics.csv"  # as written before FLOP accounting
    pd.read_csv(old).drop(columns="train_flops").to_csv(old, index=False)
    assert main(["report", str(copy), "--x", "flops"]) == 2
    assert "--x flops: trials mlp-w32-d2-bs16-ideal-s0 have no 'train_flops'" in capsys.readouterr().err
    assert main(["report", str(copy), "--x", "steps"]) == 0  # the rest of the report does not need it


def test_a_trial_still_running_is_reported_with_the_rows_it_has(study, tmp_path):
    import shutil

    from twoworlds.results.report import build_report
    study_dir, _ = study
    copy = tmp_path / "tiny"
    shutil.copytree(study_dir, copy)
    trial = copy / "cnn-w32-d2-bs16-real-n256-s0"
    (trial / "summary.json").unlink()  # what a trial looks like mid-run: config.yaml and some rows
    rows = pd.read_csv(trial / "metrics.csv")
    rows.head(3).to_csv(trial / "metrics.csv", index=False)
    report = build_report(copy)
    md = (report.index.parent / "report.md").read_text()
    assert "cnn-w32-d2-bs16-real-n256-s0: running (no summary.json yet" in md
    curves = pd.read_parquet(report.index.parent / "curves.parquet")
    assert len(curves[curves.trial == trial.name]) == 3


def test_report_of_a_wrong_path_is_a_one_line_error(tmp_path, capsys):
    from twoworlds.launch.cli import main
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "no study directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "holds no trials yet" in capsys.readouterr().err



def test_early_stop_cuts_a_converged_real_world_run_and_the_report_shows_where(make_cfg):
    from twoworlds.launch.run import run_pair
    from twoworlds.results.report import build_report
    cfg = make_cfg("world=both", "n=64", "steps=200", "eval.points=40", "optim.lr=0.1",
                   "early_stop.train_error_below=0.05", "early_stop.patience=2")
    real, ideal = run_pair(cfg)
    assert ideal["steps_done"] == 200 and "stopped_early_at" not in ideal  # the Ideal World runs its budget
    cut = real["stopped_early_at"]
    assert real["status"] == "completed" and real["steps_done"] == cut < 200
    rows = pd.read_csv(f"{cfg.out_dir}/t/{real['trial']}/metrics.csv")
    assert rows.step.iloc[-1] == cut and (rows[TRAIN_ERR].iloc[-2:] < 0.05).all() and rows[TRAIN_ERR].iloc[-3] >= 0.05
    report = build_report(f"{cfg.out_dir}/t")
    md = (report.index.parent / "report.md").read_text()
    assert "| Real stopped early at |" in md and f"| {cut:,} |" in md


def test_claim_kinds_on_constructed_configuration_tables():
    from twoworlds.results.claims import check_claims
    keys = ["model.name", "corrupt.pixels"]
    configs = pd.DataFrame({
        "configuration": ["cnn none", "cnn shuffled", "mlp none", "mlp shuffled"],
        "model.name": ["cnn", "cnn", "mlp", "mlp"], "corrupt.pixels": ["none", "shuffled"] * 2,
        "ideal_final_mean": [0.05, 0.30, 0.40, 0.41], "converged_at_mean": [100, float("nan"), 300, 320],
        "max_gap_before_mean": [0.01, 0.02, 0.03, 0.02]})
    trials = pd.DataFrame({"world": ["real"] * 2, "model.name": ["cnn", "mlp"], "steps": [1000, 1000],
                           "final/train/error": [0.0, 0.01], "final/test/error": [0.89, 0.91], "num_classes": [10, 10]})
    shuffle = {"key": "corrupt.pixels", "from": "none", "to": "shuffled", "group": "model.name"}
    claims = [
        {"kind": "larger_effect", "metric": "ideal_final", "larger": "cnn", "smaller": "mlp", **shuffle},
        {"kind": "larger_effect", "metric": "ideal_final", "larger": "mlp", "smaller": "cnn", **shuffle},
        {"kind": "effect", "key": "corrupt.pixels", "from": "none", "to": "shuffled", "metric": "converged_at",
         "min_ratio": 1.0},  # never converged counts as the 1,000-step budget: 100 -> 1,000, 300 -> 320
        {"kind": "effect", "key": "corrupt.pixels", "from": "none", "to": "shuffled", "metric": "ideal_final",
         "max_change": 0.02},  # the CNN moves by 0.25
        {"kind": "memorizes_at_chance", "train_error_max": 0.02, "test_error_min": 0.85},
        {"kind": "memorizes_at_chance", "train_error_max": 0.005, "test_error_min": 0.85},
        {"kind": "gap_before_convergence", "max": 0.03, "where": {"model.name": "mlp"}},
        {"kind": "monotone", "key": "n", "metric": "real_final"},  # n does not vary here
    ]
    verdicts = check_claims(claims, trials, configs, keys)
    assert [v.holds for v in verdicts] == [True, False, True, False, True, False, True, None]
    assert "cnn +25.0 points, mlp +1.0 points" in verdicts[0].evidence
    assert "cnn: 100 steps → 1,000 steps; mlp: 300 steps → 320 steps" in verdicts[2].evidence
    assert "(chance 90.00%)" in verdicts[4].evidence and "'n' does not vary" in verdicts[7].evidence
    monotone = pd.DataFrame({"configuration": ["a", "b", "c"], "n": [100, 1000, 500],
                             "real_final_mean": [0.30, 0.115, 0.11]})
    ok, bumpy = check_claims([{"kind": "monotone", "key": "n", "metric": "real_final", "tolerance": 0.01},
                              {"kind": "monotone", "key": "n", "metric": "real_final"}], trials, monotone, ["n"])
    assert (ok.holds, bumpy.holds) == (True, False)  # sorted by n: 0.30 -> 0.11 -> 0.115
    # each verdict's margin: how far inside its bound, in the bound's units (negative: outside)
    margins = [[m.text() for m in v.margins] for v in verdicts]
    assert margins[0] == ["+24.0 points"]  # larger effect: cnn +25 points against mlp +1
    assert margins[2] == ["+0.0667"]  # ratios 1,000 / 100 (cnn) and 320 / 300 (mlp) against 1.0: the smaller
    assert margins[3] == ["-23.0 points"]  # max_change 2 points; the cnn moved 25
    assert margins[4] == ["train error +1.0 points", "test error +4.0 points"]  # 1% <= 2%, 89% >= 85%
    assert margins[6] == ["+0.0 points"]  # the mlp's 3% against a bound of 3%: on the edge
    assert [m.text() for m in ok.margins] == ["+0.5 points"] and [m.text() for m in bumpy.margins] == ["-0.5 points"]


def test_heatmap_axes_prefer_width_by_depth_and_skip_keys_tied_to_the_family():
    from twoworlds.results.plots import heatmap_axes
    grid = pd.DataFrame([(w, d, 500) for w in (8, 16, 32) for d in (2, 3)], columns=["model.width", "model.depth", "n"])
    assert heatmap_axes(["model.width", "model.depth", "n"], grid) == ("model.width", "model.depth")
    zipped = pd.DataFrame({"model.name": ["mlp", "cnn", "resnet"] * 2, "model.width": [256, 32, 16] * 2,
                           "model.depth": [3, 3, 10] * 2, "n": [1000] * 3 + [4000] * 3})
    assert heatmap_axes(["model.name", "model.width", "model.depth", "n"], zipped) == ("model.name", "n")


def test_claim_filters_match_numbers_across_int_float_and_text():
    from twoworlds.results.claims import _select
    df = pd.DataFrame({"model.width": [4.0, 256.0], "corrupt.random_labels": [False, True], "pixels": ["none", "x"]})
    assert list(_select(df, {"model.width": 256}).index) == [1]  # a float column, an int in the sweep file
    assert list(_select(df, {"corrupt.random_labels": True, "pixels": "x"}).index) == [1]
    assert list(_select(df, {"not.varying": 3}).index) == [0, 1]  # a key that does not vary filters nothing


def test_peak_and_predictor_claims_on_constructed_tables():
    from twoworlds.results.claims import check_claims, find_peak, score_predictor
    assert find_peak([0.14, 0.10, 0.17, 0.16, 0.10]).at == 2  # height min(0.17 - 0.10, 0.17 - 0.10)
    assert find_peak([0.14, 0.10, 0.17, 0.16, 0.10]).height == pytest.approx(0.07)
    assert find_peak([0.3, 0.2, 0.1]).height < 0 and find_peak([0.1, 0.2, 0.3]).height < 0  # no bump
    assert find_peak([0.1, 0.2]) is None
    widths = [2, 4, 8, 16, 32]
    configs = pd.DataFrame({
        "configuration": [f"w={w} noise={p}" for p in (0.0, 0.2) for w in widths],
        "model.width": widths * 2, "corrupt.label_noise": [0.0] * 5 + [0.2] * 5,
        # noise 0.2 peaks at width 8 by 7 points; clean falls monotonically (a 1-point bump at 16)
        "real_final_error_mean": [0.12, 0.09, 0.07, 0.08, 0.05, 0.14, 0.10, 0.17, 0.16, 0.10],
        "ideal_final_error_mean": [0.20, 0.15, 0.10, 0.08, 0.07] * 2})
    keys = ["model.width", "corrupt.label_noise"]
    trials = pd.DataFrame({"steps": [100]})
    peak = {"kind": "peak", "key": "model.width", "metric": "real_final_error"}
    verdicts = check_claims([
        {**peak, "min_height": 0.03, "where": {"corrupt.label_noise": 0.2}},
        {**peak, "min_height": 0.08, "where": {"corrupt.label_noise": 0.2}},  # 7 points is not 8
        {**peak, "min_height": 0.03},  # the clean group has none
        {**peak, "min_height": 0.03, "absent": True, "where": {"corrupt.label_noise": 0.0}},
        {**peak, "metric": "ideal_final_error", "min_height": 0.03, "absent": True},
        {**peak, "key": "n", "min_height": 0.03},  # n does not vary
    ], trials, configs, keys)
    assert [v.holds for v in verdicts] == [True, False, False, True, True, None]
    assert "highest interior peak at width=8: +7.0 points above width=4, +7.0 points above width=32" in verdicts[0].evidence
    assert [v.margins[0].text() for v in verdicts[:2]] == ["+4.0 points", "-1.0 points"]  # height 7 against 3, 8
    assert "17.00% (width=8)" in verdicts[0].evidence and "(an interior peak of at least 3.0 points)" in verdicts[0].evidence
    # the predictor: ranks agree exactly; |errors| 1, 1, 5, 1 points: 3 of 4 inside ±2, mean 2 points
    zoo = pd.DataFrame({"configuration": list("abcd"), "ideal_at_convergence_mean": [0.10, 0.20, 0.30, 0.40],
                        "paired_real_final_mean": [0.11, 0.19, 0.35, 0.41], "converged_seeds": [2, 2, 2, 1], "seeds": [2] * 4})
    score = score_predictor(zoo, band=0.02)
    assert (score.configurations, score.inside, score.rank_correlation) == (4, 3, pytest.approx(1.0))
    assert score.mean_abs_error == pytest.approx(0.02)
    swapped = zoo.assign(paired_real_final_mean=[0.11, 0.19, 0.41, 0.35])  # one swapped pair: rho = 1 - 6*2/60 = 0.8
    assert score_predictor(swapped).rank_correlation == pytest.approx(0.8)
    predicts = {"kind": "ideal_predicts_real", "band": 0.02}
    verdicts = check_claims([{**predicts, "min_rank_correlation": 0.8, "min_inside": 0.75},
                             {**predicts, "min_inside": 0.8}, {**predicts, "max_mean_abs_error": 0.015},
                             {**predicts, "where": {"configuration": "a"}}], trials, zoo, [])
    assert [v.holds for v in verdicts] == [True, False, False, None]
    assert "3 of 4 (75%) within ±2.00%" in verdicts[0].evidence
    assert [m.text() for m in verdicts[0].margins] == ["rank correlation +0.200", "share within the band +0.0 points"]
    assert [m.text() for m in verdicts[2].margins] == ["-0.5 points"]  # mean |error| 2 points against 1.5
    assert "1 configurations did not converge in every seed" in verdicts[0].evidence
    converged = check_claims([{**predicts, "where": {"converged_seeds": 2}}], trials, zoo, [])[0]
    assert "did not converge" not in converged.evidence  # counted over the claim's own configurations


def test_a_curve_without_a_peak_names_its_closest_point_and_how_far_it_stands_from_each_side():
    """The model-size sentence of a falling curve: it said "highest 69.05% at width 32" of a curve whose highest
    interior value is at width 8; it now names the point closest to a peak and its signed distance to both sides."""
    import numpy as np
    import pandas as pd
    from twoworlds.results.narrate import _peak_words
    from twoworlds.results.scores import find_peak
    from twoworlds.results.size import SizeCurve, SizeGroup
    values = np.array([0.787, 0.738, 0.691, 0.665])  # issue 24's reproduction: the Real World falls with width
    curve = SizeCurve("real_final_error", [2.0, 8.0, 32.0, 128.0], values, find_peak(values), True)
    group = SizeGroup("all", pd.DataFrame(), 32.0, 2826.0, {"real_final_error": curve})
    assert _peak_words(group, curve) == ("the Real World's final test 0/1 error has no interior peak (the closest, "
                                         "width 32 at 69.10%, is -4.7 points from the best smaller width (8) and "
                                         "+2.6 from the largest)")
