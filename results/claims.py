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
from twoworlds.results.analysis import same as _same
from twoworlds.results.analysis import select as _select
from twoworlds.results.claim_spec import (
    CLAIM_KINDS,
    METRICS,
    RATIO_METRICS,
    STEP_METRICS,
    ClaimError,
    normalize_claim,
    validate_claims,
)
from twoworlds.results.formats import pct as _pct
from twoworlds.results.formats import points as _points
from twoworlds.results.repetition_claims import CHECKS as REPETITION_CHECKS
from twoworlds.results.scores import find_peak, score_predictor
from twoworlds.results.verdicts import Margin, Verdict
from twoworlds.results.verdicts import NotCheckable as _NotCheckable
from twoworlds.results.verdicts import Outcome as _Outcome
from twoworlds.results.worlds import COUNTS, kind_of

__all__ = ["METRICS", "ClaimError", "Verdict", "check_claims", "validate_claims"]
_CHECKS = Registry("claim kind")  # the check of each kind of claim_spec.CLAIM_KINDS: (claim, _Data) -> _Outcome


def _num(metric: str, v: float) -> str:
    if metric in STEP_METRICS:
        return f"{v:,.0f} steps"
    return f"{v:.3g}" if metric in RATIO_METRICS else _pct(v)


def _in(metric: str):
    """Shows a signed amount of `metric` (a margin in its units)."""
    return lambda d: _delta(metric, d)


def _delta(metric: str, d: float) -> str:
    """A signed difference of `metric`: '+12 steps', '+0.0423' (ratios), '+3.1 points' (error rates)."""
    if metric in STEP_METRICS:
        return f"{d:+,.0f} steps"
    return f"{d:+.3g}" if metric in RATIO_METRICS else _points(d)


def _by_key(g: pd.DataFrame, key: str) -> pd.DataFrame:
    """Rows in numeric order of `key` (text values last, in their order)."""
    return g.sort_values(key, key=lambda s: pd.to_numeric(s, errors="coerce"), kind="stable")


def _metric(configs: pd.DataFrame, metric: str, steps: int) -> pd.Series:
    """The claim's metric per configuration. The convergence step counts a seed that never converged as
    its step budget (converged_or_budget), so a mean over seeds is never one over the converged ones only."""
    if metric == "converged_at" and "converged_or_budget_mean" in configs:
        return configs.converged_or_budget_mean.astype(float)
    values = configs[f"{metric}_mean"].astype(float)
    return values.fillna(steps) if metric == "converged_at" else values


def check_claims(claims: list[dict], trials: pd.DataFrame, configs: pd.DataFrame, keys: list[str],
                 name=label, alone: bool = False) -> list[Verdict]:
    """Each claim checked on the configurations table (tables.configurations). `name(values)` labels a group of
    configurations by the values of its keys (worlds.Worlds.label: the same words as the report's labels).
    `alone`: the tables hold one seed's trials (the seed spread), so there is no interval over seeds."""
    steps = int(trials.steps.max()) if "steps" in trials and trials.steps.notna().any() else 0
    out = []
    for i, raw in enumerate(claims):
        text = _text(raw)
        try:  # a manifest written before a field was checked, or edited by hand, is checked again here
            c = normalize_claim(raw, i + 1, "in the study's sweep.json")
            o = _CHECKS[c["kind"]](c, _Data(trials, configs, keys, steps, name, alone))
            out.append(Verdict(text, o.evidence, bool(o.holds), o.margins))
        except (_NotCheckable, ClaimError) as e:
            out.append(Verdict(text, str(e), None))
    return out


def _text(c) -> str:
    """The claim in words: its `claim`, else its kind."""
    if not isinstance(c, dict):
        return str(c)
    return c.get("claim") if isinstance(c.get("claim"), str) else str(c.get("kind")).replace("_", " ")


@dataclass
class _Data:
    """What a check reads: the study's trials, its configurations and their keys."""

    trials: pd.DataFrame
    configs: pd.DataFrame
    keys: list[str]
    steps: int  # the largest step budget (a Real World run that never converged counts as converging there)
    name: object  # labels a group of configurations by its values of `keys`
    alone: bool = False  # one seed's trials alone: a bound on an interval over seeds applies to the value itself


def _need(df: pd.DataFrame, what: str) -> pd.DataFrame:
    if not len(df):
        raise _NotCheckable(f"no {what} in this study (yet)")
    return df


