"""`twoworlds report runs/<study>`: tables, analysis, plots and the study report.

Writes into runs/<study>/report/: curves.{parquet,csv} (one row per trial and evaluation step),
trials.{parquet,csv}, pairs.csv, configurations.csv, power_laws.csv, the PNG plots, report.md and a
self-contained index.html (images embedded).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from twoworlds.lightning_modules.metrics import final_name
from twoworlds.results import plots
from twoworlds.results.aggregate import Study, StudyError, load_study, write_tables
from twoworlds.results.analysis import (
    CONVERGED_BELOW,
    TEST_SOFT,
    TRAIN_ERR,
    X_AXES,
    compared_keys,
    fmt_pm,
    label,
    mean_std,
    pair_stats,
    pair_table,
    steps_to_target,
    value_at,
)
from twoworlds.results.claims import DEFAULT_BAND, Verdict, check_claims, find_peak, score_predictor
from twoworlds.results.document import Block, to_html, to_markdown
from twoworlds.results.fits import LEVEL, METHODS, power_law_row
from twoworlds.results.formats import PCT_DIGITS
from twoworlds.results.formats import pct as _pct
from twoworlds.results.records import atomic_write_text
from twoworlds.results.repetition import analyse_repetition, with_effective_data
from twoworlds.results.repetition_report import claim_columns, repetition_blocks, repetition_error

_PAIR_COLUMNS = ["converged_at", "max_gap_before", "mean_gap_before", "gap_at_convergence", "gap_final", "real_final", "ideal_final",
                 "ideal_steps_to_target", "ideal_at_step", "ideal_at_convergence", "real_final_error", "ideal_final_error",
                 "gap_final_error", "real_final_train_error", "real_weight_movement", "ideal_weight_movement",
                 "num_parameters"]


@dataclass
class Analysis:
    study: Study
    keys: list[str]  # configuration keys (what varies, except world and seed)
    pairs: pd.DataFrame  # one row per Real World trial with its Ideal World twin
    configs: pd.DataFrame  # one row per configuration: seed means and stds of the pair columns
    fits: pd.DataFrame  # power laws of Ideal World test soft error against samples seen
    target: float  # Ideal World test soft error whose first crossing measures optimization speed
    speed_step: float  # the fixed budget of plot (d), in the unit of `x` (a step, samples, FLOPs, seconds)
    threshold: float = CONVERGED_BELOW
    x: str = "steps"  # a key of X_AXES: the x-axis of plots (a) and (d)
    statements: list[str] = field(default_factory=list)


def _default_target(ideal_final: pd.Series) -> float:
    """The loosest target every configuration reaches: the worst final Ideal World test soft error
    (mean over seeds), rounded up to the next percent."""
    return math.ceil(ideal_final.max() * 100 - 1e-9) / 100 if len(ideal_final) else float("nan")


def _default_speed_step(pairs: pd.DataFrame, curves: pd.DataFrame) -> int:
    """The median step at which the Real Worlds converged, snapped to an evaluation step (the last
    step when none converged): where the paper compares the two worlds."""
    steps = np.sort(curves.step.unique())
    conv = pairs.converged_at.dropna()
    if not len(conv) or not len(steps):
        return int(steps[-1]) if len(steps) else 0
    return int(steps[np.abs(np.log(steps.clip(1)) - math.log(max(1.0, conv.median()))).argmin()])


def _default_budget(pairs: pd.DataFrame, curves: pd.DataFrame, column: str) -> float:
    """Plot (d)'s budget in samples, FLOPs or seconds: the median of the Real Worlds' `column` at
    their convergence (the last Ideal World evaluation reached by all when none converged), moved
    into the range every Ideal World curve covers, when there is one. Models whose costs differ a
    lot may share no FLOP range: those without a value at the budget are named in plot (d)."""
    ideal = curves[curves.trial.isin(pairs.ideal)].groupby("trial")[column]
    first, last = ideal.min().max(), ideal.max().min()  # the range all Ideal World curves cover
    conv = pairs.dropna(subset=["converged_at"])
    at = [curves.loc[(curves.trial == p.real) & (curves.step == p.converged_at), column].iloc[0]
          for p in conv.itertuples()]
    budget = float(np.median(at)) if at else float(last)
    return float(np.clip(budget, first, last)) if first <= last else budget


def _check_x(pairs: pd.DataFrame, curves: pd.DataFrame, x: str) -> str:
    """The curves column of `x`, refused where a paired trial lacks it (runs from before FLOP accounting)."""
    if x not in X_AXES:
        raise StudyError(f"--x {x}: unknown x-axis; use one of {', '.join(X_AXES)}")
    column = X_AXES[x].column
    used = curves[curves.trial.isin(pairs.real) | curves.trial.isin(pairs.ideal)]
    lacking = sorted(used.trial[used[column].isna()].unique()) if column in used else sorted(used.trial.unique())
    if lacking:
        raise StudyError(f"--x {x}: trials {', '.join(lacking)} have no '{column}' values in metrics.csv (written "
                         "by runs since FLOP accounting); re-run them, or use --x steps")
    return column


def analyse(study: Study, target: float | None = None, speed_step: float | None = None,
            threshold: float = CONVERGED_BELOW, x: str = "steps") -> Analysis:
    """`speed_step`: plot (d)'s budget in the unit of `x` (default: where the Real Worlds converge)."""
    keys = compared_keys(study.trials, study.varying)
    pairs = pair_table(study.trials, study.curves, study.varying, threshold)
    curves = study.curves
    if not len(pairs):
        return Analysis(study, keys, pairs, pd.DataFrame(), pd.DataFrame(), float("nan"), 0, threshold, x)
    column = _check_x(pairs, curves, x)
    ideal_curves = {t: c.sort_values("step") for t, c in curves[curves.trial.isin(pairs.ideal)].groupby("trial")}
    target = _default_target(pairs.groupby("configuration").ideal_final.mean()) if target is None else target
    if speed_step is None:
        speed_step = _default_speed_step(pairs, curves) if x == "steps" else _default_budget(pairs, curves, column)
    pairs["ideal_steps_to_target"] = [steps_to_target(ideal_curves[t].step, ideal_curves[t][TEST_SOFT], target)
                                      for t in pairs.ideal]
    pairs["ideal_steps_to_target"] = pairs.ideal_steps_to_target.astype(float)
    pairs["ideal_at_step"] = [value_at(ideal_curves[t][column], ideal_curves[t][TEST_SOFT], speed_step)
                              for t in pairs.ideal]
    configs = mean_std(pairs, ["configuration", *keys], _PAIR_COLUMNS)
    configs["converged_seeds"] = pairs.groupby("configuration").converged_at.count().reindex(configs.configuration).values
    order = list(dict.fromkeys(pairs.configuration))
    configs = configs.set_index("configuration").loc[order].join(_averaged_curve_stats(pairs, curves, threshold))
    configs = configs.reset_index()
    analysis = Analysis(study, keys, pairs, configs, _fits(study, keys), target, speed_step, threshold, x)
    analysis.statements = statements(analysis)
    return analysis


