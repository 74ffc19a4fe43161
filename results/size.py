"""Model size (double descent): in a study whose width varies, per group of the other keys, the
interpolation threshold (the smallest width whose Real World fits its n training labels in every seed)
and the peak of each final-error curve against width. Numbers only: narrate.py words them.

Each curve is taken over the widths where its trials exist: the Real World's over every width it ran,
the Ideal World's over its own, the bootstrap error's over the widths with Real/Ideal pairs (worlds.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from twoworlds.results.analysis import label
from twoworlds.results.scores import Peak, find_peak
from twoworlds.results.tables import Analysis
from twoworlds.results.worlds import COUNTS, kind_of

SIZE_CURVES = ("real_final_error", "gap_final_error", "ideal_final_error")  # the curves whose peak is sought


@dataclass
class SizeCurve:
    """One final-error curve against width, over the widths that have trials of its kind."""

    column: str
    widths: list[float]  # the widths with trials of the curve's kind (all of the group's when `complete`)
    values: np.ndarray  # its means over seeds, at `widths`
    peak: Peak | None  # None: fewer than 3 widths, or a width whose value is missing
    complete: bool  # every width of the group has it


@dataclass
class SizeGroup:
    """One group of configurations (the same values of every key but the width) and what its curves show."""

    name: str  # the other keys' label ('all' when the width is the only key)
    table: pd.DataFrame  # its rows of the size table, by width
    threshold: float | None  # the interpolation threshold: the smallest width that fits in every seed
    parameters: float | None  # the model's parameters at the threshold
    curves: dict[str, SizeCurve] = field(default_factory=dict)  # per column of SIZE_CURVES that has values


def size_table(a: Analysis) -> tuple[pd.DataFrame, dict]:
    """One row per configuration of a study whose width varies, with `group` (the other keys' label),
    `width`, `fits` (its Real World fits its n samples: final train 0/1 error < the convergence threshold
    in every Real World seed) and `paired` (every Real World seed has an Ideal World twin); and per group,
    the interpolation threshold, the smallest width that fits. Only groups with at least 3 widths (a zoo's
    one or two widths per family say nothing about model size): empty without."""
    c, w = a.configs, a.worlds
    if "model.width" not in a.keys or c["model.width"].nunique() < 3:
        return pd.DataFrame(), {}
    others = [k for k in a.keys if k != "model.width"]
    groups = [label({k: r[k] for k in others if r[k] == r[k]}) for r in c.to_dict("records")] if others else "all"
    t = c.assign(width=pd.to_numeric(c["model.width"]), group=groups)
    per_seed = w.real.assign(fit=w.real.real_final_train_error < a.threshold).groupby("configuration").fit.all() \
        if len(w.real) else pd.Series(dtype=bool)
    t["fits"] = [bool(per_seed.get(cfg, False)) for cfg in t.configuration]
    t["paired"] = t.seeds >= t.real_seeds
    t = t[t.groupby("group").width.transform("nunique") >= 3].sort_values(["group", "width"], kind="stable")
    if not len(t):
        return pd.DataFrame(), {}
    thresholds = {g: (float(s.width[s.fits].min()) if s.fits.any() else None) for g, s in t.groupby("group", sort=False)}
    return t, thresholds


def _curve(s: pd.DataFrame, column: str) -> SizeCurve | None:
    """The curve of `column` over the group's widths that have trials of its kind (None: no such width)."""
    has = s[s[COUNTS[kind_of(column)]] > 0]
    if not len(has) or has[f"{column}_mean"].isna().all():  # not logged by these runs
        return None
    v = has[f"{column}_mean"].to_numpy(float)
    peak = find_peak(v) if np.isfinite(v).all() else None
    return SizeCurve(column, list(has.width), v, peak, len(has) == len(s))


def size_groups(a: Analysis) -> list[SizeGroup]:
    """The model-size findings of each group of size_table: its threshold and each curve's peak."""
    t, thresholds = size_table(a)
    out = []
    for g, s in (t.groupby("group", sort=False) if len(t) else []):
        w = thresholds[g]
        group = SizeGroup(g, s, w, None if w is None else float(s.num_parameters_mean[s.width == w].iloc[0]))
        for column in SIZE_CURVES:
            curve = _curve(s, column)
            if curve is not None:
                group.curves[column] = curve
        out.append(group)
    return out


def study_n_and_classes(a: Analysis) -> tuple[int | None, int | None]:
    """The Real World's n (when every Real World trial has the same) and the number of classes."""
    real = a.study.trials[a.study.trials.world == "real"]
    n = int(real.n.dropna().iloc[0]) if "n" in real and real.n.notna().any() and real.n.nunique() == 1 else None
    classes = int(real.num_classes.dropna().iloc[0]) if real.num_classes.notna().any() else None
    return n, classes
