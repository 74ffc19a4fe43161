"""The report on a study where some trials lack a twin (issue 24): every one-world number uses every trial of
its world, every pair number the pairs only, and each section says which. Each section is checked against
numbers computed here from the trials' own files (config.yaml, summary.json, metrics.csv), not through results/.

The study has issue 24's shape on tiny teacher runs: the Real World at widths 4, 8, 16 and 32 (2 seeds), the
Ideal World at 4, 8 (seed 0 only), 32 and 64 (seed 0 only). Width 16, the smallest whose Real World fits its
labels, has no Ideal World twin: the report that used only pairs called width 32 the interpolation threshold.
"""

from __future__ import annotations

import json
import math
import shutil

import pandas as pd
import pytest
import yaml
from twoworlds.results.formats import fmt_pm, pct

UNPAIRED = """
name: unpaired
base: {source: teacher, n: 64, steps: 60, batch_size: 16, data.test_size: 256, eval.points: 8,
       model.name: mlp, model.depth: 2, optim.lr: 0.1}
grid: {model.width: [4, 8, 16, 32, 64], world: [real, ideal]}
seeds: 2
claims:
  - {kind: peak, claim: the Real World peaks, key: model.width, metric: real_final_error}
  - {kind: monotone, claim: the Ideal World falls with width, key: model.width, metric: ideal_final_error,
     tolerance: 1.0}
  - {kind: gap_before_convergence, claim: both worlds agree, max: 0.5}
  - {kind: gap_before_convergence, claim: both worlds agree at width 4, max: 0.5, where: {model.width: 4}}
"""
NOT_RUN = {"mlp-w8-d2-bs16-ideal-s1", "mlp-w16-d2-bs16-ideal-s0", "mlp-w16-d2-bs16-ideal-s1",
           "mlp-w64-d2-bs16-real-n64-s0", "mlp-w64-d2-bs16-real-n64-s1", "mlp-w64-d2-bs16-ideal-s1"}
SOFT, ERR, TRAIN = "test/soft_error", "test/error", "train/error"


@pytest.fixture(scope="module")
def unpaired(tmp_path_factory):
    from twoworlds.launch.run import run_trial
    from twoworlds.launch.sweep_spec import load_sweep
    from twoworlds.results.aggregate import load_study
    from twoworlds.results.report import analyse, build_report
    root = tmp_path_factory.mktemp("unpaired")
    path = root / "unpaired.yaml"
    path.write_text(UNPAIRED)
    sweep = load_sweep(path, [f"out_dir={root / 'runs'}", "progress=false"])
    sweep.write_manifest(["progress=false"], smoke=False)
    for t in sweep.trials:
        if t.name not in NOT_RUN:
            run_trial(t.cfg)
    report = build_report(sweep.study_dir)
    out = report.index.parent
    return {"dir": sweep.study_dir, "report": report, "md": (out / "report.md").read_text(), "out": out,
            "own": _own(sweep.study_dir), "analysis": analyse(load_study(sweep.study_dir))}


def _own(study_dir) -> pd.DataFrame:
    """One row per trial as its own files say: world, width, seed, pair key, final values (last metrics.csv row)."""
    rows = []
    for d in sorted(p for p in study_dir.iterdir() if (p / "summary.json").is_file()):
        cfg, summary = yaml.safe_load((d / "config.yaml").read_text()), json.loads((d / "summary.json").read_text())
        metrics = pd.read_csv(d / "metrics.csv")
        converged = metrics.step[metrics[TRAIN] < 0.01] if TRAIN in metrics else metrics.step.iloc[:0]
        rows.append({"trial": d.name, "world": cfg["world"], "width": cfg["model"]["width"], "seed": cfg["seed"],
                     "pair_key": summary["pair_key"], "soft": metrics[SOFT].iloc[-1], "err": metrics[ERR].iloc[-1],
                     "train": summary["final"].get(TRAIN), "moved": metrics.weight_movement.iloc[-1],
                     "converged": converged.iloc[0] if len(converged) else math.nan, "metrics": metrics})
    own = pd.DataFrame(rows)
    ideal = own[own.world == "ideal"].set_index("pair_key").trial
    own["twin"] = [ideal.get(k) if w == "real" else None for w, k in zip(own.world, own.pair_key, strict=True)]
    return own


def _pm(values: pd.Series, digits: int = 2) -> str:
    return fmt_pm(values.mean(), values.std(ddof=1) if len(values) > 1 else 0.0, len(values), digits=digits)


