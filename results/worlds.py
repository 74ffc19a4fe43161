"""A study's trials world by world, and which of them pair up.

The rule of the report (issue 24): a quantity of one world uses every trial of that world that logged
rows, twin or not (the Real World's errors, convergence and interpolation threshold; the Ideal World's
curves, speed and power laws; the weight movement of either); a quantity of the pair (the bootstrap
error, the predictor) uses the pairs only. So a study is held as three tables:

    real:  one row per Real World trial with rows: its configuration, seed, twin (or None) and
           analysis.real_stats
    ideal: one row per Ideal World trial with rows: its Ideal World configuration (the keys without
           n), seed, whether a Real World trial pairs with it, and analysis.ideal_stats
    pairs: one row per Real World trial with an Ideal World twin (same pair key: same config and
           seed, other world): analysis.PairStats

Configurations are told apart by every config key that varies between these trials (`keys`), so
trials of different configs are never averaged together. Labels stay short: they show the keys that
vary between paired trials, and another key only where a configuration's value differs from the one
the paired trials share (a one-off run in the study directory: 'mlp lr=1000000.0 n=64').
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from twoworlds.results.aggregate import Study, StudyError
from twoworlds.results.analysis import (
    CONVERGED_BELOW,
    configuration_keys,
    ideal_stats,
    independent_keys,
    label,
    pair_stats,
    real_stats,
    same,
)

# The columns of each kind, as aggregated over seeds into a configuration (tables.configurations).
# `converged_or_budget`: the convergence step, or the trial's step budget where it never converged (claims)
REAL_COLUMNS = ["converged_at", "converged_or_budget", "real_final", "real_final_error", "real_final_train_error",
                "real_weight_movement"]
IDEAL_COLUMNS = ["ideal_final", "ideal_final_error", "ideal_weight_movement", "ideal_steps_to_target",
                 "ideal_at_budget"]
# `paired_real_final`: the Real World's final test soft error over the paired seeds only (the predictor's truth)
PAIR_COLUMNS = ["max_gap_before", "mean_gap_before", "gap_at_convergence", "gap_final", "ideal_at_convergence",
                "gap_final_error", "paired_real_final"]
# The count behind each kind's mean ± std: Real World trials, Ideal World trials, pairs.
COUNTS = {"real": "real_seeds", "ideal": "ideal_seeds", "pair": "seeds"}


def kind_of(column: str) -> str:
    """'real', 'ideal' or 'pair': whose trials a configuration column is taken over."""
    for kind, columns in (("real", REAL_COLUMNS), ("ideal", IDEAL_COLUMNS), ("pair", PAIR_COLUMNS)):
        if column in columns:
            return kind
    if column.startswith("curve_"):
        return "pair"
    raise KeyError(f"{column}: not a configuration column")


@dataclass
class Worlds:
    keys: list[str]  # every key that varies between the trials with rows (world and seed aside; n between Real ones)
    shown: list[str]  # the keys a configuration's label always shows
    ideal_shown: list[str]  # the keys an Ideal World configuration's label always shows
    common: dict  # the value the paired trials share of each key outside `shown` (none without pairs)
    real: pd.DataFrame
    ideal: pd.DataFrame
    pairs: pd.DataFrame

    @property
    def ideal_keys(self) -> list[str]:
        return [k for k in self.keys if k != "n"]

    def label(self, values: dict, ideal: bool = False) -> str:
        """The configuration's label: the shown keys, then any other key whose value differs from the paired
        trials' (`ideal`: an Ideal World configuration's, without n)."""
        shown = self.ideal_shown if ideal else self.shown
        return label({k: values[k] for k in self.keys if k in values and (
            k in shown or (k in self.common and not same(values[k], self.common[k])))})

    def of_seeds(self, seeds) -> Worlds:
        """The same study restricted to `seeds` (a list; a seed listed twice counts twice: a bootstrap resample)."""
        pick = lambda df: pd.concat([df[df.seed == s] for s in seeds], ignore_index=True) if len(df) else df  # noqa: E731
        return Worlds(self.keys, self.shown, self.ideal_shown, self.common, pick(self.real), pick(self.ideal),
                      pick(self.pairs))


# Keys left out of the pair key (launch/config.py, _NOT_IN_PAIR_KEY): how a trial is evaluated or where it
# runs. Trials that differ only in them train the same thing, so they are one configuration, never two.
_NOT_COMPARED = ("eval.", "device")


def _varies(key: str, real: pd.DataFrame, both: pd.DataFrame) -> bool:
    """Whether `key` takes two values or more: n between Real World trials only (the Ideal World has none)."""
    rows = real if key == "n" else both
    return key in rows and rows[key].astype(str).nunique() > 1


def _keys(study: Study, real: pd.DataFrame, both: pd.DataFrame, paired: pd.DataFrame, paired_real: pd.DataFrame):
    """(keys, shown, ideal_shown, common): see Worlds."""
    keys = configuration_keys([k for k in study.varying if _varies(k, real, both) and not k.startswith(_NOT_COMPARED)])
    if not len(paired):
        return keys, independent_keys(keys, real if len(real) else both), [k for k in keys if k != "n"], {}
    compared = [k for k in keys if _varies(k, paired_real, paired)]
    shown = independent_keys(compared, real)  # labels skip keys tied to another (width to family)
    common = {k: (paired_real if k == "n" else paired)[k].iloc[0] for k in keys if k not in compared}
    return keys, shown, [k for k in compared if k != "n"], common


def split_worlds(study: Study, threshold: float = CONVERGED_BELOW) -> Worlds:
    """The real, ideal and pairs tables of a study (see the module docstring)."""
    curves = {t: c.sort_values("step") for t, c in study.curves.groupby("trial", sort=False)}
    both = study.trials[study.trials.trial.isin(curves)]
    real, ideal = both[both.world == "real"], both[both.world == "ideal"]
    twin_of = dict(zip(ideal.pair_key, ideal.trial, strict=True))
    paired_real = real[real.pair_key.isin(twin_of)]
    paired = both[both.trial.isin(paired_real.trial) | both.trial.isin([twin_of[k] for k in paired_real.pair_key])]
    w = Worlds(*_keys(study, real, both, paired, paired_real), pd.DataFrame(), pd.DataFrame(), pd.DataFrame())
    w.real = pd.DataFrame([_real_row(w, r, curves[r["trial"]], twin_of.get(r["pair_key"]), threshold)
                           for r in real.to_dict("records")])
    twinned = set(paired_real.pair_key)
    w.ideal = pd.DataFrame([_ideal_row(w, r, curves[r["trial"]], r["pair_key"] in twinned)
                            for r in ideal.to_dict("records")])
    rows = [_pair_row(w, r, curves[r["trial"]], curves[r["twin"]], study, threshold)
            for r in w.real.to_dict("records") if isinstance(r["twin"], str)]
    w.pairs = pd.DataFrame(rows)
    if len(rows):
        w.pairs = w.pairs.sort_values([*w.keys, "seed"], kind="stable", ignore_index=True)
    for world, table in (("Real", w.real), ("Ideal", w.ideal)):
        _refuse_twice(world, table)
    return w


def _refuse_twice(world: str, table: pd.DataFrame) -> None:
    """Two trials of one world with the same configuration and seed (a copy under another name) would count
    as two seeds: refused, naming them."""
    if not len(table):
        return
    twice = table[table.duplicated(["configuration", "seed"], keep=False)]
    if len(twice):
        first = twice[twice.configuration == twice.configuration.iloc[0]]
        raise StudyError(f"{world} World trials {', '.join(first.trial)} have the same configuration "
                         f"({first.configuration.iloc[0]}) and seed: they would count as two seeds; move all "
                         "but one out of the study directory")


def _base(w: Worlds, r: dict, keys: list[str]) -> dict:
    values = {k: r[k] for k in keys}
    return {"trial": r["trial"], "seed": r["seed"], "status": r["status"], "pair_key": r["pair_key"],
            "ideal_configuration": w.label(values, ideal=True), **values}


def _real_row(w: Worlds, r: dict, curve: pd.DataFrame, twin: str | None, threshold: float) -> dict:
    values, stats = {k: r[k] for k in w.keys}, real_stats(curve, threshold)
    budget = stats["converged_at"] if stats["converged_at"] is not None else _number(r.get("steps"))
    return {**_base(w, r, w.keys), "configuration": w.label(values), "twin": twin, **stats,
            "converged_or_budget": float(budget), "num_parameters": _number(r.get("num_parameters")),
            "stopped_early_at": r.get("stopped_early_at")}


def _ideal_row(w: Worlds, r: dict, curve: pd.DataFrame, paired: bool) -> dict:
    base = _base(w, r, w.ideal_keys)
    return {**base, "configuration": w.label({k: r[k] for k in w.ideal_keys}), "paired": paired,
            **ideal_stats(curve), "num_parameters": _number(r.get("num_parameters"))}


def _pair_row(w: Worlds, real: dict, rc: pd.DataFrame, ic: pd.DataFrame, study: Study, threshold: float) -> dict:
    stats = vars(pair_stats(rc, ic, threshold))
    twin_status = study.trials.loc[study.trials.trial == real["twin"], "status"].iloc[0]
    return {"real": real["trial"], "ideal": real["twin"], "pair_key": real["pair_key"], "seed": real["seed"],
            "configuration": real["configuration"], **{k: real[k] for k in w.keys}, **stats,
            "paired_real_final": stats["real_final"], "num_parameters": real["num_parameters"],
            "stopped_early_at": real["stopped_early_at"], "real_status": real["status"], "ideal_status": twin_status}


def _number(v) -> float:
    return float(v) if v is not None and v == v else float("nan")
