"""The report's sentences: what the tables of tables.py and size.py say, in plain language, and which
trials each number is taken over where that is not all of them (worlds.py's rule). Strings only: no
computing beyond formatting and counting, no files."""

from __future__ import annotations

import time

import pandas as pd
from twoworlds.results.analysis import X_AXES, fmt_pm
from twoworlds.results.formats import PCT_DIGITS, points
from twoworlds.results.formats import pct as _pct
from twoworlds.results.size import SizeCurve, SizeGroup, study_n_and_classes
from twoworlds.results.tables import Analysis
from twoworlds.results.worlds import kind_of

_WHOSE = {"real": "Real World trials", "ideal": "Ideal World trials", "pair": "Real/Ideal pairs"}


def _seeds(df: pd.DataFrame) -> str:
    return ", ".join(str(s) for s in sorted(df.seed))


def _unpaired(a: Analysis, table: pd.DataFrame, paired: pd.Series) -> str:
    """'width=32 (seeds 0, 1), width=64 (seed 0)': the configurations of the trials without a twin, in the
    order of the configurations table."""
    alone = table[~paired]
    order = {cfg: i for i, cfg in enumerate(a.configs.configuration)} if len(a.configs) else {}
    groups = sorted(alone.groupby("configuration", sort=False), key=lambda g: order.get(g[0], len(order)))
    return ", ".join(f"{cfg} (seed{'s' if len(g) > 1 else ''} {_seeds(g)})" for cfg, g in groups)


def pairing(a: Analysis) -> str:
    """Which trials the pair quantities use, when not every trial has a twin ('' when all do)."""
    w = a.worlds
    real_alone = w.real.twin.isna() if len(w.real) else pd.Series(dtype=bool)
    ideal_alone = ~w.ideal.paired.astype(bool) if len(w.ideal) else pd.Series(dtype=bool)
    if not real_alone.any() and not ideal_alone.any():
        return ""
    text = (f"{len(w.pairs)} of {len(w.real)} Real World trials have an Ideal World twin (same configuration and "
            f"seed): the bootstrap error is measured on those {len(w.pairs)} pairs, every other number on all the "
            "trials of its world.")
    if real_alone.any():
        text += f" Real World trials without a twin: {_unpaired(a, w.real, ~real_alone)}."
    if ideal_alone.any():
        text += f" Ideal World trials without a twin: {_unpaired(a, w.ideal, ~ideal_alone)}."
    return text


def intro(a: Analysis) -> str:
    t, w = a.study.trials, a.worlds
    counts = ", ".join(f"{n} {s}" for s, n in t.status.value_counts().sort_index().items())
    text = f"{len(t)} trials ({counts}) in {a.study.path}, reported {time.strftime('%Y-%m-%d %H:%M')}. "
    text += pairing(a) or f"{len(w.pairs)} Real World trials have an Ideal World twin (same configuration and seed)."
    rowless = sorted(set(t.trial) - set(a.study.curves.trial))
    if rowless:
        text += f" Without logged rows (in the trial table only): {', '.join(rowless)}."
    if len(w.ideal):
        text += (f" Optimization speed is the number of steps the Ideal World needs to reach a test soft error "
                 f"of {a.target:.0%}")
        text += f"; plot (d) compares the worlds at {X_AXES[a.x].budget.format(a.budget)}." if len(w.real) else "."
    return text


# ---------------------------------------------------------------- findings

def _converged_words(rd: pd.Series, threshold: float, steps: int, seeds: int) -> tuple[bool, str]:
    """(converged in every seed, 'at step 240 ± 12' or 'within 2,000 steps in 1 of 2 seeds')."""
    if rd["converged_seeds"] == seeds:
        return True, f"at step {fmt_pm(rd['converged_at_mean'], rd['converged_at_std'], seeds, scale=1, digits=0, unit='')}"
    partly = f" in {seeds - int(rd['converged_seeds'])} of {seeds} seeds" if rd["converged_seeds"] else ""
    return False, f"within {steps:,} steps{partly}"


def _one_world_sentence(rd: pd.Series, prefix: str, threshold: float, steps: int) -> str:
    """A configuration without pairs: what its one world did."""
    real, ideal = int(rd["real_seeds"]), int(rd["ideal_seeds"])
    if not real:
        final = fmt_pm(rd["ideal_final_mean"], rd["ideal_final_std"], ideal, digits=PCT_DIGITS)
        return f"{prefix}only the Ideal World ran ({ideal} seed{'s' if ideal > 1 else ''}): final test soft error {final}"
    seeds_txt = f" ({real} seeds)" if real > 1 else ""
    converged, words = _converged_words(rd, threshold, steps, real)
    did = f"converged (train error < {threshold:.0%}) {words}" if converged else \
        f"did not reach {threshold:.0%} train error {words}"
    return f"{prefix}the Real World {did}{seeds_txt}; it has no Ideal World twin, so no bootstrap error"


