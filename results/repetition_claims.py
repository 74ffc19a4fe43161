"""The checks of the effective-data claim kinds (claim_spec.REPETITION_KINDS), on the configurations table
with repetition_report.claim_columns joined in; claims.py registers them beside the other kinds.

Each returns an Outcome with a margin per bound, in the bound's units and positive inside (verdicts.py):
- effective_data_before_convergence: the smallest D_eff/D before convergence minus `min_ratio` (a ratio);
- effective_data_saturates: `max_late_worth` minus the largest late repeat worth (fresh samples per repeated
  one), and `max_r_star` minus the largest upper end of R*'s interval (in epochs; for one seed's trials
  alone, the seed spread, its R* itself: one seed has no interval);
- repetition_law_predicts: `tolerance` minus the largest |predicted / measured − 1| (points: 0.01).

A check reads `d.configs` and `d.alone` of claims._Data. D_eff belongs to a Real World configuration (its
Ideal World twins are read, not checked), so configurations with Real World trials only are checked; one of
them without effective data makes the claim not checkable, never passed over.
"""

from __future__ import annotations

import pandas as pd
from twoworlds.results.analysis import select
from twoworlds.results.formats import points as _points
from twoworlds.results.verdicts import Margin, NotCheckable, Outcome


def _plain(d: float) -> str:
    return "-∞" if d == float("-inf") else f"{d:+.3g}"  # -∞: an unresolved R* (no saturation seen) against a bound


def _g(v: float) -> str:
    """A fitted number: '—' when undefined, '∞' when unresolved."""
    return "—" if v != v else ("∞" if v == float("inf") else f"{v:.3g}")


def _in(lo: float, hi: float) -> str:
    return "" if lo != lo else f" [{_g(lo)}, {_g(hi)}]"


def _effective(c, configs: pd.DataFrame) -> pd.DataFrame:
    """The claim's Real World configurations with their effective-data columns, computed on the error the
    claim names."""
    sel = select(configs, c["where"])
    if "real_seeds" in sel:
        sel = sel[sel.real_seeds > 0]
    if not len(sel):
        raise NotCheckable("no Real World configurations matching the claim in this study (yet)")
    if "d_eff_error" not in sel or sel.d_eff_error.isna().all():
        raise NotCheckable("no effective data in this study (no Real World evaluation after its first epoch "
                           "with an Ideal World twin)")
    lacking = list(sel.configuration[sel.d_eff_error.isna()])
    if lacking:
        raise NotCheckable(f"D_eff needs a Real World evaluation after its first epoch with an Ideal World twin "
                           f"(same configuration and seed, at least its steps), and {', '.join(lacking)} "
                           f"{'has' if len(lacking) == 1 else 'have'} none (run the twins, or leave "
                           f"{'it' if len(lacking) == 1 else 'them'} out with the claim's `where`)")
    if (sel.d_eff_error != c["error"]).any():
        raise NotCheckable(f"D_eff was computed on the {sel.d_eff_error.iloc[0]} error, the claim names {c['error']}")
    return sel


def _before(c, d) -> Outcome:
    sel = _effective(c, d.configs)
    v = sel.d_eff_ratio_before_mean
    parts = ", ".join(f"{name} {_g(m)}{_in(lo, hi)}" for name, m, lo, hi in zip(
        sel.configuration, v, sel.d_eff_ratio_before_lo, sel.d_eff_ratio_before_hi, strict=True))
    if v.isna().any():
        rest = ", ".join(f"{name} {_g(m)}" for name, m in zip(sel.configuration[v.notna()], v[v.notna()], strict=True))
        raise NotCheckable(f"D_eff/D before convergence is undefined in {', '.join(sel.configuration[v.isna()])} "
                           f"(no evaluation after the first epoch before convergence, or D_eff undefined at one)"
                           + (f"; the others: {rest}" if rest else ""))
    return Outcome(f"D_eff/D before convergence (geometric mean over the evaluations after the first epoch, seed "
                   f"mean [95% bootstrap interval]): {parts}; its smallest single evaluation "
                   f"{_g(sel.d_eff_ratio_before_min.min())} (bound: every configuration ≥ {c['min_ratio']})",
                   bool(v.min() >= c["min_ratio"]), [Margin("", v.min() - c["min_ratio"], _plain)])


def _saturates(c, d) -> Outcome:
    sel = _effective(c, d.configs)
    late = sel[sel.epochs_final >= c["min_epochs"]]
    if not len(late):
        raise NotCheckable(f"no configuration ran {c['min_epochs']} epochs or more")
    worth = late.late_worth_mean
    laws = sel.drop_duplicates("law_group")
    top = laws.law_r_star if d.alone else laws.law_r_star_hi  # R*'s bound: the upper end of its interval
    words = (", ".join(f"{name} ({e:,.0f} epochs) {_g(w)}{_in(lo, hi)}" for name, e, w, lo, hi in zip(
        late.configuration, late.epochs_final, worth, late.late_worth_lo, late.late_worth_hi, strict=True)) +
        "; R*: " + ", ".join(f"{g} {_g(r)}{_in(lo, hi) or ' (no interval)'}" for g, r, lo, hi in zip(
            laws.law_group, laws.law_r_star, laws.law_r_star_lo, laws.law_r_star_hi, strict=True)))
    if worth.isna().any() or laws.law_r_star.isna().any() or top.isna().any():
        raise NotCheckable(f"undefined: D_eff at the end or half-way, a law that could not be fitted, or an "
                           f"interval of one seed; {words}")
    ok = bool((worth <= c["max_late_worth"]).all() and (top <= c["max_r_star"]).all())
    r_star = "R* (one seed: no interval) finite" if d.alone else "R* and its interval finite"
    return Outcome(f"worth of a repeated sample over the second half of training, in fresh ones, seed mean [95%]: "
                   f"{words} (bounds: worth ≤ {c['max_late_worth']} where ≥ {c['min_epochs']} epochs; {r_star}, "
                   f"≤ {c['max_r_star']})", ok,
                   [Margin("late worth", c["max_late_worth"] - worth.max(), _plain),
                    Margin("R*", c["max_r_star"] - top.max(), _plain)])


def _count(v: float) -> str:
    return "—" if v != v else f"{v:,.0f}"


def _law_predicts(c, d) -> Outcome:
    sel = _effective(c, d.configs)
    if c["held_out"] == "largest":
        sel = sel[sel.law_holdout_largest == True]  # noqa: E712  (NaN: no hold-out for a single n)
    err = sel.law_holdout_error
    if not len(sel):
        raise NotCheckable("a hold-out needs configurations at two values of n or more")
    parts = ", ".join(f"{name}: {_count(p)} predicted (R* {_g(r)} without it), {_count(m)} measured, "
                      + ("—" if e != e else f"{e:+.1%}") for name, p, r, m, e in zip(
                          sel.configuration, sel.law_holdout_predicted, sel.law_holdout_r_star_without,
                          sel.d_eff_final_mean, err, strict=True))
    if err.isna().any():
        raise NotCheckable(f"the final D_eff or its prediction is undefined: {parts}")
    return Outcome(f"final D_eff of the held-out n, from the law fitted on the other n: {parts} (bound: "
                   f"±{c['tolerance']:.0%})", bool((err.abs() <= c["tolerance"]).all()),
                   [Margin("", c["tolerance"] - err.abs().max(), _points)])


CHECKS = {"effective_data_before_convergence": _before, "effective_data_saturates": _saturates,
          "repetition_law_predicts": _law_predicts}
