"""Fitting laws with honest uncertainty: the method named, a bootstrap over seeds, a hold-out check.

Every fitted law in the report says how it was fitted and how far to trust it:
- **the method**: least squares in log space, or a Huber loss on log-space residuals (Hoffmann et al.
  2022, approach 3; Besiroglu et al. 2024), minimized from a grid of starting points;
- **a 95% interval from a bootstrap over seeds**: whole trials (a seed's curves) are resampled with
  replacement, never single points, since the points of one curve share its seed's noise. With few
  seeds every distinct resample is enumerated with its multinomial probability (an exact bootstrap:
  C(2k-1, k) resamples of k seeds, 3 for 2 seeds, 10 for 3), so the interval is deterministic and says
  plainly how little 2 or 3 seeds can tell; beyond `EXACT_UP_TO` resamples, `RANDOM_RESAMPLES` seeded
  random ones;
- **a hold-out check** (the callers': fit without the largest scale, predict it).

Plain arrays in and out (numpy, scipy): tested on planted laws with known answers (tests/test_fits.py).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from twoworlds.results.analysis import power_law_fit

LEVEL = 0.95  # the intervals' coverage
EXACT_UP_TO = 1000  # enumerate every distinct resample up to this many (k <= 6 seeds), else draw at random
RANDOM_RESAMPLES = 400
HUBER_DELTA = 0.1  # log-space residual beyond which the Huber loss grows linearly (about 10% of the value)
METHODS = {
    "lsq": "least squares in log space",
    "huber": f"Huber loss (δ = {HUBER_DELTA} in log space, summed; L-BFGS-B from a grid of starts)",
}


# ---------------------------------------------------------------- losses and minimization

def huber(r: np.ndarray, delta: float = HUBER_DELTA) -> np.ndarray:
    """The Huber loss of residuals r: r²/2 inside ±delta, linear outside (robust to a few wild points)."""
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def loss(r: np.ndarray, method: str) -> float:
    """The summed loss of log-space residuals under `method` (a key of METHODS)."""
    if method == "lsq":
        return float(0.5 * np.sum(r * r))
    if method == "huber":
        return float(np.sum(huber(r)))
    raise ValueError(f"unknown fitting method '{method}'; use one of {', '.join(METHODS)}")


def minimize_from_grid(objective: Callable[[np.ndarray], float], starts: Sequence[Sequence[float]]) -> np.ndarray:
    """The best of L-BFGS-B runs of `objective` from each start (numerical gradients; a few parameters)."""
    best = None
    for x0 in starts:
        res = minimize(objective, np.asarray(x0, float), method="L-BFGS-B")
        if best is None or res.fun < best.fun:
            best = res
    return best.x


def minimize_bounded(objective: Callable[[float], float], lo: float, hi: float, grid: int = 41) -> float:
    """argmin of a one-parameter objective over [lo, hi]: the best of a grid, refined between its
    neighbours (a grid first, so a local minimum away from the global one is not taken)."""
    xs = np.linspace(lo, hi, grid)
    values = [objective(x) for x in xs]
    i = int(np.argmin(values))
    a, b = xs[max(i - 1, 0)], xs[min(i + 1, grid - 1)]
    res = minimize_scalar(objective, bounds=(a, b), method="bounded", options={"xatol": 1e-6})
    return float(res.x) if res.fun <= values[i] else float(xs[i])


# ---------------------------------------------------------------- the bootstrap over seeds

def resamples(k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(counts, weights): each row of counts says how often each of k units is drawn in one resample
    (the rows sum to k); weights are the resamples' probabilities. All distinct resamples with their
    multinomial probabilities when there are at most EXACT_UP_TO, else RANDOM_RESAMPLES seeded draws
    of equal weight."""
    if k < 1:
        return np.zeros((0, 0), int), np.zeros(0)
    if math.comb(2 * k - 1, k) <= EXACT_UP_TO:
        rows = []
        for combo in itertools.combinations_with_replacement(range(k), k):
            rows.append(np.bincount(combo, minlength=k))
        counts = np.array(rows)
        log_w = (math.lgamma(k + 1) - np.sum([[math.lgamma(c + 1) for c in row] for row in counts], axis=1)
                 - k * math.log(k))
        return counts, np.exp(log_w)
    rng = np.random.default_rng(seed)
    counts = np.array([np.bincount(rng.integers(0, k, k), minlength=k) for _ in range(RANDOM_RESAMPLES)])
    return counts, np.full(RANDOM_RESAMPLES, 1.0 / RANDOM_RESAMPLES)


