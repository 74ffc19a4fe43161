"""Claims a study makes about its own results, checked by `twoworlds report --check`.

A sweep file lists them under `claims:`; each has a `kind`, a `claim` sentence (what the paper
says) and the kind's parameters. The report states, per claim, the numbers behind it and whether
it held on this run; `--check` exits non-zero when one did not, so a study is a regression test of
the science.

    claims:
      - kind: gap_before_convergence     # both worlds agree until the Real World converges
        max: 0.03                        # bound on the |bootstrap error| (test soft error) before it, per configuration
        statistic: max                   # max (default) or mean over the evaluations (see analysis.PairStats)
        curves: seeds                    # per seed, then the mean over seeds (default), or averaged: the
                                         # seed-averaged curves (the expected bootstrap error)
      - kind: memorizes_at_chance        # Real World fits its labels, test error stays at chance
        where: {corrupt.random_labels: true}
        train_error_max: 0.02            # final train 0/1 error
        test_error_min: 0.85             # final test 0/1 error (chance = 1 - 1/classes)
      - kind: effect                     # changing `key` from `from` to `to` moves `metric` by a bounded amount
        key: augment
        from: 0
        to: 2
        metric: ideal_final              # see METRICS
        max_change: 0.02                 # |to - from| <= 0.02 (or min_change / min_ratio: to >= from * r)
      - kind: larger_effect              # the change hurts one group more than another
        key: corrupt.pixels
        from: none
        to: shuffled
        metric: ideal_final
        group: model.name                # compare the change across this key's values
        larger: cnn
        smaller: mlp
      - kind: monotone                   # metric never increases (or decreases) along key
        key: n
        metric: real_final
        direction: decreasing
        tolerance: 0.005
      - kind: peak                       # an interior maximum along key (model-wise double descent)
        key: model.width
        metric: real_final_error
        min_height: 0.03                 # above both the smallest value before it and the value at the largest key
        absent: false                    # true: claims there is NO such peak (the Ideal World)
      - kind: ideal_predicts_real        # the Deep Bootstrap predictor, over the configurations
        min_rank_correlation: 0.8        # Spearman's rho of ideal_at_convergence with real_final
        band: 0.02                       # |real_final - ideal_at_convergence| <= band counts as inside
        min_inside: 0.75                 # fraction of configurations inside the band
        max_mean_abs_error: 0.02         # optional bound on the mean |real_final - ideal_at_convergence|
      - kind: effective_data_before_convergence   # repeats nearly as good as fresh (results/repetition.py)
        min_ratio: 0.8                   # D_eff/D before convergence (seed mean), every configuration
        error: soft                      # the test error D_eff compares: soft (default) or 0/1
      - kind: effective_data_saturates   # late repeats are worth little, and the law's R* is finite
        min_epochs: 50                   # the configurations checked: at least this many epochs
        max_late_worth: 0.25             # a sample of training's second half is worth at most 0.25 fresh ones
        max_r_star: 200                  # each group's R* and the upper end of its 95% interval
      - kind: repetition_law_predicts    # the law fitted without an n predicts its final D_eff
        tolerance: 0.3                   # |predicted / measured - 1|
        held_out: largest                # the largest n (default) or each n in turn
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from twoworlds.lightning_modules.metrics import (
    TEST_ERROR,
    TRAIN_ERROR,
    final_name,
)
from twoworlds.lightning_modules.registry import Registry
from twoworlds.results.analysis import label
from twoworlds.results.claim_spec import (
    CLAIM_KINDS,
    METRICS,
    RATIO_METRICS,
    STEP_METRICS,
    ClaimError,
    validate_claims,
)
from twoworlds.results.formats import pct as _pct

__all__ = ["METRICS", "ClaimError", "Verdict", "check_claims", "validate_claims"]
_CHECKS = Registry("claim kind")  # the check of each kind of claim_spec.CLAIM_KINDS

@dataclass
class Verdict:
    claim: str  # the claim in words
    evidence: str  # the numbers behind it
    holds: bool | None  # None: could not be checked on this run (missing trials or data)

    @property
    def word(self) -> str:
        return {True: "holds", False: "FAILS", None: "not checked"}[self.holds]


def _select(df: pd.DataFrame, where: dict | None) -> pd.DataFrame:
    """Rows matching every key: value of `where` (a list: any of its values); a key that is not a
    column is one that does not vary in the study (configuration tables only have the varying keys),
    so it filters nothing."""
    for k, v in (where or {}).items():
        if k in df:
            values = v if isinstance(v, list) else [v]
            df = df[[any(_same(x, u) for u in values) for x in df[k]]]
    return df


def _same(a, b) -> bool:
    """256 == 256.0 == '256'; otherwise compared as text (True == 'True', 'none' == 'none')."""
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)


def _num(metric: str, v: float) -> str:
    if metric in STEP_METRICS:
        return f"{v:,.0f} steps"
    return f"{v:.3g}" if metric in RATIO_METRICS else _pct(v)


def _delta(metric: str, d: float) -> str:
    """A signed difference of `metric`: '+12 steps', '+0.0423' (ratios), '+3.1 points' (error rates)."""
    if metric in STEP_METRICS:
        return f"{d:+,.0f} steps"
    return f"{d:+.3g}" if metric in RATIO_METRICS else f"{100 * d:+.1f} points"


def _by_key(g: pd.DataFrame, key: str) -> pd.DataFrame:
    """Rows in numeric order of `key` (text values last, in their order)."""
    return g.sort_values(key, key=lambda s: pd.to_numeric(s, errors="coerce"), kind="stable")


def _metric(configs: pd.DataFrame, metric: str, steps: int) -> pd.Series:
    values = configs[f"{metric}_mean"].astype(float)
    return values.fillna(steps) if metric == "converged_at" else values


def check_claims(claims: list[dict], trials: pd.DataFrame, configs: pd.DataFrame, keys: list[str]) -> list[Verdict]:
    steps = int(trials.steps.max()) if "steps" in trials and trials.steps.notna().any() else 0
    out = []
    for c in claims:
        text = c.get("claim") or c["kind"].replace("_", " ")
        try:
            evidence, holds = _CHECKS[c["kind"]](c, trials, configs, keys, steps)
        except _NotCheckable as e:
            evidence, holds = str(e), None
        out.append(Verdict(text, evidence, holds))
    return out


class _NotCheckable(Exception):
    pass


def _need(df: pd.DataFrame, what: str) -> pd.DataFrame:
    if not len(df):
        raise _NotCheckable(f"no {what} in this study (yet)")
    return df


@_CHECKS.register("gap_before_convergence")
def _gap(c, trials, configs, keys, steps):
    sel = _need(_select(configs, c.get("where")), "Real/Ideal pairs")
    stat, curves = c.get("statistic", "max"), c.get("curves", "seeds")
    column = f"curve_{stat}_gap_before" if curves == "averaged" else f"{stat}_gap_before_mean"
    values = sel[column]
    parts = ", ".join(f"{_pct(v)} ({name})" for name, v in zip(sel.configuration, values, strict=True))
    what = f"{stat} |bootstrap error| before convergence" + (
        " of the seed-averaged curves" if curves == "averaged" else " (per seed, mean over seeds)")
    other = "" if stat == "max" else "; for reference, the max per seed: " + ", ".join(
        _pct(v) for v in sel.max_gap_before_mean)
    return f"{what}: {parts}; bound {_pct(c['max'])}{other}", bool(values.max() <= c["max"])


@_CHECKS.register("memorizes_at_chance")
def _memorizes(c, trials, configs, keys, steps):
    real = _need(_select(trials[trials.world == "real"], c.get("where")), "matching Real World trials")
    train = real[final_name(TRAIN_ERROR)].astype(float)
    test = real[final_name(TEST_ERROR)].astype(float)
    classes = real.num_classes.dropna() if "num_classes" in real else pd.Series(dtype=float)
    chance = f" (chance {_pct(1 - 1 / classes.iloc[0])})" if len(classes) else ""
    evidence = (f"train error {_pct(train.max())} at most (bound {_pct(c['train_error_max'])}), test error "
                f"{_pct(test.min())} at least{chance} (bound {_pct(c['test_error_min'])}), over {len(real)} trials")
    return evidence, bool(train.max() <= c["train_error_max"] and test.min() >= c["test_error_min"])


def _groups(c, configs, keys, steps):
    """(label, values of the other keys, rows) for each group of matching configurations that differ
    only in the claim's `key`; the rows carry the claim's metric as `_m`."""
    key = c["key"]
    if key not in configs:
        raise _NotCheckable(f"'{key}' does not vary in this study")
    sel = _select(configs, c.get("where")).assign(_m=lambda d: _metric(d, c["metric"], steps))
    others = [k for k in keys if k != key]
    if not others:
        yield "all", {}, sel
        return
    for name, g in sel.groupby(others, sort=False):
        values = dict(zip(others, name if isinstance(name, tuple) else (name,), strict=True))
        yield label(values), values, g


def _changes(c, configs, keys, steps) -> list[tuple[str, dict, float, float]]:
    """(group label, the group's values of the other keys, metric at `from`, metric at `to`) for each
    group of configurations that differ only in `key`."""
    out = []
    for name, values, g in _groups(c, configs, keys, steps):
        a = g[[_same(x, c["from"]) for x in g[c["key"]]]]
        b = g[[_same(x, c["to"]) for x in g[c["key"]]]]
        if len(a) and len(b):
            out.append((name, values, float(a._m.iloc[0]), float(b._m.iloc[0])))
    if not out:
        raise _NotCheckable(f"no configurations with both {c['key']}={c['from']} and {c['key']}={c['to']}")
    return out


@_CHECKS.register("effect")
def _effect(c, trials, configs, keys, steps):
    changes = _changes(c, configs, keys, steps)
    m = c["metric"]
    ok, parts = True, []
    for name, _, a, b in changes:
        parts.append(f"{name}: {_num(m, a)} → {_num(m, b)}")
        if "max_change" in c:
            ok &= abs(b - a) <= c["max_change"]
        if "min_change" in c:
            ok &= b - a >= c["min_change"]
        if "min_ratio" in c:
            ok &= b >= a * c["min_ratio"]
    bounds = ", ".join(f"{k.replace('_', ' ')} {c[k]}" for k in ("max_change", "min_change", "min_ratio") if k in c)
    return f"{METRICS[m]} with {c['key']} {c['from']} → {c['to']}: " + "; ".join(parts) + f" ({bounds})", bool(ok)


@_CHECKS.register("larger_effect")
def _larger_effect(c, trials, configs, keys, steps):
    group = c["group"]
    changes = {}
    for _, values, a, b in _changes(c, configs, keys, steps):
        changes.setdefault(str(values.get(group)), []).append(b - a)
    if str(c["larger"]) not in changes or str(c["smaller"]) not in changes:
        raise _NotCheckable(f"need configurations of both {group}={c['larger']} and {group}={c['smaller']}")
    big, small = (sum(changes[str(v)]) / len(changes[str(v)]) for v in (c["larger"], c["smaller"]))
    m = c["metric"]
    return (f"{METRICS[m]} change with {c['key']} {c['from']} → {c['to']}: {c['larger']} {_delta(m, big)}, "
            f"{c['smaller']} {_delta(m, small)}"), bool(big > small)


@_CHECKS.register("monotone")
def _monotone(c, trials, configs, keys, steps):
    key, m = c["key"], c["metric"]
    sign = -1 if c.get("direction", "decreasing") == "decreasing" else 1
    tol = float(c.get("tolerance", 0.0))
    ok, parts = True, []
    for name, _, g in _groups(c, configs, keys, steps):
        g = _by_key(g, key)
        v = g._m.to_numpy()
        ok &= bool(all(sign * (v[i + 1] - v[i]) >= -tol for i in range(len(v) - 1)))
        parts.append(f"{name}: " + " → ".join(f"{_num(m, x)} ({key}={k})" for x, k in zip(v, g[key], strict=True)))
    return f"{METRICS[m]}: " + "; ".join(parts) + f" (tolerance {_num(m, tol)})", ok


@dataclass
class Peak:
    """The best interior maximum of a curve: the one standing highest above both sides."""

    at: int  # index of the peak
    low: int  # index of the smallest value before it
    height: float  # min(value - value[low], value - value[-1])


def find_peak(values) -> Peak | None:
    """The interior point i (0 < i < last) maximizing min(v[i] - min(v[:i]), v[i] - v[-1]);
    None with fewer than 3 values. A curve without a bump gets a height <= 0."""
    v = [float(x) for x in values]
    best = None
    for i in range(1, len(v) - 1):
        low = min(range(i), key=lambda j: v[j])
        height = min(v[i] - v[low], v[i] - v[-1])
        if best is None or height > best.height:
            best = Peak(i, low, height)
    return best


@_CHECKS.register("peak")
def _peak(c, trials, configs, keys, steps):
    key, m, absent = c["key"], c["metric"], bool(c.get("absent", False))
    margin = float(c.get("min_height", 0.0))
    ok, parts = True, []
    for name, _, g in _groups(c, configs, keys, steps):
        g = _by_key(g, key)
        v, k = g._m.to_numpy(), list(g[key])
        curve = " → ".join(f"{_num(m, x)} ({key.split('.')[-1]}={kk})" for x, kk in zip(v, k, strict=True))
        p = find_peak(v)
        if p is None:
            raise _NotCheckable(f"a peak needs at least 3 values of {key}; {name} has {len(v)}")
        found = p.height >= margin
        ok &= found != absent
        leaf = key.split(".")[-1]
        what = "highest interior peak" if p.height > 0 else "no interior point above both sides; the closest"
        where = (f"{what} at {leaf}={k[p.at]}: {_delta(m, v[p.at] - v[p.low])} above {leaf}={k[p.low]}, "
                 f"{_delta(m, v[p.at] - v[-1])} above {leaf}={k[-1]}")
        parts.append(f"{name}: {curve}; {where}")
    want = "no interior peak" if absent else "an interior peak"
    return f"{METRICS[m]}: " + "; ".join(parts) + f" ({want} of at least {_delta(m, margin).lstrip('+')})", bool(ok)


def predictor_table(configs: pd.DataFrame) -> pd.DataFrame:
    """Per configuration: the predictor (Ideal World test soft error at the Real World's convergence
    step) and the truth (Real World final test soft error), means over seeds, with their stds."""
    cols = ["configuration", "ideal_at_convergence_mean", "ideal_at_convergence_std", "real_final_mean",
            "real_final_std", "converged_seeds", "seeds"]
    t = configs[[c for c in cols if c in configs]].dropna(subset=["ideal_at_convergence_mean", "real_final_mean"])
    return t.rename(columns={"ideal_at_convergence_mean": "predicted", "real_final_mean": "truth"})


@dataclass
class PredictorScore:
    configurations: int
    mean_abs_error: float
    rank_correlation: float  # Spearman's rho
    inside: int  # configurations with |truth - predicted| <= band
    band: float

    def sentence(self) -> str:
        return (f"over {self.configurations} configurations: mean |Real final − Ideal at convergence| "
                f"{_pct(self.mean_abs_error)}, Spearman's rank correlation {self.rank_correlation:.3f}, "
                f"{self.inside} of {self.configurations} ({self.inside / self.configurations:.0%}) within "
                f"±{_pct(self.band)}")


DEFAULT_BAND = 0.02  # the ± band of the predictor's scatter when the study claims none


def score_predictor(configs: pd.DataFrame, band: float = DEFAULT_BAND) -> PredictorScore | None:
    t = predictor_table(configs)
    if len(t) < 3:
        return None
    err = (t.truth - t.predicted).abs()
    rho = float(t.predicted.rank().corr(t.truth.rank()))
    return PredictorScore(len(t), float(err.mean()), rho, int((err <= band + 1e-12).sum()), band)


@_CHECKS.register("ideal_predicts_real")
def _ideal_predicts_real(c, trials, configs, keys, steps):
    sel = _select(configs, c.get("where"))
    score = score_predictor(sel, float(c.get("band", DEFAULT_BAND)))
    if score is None:
        raise _NotCheckable("the predictor needs at least 3 configurations with both worlds")
    ok, bounds = True, []
    if "min_rank_correlation" in c:
        ok &= score.rank_correlation >= c["min_rank_correlation"]
        bounds.append(f"rank correlation ≥ {c['min_rank_correlation']}")
    if "min_inside" in c:
        ok &= score.inside >= c["min_inside"] * score.configurations - 1e-9
        bounds.append(f"at least {c['min_inside']:.0%} within the band")
    if "max_mean_abs_error" in c:
        ok &= score.mean_abs_error <= c["max_mean_abs_error"]
        bounds.append(f"mean absolute error ≤ {_pct(c['max_mean_abs_error'])}")
    unconverged = sel.converged_seeds < sel.seeds if "converged_seeds" in sel else []
    note = (f"; {int(sum(unconverged))} configurations did not converge in every seed (their predictor is taken "
            "at the last step)") if sum(unconverged) else ""
    return f"{score.sentence()}{note} ({', '.join(bounds) or 'no bound'})", bool(ok)


# ---------------------------------------------------------------- effective data (results/repetition.py)

def _effective(c, configs) -> pd.DataFrame:
    """The claim's configurations with their effective-data columns (repetition_report.claim_columns),
    computed on the error the claim names."""
    sel = _need(_select(configs, c.get("where")), "configurations matching the claim")
    if "d_eff_error" not in sel or sel.d_eff_error.isna().all():
        raise _NotCheckable("no effective data in this study (no Real World evaluation after its first epoch "
                            "with an Ideal World twin)")
    if (sel.d_eff_error != c.get("error", "soft")).any():
        raise _NotCheckable(f"D_eff was computed on the {sel.d_eff_error.iloc[0]} error, the claim names "
                            f"{c.get('error', 'soft')}")
    return sel


def _g(v: float) -> str:
    """A fitted number: '—' when undefined, '∞' when unresolved."""
    return "—" if v != v else ("∞" if v == float("inf") else f"{v:.3g}")


def _in(lo: float, hi: float) -> str:
    return "" if lo != lo else f" [{_g(lo)}, {_g(hi)}]"


@_CHECKS.register("effective_data_before_convergence")
def _effective_before(c, trials, configs, keys, steps):
    sel = _effective(c, configs)
    v = sel.d_eff_ratio_before_mean
    parts = ", ".join(f"{name} {_g(m)}{_in(lo, hi)}" for name, m, lo, hi in zip(
        sel.configuration, v, sel.d_eff_ratio_before_lo, sel.d_eff_ratio_before_hi, strict=True))
    if v.isna().any():
        rest = ", ".join(f"{name} {_g(m)}" for name, m in zip(sel.configuration[v.notna()], v[v.notna()], strict=True))
        raise _NotCheckable(f"D_eff/D before convergence is undefined in {', '.join(sel.configuration[v.isna()])} "
                            f"(no evaluation after the first epoch before convergence, or D_eff undefined at one)"
                            + (f"; the others: {rest}" if rest else ""))
    return (f"D_eff/D before convergence (geometric mean over the evaluations after the first epoch, seed mean "
            f"[95% bootstrap interval]): {parts}; its smallest single evaluation {_g(sel.d_eff_ratio_before_min.min())} "
            f"(bound: every configuration ≥ {c['min_ratio']})"), bool(v.min() >= c["min_ratio"])


@_CHECKS.register("effective_data_saturates")
def _effective_saturates(c, trials, configs, keys, steps):
    sel = _effective(c, configs)
    late = sel[sel.epochs_final >= c.get("min_epochs", 0)]
    if not len(late):
        raise _NotCheckable(f"no configuration ran {c.get('min_epochs', 0)} epochs or more")
    worth = late.late_worth_mean
    laws = sel.drop_duplicates("law_group")
    words = (", ".join(f"{name} ({e:,.0f} epochs) {_g(w)}{_in(lo, hi)}" for name, e, w, lo, hi in zip(
        late.configuration, late.epochs_final, worth, late.late_worth_lo, late.late_worth_hi, strict=True)) +
        "; R*: " + ", ".join(f"{g} {_g(r)}{_in(lo, hi) or ' (no interval)'}" for g, r, lo, hi in zip(
            laws.law_group, laws.law_r_star, laws.law_r_star_lo, laws.law_r_star_hi, strict=True)))
    if worth.isna().any() or laws.law_r_star.isna().any() or laws.law_r_star_hi.isna().any():
        raise _NotCheckable(f"undefined: D_eff at the end or half-way, a law that could not be fitted, or an "
                            f"interval of one seed; {words}")
    ok = bool((worth <= c["max_late_worth"]).all() and (laws.law_r_star_hi <= c["max_r_star"]).all())
    return (f"worth of a repeated sample over the second half of training, in fresh ones, seed mean [95%]: {words} "
            f"(bounds: worth ≤ {c['max_late_worth']} where ≥ {c.get('min_epochs', 0)} epochs; R* and its interval "
            f"finite, ≤ {c['max_r_star']})"), ok


def _count(v: float) -> str:
    return "—" if v != v else f"{v:,.0f}"


@_CHECKS.register("repetition_law_predicts")
def _law_predicts(c, trials, configs, keys, steps):
    sel = _effective(c, configs)
    if c.get("held_out", "largest") == "largest":
        sel = sel[sel.law_holdout_largest == True]  # noqa: E712  (NaN: no hold-out for a single n)
    err = sel.law_holdout_error
    if not len(sel):
        raise _NotCheckable("a hold-out needs configurations at two values of n or more")
    parts = ", ".join(f"{name}: {_count(p)} predicted (R* {_g(r)} without it), {_count(m)} measured, "
                      + ("—" if e != e else f"{e:+.1%}") for name, p, r, m, e in zip(sel.configuration, sel.law_holdout_predicted,
                                                  sel.law_holdout_r_star_without, sel.d_eff_final_mean, err, strict=True))
    if err.isna().any():
        raise _NotCheckable(f"the final D_eff or its prediction is undefined: {parts}")
    return (f"final D_eff of the held-out n, from the law fitted on the other n: {parts} (bound: ±{c['tolerance']:.0%})",
            bool((err.abs() <= c["tolerance"]).all()))


assert set(_CHECKS) == set(CLAIM_KINDS), "every claim kind needs exactly one check"