def _configuration_sentence(rd: pd.Series, family, threshold: float, steps: int) -> str:
    words = [w for w in rd["configuration"].split() if w != str(family)]
    prefix = f"with {' '.join(words)}, " if words and words != ["all"] else ""
    seeds, real = int(rd["seeds"]), int(rd["real_seeds"])
    if not seeds:
        return _one_world_sentence(rd, prefix, threshold, steps)
    seeds_txt = f" ({seeds} seeds)" if seeds > 1 else ""
    if real != seeds:
        seeds_txt = f" ({real} seeds; the bootstrap error over the {seeds} with an Ideal World twin)"
    before = fmt_pm(rd["max_gap_before_mean"], rd["max_gap_before_std"], seeds, digits=PCT_DIGITS)
    if rd.get("curve_mean_gap_before") == rd.get("curve_mean_gap_before"):  # not NaN
        before += f" (on average {_pct(rd['curve_mean_gap_before'])})"
    final = fmt_pm(rd["gap_final_mean"], rd["gap_final_std"], seeds, digits=PCT_DIGITS, sign=True)
    converged, words = _converged_words(rd, threshold, steps, real)
    if converged:
        return (f"{prefix}the |bootstrap error| was at most {before} until the Real World converged (train error "
                f"< {threshold:.0%}) {words}{seeds_txt}, and was {final} at the last step")
    return (f"{prefix}the Real World did not reach {threshold:.0%} train error {words}; "
            f"the |bootstrap error| was at most {before} throughout{seeds_txt} and was {final} at the last step")


def statements(a: Analysis) -> list[str]:
    """One sentence per family: per configuration, how long the two worlds agreed, and how closely (or,
    without a twin, what its one world did)."""
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
    n, classes = study_n_and_classes(a)
    nk = f"; n × classes = {n * classes:,}" if n and classes else ""
    per = f", {g.parameters / n:.1f} per training sample" if n else ""
    return (f"the interpolation threshold (the smallest width whose Real World fits its training labels, "
            f"final train error < {a.threshold:.0%} in every seed) is width {g.threshold:g} ({g.parameters:,.0f} "
            f"parameters{per}{nk})")


def _widths(widths) -> str:
    return ", ".join(f"{w:g}" for w in widths)


def _peak_words(g: SizeGroup, c: SizeCurve) -> str:
    what = _SIZE_WHAT[c.column]
    if not c.complete:
        what += f" (at the {len(c.widths)} widths with {_WHOSE[kind_of(c.column)]}: {_widths(c.widths)})"
    if c.peak is None:
        missing = [w for w, v in zip(c.widths, c.values, strict=True) if v != v]
        why = f"no value at width {_widths(missing)}" if missing else f"{len(c.widths)} widths are too few"
        return f"{what}: {why}, so no peak is sought"
    p, v, w = c.peak, c.values, g.threshold
    at = c.widths[p.at]
    if p.height <= 0:
        return (f"{what} has no interior peak (the closest, width {at:g} at {_pct(v[p.at])}, is "
                f"{points(v[p.at] - v[p.low])} from the best smaller width ({c.widths[p.low]:g}) and "
                f"{100 * (v[p.at] - v[-1]):+.1f} from the largest)")
    rel = "" if w is None else (" (at the threshold)" if at == w else f" ({'below' if at < w else 'above'} the threshold)")
    return (f"{what} peaks at width {at:g}{rel}: {_pct(v[p.at])}, "
            f"{100 * (v[p.at] - v[p.low]):.1f} points above the best smaller width ({c.widths[p.low]:g}) "
            f"and {100 * (v[p.at] - v[-1]):.1f} above the largest")


def size_sentences(a: Analysis, groups: list[SizeGroup]) -> list[str]:
    """Per group: where the Real World starts to interpolate, and where each error curve peaks."""
    sentences = []
    for g in groups:
        words = [_threshold_words(a, g)] + [_peak_words(g, c) for c in g.curves.values()]
        body = "; ".join(words) + "."
        sentences.append(body[0].upper() + body[1:] if g.name == "all" else f"{g.name}: {body}")
    return sentences