def weighted_interval(values, weights, level: float = LEVEL) -> tuple[float, float]:
    """The (1 - level)/2 and (1 + level)/2 quantiles of a weighted sample, taken at sample values (no
    interpolation: an infinite value, an unresolved fit, stays infinite). NaN values (failed fits)
    count against nothing; (NaN, NaN) when more than 1 - level of the weight failed."""
    v, w = np.asarray(values, float), np.asarray(weights, float)
    ok = ~np.isnan(v)
    if not ok.any() or w[~ok].sum() > (1 - level) * w.sum():
        return float("nan"), float("nan")
    v, w = v[ok], w[ok]
    order = np.argsort(v, kind="stable")
    v, cum = v[order], np.cumsum(w[order]) / w.sum()
    lo = v[np.searchsorted(cum, (1 - level) / 2 - 1e-12)]
    hi = v[min(np.searchsorted(cum, (1 + level) / 2 - 1e-12), len(v) - 1)]
    return float(lo), float(hi)


@dataclass
class Bootstrap:
    """A statistic's bootstrap distribution over seeds and its interval."""

    values: np.ndarray  # the statistic on each resample (NaN: the fit failed; inf: unresolved)
    weights: np.ndarray
    seeds: int

    @property
    def interval(self) -> tuple[float, float]:
        if self.seeds < 2:
            return float("nan"), float("nan")  # one seed: no spread to resample
        return weighted_interval(self.values, self.weights)

    def words(self) -> str:
        """How the interval was made, for the report."""
        if self.seeds < 2:
            return f"no interval: {self.seeds} seed{'' if self.seeds == 1 else 's'} to resample"
        if math.comb(2 * self.seeds - 1, self.seeds) <= EXACT_UP_TO:
            kind = f"all {math.comb(2 * self.seeds - 1, self.seeds)} distinct resamples"
        else:
            kind = f"{RANDOM_RESAMPLES} seeded random resamples"
        return f"{LEVEL:.0%} bootstrap over {self.seeds} seeds ({kind})"


def bootstrap(units: Sequence, statistic: Callable[[list], float], seed: int = 0) -> Bootstrap:
    """`statistic` of the units drawn in each resample (a unit repeated as often as it is drawn)."""
    counts, weights = resamples(len(units), seed)
    values = np.array([statistic([u for u, c in zip(units, row, strict=True) for _ in range(c)])
                       for row in counts], float)
    return Bootstrap(values, weights, len(units))