def test_one_world_numbers_use_every_trial_of_their_world_paired_or_not(unpaired):
    own, md = unpaired["own"], unpaired["md"]
    configs = pd.read_csv(unpaired["out"] / "configurations.csv").set_index("configuration")
    real, ideal = own[own.world == "real"], own[own.world == "ideal"]
    for width, g in real.groupby("width"):  # every Real World trial, twin or not
        row = configs.loc[f"width={width}"]
        assert row.real_seeds == len(g) and row.real_final_mean == pytest.approx(g.soft.mean())
        assert row.real_weight_movement_mean == pytest.approx(g.moved.mean())
    for width, g in ideal.groupby("width"):  # every Ideal World trial, twin or not (width 64 has no Real World)
        row = configs.loc[f"width={width}"]
        assert row.ideal_seeds == len(g) and row.ideal_final_mean == pytest.approx(g.soft.mean())
    fits = real.groupby("width").train.apply(lambda t: bool((t < 0.01).all()))
    threshold = min(w for w, ok in fits.items() if ok)
    assert threshold == 16 and threshold not in set(ideal.width)  # the case the pair-only report got wrong
    assert "final train error < 1% in every seed) is width 16 (" in md
    # the summary table's row and the findings' sentence for the width without a twin
    w16 = real[real.width == 16]
    conv = fmt_pm(w16.converged.mean(), w16.converged.std(ddof=1), 2, scale=1, digits=0, unit="")
    assert f"| width=16 | 2/0/0 | {w16.converged.mean():,.0f} (2/2) | — | — | — | — | {_pm(w16.soft)} | — | — |" in md
    assert f"with width=16, the Real World converged (train error < 1%) at step {conv} (2 seeds); it has no Ideal " \
           "World twin, so no bootstrap error" in md
    w64 = ideal[ideal.width == 64]
    assert f"with width=64, only the Ideal World ran (1 seed): final test soft error {pct(w64.soft.iloc[0])}" in md
    # optimization speed: the default target is reached by every Ideal World trial; each seed's first crossing
    target = math.ceil(ideal.soft.max() * 100 - 1e-9) / 100
    assert f"reach a test soft error of {target:.0%}" in md
    for width, g in ideal.groupby("width"):
        reached = [m.step[m[SOFT] <= target + 1e-12].min() for m in g.metrics]
        assert configs.loc[f"width={width}", "ideal_steps_to_target_mean"] == pytest.approx(sum(reached) / len(reached))
    # the Ideal World's power laws, one per Ideal World width with all its seeds
    laws = pd.read_csv(unpaired["out"] / "power_laws.csv")
    assert dict(zip(laws.configuration, laws.seeds, strict=True)) == {
        f"width={w}": len(g) for w, g in ideal.groupby("width")}
    moved = f"{w16.moved.mean():.3g} ± {w16.moved.std(ddof=1):.2g}"  # the weight-movement table
    assert f"| width=16 | 2/0/0 | {moved} | — |" in md
    # the model-size table: each world's columns where it ran, a dash where it did not
    assert f"| width=16 | {unpaired['analysis'].configs.set_index('configuration').num_parameters_mean['width=16']:,.0f} " \
           f"| {_pm(w16.train)} | {_pm(w16.err)} | — | — | {_pm(w16.soft)} | — |" in md