def _on(sel: pd.DataFrame, metric: str, what: str = "") -> tuple[pd.DataFrame, str]:
    """The selected configurations `metric` is taken on, and a note naming those left out. A one-world metric
    is taken on every configuration with trials of that world (the others are not part of that world); a
    pair metric needs a Real/Ideal pair in every selected configuration, else the claim is not checkable."""
    kind = kind_of(metric)
    count = COUNTS[kind]
    lacking = sel[sel[count] == 0] if count in sel else sel.iloc[:0]
    if not len(lacking):
        return sel, ""
    names = ", ".join(lacking.configuration)
    if len(lacking) == len(sel) and kind != "pair":
        raise _NotCheckable(f"no {kind.capitalize()} World trials among the claim's configurations")
    if kind == "pair":
        raise _NotCheckable(f"{what or METRICS[metric]} is measured on Real/Ideal pairs, and {names} "
                            f"{'has' if len(lacking) == 1 else 'have'} none (run the twins, or leave "
                            f"{'it' if len(lacking) == 1 else 'them'} out with the claim's `where`)")
    return sel[sel[count] > 0], f"; without {kind.capitalize()} World trials, so not part of it: {names}"


def _refuse_missing(names, values, what: str) -> None:
    """A value the claim needs that the runs did not give (a diverged seed, a curve that never started to
    learn): the claim is not checkable there, never passed over it."""
    missing = [n for n, v in zip(names, values, strict=True) if v != v]
    if missing:
        raise _NotCheckable(f"no value of {what} for {', '.join(missing)}")


@_CHECKS.register("gap_before_convergence")
def _gap(c, d: _Data):
    sel, _ = _on(_need(_select(d.configs, c["where"]), "configurations"), "max_gap_before", "the bootstrap error")
    stat, curves = c["statistic"], c["curves"]
    column = f"curve_{stat}_gap_before" if curves == "averaged" else f"{stat}_gap_before_mean"
    values = sel[column]
    what = f"{stat} |bootstrap error| before convergence" + (
        " of the seed-averaged curves" if curves == "averaged" else " (per seed, mean over seeds)")
    _refuse_missing(sel.configuration, values, f"the {what}")
    parts = ", ".join(f"{_pct(v)} ({name})" for name, v in zip(sel.configuration, values, strict=True))
    other = "" if stat == "max" else "; for reference, the max per seed: " + ", ".join(
        _pct(v) for v in sel.max_gap_before_mean)
    return _Outcome(f"{what}: {parts}; bound {_pct(c['max'])}{other}", values.max() <= c["max"],
                    [Margin("", c["max"] - values.max(), _points)])


@_CHECKS.register("memorizes_at_chance")
def _memorizes(c, d: _Data):
    real = _need(_select(d.trials[d.trials.world == "real"], c["where"]), "matching Real World trials")
    columns = [final_name(TRAIN_ERROR), final_name(TEST_ERROR)]
    finals = real.reindex(columns=columns).astype(float)
    names = real.trial if "trial" in real else real.index.astype(str)
    _refuse_missing(names, finals.sum(axis=1, skipna=False), "the final train and test error (summary.json)")
    train, test = finals[columns[0]], finals[columns[1]]
    classes = real.num_classes.dropna() if "num_classes" in real else pd.Series(dtype=float)
    chance = f" (chance {_pct(1 - 1 / classes.iloc[0])})" if len(classes) else ""
    evidence = (f"train error {_pct(train.max())} at most (bound {_pct(c['train_error_max'])}), test error "
                f"{_pct(test.min())} at least{chance} (bound {_pct(c['test_error_min'])}), over {len(real)} trials")
    margins = [Margin("train error", c["train_error_max"] - train.max(), _points),
               Margin("test error", test.min() - c["test_error_min"], _points)]
    return _Outcome(evidence, train.max() <= c["train_error_max"] and test.min() >= c["test_error_min"], margins)