def bootstrap_means(matrix: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per column of `matrix` (rows: seeds), the interval of the mean over seeds, vectorized: (lo, hi)
    arrays. A column with a NaN has no interval (NaN): a mean over the defined seeds only would be
    biased by whatever made the others undefined."""
    k = matrix.shape[0]
    lo, hi = np.full(matrix.shape[1], np.nan), np.full(matrix.shape[1], np.nan)
    if k < 2:
        return lo, hi
    counts, weights = resamples(k, seed)
    means = counts @ np.nan_to_num(matrix) / k  # resamples x columns
    for j in np.flatnonzero(~np.isnan(matrix).any(axis=0)):
        lo[j], hi[j] = weighted_interval(means[:, j], weights)
    return lo, hi


# ---------------------------------------------------------------- power laws

def fit_power_law(samples, error, method: str = "lsq") -> tuple[float, float]:
    """(exponent α, prefactor a) of error ≈ a·samples^(-α) on all the points given (positive ones),
    by `method`: lsq is the closed form in log-log space; huber starts L-BFGS-B from it and a grid."""
    s, e = np.asarray(samples, float), np.asarray(error, float)
    ok = (s > 0) & (e > 0) & np.isfinite(e)
    if len(np.unique(s[ok])) < 2:
        return float("nan"), float("nan")
    x, y = np.log(s[ok]), np.log(e[ok])
    slope, icept = np.polyfit(x, y, 1)
    if method == "lsq":
        return float(-slope), float(math.exp(icept))
    loss(np.zeros(1), method)  # an unknown method is refused here
    starts = [(icept, slope)] + [(icept + di, slope + ds) for di in (-1.0, 1.0) for ds in (-0.3, 0.3)]
    b, m = minimize_from_grid(lambda p: loss(y - (p[0] + p[1] * x), method), starts)
    return float(-m), float(math.exp(b))


@dataclass
class PowerLawReport:
    """A power law of the Ideal World's test error against samples seen, with honest uncertainty."""

    exponent: float
    prefactor: float
    exponent_lo: float  # LEVEL bootstrap interval over seeds (NaN with one seed)
    exponent_hi: float
    method: str  # a key of METHODS
    samples_from: float  # the fitted window
    samples_to: float
    points: int
    seeds: int
    # hold-out: fitted on the window without its last decade, the error predicted at the last
    # evaluation against the seed mean measured there (relative: predicted / measured - 1)
    holdout_predicted: float
    holdout_measured: float

    @property
    def holdout_error(self) -> float:
        return self.holdout_predicted / self.holdout_measured - 1


def power_law_report(curves: Sequence[tuple[np.ndarray, np.ndarray]], method: str = "lsq",
                     seed: int = 0) -> PowerLawReport | None:
    """Fit error = a·s^-α over the last two decades of samples (analysis.power_law_fit's window),
    pooling every seed's (samples, error) curve; bootstrap the exponent over the curves (seeds); hold
    out the last decade. None with fewer than 2 distinct sample counts in the window."""
    pooled_s = np.concatenate([np.asarray(s, float) for s, _ in curves])
    pooled_e = np.concatenate([np.asarray(e, float) for _, e in curves])
    base = power_law_fit(pooled_s, pooled_e)  # the window: the last two decades of samples
    if base is None:
        return None
    lo_s, hi_s = base.samples_min, base.samples_max

    def fit(chosen, upto=hi_s):
        s = np.concatenate([np.asarray(c[0], float) for c in chosen])
        e = np.concatenate([np.asarray(c[1], float) for c in chosen])
        keep = (s >= lo_s) & (s <= upto)
        return fit_power_law(s[keep], e[keep], method)

    exponent, prefactor = fit(curves)
    boot = bootstrap(list(curves), lambda chosen: fit(chosen)[0], seed)
    lo, hi = boot.interval
    alpha_h, a_h = fit(curves, upto=hi_s / 10)
    last = [float(np.asarray(e, float)[np.argmax(np.asarray(s, float))]) for s, e in curves]
    predicted = a_h * hi_s ** -alpha_h if alpha_h == alpha_h else float("nan")
    return PowerLawReport(exponent, prefactor, lo, hi, method, lo_s, hi_s, base.points, len(curves), predicted,
                          float(np.mean(last)))


def power_law_row(curves: Sequence[tuple[np.ndarray, np.ndarray]], method: str = "lsq") -> dict | None:
    """The columns of power_laws.csv for one Ideal World configuration, from its seeds' (samples seen,
    test error) curves: the fit over the last two decades with the exponent's standard error from the
    residuals (which treats every point as independent: too narrow), the bootstrap interval over
    seeds, the method, and the hold-out of the last decade. None when there is nothing to fit."""
    s = np.concatenate([np.asarray(c[0], float) for c in curves])
    e = np.concatenate([np.asarray(c[1], float) for c in curves])
    fit, rep = power_law_fit(s, e), power_law_report(curves, method)
    if fit is None or rep is None:
        return None
    return {"exponent": rep.exponent, "exponent_lo": rep.exponent_lo, "exponent_hi": rep.exponent_hi,
            "exponent_se": fit.exponent_se, "prefactor": rep.prefactor, "r2": fit.r2, "points": fit.points,
            "samples_from": fit.samples_min, "samples_to": fit.samples_max, "method": method,
            "holdout_predicted": rep.holdout_predicted, "holdout_measured": rep.holdout_measured,
            "holdout_error": rep.holdout_error}
