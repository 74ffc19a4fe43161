"""The report's sentences: what the tables of tables.py say, in plain language. Strings only: no
computing beyond formatting, no files."""

from __future__ import annotations

import time

import pandas as pd
from twoworlds.results.analysis import X_AXES, fmt_pm
from twoworlds.results.formats import PCT_DIGITS
from twoworlds.results.formats import pct as _pct
from twoworlds.results.tables import Analysis, SizeGroup, study_n_and_classes


def intro(a: Analysis) -> str:
    t = a.study.trials
    counts = ", ".join(f"{n} {s}" for s, n in t.status.value_counts().sort_index().items())
    text = (f"{len(t)} trials ({counts}) in {a.study.path}, reported {time.strftime('%Y-%m-%d %H:%M')}. "
            f"{len(a.pairs)} Real World trials have an Ideal World twin (same configuration and seed).")
    if len(a.pairs):
        text += (f" Optimization speed is the number of steps the Ideal World needs to reach a test soft error "
                 f"of {a.target:.0%}; plot (d) compares the worlds at {X_AXES[a.x].budget.format(a.budget)}.")
    return text


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
    if "model.name" in a.configs:
        families = list(a.configs.groupby("model.name", sort=False))
    else:
        families = [(trials["model.name"].iloc[0] if "model.name" in trials else "model", a.configs)]
    out = []
    for family, sub in families:
        parts = [_configuration_sentence(rd, family, a.threshold, a.steps) for _, rd in sub.iterrows()]
        out.append(f"For the {str(family).upper()}: " + "; ".join(parts) + ".")
    return out


# ---------------------------------------------------------------- model size

_SIZE_WHAT = {"real_final_error": "the Real World's final test 0/1 error",
              "gap_final_error": "the bootstrap error (0/1, last step)",
              "ideal_final_error": "the Ideal World's final test 0/1 error"}


def _threshold_words(a: Analysis, g: SizeGroup) -> str:
    if g.threshold is None:
        return f"no width fitted its training labels (final train error < {a.threshold:.0%} in every seed)"
    n, classes = study_n_and_classes(a.study)
    nk = f"; n × classes = {n * classes:,}" if n and classes else ""
    per = f", {g.parameters / n:.1f} per training sample" if n else ""
    return (f"the interpolation threshold (the smallest width whose Real World fits its training labels, "
            f"final train error < {a.threshold:.0%} in every seed) is width {g.threshold:g} ({g.parameters:,.0f} "
            f"parameters{per}{nk})")


def _peak_words(g: SizeGroup, column: str) -> str:
    s, p, w = g.table, g.peaks[column], g.threshold
    v = s[f"{column}_mean"].to_numpy()
    at = s.width.iloc[p.at]
    what = _SIZE_WHAT[column]
    if p.height <= 0:
        return f"{what} has no interior peak (highest {_pct(v[p.at])} at width {at:g} is not above both sides)"
    rel = "" if w is None else (" (at the threshold)" if at == w else f" ({'below' if at < w else 'above'} the threshold)")
    return (f"{what} peaks at width {at:g}{rel}: {_pct(v[p.at])}, "
            f"{100 * (v[p.at] - v[p.low]):.1f} points above the best smaller width ({s.width.iloc[p.low]:g}) "
            f"and {100 * (v[p.at] - v[-1]):.1f} above the largest")


def size_sentences(a: Analysis, groups: list[SizeGroup]) -> list[str]:
    """Per group: where the Real World starts to interpolate, and where each error curve peaks."""
    sentences = []
    for g in groups:
        words = [_threshold_words(a, g)] + [_peak_words(g, column) for column in g.peaks]
        body = "; ".join(words) + "."
        sentences.append(body[0].upper() + body[1:] if g.name == "all" else f"{g.name}: {body}")
    return sentences