def _groups(c, d: _Data) -> tuple[list[tuple[str, dict, pd.DataFrame]], str]:
    """(label, values of the other keys, rows) for each group of matching configurations that differ
    only in the claim's `key`, the rows carrying the claim's metric as `_m`; and _on's note."""
    key = c["key"]
    if key not in d.configs:
        raise _NotCheckable(f"'{key}' does not vary in this study")
    sel, note = _on(_select(d.configs, c["where"]), c["metric"])
    sel = sel.assign(_m=lambda t: _metric(t, c["metric"], d.steps))
    others = [k for k in d.keys if k != key]
    if not others:
        return [("all", {}, sel)], note
    out = []
    for name, g in sel.groupby(others, sort=False, dropna=False):
        values = dict(zip(others, name if isinstance(name, tuple) else (name,), strict=True))
        out.append((d.name(values), values, g))
    return out, note


def _changes(c, d: _Data) -> tuple[list[tuple[str, dict, float, float]], str]:
    """(group label, the group's values of the other keys, metric at `from`, metric at `to`) for each
    group of configurations that differ only in `key`; and _on's note."""
    out = []
    groups, note = _groups(c, d)
    for name, values, g in groups:
        a = g[[_same(x, c["from"]) for x in g[c["key"]]]]
        b = g[[_same(x, c["to"]) for x in g[c["key"]]]]
        if len(a) and len(b):
            out.append((name, values, float(a._m.iloc[0]), float(b._m.iloc[0])))
            _refuse_missing([f"{name} {c['key']}={c['from']}", f"{name} {c['key']}={c['to']}"], out[-1][2:],
                            METRICS[c["metric"]])
    if not out:
        raise _NotCheckable(f"no configurations with both {c['key']}={c['from']} and {c['key']}={c['to']}")
    return out, note


@_CHECKS.register("effect")
def _effect(c, d: _Data):
    changes, note = _changes(c, d)
    m = c["metric"]
    ok, parts = True, []
    inside = {"max_change": [], "min_change": [], "min_ratio": []}  # per bound, each group's margin
    for name, _, a, b in changes:
        parts.append(f"{name}: {_num(m, a)} → {_num(m, b)}")
        if "max_change" in c:
            ok &= abs(b - a) <= c["max_change"]
            inside["max_change"].append(c["max_change"] - abs(b - a))
        if "min_change" in c:
            ok &= b - a >= c["min_change"]
            inside["min_change"].append(b - a - c["min_change"])
        if "min_ratio" in c:
            ok &= b >= a * c["min_ratio"]
            inside["min_ratio"].append(b / a - c["min_ratio"] if a > 0 else float("nan"))
    bounds = ", ".join(f"{k.replace('_', ' ')} {c[k]}" for k in ("max_change", "min_change", "min_ratio") if k in c)
    margins = [Margin(k.replace("_", " ") if len([v for v in inside.values() if v]) > 1 else "", min(v),
                      (lambda d: f"{d:+.3g}") if k == "min_ratio" else _in(m)) for k, v in inside.items() if v]
    return _Outcome(f"{METRICS[m]} with {c['key']} {c['from']} → {c['to']}: " + "; ".join(parts) +
                    f" ({bounds}){note}", ok, margins)


@_CHECKS.register("larger_effect")
def _larger_effect(c, d: _Data):
    group = c["group"]
    changes = {}
    found, note = _changes(c, d)
    for _, values, a, b in found:
        changes.setdefault(str(values.get(group)), []).append(b - a)
    if str(c["larger"]) not in changes or str(c["smaller"]) not in changes:
        raise _NotCheckable(f"need configurations of both {group}={c['larger']} and {group}={c['smaller']}")
    big, small = (sum(changes[str(v)]) / len(changes[str(v)]) for v in (c["larger"], c["smaller"]))
    m = c["metric"]
    return _Outcome(f"{METRICS[m]} change with {c['key']} {c['from']} → {c['to']}: {c['larger']} {_delta(m, big)}, "
                    f"{c['smaller']} {_delta(m, small)}{note}", big > small, [Margin("", big - small, _in(m))])


@_CHECKS.register("monotone")
def _monotone(c, d: _Data):
    key, m = c["key"], c["metric"]
    sign = -1 if c["direction"] == "decreasing" else 1
    tol = float(c["tolerance"])
    ok, parts, steps = True, [], []
    groups, note = _groups(c, d)
    for name, _, g in groups:
        g = _by_key(g, key)
        v = g._m.to_numpy()
        if len(v) > 1:  # a group with one value compares nothing
            _refuse_missing([f"{name} {key}={k}" for k in g[key]], v, METRICS[m])
        steps += [sign * (v[i + 1] - v[i]) + tol for i in range(len(v) - 1)]  # >= 0: within the tolerance
        ok &= bool(all(sign * (v[i + 1] - v[i]) >= -tol for i in range(len(v) - 1)))
        parts.append(f"{name}: " + " → ".join(f"{_num(m, x)} ({key}={k})" for x, k in zip(v, g[key], strict=True)))
    return _Outcome(f"{METRICS[m]}: " + "; ".join(parts) + f" (tolerance {_num(m, tol)}){note}", ok,
                    [Margin("", min(steps), _in(m))] if steps else [])


