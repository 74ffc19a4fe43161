"""What an epoch is worth: effective data D_eff, and the data-repetition law fitted to it.

For a Real World trial (n samples reused for many epochs) at an evaluation where it has drawn D = step ×
batch samples, D_eff is the number of *fresh* samples its Ideal World twin (same configuration and
seed) needed to reach the same test error. D_eff/D = 1: every repeated sample was worth a fresh one.

- The Ideal World's curve is made monotone by its running minimum (its envelope: the best it had
  reached by then), joined linearly in log(samples); D_eff is where that envelope first comes down to
  the Real World's error. It is undefined, and kept as NaN with a status saying why, where the Real
  World's error is below anything the Ideal World reached in its budget (`below`: D_eff would lie
  beyond the budget) or above the Ideal World's first evaluation (`above`); never clipped to a bound.
- The metric is the study's claims' (the test soft error unless they name the 0/1 error).

The law (Muennighoff et al. 2023, "Scaling Data-Constrained Language Models"), with U = n unique
samples and R = D/U - 1 the repeats beyond the first epoch:

    D' = U + U·R*·(1 - exp(-R/R*))      (D' = D within the first epoch)

so D'/n depends on the epochs E = D/n alone: 1 + R*·(1 - exp(-(E - 1)/R*)). A repeated pass is worth
exp(-R/R*) of a fresh one: half at E = 1 + R*·ln 2; D' saturates at n·(1 + R*).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from twoworlds.results.analysis import LEARNING_STARTED, TEST_ERR, TEST_SOFT
from twoworlds.results.claim_spec import REPETITION_KINDS
from twoworlds.results.fits import Bootstrap, bootstrap, bootstrap_means, loss, minimize_bounded

# The D_eff statuses of a Real World evaluation.
DEFINED, BELOW, ABOVE, MISSING = "defined", "below", "above", "missing"
ERRORS = {"soft": TEST_SOFT, "0/1": TEST_ERR}  # the claims' `error:` -> the metrics.csv column


def envelope(samples, error) -> tuple[np.ndarray, np.ndarray]:
    """The Ideal World curve's running minimum at its evaluations with samples > 0 and a finite error,
    in order of samples."""
    s, e = np.asarray(samples, float), np.asarray(error, float)
    ok = (s > 0) & np.isfinite(e)
    order = np.argsort(s[ok], kind="stable")
    return s[ok][order], np.minimum.accumulate(e[ok][order])


def effective_samples(ideal_samples, ideal_error, real_error) -> tuple[np.ndarray, np.ndarray]:
    """(D_eff, status) for each Real World error: the first point where the Ideal World's envelope
    comes down to it, interpolated linearly in log(samples) between the envelope's evaluations; NaN
    with status BELOW / ABOVE / MISSING where undefined (see the module docstring)."""
    s, env = envelope(ideal_samples, ideal_error)
    target = np.asarray(real_error, float)
    d = np.full(target.shape, np.nan)
    status = np.full(target.shape, MISSING, dtype=object)
    if not len(s):
        return d, status
    finite = np.isfinite(target)
    status[finite & (target < env[-1])] = BELOW
    status[finite & (target > env[0])] = ABOVE
    ok = finite & (target >= env[-1]) & (target <= env[0])
    j = np.searchsorted(-env, -target[ok], side="left")  # the first evaluation with env <= target
    logs = np.log(s)
    at_first = j == 0
    prev = np.maximum(j - 1, 0)
    drop = env[prev] - env[j]
    t = np.where(at_first | (drop <= 0), 1.0, (env[prev] - target[ok]) / np.where(drop > 0, drop, 1.0))
    d[ok] = np.exp(logs[prev] + t * (logs[j] - logs[prev]))
    status[ok] = DEFINED
    return d, status


# Config keys a D_eff twin may differ in besides the world and the seed-free pairing axes: as in the pair
# key (launch/config.py), the device and the eval schedule; and the step budget, under effective_twins' rule.
_TWIN_FREE = ("world", "n", "steps", "device", "data.cache_dir")


def effective_twins(trials: pd.DataFrame, config_keys: list[str]) -> dict[str, str]:
    """Each Real World trial's D_eff twin: the Ideal World trial of the same configuration and seed
    with the largest budget of at least the Real World's steps. A longer budget than the Real World's
    counts only under a constant learning rate (optim.schedule), whose value at a step does not depend
    on the budget: the longer run is the same process, continued. Real World trials without one are
    left out."""
    keys = [k for k in config_keys if k not in _TWIN_FREE and not k.startswith("eval.")]
    same = lambda r: tuple(str(r[k]) for k in keys)  # noqa: E731
    ideal = {}
    for _, r in trials[trials.world == "ideal"].iterrows():
        ideal.setdefault(same(r), []).append(r)
    twins = {}
    for _, r in trials[trials.world == "real"].iterrows():
        fits = [i for i in ideal.get(same(r), []) if i.steps == r.steps or (
            i.steps > r.steps and str(r.get("optim.schedule")) == "constant")]
        if fits:
            twins[r.trial] = max(fits, key=lambda i: i.steps).trial
    return twins


def with_effective_data(trials: pd.DataFrame, curves: pd.DataFrame, config_keys: list[str],
                        error: str = "soft") -> pd.DataFrame:
    """`curves` with D_eff columns on the rows of every Real World trial that has a D_eff twin
    (effective_twins; NaN and empty elsewhere): epochs (samples seen / n), d_eff (Ideal World samples),
    d_eff_ratio (d_eff / samples seen), d_eff_status (DEFINED, BELOW, ABOVE, MISSING), d_eff_metric
    (the test metric compared) and d_eff_twin (the Ideal World trial read)."""
    column = ERRORS[error]
    out = curves.copy()
    for name in ("epochs", "d_eff", "d_eff_ratio"):
        out[name] = np.nan
    out["d_eff_status"], out["d_eff_metric"], out["d_eff_twin"] = "", "", ""
    if not len(curves) or column not in curves or "samples_seen" not in curves:
        return out
    by_trial = out.groupby("trial").indices
    n = trials.set_index("trial").n
    at = out.columns.get_indexer(["epochs", "d_eff", "d_eff_ratio", "d_eff_status", "d_eff_metric", "d_eff_twin"])
    for real, twin in effective_twins(trials, config_keys).items():
        if twin not in by_trial or real not in by_trial:
            continue
        rows, ic = by_trial[real], curves.iloc[by_trial[twin]]
        d, status = effective_samples(ic.samples_seen, ic[column], curves[column].iloc[rows])
        seen = curves.samples_seen.iloc[rows].to_numpy(float)
        out.iloc[rows, at[0]] = seen / float(n[real])
        out.iloc[rows, at[1]] = d
        out.iloc[rows, at[2]] = d / np.where(seen > 0, seen, np.nan)
        out.iloc[rows, at[3]] = status
        out.iloc[rows, at[4]] = column
        out.iloc[rows, at[5]] = twin
    return out


# ---------------------------------------------------------------- the law

def law(epochs, r_star: float) -> np.ndarray:
    """D'/n at `epochs` for a given R*: the epochs themselves within the first, then saturating at
    1 + R*. R* = inf: repeats as good as fresh (D'/n = epochs)."""
    e = np.asarray(epochs, float)
    if math.isinf(r_star):
        return e
    return np.where(e <= 1, e, 1 + r_star * -np.expm1(-(e - 1) / r_star))


def half_worth_epochs(r_star: float) -> float:
    """The epoch count at which one more pass over the n samples is worth half a fresh one."""
    return 1 + r_star * math.log(2)


# ---------------------------------------------------------------- fitting the law

R_STAR_RANGE = (1e-2, 1e4)  # where R* is searched
# A fitted R* beyond this many times the repeats seen (E_max - 1) keeps the law within 5% of "repeats as
# good as fresh" over the whole data: the data cannot tell it from infinity, so it is reported as inf
# (no saturation seen), never as a number.
RESOLVED_FACTOR = 10.0
LAW_METHOD = "huber"  # fits.METHODS: robust to the odd D_eff where the Ideal World's curve is flat


def fit_r_star(epochs, d_eff_over_n, method: str = LAW_METHOD) -> float:
    """R* of the law fitted to (epochs, D_eff/n) points after the first epoch, on log-space residuals;
    inf when unresolved (RESOLVED_FACTOR), NaN with fewer than 2 such points."""
    e, y = np.asarray(epochs, float), np.asarray(d_eff_over_n, float)
    ok = (e > 1) & (y > 0) & np.isfinite(y)
    if ok.sum() < 2:
        return float("nan")
    e, ly = e[ok], np.log(y[ok])
    u = minimize_bounded(lambda u: loss(ly - np.log(law(e, math.exp(u))), method), *np.log(R_STAR_RANGE))
    r_star = math.exp(u)
    return float("inf") if r_star > RESOLVED_FACTOR * (e.max() - 1) else r_star


def residuals(epochs, d_eff_over_n, r_star: float) -> np.ndarray:
    """log(D_eff/n) - log(law): positive where repeats were worth more than the law says."""
    return np.log(np.asarray(d_eff_over_n, float)) - np.log(law(epochs, r_star))


# ---------------------------------------------------------------- a study's effective data

def _group(configuration: str) -> str:
    """The law's group of a configuration: its label without n ('cnn n=250' -> 'cnn')."""
    return " ".join(t for t in configuration.split() if not t.startswith("n=")) or "all"


def effective_points(real: pd.DataFrame, curves: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The rows of the Real World trials `real` (worlds.Worlds.real: trial, configuration, seed, n where it
    varies) that have a D_eff twin (`curves` with the D_eff columns), with configuration, group, n, seed, and
    `fitted`: whether the law's fits use the point (after the first epoch, learning begun, D_eff defined)."""
    rows = curves[curves.trial.isin(real.trial) & (curves.d_eff_twin != "")]
    first = curves[curves.trial.isin(rows.d_eff_twin)].sort_values("step").groupby("trial")[metric].first()
    meta = real.set_index("trial")
    rows = rows.assign(configuration=rows.trial.map(meta.configuration), seed=rows.trial.map(meta.seed),
                       n=rows.trial.map(meta.n) if "n" in meta else rows.n, ideal_first=rows.d_eff_twin.map(first))
    rows = rows.assign(group=rows.configuration.map(_group))
    rows["fitted"] = ((rows.epochs > 1) & (rows.d_eff_status == DEFINED)
                      & (rows[metric] <= LEARNING_STARTED * rows.ideal_first))
    return rows.sort_values(["configuration", "seed", "step"], kind="stable", ignore_index=True)


def _interp_log(x_at: float, x, y) -> float:
    """y at x_at, linear in log(x) and log(y) between the points (NaN outside them or where y is)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if not len(x) or not x[0] <= x_at <= x[-1]:
        return float("nan")
    j = int(np.searchsorted(x, x_at))
    if x[j] == x_at:
        return float(y[j])
    t = (math.log(x_at) - math.log(x[j - 1])) / (math.log(x[j]) - math.log(x[j - 1]))
    return float(math.exp(math.log(y[j - 1]) + t * (math.log(y[j]) - math.log(y[j - 1]))))


def pair_effective_data(rows: pd.DataFrame, converged_at: float | None) -> dict:
    """One Real World trial's D_eff statistics from its effective_points rows (sorted by step):
    - ratio_before: the geometric mean of D_eff/D over its evaluations after the first epoch and the
      start of learning, up to its convergence (all of them when it never converged); NaN when D_eff
      is undefined at any of them (a mean over the rest would be biased) or there is none;
      ratio_before_min: their smallest;
    - epochs_final, d_eff_final, d_eff_final_over_n, final_status: at the last evaluation;
    - late_worth: (D_eff(D_last) - D_eff(D_last / 2)) / (D_last / 2): what a sample drawn in the second
      half of training was worth, in fresh ones (1: as good as fresh; near 0: D_eff has saturated)."""
    window = (rows.epochs > 1) & (rows.d_eff_status != MISSING) & (
        rows[rows.d_eff_metric.iloc[0]] <= LEARNING_STARTED * rows.ideal_first)
    if converged_at is not None and converged_at == converged_at:
        window &= rows.step <= converged_at
    ratio = rows.d_eff_ratio[window].to_numpy(float)
    defined = len(ratio) > 0 and not np.isnan(ratio).any()
    last = rows.iloc[-1]
    seen, d_eff = rows.samples_seen.to_numpy(float), rows.d_eff.to_numpy(float)
    half = _interp_log(seen[-1] / 2, seen, d_eff)
    nan = float("nan")
    return {"ratio_before": float(np.exp(np.mean(np.log(ratio)))) if defined else nan,
            "ratio_before_min": float(ratio.min()) if defined else nan, "evaluations_before": int(window.sum()),
            "epochs_final": float(last.epochs), "d_eff_final": float(last.d_eff),
            "d_eff_final_over_n": float(last.d_eff) / float(last.n), "final_status": last.d_eff_status,
            "late_worth": (float(last.d_eff) - half) / (seen[-1] / 2)}


@dataclass
class Repetition:
    """A study's effective data and repetition laws (see the module docstring)."""

    error: str  # the claims' error: "soft" or "0/1"
    metric: str  # its metrics.csv column
    points: pd.DataFrame  # effective_points: every evaluation of a Real World trial with a D_eff twin
    pairs: pd.DataFrame  # per Real World trial: pair_effective_data, with configuration, group, n, seed
    steps: pd.DataFrame  # per configuration and evaluation: D_eff/D and D_eff/n, seed mean and interval
    configs: pd.DataFrame  # per configuration: seed means with intervals, R* of its own points
    laws: pd.DataFrame  # per group (the configuration without n): R* over every n, residuals
    holdouts: pd.DataFrame  # per group and n: the law fitted without that n, its final D_eff predicted
    method: str = LAW_METHOD
    seeds_note: str = ""  # how the intervals were made (fits.Bootstrap.words)


def _by_seed(points: pd.DataFrame) -> list[pd.DataFrame]:
    """The fitted points of each seed: the bootstrap's units (a seed's Real World trials at every n
    share one Ideal World twin, so they are resampled together)."""
    fitted = points[points.fitted]
    return [g for _, g in fitted.groupby("seed", sort=True)]


def _r_star(units: list[pd.DataFrame]) -> float:
    if not units:
        return float("nan")
    pts = pd.concat(units)
    return fit_r_star(pts.epochs, pts.d_eff / pts.n)


def _fit_with_interval(points: pd.DataFrame) -> tuple[float, float, float, Bootstrap]:
    units = _by_seed(points)
    boot = bootstrap(units, _r_star)
    return (_r_star(units), *boot.interval, boot)


def step_table(points: pd.DataFrame) -> pd.DataFrame:
    """Per configuration and evaluation step: epochs, D, the seed mean of D_eff/D with its bootstrap
    interval (NaN where D_eff is undefined in any seed: `undefined` counts those seeds, `below` those
    whose Real World beat everything its Ideal World reached), and D_eff/n the same way."""
    rows = []
    for cfg, g in points.groupby("configuration", sort=False):
        ratio = g.pivot_table(index="seed", columns="step", values="d_eff_ratio", dropna=False, aggfunc="first")
        status = g.pivot_table(index="seed", columns="step", values="d_eff_status", aggfunc="first")
        lo, hi = bootstrap_means(ratio.to_numpy(float))
        epochs = g.groupby("step").epochs.mean().reindex(ratio.columns).to_numpy()
        mean = ratio.mean(axis=0, skipna=False).to_numpy()
        rows.append(pd.DataFrame({
            "configuration": cfg, "group": g.group.iloc[0], "n": g.n.iloc[0], "step": ratio.columns,
            "epochs": epochs, "samples_seen": g.groupby("step").samples_seen.mean().reindex(ratio.columns).to_numpy(),
            "seeds": len(ratio), "undefined": ratio.isna().sum(axis=0).to_numpy(),
            "below": (status == BELOW).sum(axis=0).to_numpy(),
            "d_eff_ratio_mean": mean, "d_eff_ratio_lo": lo, "d_eff_ratio_hi": hi,
            "d_eff_over_n_mean": mean * epochs, "d_eff_over_n_lo": lo * epochs, "d_eff_over_n_hi": hi * epochs}))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def _mean_interval(values: pd.Series) -> tuple[float, float, float]:
    """Seed mean of a per-seed statistic and its bootstrap interval (NaN when any seed's is NaN)."""
    v = values.to_numpy(float)[:, None]
    lo, hi = bootstrap_means(v)
    return float(v.mean()) if len(v) else float("nan"), float(lo[0]), float(hi[0])


def config_table(per_pair: pd.DataFrame, points: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for cfg, g in per_pair.groupby("configuration", sort=False):
        row = {"configuration": cfg, "group": g.group.iloc[0], "n": g.n.iloc[0], "seeds": len(g),
               "epochs_final": g.epochs_final.mean(), "ratio_before_min": g.ratio_before_min.min(skipna=False),
               "final_undefined": int(g.d_eff_final.isna().sum())}
        for col in ("ratio_before", "d_eff_final", "d_eff_final_over_n", "late_worth"):
            row[col], row[f"{col}_lo"], row[f"{col}_hi"] = _mean_interval(g[col])
        row["r_star"], row["r_star_lo"], row["r_star_hi"], _ = _fit_with_interval(points[points.configuration == cfg])
        rows.append(row)
    return pd.DataFrame(rows)


def _holdouts(group: str, pts: pd.DataFrame, cfgs: pd.DataFrame) -> list[dict]:
    """Leave each n out in turn: fit R* on the other n's points (every seed), predict the held-out
    n's final D_eff (n · law at its final epochs) against its seed mean (relative error)."""
    out = []
    ns = sorted(cfgs.n.unique())
    for n in ns if len(ns) > 1 else []:
        r_star = _r_star(_by_seed(pts[pts.n != n]))
        c = cfgs[cfgs.n == n].iloc[0]
        predicted = float(n * law(c.epochs_final, r_star)) if r_star == r_star else float("nan")
        out.append({"group": group, "n": n, "largest": n == ns[-1], "r_star_without": r_star,
                    "epochs_final": c.epochs_final, "predicted": predicted, "measured": c.d_eff_final,
                    "error": predicted / c.d_eff_final - 1})
    return out


def law_tables(points: pd.DataFrame, configs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    laws, holdouts, notes = [], [], []
    for group, pts in points.groupby("group", sort=False):
        r_star, lo, hi, boot = _fit_with_interval(pts)
        notes.append(boot.words())
        used = pts[pts.fitted]
        resid = residuals(used.epochs, used.d_eff / used.n, r_star) if r_star == r_star else np.array([np.nan])
        censored = int(((pts.epochs > 1) & (pts.d_eff_status == BELOW)).sum())
        laws.append({"group": group, "seeds": pts.seed.nunique(), "n_values": ", ".join(
            f"{v:,.0f}" for v in sorted(pts.n.unique())), "points": len(used), "censored": censored,
            "r_star": r_star, "r_star_lo": lo, "r_star_hi": hi,
            "half_worth_epochs": half_worth_epochs(r_star), "half_worth_lo": half_worth_epochs(lo),
            "half_worth_hi": half_worth_epochs(hi), "ceiling_over_n": 1 + r_star, "ceiling_lo": 1 + lo,
            "ceiling_hi": 1 + hi, "residual_rms": float(np.sqrt(np.mean(resid ** 2))), "method": LAW_METHOD})
        holdouts += _holdouts(group, pts, configs[configs.group == group])
    return pd.DataFrame(laws), pd.DataFrame(holdouts), max(notes, key=len) if notes else ""


def analyse_repetition(real: pd.DataFrame, curves: pd.DataFrame, error: str = "soft") -> Repetition | None:
    """The effective data of a study's Real World trials (worlds.Worlds.real, in the report's order) that have
    a D_eff twin, from `curves` carrying the D_eff columns (with_effective_data), whether or not they have a
    pair-key twin; None without such an evaluation past its first epoch."""
    metric = ERRORS[error]
    if not len(real) or "d_eff" not in curves or not (curves.trial.isin(real.trial) & (curves.d_eff_twin != "")).any():
        return None  # no Real World trial with a D_eff twin (a study of one world, or twins yet to run)
    points = effective_points(real, curves, metric)
    if not (points.epochs > 1).any():
        return None
    conv = real.set_index("trial").converged_at
    per_pair = pd.DataFrame([{"real": t, "configuration": g.configuration.iloc[0], "group": g.group.iloc[0],
                              "n": g.n.iloc[0], "seed": g.seed.iloc[0], **pair_effective_data(g, conv.get(t))}
                             for t, g in points.groupby("trial", sort=False)])
    order = {c: i for i, c in enumerate(dict.fromkeys(real.configuration))}  # the report's order (n numeric)
    per_pair = per_pair.sort_values("configuration", key=lambda c: c.map(order), kind="stable", ignore_index=True)
    configs = config_table(per_pair, points)
    laws, holdouts, note = law_tables(points, configs)
    return Repetition(error, metric, points, per_pair, step_table(points), configs, laws, holdouts,
                      seeds_note=note)


# ---------------------------------------------------------------- what the claims read

def repetition_error(claims: list[dict]) -> str:
    """The error the study's effective-data claims name (validated to agree: claim_spec), else soft."""
    for c in claims:
        if c.get("kind") in REPETITION_KINDS and "error" in c:
            return str(c["error"])
    return "soft"


def claim_columns(rep: Repetition | None) -> pd.DataFrame:
    """Per configuration, the numbers the effective-data claims check (configurations.csv keeps them)."""
    if rep is None:
        return pd.DataFrame()
    c = rep.configs.set_index("configuration")
    out = pd.DataFrame({
        "d_eff_error": rep.error, "epochs_final": c.epochs_final,
        "d_eff_ratio_before_mean": c.ratio_before, "d_eff_ratio_before_lo": c.ratio_before_lo,
        "d_eff_ratio_before_hi": c.ratio_before_hi, "d_eff_ratio_before_min": c.ratio_before_min,
        "d_eff_final_mean": c.d_eff_final, "d_eff_final_over_n_mean": c.d_eff_final_over_n,
        "late_worth_mean": c.late_worth, "late_worth_lo": c.late_worth_lo, "late_worth_hi": c.late_worth_hi,
        "law_group": c.group})
    laws = rep.laws.set_index("group")
    for col in ("r_star", "r_star_lo", "r_star_hi"):
        out[f"law_{col}"] = [laws[col].get(g, np.nan) for g in c.group]
    hold = rep.holdouts.set_index(["group", "n"]) if len(rep.holdouts) else None
    for col in ("r_star_without", "predicted", "error", "largest"):
        out[f"law_holdout_{col}"] = [hold[col].get((g, n), np.nan) if hold is not None else np.nan
                                     for g, n in zip(c.group, c.n, strict=True)]
    return out