def test_pair_numbers_use_the_pairs_only_and_every_section_says_which(unpaired):
    from twoworlds.results.plots import heatmap_placed, no_point_reason
    from twoworlds.results.sections import panels
    from twoworlds.results.size import size_table
    own, md, a = unpaired["own"], unpaired["md"], unpaired["analysis"]
    real = own[own.world == "real"]
    pairs = pd.read_csv(unpaired["out"] / "pairs.csv")
    expected = real.dropna(subset=["twin"])
    assert sorted(zip(pairs.real, pairs.ideal, strict=True)) == sorted(zip(expected.trial, expected.twin, strict=True))
    soft = own.set_index("trial").soft
    for p in pairs.itertuples():  # same schedule in both worlds: the last rows are the same step
        assert p.gap_final == pytest.approx(soft[p.real] - soft[p.ideal])
    configs = pd.read_csv(unpaired["out"] / "configurations.csv").set_index("configuration")
    one = expected[expected.width == 8]  # width 8: two Real World seeds, one twin
    assert configs.loc["width=8", "seeds"] == 1 and configs.loc["width=8", "real_seeds"] == 2
    assert configs.loc["width=8", "gap_final_mean"] == pytest.approx(soft[one.trial.iloc[0]] - soft[one.twin.iloc[0]])
    assert configs.loc["width=16", "seeds"] == 0 and math.isnan(configs.loc["width=16", "gap_final_mean"])
    # every section that uses fewer than all trials says which
    assert (f"{len(expected)} of {len(real)} Real World trials have an Ideal World twin (same configuration and "
            "seed): the bootstrap error is measured on those 5 pairs, every other number on all the trials of its "
            "world. Real World trials without a twin: width=8 (seed 1), width=16 (seeds 0, 1). Ideal World trials "
            "without a twin: width=64 (seed 0).") in md
    assert "every evaluation step of every pair (the 5 pairs only)." in md
    assert "Configurations without a Real/Ideal pair are not in it: width=16, width=64." in md
    assert "Hollow: Real World widths without an Ideal World twin in every seed" in md
    assert "(2 seeds; the bootstrap error over the 1 with an Ideal World twin)" in md
    has = {t: "yes" for t in [*expected.trial, *expected.twin]}
    for r in own.itertuples():  # the trial table's column
        assert f"| {r.trial} | {r.world} | completed | 60 | {has.get(r.trial, 'no')} |" in md
    # the plots' inputs: (a) and (g) draw every trial of each world; (f) marks the Real World points without twins
    drawn = {p.name: (set(p.real.trial) if len(p.real) else set(), set(p.ideal)) for p in panels(a)}
    assert drawn == {f"width={w}": (set(g.trial[g.world == "real"]), set(g.trial[g.world == "ideal"]))
                     for w, g in own.groupby("width")}
    keys = a.worlds.shown + [k for k in a.keys if k not in a.worlds.shown]
    assert set(heatmap_placed(keys, a.configs).configuration) == {f"width={w}" for w in own.width}  # (c): all
    assert "A dash: the configuration has no pair (bootstrap error) or no trial of that world." in md
    reasons = {r.configuration: no_point_reason(r) for r in a.configs.itertuples()}  # (d)'s legend
    assert reasons == {"width=4": "", "width=8": "", "width=16": "  (no point: no Ideal World trials)",
                       "width=32": "", "width=64": "  (no point: no Real World trials)"}
    t, thresholds = size_table(a)
    assert list(t.width) == [4, 8, 16, 32, 64] and thresholds == {"all": 16.0}
    assert [w for w, p, r in zip(t.width, t.paired, t.real_seeds, strict=True) if r and not p] == [8, 16]


def test_claims_use_their_world_and_a_pair_claim_without_pairs_is_not_checkable(unpaired, capsys):
    from twoworlds.launch.cli import main
    own, verdicts = unpaired["own"], unpaired["report"].verdicts
    assert [v.word for v in verdicts] == ["FAILS", "holds", "not checkable", "holds"]
    real = own[own.world == "real"].groupby("width").err.mean()
    curve = " → ".join(f"{pct(v)} (width={w})" for w, v in real.items())  # width 16 included, twin or not
    assert verdicts[0].evidence.startswith(f"Real World final test 0/1 error: all: {curve};")
    assert verdicts[0].evidence.endswith("without Real World trials, so not part of it: width=64")
    ideal = own[own.world == "ideal"].groupby("width").err.mean()
    assert " → ".join(f"{pct(v)} (model.width={w})" for w, v in ideal.items()) in verdicts[1].evidence
    assert verdicts[2].evidence == ("the bootstrap error is measured on Real/Ideal pairs, and width=16, width=64 have "
                                    "none (run the twins, or leave them out with the claim's `where`)")
    assert main(["report", str(unpaired["dir"]), "--check"]) == 1
    out = capsys.readouterr()
    assert "[claim] not checkable: both worlds agree (the bootstrap error is measured on Real/Ideal pairs" in out.out
    assert "2 of 4 claims did not hold (or could not be checked)" in out.err


def test_a_study_of_one_world_reports_that_world(unpaired, tmp_path):
    """Without any Ideal World trial: no bootstrap error, but the Real World's numbers and threshold all there."""
    from twoworlds.results.report import build_report
    copy = tmp_path / "unpaired"
    shutil.copytree(unpaired["dir"], copy, ignore=shutil.ignore_patterns("*ideal*", "report"))
    report = build_report(copy)
    md = (report.index.parent / "report.md").read_text()
    assert "so there is no bootstrap error; the sections below show each world on its own" in md
    assert "final train error < 1% in every seed) is width 16 (" in md
    assert [v.word for v in report.verdicts] == ["FAILS", "not checkable", "not checkable", "not checkable"]
    assert report.verdicts[1].evidence == "no Ideal World trials among the claim's configurations"
