"""Bootstrap-error analysis: Real/Ideal pairs aligned by step, convergence, optimization speed,
mean ± std over seeds, and power-law fits of the Ideal World's test error against samples seen.

Conventions (the paper's): the bootstrap error is the Real World's test *soft* error minus the
Ideal World's at the same step; the Real World has converged at the first evaluation where its
train (0/1) error is below 1%. All functions take plain arrays, so they are tested on constructed
curves with known answers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from twoworlds.lightning_modules.metrics import (
    TEST_ERROR,
    TEST_SOFT_ERROR,
    TRAIN_ERROR,
    TRAIN_FLOPS,
    TRAIN_SOFT_ERROR,
    WEIGHT_MOVEMENT,
)
from twoworlds.results.formats import fmt_pm  # noqa: F401  (re-exported: analysis.fmt_pm)

TEST_SOFT, TEST_ERR = TEST_SOFT_ERROR, TEST_ERROR
TRAIN_SOFT, TRAIN_ERR = TRAIN_SOFT_ERROR, TRAIN_ERROR
CONVERGED_BELOW = 0.01  # Real World train error that counts as converged (the paper's 1%)
LEARNING_STARTED = 0.9  # learning has begun once the Ideal World's test error is 10% below its first value


@dataclass(frozen=True)
class XAxis:
    """What plots (a) and (d) put on the x-axis (`twoworlds report --x`): a metrics.csv column."""

    column: str
    label: str  # axis label, with units
    noun: str  # "against <noun>"
    budget: str  # plot (d)'s fixed budget, e.g. "step {:,.0f}"


X_AXES = {
    "steps": XAxis("step", "optimizer step", "steps", "step {:,.0f}"),
    "samples": XAxis("samples_seen", "training samples seen", "samples seen", "{:,.0f} training samples"),
    "flops": XAxis(TRAIN_FLOPS, "training FLOPs (forward + backward)", "training FLOPs", "{:.3g} training FLOPs"),
    # wall time since the run's start, evaluations included (they are part of what a study costs)
    "time": XAxis("wall_time", "wall time (s, evaluations included)", "wall time", "{:,.1f} s of wall time"),
}


# ---------------------------------------------------------------- curves

def align(steps_a, values_a, steps_b, values_b) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Put curve b on curve a's steps. Identical schedules are matched step for step; otherwise b is
    interpolated linearly in log(step) at a's steps inside b's range (steps outside are dropped)."""
    sa, va = np.asarray(steps_a, float), np.asarray(values_a, float)
    sb, vb = np.asarray(steps_b, float), np.asarray(values_b, float)
    common, ia, ib = np.intersect1d(sa, sb, return_indices=True)
    if len(common) == len(sa) == len(sb):
        return common, va[ia], vb[ib]
    order = np.argsort(sb)
    sb, vb = sb[order], vb[order]
    keep = (sa >= sb[0]) & (sa <= sb[-1]) & (sa > 0)
    sb_pos = np.maximum(sb, 1e-12)
    return sa[keep], va[keep], np.interp(np.log(sa[keep]), np.log(sb_pos), vb)


def first_step_below(steps, values, threshold: float) -> int | None:
    """The first step whose value is below `threshold` (None: never)."""
    steps, values = np.asarray(steps), np.asarray(values, float)
    hit = np.flatnonzero(values < threshold)
    return int(steps[hit[0]]) if len(hit) else None


def steps_to_target(steps, test_error, target: float) -> int | None:
    """Optimization speed: the first step at which the test error is at or below `target`."""
    return first_step_below(steps, np.asarray(test_error, float) - target, 1e-12)


def value_at(steps, values, step: int) -> float:
    """The value at `step`, interpolated in log(step) between evaluations (NaN outside the curve)."""
    steps, values = np.asarray(steps, float), np.asarray(values, float)
    if not len(steps) or step < steps[0] or step > steps[-1] or step <= 0:
        return float("nan")
    return float(np.interp(math.log(step), np.log(np.maximum(steps, 1e-12)), values))


