"""The report's effective-data section: what an epoch was worth (repetition.py computes, this narrates,
repetition_plot.py draws plot (h)).

How `twoworlds report` gets there:
- report.py adds the D_eff columns to the curves table (repetition.with_effective_data, on the error of
  repetition.repetition_error(claims)) before it is written;
- tables.analyse computes the Analysis' `repetition` (repetition.analyse_repetition) and joins
  repetition.claim_columns into the configurations table the claims are checked on;
- report.py writes effective_data.csv, repetition_law.csv and repetition_holdout.csv (`tables_of`);
- sections.py's `effective_data` section is `repetition_blocks(rep, out)`: the text, its tables, plot (h).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from twoworlds.results.document import Block
from twoworlds.results.fits import METHODS
from twoworlds.results.repetition import LAW_METHOD, RESOLVED_FACTOR, Repetition
from twoworlds.results.repetition_plot import plot_effective_data

ERROR_WORDS = {"soft": "test soft error", "0/1": "test 0/1 error"}


def num(v: float, digits: int = 3) -> str:
    """A fitted number: '—' when undefined (NaN), '∞' when unresolved (no saturation seen)."""
    if v != v:
        return "—"
    return "∞" if math.isinf(v) else f"{v:.{digits}g}"


def interval(lo: float, hi: float, digits: int = 3) -> str:
    return "—" if lo != lo else f"[{num(lo, digits)}, {num(hi, digits)}]"


def with_interval(value: float, lo: float, hi: float, digits: int = 3) -> str:
    """'51.7 [48.8, 54.5]'; the value alone without an interval (one seed); '—' when undefined."""
    if value != value:
        return "—"
    return num(value, digits) + ("" if lo != lo else f" {interval(lo, hi, digits)}")


def _column(values, lo, hi, digits: int = 3) -> list[str]:
    return [with_interval(v, a, b, digits) for v, a, b in zip(values, lo, hi, strict=True)]


def _config_table(rep: Repetition) -> pd.DataFrame:
    c = rep.configs
    return pd.DataFrame({
        "configuration": c.configuration, "seeds": c.seeds, "epochs": [f"{e:,.3g}" for e in c.epochs_final],
        "D_eff/D before convergence": _column(c.ratio_before, c.ratio_before_lo, c.ratio_before_hi),
        "final D_eff/n": [v + (f" ({u} of {k} seeds undefined)" if u else "") for v, u, k in zip(
            _column(c.d_eff_final_over_n, c.d_eff_final_over_n_lo, c.d_eff_final_over_n_hi), c.final_undefined,
            c.seeds, strict=True)],
        "late repeat worth": _column(c.late_worth, c.late_worth_lo, c.late_worth_hi, 2),
        "R* (this n alone)": _column(c.r_star, c.r_star_lo, c.r_star_hi)})


def _law_table(rep: Repetition) -> pd.DataFrame:
    w = rep.laws
    hold = rep.holdouts
    held = {g: "; ".join(f"n={h.n:,.0f}: {h.error:+.0%}" if h.error == h.error else f"n={h.n:,.0f}: —"
                         for h in s.itertuples()) for g, s in hold.groupby("group", sort=False)} if len(hold) else {}
    return pd.DataFrame({
        "group (n varies)": w.group, "seeds": w.seeds, "points": w.points,
        "R* [95%]": _column(w.r_star, w.r_star_lo, w.r_star_hi),
        "half-worth epochs": _column(w.half_worth_epochs, w.half_worth_lo, w.half_worth_hi),
        "ceiling D_eff/n": _column(w.ceiling_over_n, w.ceiling_lo, w.ceiling_hi),
        "residual rms": [num(r, 2) for r in w.residual_rms],
        "held-out final D_eff": [held.get(g, "—") for g in w.group]})


def comparison_sentence(laws: pd.DataFrame) -> str | None:
    """One sentence comparing the groups' R* (e.g. the mCNN's against the MLP's), or None for one group."""
    w = laws.dropna(subset=["r_star"])
    if len(w) < 2:
        return None
    w = w.sort_values("r_star", ascending=False)
    parts = [f"{g}: R* = {v}" for g, v in zip(w.group, _column(w.r_star, w.r_star_lo, w.r_star_hi), strict=True)]
    a, b = w.iloc[0], w.iloc[-1]
    apart = a.r_star_lo == a.r_star_lo and b.r_star_hi == b.r_star_hi and a.r_star_lo > b.r_star_hi
    if math.isinf(a.r_star):
        verdict = f"{a.group}'s repeats showed no saturation in the data, {b.group}'s did"
    else:
        verdict = (f"a repeated pass stays worth half a fresh one until epoch {num(a.half_worth_epochs)} for {a.group}, "
                   f"{num(b.half_worth_epochs)} for {b.group}")
    sure = ("the intervals do not overlap" if apart else
            "the intervals overlap, so this run cannot tell them apart")
    return f"Comparing the fitted laws ({'; '.join(parts)}): {verdict}; {sure}."