@_CHECKS.register("peak")
def _peak(c, d: _Data):
    key, m, absent = c["key"], c["metric"], c["absent"]
    margin = float(c["min_height"])
    ok, parts, heights = True, [], []
    groups, note = _groups(c, d)
    for name, _, g in groups:
        g = _by_key(g, key)
        v, k = g._m.to_numpy(), list(g[key])
        _refuse_missing([f"{name} {key}={kk}" for kk in k], v, METRICS[m])
        curve = " → ".join(f"{_num(m, x)} ({key.split('.')[-1]}={kk})" for x, kk in zip(v, k, strict=True))
        p = find_peak(v)
        if p is None:
            raise _NotCheckable(f"a peak needs at least 3 values of {key}; {name} has {len(v)}")
        found = p.height >= margin
        ok &= found != absent
        heights.append(p.height)
        leaf = key.split(".")[-1]
        what = "highest interior peak" if p.height > 0 else "no interior point above both sides; the closest"
        where = (f"{what} at {leaf}={k[p.at]}: {_delta(m, v[p.at] - v[p.low])} above {leaf}={k[p.low]}, "
                 f"{_delta(m, v[p.at] - v[-1])} above {leaf}={k[-1]}")
        parts.append(f"{name}: {curve}; {where}")
    want = "no interior peak" if absent else "an interior peak"
    inside = min(margin - h for h in heights) if absent else min(h - margin for h in heights)
    return _Outcome(f"{METRICS[m]}: " + "; ".join(parts) + f" ({want} of at least {_delta(m, margin).lstrip('+')}){note}",
                    ok, [Margin("", inside, _in(m))])


@_CHECKS.register("ideal_predicts_real")
def _ideal_predicts_real(c, d: _Data):
    sel, _ = _on(_select(d.configs, c["where"]), "ideal_at_convergence", "the predictor")
    for column in ("ideal_at_convergence", "paired_real_final"):
        _refuse_missing(sel.configuration, sel[f"{column}_mean"], "the predictor (or its truth)")
    score = score_predictor(sel, float(c["band"]))
    if score is None:
        raise _NotCheckable("the predictor needs at least 3 configurations with both worlds")
    ok, bounds, margins = True, [], []
    if "min_rank_correlation" in c:
        ok &= score.rank_correlation >= c["min_rank_correlation"]
        bounds.append(f"rank correlation ≥ {c['min_rank_correlation']}")
        margins.append(Margin("rank correlation", score.rank_correlation - c["min_rank_correlation"],
                              lambda r: f"{r:+.3f}"))
    if "min_inside" in c:
        ok &= score.inside >= c["min_inside"] * score.configurations - 1e-9
        bounds.append(f"at least {c['min_inside']:.0%} within the band")
        margins.append(Margin("share within the band", score.inside / score.configurations - c["min_inside"], _points))
    if "max_mean_abs_error" in c:
        ok &= score.mean_abs_error <= c["max_mean_abs_error"]
        bounds.append(f"mean absolute error ≤ {_pct(c['max_mean_abs_error'])}")
        margins.append(Margin("mean absolute error", c["max_mean_abs_error"] - score.mean_abs_error, _points))
    seeds = sel.real_seeds if "real_seeds" in sel else sel.get("seeds")
    unconverged = sel.converged_seeds < seeds if "converged_seeds" in sel else []
    note = (f"; {int(sum(unconverged))} configurations did not converge in every seed (their predictor is taken "
            "at the last step)") if sum(unconverged) else ""
    return _Outcome(f"{score.sentence()}{note} ({', '.join(bounds)})", ok,
                    margins if len(margins) > 1 else [Margin("", margins[0].value, margins[0].show)])


for _kind, _check in REPETITION_CHECKS.items():  # effective data (repetition_claims.py)
    _CHECKS.add(_kind, _check)
assert set(_CHECKS) == set(CLAIM_KINDS), "every claim kind needs exactly one check"