@dataclass
class PairStats:
    """One Real/Ideal pair: the bootstrap error's statistics, with both trials' own (real_stats, ideal_stats)."""

    converged_at: int | None  # first step with Real World train error < 1% (None: not within the budget)
    max_gap_before: float  # largest |bootstrap error| at steps <= converged_at (all steps if never)
    # mean |bootstrap error| over the evaluations from the start of learning (the Ideal World's test error
    # 10% below its first value; before that both worlds sit at their initial error and agree
    # trivially) to converged_at: how closely the curves track, less sensitive than the max to a
    # slight shift in time of a steep descent
    mean_gap_before: float
    gap_at_convergence: float  # bootstrap error at converged_at (at the last step if never)
    gap_final: float  # bootstrap error at the last common step
    real_final: float  # Real World test soft error at its last step
    ideal_final: float
    last_step: int
    # the Deep Bootstrap predictor of real_final: the Ideal World's test soft error at converged_at (at
    # the last common step if never)
    ideal_at_convergence: float = float("nan")
    # test 0/1 errors at the last step, and their difference at the last common step (model-wise double
    # descent is a statement about the 0/1 error); the Real World's final train 0/1 error
    real_final_error: float = float("nan")
    ideal_final_error: float = float("nan")
    gap_final_error: float = float("nan")
    real_final_train_error: float = float("nan")
    # relative weight movement |w - w0| / |w0| at the last step (NaN for runs from before it was logged)
    real_weight_movement: float = float("nan")
    ideal_weight_movement: float = float("nan")


def _last(df: pd.DataFrame, col: str) -> float:
    """The value of `col` at a curve's last evaluation (NaN when the run did not log it)."""
    return float(df[col].iloc[-1]) if col in df and len(df) else float("nan")


def convergence_step(real: pd.DataFrame, threshold: float = CONVERGED_BELOW) -> int | None:
    """The first step with Real World train 0/1 error below `threshold` (None: not within the budget)."""
    return first_step_below(real.step, real[TRAIN_ERR], threshold) if TRAIN_ERR in real else None


def real_stats(real: pd.DataFrame, threshold: float = CONVERGED_BELOW) -> dict:
    """A Real World trial's own statistics (no twin needed): its convergence step and final values."""
    return {"converged_at": convergence_step(real, threshold), "real_final": _last(real, TEST_SOFT),
            "real_final_error": _last(real, TEST_ERR), "real_final_train_error": _last(real, TRAIN_ERR),
            "real_weight_movement": _last(real, WEIGHT_MOVEMENT)}


def ideal_stats(ideal: pd.DataFrame) -> dict:
    """An Ideal World trial's own final values (no twin needed)."""
    return {"ideal_final": _last(ideal, TEST_SOFT), "ideal_final_error": _last(ideal, TEST_ERR),
            "ideal_weight_movement": _last(ideal, WEIGHT_MOVEMENT)}


def pair_stats(real: pd.DataFrame, ideal: pd.DataFrame, threshold: float = CONVERGED_BELOW) -> PairStats:
    """Statistics of one Real/Ideal pair from their metrics tables (step, test/soft_error, train/error)."""
    steps, r, i = align(real.step, real[TEST_SOFT], ideal.step, ideal[TEST_SOFT])
    gap = r - i
    conv = convergence_step(real, threshold)
    upto = steps <= conv if conv is not None else np.ones_like(steps, bool)
    at = np.flatnonzero(steps <= conv)[-1] if conv is not None and upto.any() else len(steps) - 1
    learning = upto & (np.minimum.accumulate(i) <= LEARNING_STARTED * i[0]) if len(i) else upto
    nan = float("nan")
    gap_error = nan
    if TEST_ERR in real and TEST_ERR in ideal and len(real) and len(ideal):
        _, r01, i01 = align(real.step, real[TEST_ERR], ideal.step, ideal[TEST_ERR])
        gap_error = float(r01[-1] - i01[-1]) if len(r01) else nan
    return PairStats(
        max_gap_before=float(np.abs(gap[upto]).max()) if upto.any() else nan,
        mean_gap_before=float(np.abs(gap[learning]).mean()) if learning.any() else nan,
        gap_at_convergence=float(gap[at]) if len(gap) else nan,
        gap_final=float(gap[-1]) if len(gap) else nan,
        last_step=int(steps[-1]) if len(steps) else 0,
        ideal_at_convergence=float(i[at]) if len(i) else nan, gap_final_error=gap_error,
        **real_stats(real, threshold), **ideal_stats(ideal))


# ---------------------------------------------------------------- seeds

# Columns whose NaN means "did not happen" (never converged) rather than "no value": their mean is over the
# seeds where it happened, and the count of those is reported beside it (converged_seeds).
PARTIAL = ("converged_at",)