def tables_of(rep: Repetition | None) -> dict[str, pd.DataFrame]:
    """The effective-data tables report.py writes beside the report, by file stem (none without effective data)."""
    if rep is None:
        return {}
    return {"effective_data": rep.steps, "repetition_law": rep.laws, "repetition_holdout": rep.holdouts}


def _schedule_note(rep: Repetition) -> list[Block]:
    """A caveat where the learning rate is not constant: D_eff then compares states of the schedule too."""
    column = "optim.schedule"
    schedules = sorted(set(rep.points[column].astype(str))) if column in rep.points else []
    if not schedules or schedules == ["constant"]:
        return []
    return [Block("p", f"The learning rate here follows a {' / '.join(schedules)} schedule over the steps. D_eff "
                       "compares the Real World at one step with the Ideal World at another, where the schedule "
                       "stands elsewhere (e.g. a Real World annealed at its end against an Ideal World still at a "
                       "high rate), so it mixes what the data were worth with what the schedule did; a constant "
                       "learning rate (sweeps/data_repetition.yaml) measures the data alone.")]


def repetition_blocks(rep: Repetition | None, out: Path) -> list[Block]:
    """The section: what D_eff is and on which error, a table per configuration, the law per group, the
    comparison sentence, how it was fitted, plot (h). Empty when no Real World ran past one epoch."""
    if rep is None:
        return []
    words = ERROR_WORDS[rep.error]
    below = int((rep.points.d_eff_status == "below").sum())
    blocks = [
        Block("h2", "Effective data: what an epoch is worth"),
        Block("p", f"D_eff is the number of fresh samples the Ideal World twin (same configuration and seed) needed to "
                   f"reach the {words} a Real World trial had after D = step × batch samples drawn from its n. "
                   "It is read off the Ideal World's running minimum, interpolated in log(samples); D_eff/D = 1 "
                   "means every repeated sample was worth a fresh one. It is undefined (—, and ▲ in plot (h)) where "
                   "the Real World's error is below anything its Ideal World reached in its budget: here at "
                   f"{below} of {len(rep.points)} Real World evaluations. D_eff/D before convergence: the geometric "
                   "mean over the evaluations after the first epoch and the start of learning, up to the Real World's "
                   "convergence (train error < 1%; all evaluations when it never converged). Late repeat worth: "
                   "(D_eff at the end − D_eff at half the samples) / (half the samples), a repeated sample's worth "
                   "in fresh ones over the second half of training. Seed means; brackets: "
                   f"{rep.seeds_note}."),
        *_schedule_note(rep),
        Block("table", _config_table(rep)),
        Block("p", "The data-repetition law (Muennighoff et al. 2023), with U = n and R = D/n − 1 the repeats: "
                   "D′ = U + U·R*·(1 − e^(−R/R*)), so D′/n depends on the epochs alone and saturates at 1 + R*; a "
                   "repeated pass is worth half a fresh one at epoch 1 + R*·ln 2 (half-worth epochs). Fitted per "
                   f"group of configurations that differ only in n, on every seed's evaluations after the first "
                   f"epoch and the start of learning with D_eff defined, by {METHODS[LAW_METHOD]} on "
                   f"log(D_eff/n); R* is searched in [0.01, 10⁴] and reported as ∞ (no saturation seen) beyond "
                   f"{RESOLVED_FACTOR:g}× the repeats in the data, where the law stays within 5% of 'as good as "
                   f"fresh'. Interval: {rep.seeds_note}, each seed's trials at every n resampled together (they "
                   "share one Ideal World twin). Held out: the law fitted without that n predicts its final D_eff "
                   "(relative error against the seed mean)."),
        Block("table", _law_table(rep))]
    sentence = comparison_sentence(rep.laws)
    if sentence:
        blocks.append(Block("p", sentence))
    blocks.append(Block("image", plot_effective_data(rep.steps, rep.laws, rep.points, out, words),
                        "(h) D_eff/n against epochs, seed means with 95% bootstrap intervals; dashed: y = epochs "
                        "(repeats as good as fresh); black: the law fitted over every n, dotted: its ceiling "
                        "1 + R*; ▲: a seed's Real World beat everything its Ideal World reached (D_eff undefined). "
                        "Below: the law's residuals."))
    return blocks