def _averaged_curve_stats(pairs: pd.DataFrame, curves: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """PairStats of each configuration's seed-averaged curves (columns 'curve_<field>'): the expected
    bootstrap error, without the seed-to-seed jitter that the per-seed statistics also contain."""
    rows = {}
    for cfg, g in pairs.groupby("configuration", sort=False):
        real = curves[curves.trial.isin(g.real)].groupby("step")[[TEST_SOFT, TRAIN_ERR]].mean().reset_index()
        ideal = curves[curves.trial.isin(g.ideal)].groupby("step")[[TEST_SOFT]].mean().reset_index()
        rows[cfg] = {f"curve_{k}": v for k, v in vars(pair_stats(real, ideal, threshold)).items()}
    return pd.DataFrame.from_dict(rows, orient="index")


def _fits(study: Study, keys: list[str]) -> pd.DataFrame:
    """One power law per Ideal World configuration, on every seed's (samples seen, test soft error), with
    a bootstrap interval over its seeds and a hold-out of the last decade (fits.power_law_row)."""
    ideal_keys = [k for k in keys if k != "n"]
    ideal = study.trials[study.trials.world == "ideal"]
    rows = []
    groups = ideal.groupby(ideal_keys, sort=False) if ideal_keys else [((), ideal)]
    for values, trials in groups:
        values = values if isinstance(values, tuple) else (values,)
        trials = trials.sort_values("steps", kind="stable").drop_duplicates("seed", keep="last")  # a seed's longest
        pts = study.curves[study.curves.trial.isin(trials.trial)]
        if "samples_seen" not in pts or not len(pts):
            continue
        fit = power_law_row([(c.samples_seen.to_numpy(), c[TEST_SOFT].to_numpy()) for _, c in pts.groupby("trial")])
        if fit is None:
            continue
        rows.append({"configuration": label(dict(zip(ideal_keys, values, strict=True))), "seeds": len(trials), **fit})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- plain language

def _configuration_sentence(rd: pd.Series, family, threshold: float, steps: int) -> str:
    words = [w for w in rd["configuration"].split() if w != str(family)]
    prefix = f"with {' '.join(words)}, " if words and words != ["all"] else ""
    seeds = int(rd["seeds"])
    seeds_txt = f" ({seeds} seeds)" if seeds > 1 else ""
    before = fmt_pm(rd["max_gap_before_mean"], rd["max_gap_before_std"], seeds, digits=PCT_DIGITS)
    if rd.get("curve_mean_gap_before") == rd.get("curve_mean_gap_before"):  # not NaN
        before += f" (on average {_pct(rd['curve_mean_gap_before'])})"
    final = fmt_pm(rd["gap_final_mean"], rd["gap_final_std"], seeds, digits=PCT_DIGITS, sign=True)
    if rd["converged_seeds"] == seeds:
        conv = fmt_pm(rd["converged_at_mean"], rd["converged_at_std"], seeds, scale=1, digits=0, unit="")
        return (f"{prefix}the |bootstrap error| was at most {before} until the Real World converged (train error "
                f"< {threshold:.0%}) at step {conv}{seeds_txt}, and was {final} at the last step")
    partly = f" in {int(rd['converged_seeds'])} of {seeds} seeds" if rd["converged_seeds"] else ""
    return (f"{prefix}the Real World did not reach {threshold:.0%} train error within {steps:,} steps{partly}; "
            f"the |bootstrap error| was at most {before} throughout{seeds_txt} and was {final} at the last step")


def statements(a: Analysis) -> list[str]:
    """One sentence per family: per configuration, how long the two worlds agreed, and how closely."""
    trials = a.study.trials
    steps = int(trials.steps_done.max()) if trials.steps_done.notna().any() else 0
    if "model.name" in a.configs:
        families = list(a.configs.groupby("model.name", sort=False))
    else:
        families = [(trials["model.name"].iloc[0] if "model.name" in trials else "model", a.configs)]
    out = []
    for family, sub in families:
        parts = [_configuration_sentence(rd, family, a.threshold, steps) for _, rd in sub.iterrows()]
        out.append(f"For the {str(family).upper()}: " + "; ".join(parts) + ".")
    return out


# ---------------------------------------------------------------- the report

def _steps(v: float) -> str:
    return "—" if v != v else f"{v:,.0f}"


def _pm(c: pd.DataFrame, col: str, **kw) -> list[str]:
    """Column `col` of a configurations table as 'mean ± std' per row (formats.fmt_pm)."""
    return [fmt_pm(m, s, int(k), **kw) for m, s, k in zip(c[f"{col}_mean"], c[f"{col}_std"], c.seeds, strict=True)]


def summary_table(a: Analysis) -> pd.DataFrame:
    c = a.configs
    pm = lambda col, **kw: _pm(c, col, **kw)  # noqa: E731
    table = pd.DataFrame({
        "configuration": c.configuration, "seeds": c.seeds.astype(int),
        "Real converged at step": [f"{_steps(m)} ({int(k)}/{int(n)})" for m, k, n in
                                   zip(c.converged_at_mean, c.converged_seeds, c.seeds, strict=True)],
        "max |bootstrap err| before": pm("max_gap_before", digits=2),
        "mean |bootstrap err| before": pm("mean_gap_before", digits=2),
        "bootstrap err at convergence": pm("gap_at_convergence", digits=2, sign=True),
        "bootstrap err, last step": pm("gap_final", digits=2, sign=True),
        "Real test soft err, last": pm("real_final", digits=2),
        "Ideal test soft err, last": pm("ideal_final", digits=2),
        f"Ideal steps to {a.target:.0%}": pm("ideal_steps_to_target", scale=1, digits=0, unit=""),
    })
    cut = a.pairs.dropna(subset=["stopped_early_at"])
    if len(cut):  # early_stop: where each configuration's Real World curves were cut
        steps = cut.groupby("configuration").stopped_early_at.apply(lambda s: ", ".join(f"{v:,.0f}" for v in s))
        table.insert(3, "Real stopped early at", [steps.get(k, "—") for k in c.configuration])
    return table


def _trials_table(study: Study) -> pd.DataFrame:
    t = study.trials
    cols = {"trial": t.trial, "world": t.world, "status": t.status,
            "steps done": [_steps(v) for v in t.steps_done.astype(float)]}
    for key, name in ((final_name(TEST_SOFT), "test soft err"), (final_name(TRAIN_ERR), "train err")):
        if key in t:
            cols[name] = [_pct(v) for v in t[key].astype(float)]
    return pd.DataFrame(cols)


def _fits_table(fits: pd.DataFrame) -> pd.DataFrame:
    if not len(fits):
        return fits
    return pd.DataFrame({
        "Ideal World configuration": fits.configuration, "seeds": fits.seeds,
        "exponent α (err ∝ samples^−α)": [f"{e:.3f} " + ("[—]" if lo != lo else f"[{lo:.3f}, {hi:.3f}]") for e, lo, hi
                                          in zip(fits.exponent, fits.exponent_lo, fits.exponent_hi, strict=True)],
        "prefactor": [f"{p:.3g}" for p in fits.prefactor], "R²": [f"{r:.3f}" for r in fits.r2],
        "samples fitted": [f"{lo:,.0f} – {hi:,.0f}" for lo, hi in zip(fits.samples_from, fits.samples_to, strict=True)],
        "held out: last decade": [f"{e:+.0%}" if e == e else "—" for e in fits.holdout_error]})


def _problems(study: Study) -> list[str]:
    t = study.trials
    items = [f"missing (expected by the sweep file, never started): {', '.join(study.missing)}"] if study.missing else []
    for status in ("running", "interrupted", "failed", "diverged"):
        for r in t[t.status == status].itertuples():
            extra = ""
            if status == "diverged":
                extra = f" at step {int(r.diverged_at_step):,} ({r.diverged_reason}); rows up to there are kept"
            elif status == "failed" and isinstance(r.error, str):
                extra = f": {r.error.splitlines()[0][:200]}"
            elif status == "running":
                extra = " (no summary.json yet: still running, or its process was killed; `--resume` finishes it)"
            items.append(f"{r.trial}: {status}{extra}")
    return items


@dataclass
class Report:
    index: Path  # the self-contained index.html
    verdicts: list[Verdict]  # the sweep file's claims, checked on this run

    @property
    def failed(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.holds is not True]


def build_report(study_dir: str | Path, *, target: float | None = None, speed_step: float | None = None,
                 threshold: float = CONVERGED_BELOW, out_dir: str | Path | None = None, x: str = "steps") -> Report:
    """Write the report of runs/<study>/ (see the module docstring). `x`: the x-axis of plots (a)
    and (d), a key of X_AXES; `speed_step`: plot (d)'s budget in that unit."""
    study = load_study(study_dir)
    out = Path(out_dir) if out_dir else study.path / "report"
    out.mkdir(parents=True, exist_ok=True)
    error = repetition_error(study.manifest.get("claims") or [])
    study.curves = with_effective_data(study.trials, study.curves, study.config_keys, error)  # the D_eff columns
    write_tables(study, out)
    a = analyse(study, target, speed_step, threshold, x)
    rep = analyse_repetition(a.pairs, study.curves, error)
    if rep is not None:  # the numbers the effective-data claims check, in configurations.csv too
        a.configs = a.configs.join(claim_columns(rep), on="configuration")
    blocks = [Block("h1", f"Study '{study.name}': Real World vs Ideal World"), Block("p", _intro(a))]
    if len(a.pairs):
        a.pairs.to_csv(out / "pairs.csv", index=False)
        a.configs.to_csv(out / "configurations.csv", index=False)
        a.fits.to_csv(out / "power_laws.csv", index=False)
        blocks += [Block("h2", "Findings"), Block("list", a.statements)]
        verdicts = check_claims(study.manifest.get("claims") or [], study.trials, a.configs, a.keys)
        if verdicts:
            blocks += [Block("h2", "Claims checked on this run"),
                       Block("list", [f"{v.claim}: {v.evidence}: {v.word}" for v in verdicts])]
        blocks += [
                   Block("h2", "Summary by configuration"), Block("table", summary_table(a)),
                   Block("p", "Errors are test soft errors (1 − softmax probability of the true class), mean ± std "
                              "over seeds; the bootstrap error is Real minus Ideal at the same step. Converged: "
                              f"first evaluation with Real World train 0/1 error < {threshold:.0%} (seeds that "
                              "converged in brackets). Max and mean |bootstrap error| are taken over the "
                              "evaluations up to convergence (all of them when the Real World did not "
                              "converge); the mean starts where learning has begun (the Ideal World's test "
                              "error 10% below its first value), since both worlds agree trivially before.")]
        blocks += _plot_blocks(a, out)
        blocks += _predictor_blocks(a, out) + _size_blocks(a, out) + _movement_blocks(a, out)
        if len(a.fits):
            blocks += [Block("h2", "Scaling of the Ideal World"), Block("table", _fits_table(a.fits)),
                       Block("p", f"Fitted by {METHODS[a.fits.method.iloc[0]]}: log(test soft error) against "
                                  "log(samples seen) over the last two decades of samples, all seeds pooled. Brackets: "
                                  f"{LEVEL:.0%} interval of the exponent from a bootstrap over seeds (whole Ideal World "
                                  "trials resampled, every distinct resample enumerated; — with one seed). Held out: the "
                                  "law fitted without the last decade of samples predicts the error at the last "
                                  "evaluation; relative error against the seed mean measured there.")]
        blocks += repetition_blocks(rep, out)
    else:
        verdicts = [Verdict(c.get("claim") or c["kind"], "no Real/Ideal pairs with rows yet", None)
                    for c in study.manifest.get("claims") or []]
        blocks += [Block("p", "No Real/Ideal pair has logged rows yet, so there is nothing to compare; the trial "
                              "table below shows what exists.")]
    blocks += [Block("h2", "Trials"), Block("table", _trials_table(study)),
               Block("h2", "Missing, running, failed or diverged trials"),
               Block("list", _problems(study) or ["none: every trial completed"])]
    blocks += _provenance_blocks(study)
    atomic_write_text(out / "report.md", to_markdown(blocks, out))
    index = atomic_write_text(out / "index.html", to_html(blocks, f"twoworlds report: {study.name}"))
    return Report(index, verdicts)


def _intro(a: Analysis) -> str:
    t = a.study.trials
    counts = ", ".join(f"{n} {s}" for s, n in t.status.value_counts().sort_index().items())
    text = (f"{len(t)} trials ({counts}) in {a.study.path}, reported {time.strftime('%Y-%m-%d %H:%M')}. "
            f"{len(a.pairs)} Real World trials have an Ideal World twin (same configuration and seed).")
    if len(a.pairs):
        text += (f" Optimization speed is the number of steps the Ideal World needs to reach a test soft error "
                 f"of {a.target:.0%}; plot (d) compares the worlds at {X_AXES[a.x].budget.format(a.speed_step)}.")
    return text


def _plot_blocks(a: Analysis, out: Path) -> list[Block]:
    curves = a.study.curves
    blocks = [Block("h2", "Plots")]
    axis = X_AXES[a.x]
    for i, path in enumerate(plots.plot_curves(a.pairs, curves, out, x=axis)):
        blocks.append(Block("image", path, f"(a{'' if i == 0 else i + 1}) Test soft error of both worlds and the "
                                           f"Real World's train soft error against {axis.noun} (the paper's Figure 1 "
                                           "has steps)."))
    blocks.append(Block("image", plots.plot_scatter(a.pairs, curves, out),
                        "(b) Real against Ideal World test soft error at every evaluation step of every pair."))
    panels = [("gap_at_convergence_mean", "bootstrap error at convergence", "{:+.3f}"),
              ("ideal_steps_to_target_mean", f"Ideal World steps to {a.target:.0%} test soft err", "{:,.0f}"),
              ("real_final_mean", "Real World final test soft error", "{:.3f}")]
    blocks.append(Block("image", plots.plot_heatmaps(a.configs, a.keys, out, panels),
                        "(c) Per configuration, mean over seeds. Bootstrap error at the Real World's convergence "
                        "step (at the last step where it did not converge)."))
    budget = axis.budget.format(a.speed_step)
    blocks.append(Block("image", plots.plot_speed(a.configs, out, budget),
                        f"(d) Optimization speed (Ideal World test soft error at {budget}) against "
                        "generalization (Real World test soft error at the last step); error bars: std over seeds."))
    return blocks


# ---------------------------------------------------------------- the Deep Bootstrap predictor

def predictor_band(study: Study) -> float:
    """The ± band of plot (e): the study's ideal_predicts_real claim's, else DEFAULT_BAND."""
    for c in study.manifest.get("claims") or []:
        if c.get("kind") == "ideal_predicts_real" and "band" in c:
            return float(c["band"])
    return DEFAULT_BAND


def _predictor_blocks(a: Analysis, out: Path) -> list[Block]:
    """Plot (e) and a sentence: how well the Ideal World at the Real World's convergence step predicts
    the Real World's final error, over the configurations (from 3 on)."""
    band = predictor_band(a.study)
    score = score_predictor(a.configs, band)
    if score is None:
        return []
    return [Block("h2", "The Deep Bootstrap predictor"),
            Block("p", "Predictor: the Real World's final test soft error ≈ the Ideal World's test soft error at the "
                       f"step where the Real World converged (the paper's Figure 2); {score.sentence()}. Hollow "
                       "markers: configurations whose Real World did not converge in every seed (predicted from the "
                       "last step)."),
            Block("image", plots.plot_predictor(a.configs, out, band, score),
                  f"(e) One point per configuration, mean ± std over seeds; y = x and a ±{_pct(band)} band.")]


# ---------------------------------------------------------------- model size (double descent)

def size_table(a: Analysis) -> tuple[pd.DataFrame, dict]:
    """One row per configuration of a study whose width varies, with `group` (the other keys' label) and
    `width`; and per group, the interpolation threshold: the smallest width whose Real World fits its
    n samples (final train 0/1 error < the convergence threshold in every seed). Only groups with at
    least 3 widths (a zoo's one or two widths per family say nothing about model size): empty without."""
    c = a.configs
    if "model.width" not in a.keys or c["model.width"].nunique() < 3:
        return pd.DataFrame(), {}
    others = [k for k in a.keys if k != "model.width"]
    t = c.assign(width=pd.to_numeric(c["model.width"]),
                 group=[label({k: r[k] for k in others}) for _, r in c.iterrows()] if others else "all")
    per_seed = a.pairs.assign(fit=a.pairs.real_final_train_error < a.threshold).groupby("configuration").fit.all()
    t["fits"] = [bool(per_seed.get(cfg, False)) for cfg in t.configuration]
    t = t[t.groupby("group").width.transform("nunique") >= 3].sort_values(["group", "width"], kind="stable")
    if not len(t):
        return pd.DataFrame(), {}
    thresholds = {g: (float(s.width[s.fits].min()) if s.fits.any() else None) for g, s in t.groupby("group", sort=False)}
    return t, thresholds


def _size_blocks(a: Analysis, out: Path) -> list[Block]:
    t, thresholds = size_table(a)
    if not len(t):
        return []
    real = a.study.trials[a.study.trials.world == "real"]
    n = int(real.n.dropna().iloc[0]) if "n" in real and real.n.notna().any() and real.n.nunique() == 1 else None
    classes = int(real.num_classes.dropna().iloc[0]) if real.num_classes.notna().any() else None
    sentences = []
    for g, s in t.groupby("group", sort=False):
        words = []
        w = thresholds[g]
        if w is None:
            words.append(f"no width fitted its training labels (final train error < {a.threshold:.0%} in every seed)")
        else:
            params = s.num_parameters_mean[s.width == w].iloc[0]
            nk = f"; n × classes = {n * classes:,}" if n and classes else ""
            per = f", {params / n:.1f} per training sample" if n else ""
            words.append(f"the interpolation threshold (the smallest width whose Real World fits its training labels, "
                         f"final train error < {a.threshold:.0%} in every seed) is width {w:g} ({params:,.0f} parameters"
                         f"{per}{nk})")
        for column, what in (("real_final_error", "the Real World's final test 0/1 error"),
                             ("gap_final_error", "the bootstrap error (0/1, last step)"),
                             ("ideal_final_error", "the Ideal World's final test 0/1 error")):
            v = s[f"{column}_mean"].to_numpy()
            p = find_peak(v) if np.isfinite(v).all() else None
            if p is None:
                continue
            at = s.width.iloc[p.at]
            if p.height > 0:
                rel = "" if w is None else (" (at the threshold)" if at == w else
                                            f" ({'below' if at < w else 'above'} the threshold)")
                words.append(f"{what} peaks at width {at:g}{rel}: {_pct(v[p.at])}, "
                             f"{100 * (v[p.at] - v[p.low]):.1f} points above the best smaller width ({s.width.iloc[p.low]:g}) "
                             f"and {100 * (v[p.at] - v[-1]):.1f} above the largest")
            else:
                words.append(f"{what} has no interior peak (highest {_pct(v[p.at])} at width {at:g} is not above "
                             "both sides)")
        body = "; ".join(words) + "."
        sentences.append(body[0].upper() + body[1:] if g == "all" else f"{g}: {body}")
    table = pd.DataFrame({
        "configuration": t.configuration, "parameters": [f"{p:,.0f}" for p in t.num_parameters_mean],
        "Real train err, last": _pm(t, "real_final_train_error", digits=2),
        **{name: _pm(t, col, digits=2, sign=col.startswith("gap"))
           for col, name in (("real_final_error", "Real test 0/1 err"), ("ideal_final_error", "Ideal test 0/1 err"),
                             ("gap_final_error", "bootstrap 0/1 err"), ("real_final", "Real test soft err"),
                             ("ideal_final", "Ideal test soft err"))}})
    return [Block("h2", "Model size"), Block("list", sentences), Block("table", table),
            Block("image", plots.plot_model_size(t, out, thresholds),
                  "(f) Final errors against width, mean ± std over seeds. Dotted: the interpolation threshold.")]


def _movement_blocks(a: Analysis, out: Path) -> list[Block]:
    """Plot (g), for runs that logged the relative weight movement, with a table of its final values."""
    c = a.configs
    if "real_weight_movement_mean" not in c or c.real_weight_movement_mean.isna().all():
        return []
    fmt = lambda m, s, k: "—" if m != m else (f"{m:.3g} ± {s:.2g}" if k > 1 else f"{m:.3g}")  # noqa: E731
    table = pd.DataFrame({"configuration": c.configuration, "seeds": c.seeds.astype(int), **{
        f"{world} |w − w₀| / |w₀|, last": [fmt(m, s, k) for m, s, k in
                                          zip(c[f"{world.lower()}_weight_movement_mean"],
                                              c[f"{world.lower()}_weight_movement_std"], c.seeds, strict=True)]
        for world in ("Real", "Ideal")}})
    return [Block("h2", "Weight movement"), Block("table", table),
            Block("image", plots.plot_weight_movement(a.pairs, a.study.curves, out, X_AXES[a.x]),
                  "(g) Relative weight movement |w − w₀| / |w₀| of the trainable parameters from their initial values "
                  "(small: lazy training, the network stays near its linearization; large: features are learned).")]


def _provenance_blocks(study: Study) -> list[Block]:
    blocks = []
    if study.manifest.get("text"):
        m = study.manifest
        how = f"{m.get('file', '?')}" + (" (smoke variant)" if m.get("smoke") else "") + \
            (f", overrides: {' '.join(m['overrides'])}" if m.get("overrides") else "")
        blocks += [Block("h2", "Sweep file"), Block("p", how), Block("code", m["text"], "yaml")]
    prov = study.provenance
    if prov:
        versions = ", ".join(f"{k} {v}" for k, v in (prov.get("versions") or {}).items())
        blocks += [Block("h2", "Provenance"),
                   Block("list", [f"git commit: {prov.get('git_commit', 'unknown')}", f"versions: {versions}",
                                  f"host: {prov.get('host', '?')}", f"command: {prov.get('argv', '?')}"])]
    blocks.append(Block("p", "Tables beside this report: curves.parquet/.csv (one row per trial and evaluation "
                             "step, with the config values and the D_eff columns), trials.parquet/.csv, pairs.csv, "
                             "configurations.csv, power_laws.csv; with effective data: effective_data.csv, "
                             "repetition_law.csv, repetition_holdout.csv."))
    return blocks