def mean_std(df: pd.DataFrame, by: list[str], columns: list[str], partial=PARTIAL) -> pd.DataFrame:
    """Mean, std (ddof=1; 0 for a single seed) and count of `columns` over the rows of each group. A group
    where a seed has no value (a diverged run, a target never reached) gets NaN, not the mean of the other
    seeds passed off as all of them; columns in `partial` are averaged over the seeds with a value."""
    g = df.groupby(by, dropna=False, sort=False)
    mean, std = g[columns].mean(), g[columns].std(ddof=1).fillna(0.0)
    whole = [c for c in columns if c not in partial]
    gaps = g[whole].count().lt(g.size(), axis=0)  # a group with a seed lacking a value
    mean[whole], std[whole] = mean[whole].mask(gaps), std[whole].mask(gaps)
    out = mean.add_suffix("_mean").join(std.add_suffix("_std"))
    out["seeds"] = g.size()
    return out.reset_index()


# ---------------------------------------------------------------- scaling

@dataclass
class PowerLaw:
    """error ≈ prefactor · samples^(-exponent), fitted by least squares in log-log space."""

    exponent: float
    exponent_se: float  # standard error of the exponent (from the residuals; NaN with < 3 points)
    prefactor: float
    r2: float
    points: int
    samples_min: float
    samples_max: float

    def __call__(self, samples):
        return self.prefactor * np.asarray(samples, float) ** -self.exponent


def power_law_fit(samples, error, min_samples: float | None = None) -> PowerLaw | None:
    """Fit error = a·s^-alpha on points with samples >= min_samples (default: the last two decades
    of the curve, where the early transient is over) and error > 0. None with fewer than 2 points."""
    s, e = np.asarray(samples, float), np.asarray(error, float)
    ok = (s > 0) & (e > 0) & np.isfinite(e)
    if min_samples is None and ok.any():
        min_samples = s[ok].max() / 100.0
    ok &= s >= (min_samples or 0)
    s, e = s[ok], e[ok]
    if len(np.unique(s)) < 2:
        return None
    x, y = np.log(s), np.log(e)
    xm, ym = x.mean(), y.mean()
    sxx = ((x - xm) ** 2).sum()
    slope = ((x - xm) * (y - ym)).sum() / sxx
    resid = y - (ym + slope * (x - xm))
    ss_tot = ((y - ym) ** 2).sum()
    r2 = 1.0 - (resid ** 2).sum() / ss_tot if ss_tot > 0 else 1.0
    se = math.sqrt((resid ** 2).sum() / (len(x) - 2) / sxx) if len(x) > 2 else float("nan")
    return PowerLaw(-slope, se, math.exp(ym - slope * xm), r2, len(x), s.min(), s.max())


# ---------------------------------------------------------------- configurations

_KEY_ORDER = ("model.name", "model.width", "model.depth", "model.patch_size", "batch_size", "steps")


def configuration_keys(varying: list[str]) -> list[str]:
    """The keys that tell configurations apart: what varies, except the world and the seed; the
    model first, n last (labels then read 'cnn width=64 n=500')."""
    keys = [k for k in varying if k not in ("world", "seed")]
    rank = {k: i for i, k in enumerate(_KEY_ORDER)}
    return sorted(keys, key=lambda k: (k == "n", rank.get(k, len(rank)), k))


def independent_keys(keys: list[str], table: pd.DataFrame) -> list[str]:
    """Drop a key whose value follows from an earlier key's (e.g. width and depth zipped with the
    model family): as a separate heatmap axis it would only spread the cells over an empty grid."""
    out = []
    for k in keys:
        tied = any(table.groupby(j)[k].nunique().max() == 1 for j in out)
        if not tied:
            out.append(k)
    return out


def same(a, b) -> bool:
    """256 == 256.0 == '256'; otherwise compared as text (True == 'True', 'none' == 'none')."""
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)


def select(df: pd.DataFrame, where: dict | None) -> pd.DataFrame:
    """Rows matching every key: value of `where` (a list: any of its values); a key that is not a
    column is one that does not vary in the study (configuration tables only have the varying keys),
    so it filters nothing."""
    for k, v in (where or {}).items():
        if k in df:
            values = v if isinstance(v, list) else [v]
            df = df[[any(same(x, u) for u in values) for x in df[k]]]
    return df


def label(values: dict) -> str:
    """'cnn n=500' from {'model.name': 'cnn', 'n': 500}: family names bare, other keys as leaf=value."""
    parts = []
    for k, v in values.items():
        parts.append(str(v) if k == "model.name" else f"{k.split('.')[-1]}={v}")
    return " ".join(parts) or "all"
