"""The report's numbers: a study's Real/Ideal pairs, its configurations (seed means), the Ideal World's
power laws and the model-size findings, computed once into an `Analysis`. No sentences, no plots, no
files: narrate.py words these tables, sections.py and plots.py render them, report.py writes them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from twoworlds.results.aggregate import Study, StudyError
from twoworlds.results.analysis import (
    CONVERGED_BELOW,
    TEST_SOFT,
    TRAIN_ERR,
    X_AXES,
    compared_keys,
    label,
    mean_std,
    pair_stats,
    pair_table,
    power_law_fit,
    steps_to_target,
    value_at,
)
from twoworlds.results.claims import Peak, Verdict, check_claims, find_peak

_PAIR_COLUMNS = ["converged_at", "max_gap_before", "mean_gap_before", "gap_at_convergence", "gap_final", "real_final", "ideal_final",
                 "ideal_steps_to_target", "ideal_at_budget", "ideal_at_convergence", "real_final_error", "ideal_final_error",
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
    budget: float  # plot (d)'s fixed budget, in the unit of `x`: a step, a sample count, FLOPs or seconds
    threshold: float = CONVERGED_BELOW
    x: str = "steps"  # a key of X_AXES: the x-axis of plots (a) and (d)
    steps: int = 0  # the largest step any trial reached (the budget of the sentences)
    verdicts: list[Verdict] = field(default_factory=list)  # the sweep file's claims, checked on this run


def _default_target(ideal_final: pd.Series) -> float:
    """The loosest target every configuration reaches: the worst final Ideal World test soft error
    (mean over seeds), rounded up to the next percent."""
    return math.ceil(ideal_final.max() * 100 - 1e-9) / 100 if len(ideal_final) else float("nan")


def _default_step_budget(pairs: pd.DataFrame, curves: pd.DataFrame) -> int:
    """The median step at which the Real Worlds converged, snapped to an evaluation step (the last
    step when none converged): where the paper compares the two worlds."""
    steps = np.sort(curves.step.unique())
    conv = pairs.converged_at.dropna()
    if not len(conv) or not len(steps):
        return int(steps[-1]) if len(steps) else 0
    return int(steps[np.abs(np.log(steps.clip(1)) - math.log(max(1.0, conv.median()))).argmin()])


def _default_budget_in(pairs: pd.DataFrame, curves: pd.DataFrame, column: str) -> float:
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


def analyse(study: Study, target: float | None = None, budget: float | None = None,
            threshold: float = CONVERGED_BELOW, x: str = "steps") -> Analysis:
    """`budget`: plot (d)'s budget in the unit of `x` (default: where the Real Worlds converge)."""
    keys = compared_keys(study.trials, study.varying)
    pairs = pair_table(study.trials, study.curves, study.varying, threshold)
    curves = study.curves
    trials = study.trials
    steps = int(trials.steps_done.max()) if trials.steps_done.notna().any() else 0
    if not len(pairs):
        verdicts = [Verdict(c.get("claim") or c["kind"], "no Real/Ideal pairs with rows yet", None)
                    for c in study.manifest.get("claims") or []]
        return Analysis(study, keys, pairs, pd.DataFrame(), pd.DataFrame(), float("nan"), 0, threshold, x, steps,
                        verdicts)
    column = _check_x(pairs, curves, x)
    ideal_curves = {t: c.sort_values("step") for t, c in curves[curves.trial.isin(pairs.ideal)].groupby("trial")}
    target = _default_target(pairs.groupby("configuration").ideal_final.mean()) if target is None else target
    if budget is None:
        budget = _default_step_budget(pairs, curves) if x == "steps" else _default_budget_in(pairs, curves, column)
    pairs["ideal_steps_to_target"] = [steps_to_target(ideal_curves[t].step, ideal_curves[t][TEST_SOFT], target)
                                      for t in pairs.ideal]
    pairs["ideal_steps_to_target"] = pairs.ideal_steps_to_target.astype(float)
    pairs["ideal_at_budget"] = [value_at(ideal_curves[t][column], ideal_curves[t][TEST_SOFT], budget)
                              for t in pairs.ideal]
    configs = mean_std(pairs, ["configuration", *keys], _PAIR_COLUMNS)
    configs["converged_seeds"] = pairs.groupby("configuration").converged_at.count().reindex(configs.configuration).values
    order = list(dict.fromkeys(pairs.configuration))
    configs = configs.set_index("configuration").loc[order].join(_averaged_curve_stats(pairs, curves, threshold))
    configs = configs.reset_index()
    verdicts = check_claims(study.manifest.get("claims") or [], trials, configs, keys)
    return Analysis(study, keys, pairs, configs, _fits(study, keys), target, budget, threshold, x, steps, verdicts)


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
    """One power law per Ideal World configuration, on every seed's (samples seen, test soft error)."""
    ideal_keys = [k for k in keys if k != "n"]
    ideal = study.trials[study.trials.world == "ideal"]
    rows = []
    groups = ideal.groupby(ideal_keys, sort=False) if ideal_keys else [((), ideal)]
    for values, trials in groups:
        values = values if isinstance(values, tuple) else (values,)
        pts = study.curves[study.curves.trial.isin(trials.trial)]
        if "samples_seen" not in pts or not len(pts):
            continue
        fit = power_law_fit(pts.samples_seen, pts[TEST_SOFT])
        if fit is None:
            continue
        rows.append({"configuration": label(dict(zip(ideal_keys, values, strict=True))), "seeds": len(trials),
                     "exponent": fit.exponent, "exponent_se": fit.exponent_se, "prefactor": fit.prefactor,
                     "r2": fit.r2, "points": fit.points, "samples_from": fit.samples_min, "samples_to": fit.samples_max})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- model size (double descent)

SIZE_CURVES = ("real_final_error", "gap_final_error", "ideal_final_error")  # the curves whose peak is sought


@dataclass
class SizeGroup:
    """One group of configurations (the same values of every key but the width) and what its curves show."""

    name: str  # the other keys' label ('all' when the width is the only key)
    table: pd.DataFrame  # its rows of the size table, by width
    threshold: float | None  # the interpolation threshold: the smallest width that fits in every seed
    parameters: float | None  # the model's parameters at the threshold
    peaks: dict[str, Peak] = field(default_factory=dict)  # per column of SIZE_CURVES (absent: a value is missing)


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


def size_groups(a: Analysis) -> list[SizeGroup]:
    """The model-size findings of each group of size_table: its threshold and the peak of each curve."""
    t, thresholds = size_table(a)
    out = []
    for g, s in (t.groupby("group", sort=False) if len(t) else []):
        w = thresholds[g]
        group = SizeGroup(g, s, w, None if w is None else float(s.num_parameters_mean[s.width == w].iloc[0]))
        for column in SIZE_CURVES:
            v = s[f"{column}_mean"].to_numpy()
            p = find_peak(v) if np.isfinite(v).all() else None
            if p is not None:
                group.peaks[column] = p
        out.append(group)
    return out


def study_n_and_classes(study: Study) -> tuple[int | None, int | None]:
    """The Real World's n (when every Real World trial has the same) and the number of classes."""
    real = study.trials[study.trials.world == "real"]
    n = int(real.n.dropna().iloc[0]) if "n" in real and real.n.notna().any() and real.n.nunique() == 1 else None
    classes = int(real.num_classes.dropna().iloc[0]) if real.num_classes.notna().any() else None
    return n, classes
