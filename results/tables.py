"""The report's numbers: a study's configurations (seed means of each world's trials and of the pairs),
the defaults of plot (d), the Ideal World's power laws, the effective data (repetition.py) and the claims'
verdicts, computed once into an `Analysis` (worlds.py says which trials each number is taken over). No
sentences, no plots, no files: narrate.py words these tables, sections.py and plots.py render them,
report.py writes them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from twoworlds.results.aggregate import Study, StudyError
from twoworlds.results.analysis import (
    CONVERGED_BELOW,
    TEST_SOFT,
    TRAIN_ERR,
    X_AXES,
    PairStats,
    mean_std,
    pair_stats,
    steps_to_target,
    value_at,
)
from twoworlds.results.claim_spec import REPETITION_KINDS
from twoworlds.results.claims import Verdict, check_claims
from twoworlds.results.fits import power_law_row
from twoworlds.results.repetition import Repetition, analyse_repetition, claim_columns, repetition_error
from twoworlds.results.worlds import COUNTS, IDEAL_COLUMNS, PAIR_COLUMNS, REAL_COLUMNS, Worlds, split_worlds


@dataclass
class Analysis:
    study: Study
    worlds: Worlds  # the trials of each world with rows, and the pairs
    configs: pd.DataFrame  # one row per configuration: seed means and stds, each column over its own trials
    fits: pd.DataFrame  # power laws of Ideal World test soft error against samples seen (fits.power_law_row)
    target: float  # Ideal World test soft error whose first crossing measures optimization speed
    budget: float  # plot (d)'s fixed budget, in the unit of `x`: a step, a sample count, FLOPs or seconds
    threshold: float = CONVERGED_BELOW
    x: str = "steps"  # a key of X_AXES: the x-axis of plots (a) and (d)
    steps: int = 0  # the largest step any trial reached (the budget of the sentences)
    verdicts: list[Verdict] = field(default_factory=list)  # the sweep file's claims, checked on this run
    repetition: Repetition | None = None  # effective data; None without a Real World evaluation past one epoch

    @property
    def keys(self) -> list[str]:
        """The configuration keys: every config key that varies, except the world and the seed."""
        return self.worlds.keys

    @property
    def pairs(self) -> pd.DataFrame:
        """One row per Real World trial with its Ideal World twin."""
        return self.worlds.pairs

    def trials_of(self, configuration: str) -> tuple[list[str], list[str]]:
        """The Real and Ideal World trials behind a configuration's one-world columns."""
        w, row = self.worlds, self.configs[self.configs.configuration == configuration].iloc[0]
        real = list(w.real.trial[w.real.configuration == configuration]) if len(w.real) else []
        ideal = list(w.ideal.trial[w.ideal.ideal_configuration == row.ideal_configuration]) if len(w.ideal) else []
        return real, ideal


def _default_target(ideal_final: pd.Series) -> float:
    """The loosest target every Ideal World trial reaches: the worst final Ideal World test soft error of any
    seed, rounded up to the next percent (a configuration's mean would leave its worse seed short of it)."""
    return math.ceil(ideal_final.max() * 100 - 1e-9) / 100 if len(ideal_final) else float("nan")


def _default_step_budget(real: pd.DataFrame, curves: pd.DataFrame) -> int:
    """The median step at which the Real Worlds converged, snapped to an evaluation step (the last
    step when none converged): where the paper compares the two worlds."""
    steps = np.sort(curves.step.unique())
    conv = real.converged_at.dropna() if len(real) else pd.Series(dtype=float)
    if not len(conv) or not len(steps):
        return int(steps[-1]) if len(steps) else 0
    return int(steps[np.abs(np.log(steps.clip(1)) - math.log(max(1.0, conv.median()))).argmin()])


def _default_budget_in(w: Worlds, curves: pd.DataFrame, column: str) -> float:
    """Plot (d)'s budget in samples, FLOPs or seconds: the median of the Real Worlds' `column` at
    their convergence (the last Ideal World evaluation reached by all when none converged), moved
    into the range every Ideal World curve covers, when there is one. Models whose costs differ a
    lot may share no FLOP range: those without a value at the budget are named in plot (d)."""
    ideal = curves[curves.trial.isin(w.ideal.trial if len(w.ideal) else [])].groupby("trial")[column]
    first, last = ideal.min().max(), ideal.max().min()  # the range all Ideal World curves cover
    conv = w.real.dropna(subset=["converged_at"]) if len(w.real) else w.real
    at = [curves.loc[(curves.trial == r.trial) & (curves.step == r.converged_at), column].iloc[0]
          for r in conv.itertuples()]
    budget = float(np.median(at)) if at else float(last)
    return float(np.clip(budget, first, last)) if first <= last else budget


def _check_x(curves: pd.DataFrame, x: str) -> str:
    """The curves column of `x`, refused where a trial with rows lacks it (runs from before FLOP accounting)."""
    if x not in X_AXES:
        raise StudyError(f"--x {x}: unknown x-axis; use one of {', '.join(X_AXES)}")
    column = X_AXES[x].column
    lacking = sorted(curves.trial[curves[column].isna()].unique()) if column in curves else sorted(curves.trial.unique())
    if lacking:
        raise StudyError(f"--x {x}: trials {', '.join(lacking)} have no '{column}' values in metrics.csv (written "
                         "by runs since FLOP accounting); re-run them, or use --x steps")
    return column


def analyse(study: Study, target: float | None = None, budget: float | None = None,
            threshold: float = CONVERGED_BELOW, x: str = "steps") -> Analysis:
    """`budget`: plot (d)'s budget in the unit of `x` (default: where the Real Worlds converge)."""
    w = split_worlds(study, threshold)
    curves, trials = study.curves, study.trials
    steps = int(trials.steps_done.max()) if trials.steps_done.notna().any() else 0
    column = _check_x(curves, x)
    curve_of = {t: c.sort_values("step") for t, c in curves.groupby("trial", sort=False)}
    if len(w.ideal):
        if target is None:
            target = _default_target(w.ideal.ideal_final)
        if budget is None:
            budget = _default_step_budget(w.real, curves) if x == "steps" else _default_budget_in(w, curves, column)
        reached = [steps_to_target(curve_of[t].step, curve_of[t][TEST_SOFT], target) for t in w.ideal.trial]
        w.ideal["ideal_steps_to_target"] = [float("nan") if s is None else float(s) for s in reached]
        w.ideal["ideal_at_budget"] = [value_at(curve_of[t][column], curve_of[t][TEST_SOFT], budget) for t in w.ideal.trial]
    if len(w.pairs):  # pairs.csv keeps the twin's own numbers beside the pair's
        for col in ("ideal_steps_to_target", "ideal_at_budget"):
            w.pairs[col] = w.pairs.ideal.map(dict(zip(w.ideal.trial, w.ideal[col], strict=True)))
    claims = study.manifest.get("claims") or []
    effective = _effective_data(curves, repetition_error(claims))
    rep = effective(w)
    configs = _with_columns(configurations(w, curve_of, threshold), claim_columns(rep))
    needs_d_eff = any(isinstance(c, dict) and c.get("kind") in REPETITION_KINDS for c in claims)
    verdicts = _verdicts(claims, w, trials, configs, curve_of, threshold, effective if needs_d_eff else None)
    return Analysis(study, w, configs, _fits(w, curve_of), float("nan") if target is None else target,
                    0 if budget is None else budget, threshold, x, steps, verdicts, rep)


def _effective_data(curves: pd.DataFrame, error: str):
    """Worlds -> the effective data of its Real World trials (None without any; repetition.py). `curves` carry
    the D_eff columns (repetition.with_effective_data, which report.py adds before writing curves.csv)."""
    def effective(w: Worlds) -> Repetition | None:
        real = w.real.sort_values([*w.keys, "seed"], kind="stable") if len(w.real) else w.real  # the report's order
        return analyse_repetition(real, curves, error)
    return effective


def _with_columns(configs: pd.DataFrame, columns: pd.DataFrame) -> pd.DataFrame:
    """The configurations table with per-configuration columns joined in (NaN where it has none)."""
    return configs.join(columns, on="configuration") if len(columns) and len(configs) else configs


def _verdicts(claims: list, w: Worlds, trials: pd.DataFrame, configs: pd.DataFrame, curve_of: dict,
              threshold: float, effective=None) -> list[Verdict]:
    """The claims checked on the study, then on each seed's trials alone (verdicts.py: the seed spread).
    `effective`: Worlds -> its effective data, for the effective-data claims of each seed alone."""
    verdicts = check_claims(claims, trials, configs, w.keys, w.label)
    seeds = sorted(set(w.real.seed if len(w.real) else []) | set(w.ideal.seed if len(w.ideal) else []))
    if len(seeds) < 2 or not verdicts:
        return verdicts
    for s in seeds:
        seed_worlds = w.of_seeds([s])
        table = configurations(seed_worlds, curve_of, threshold)
        if effective is not None:
            table = _with_columns(table, claim_columns(effective(seed_worlds)))
        alone = check_claims(claims, trials[trials.seed == s], table, w.keys, w.label, alone=True)
        for v, one in zip(verdicts, alone, strict=True):
            v.seeds[s] = one
    return verdicts


def _by(table: pd.DataFrame, by: list[str], columns: list[str], kind: str) -> pd.DataFrame | None:
    """Seed means and stds of one kind's `columns` per group, with the count named for the kind (COUNTS)."""
    if not len(table):
        return None
    return mean_std(table, by, [c for c in columns if c in table]).rename(columns={"seeds": COUNTS[kind]})


def configurations(w: Worlds, curve_of: dict, threshold: float) -> pd.DataFrame:
    """One row per configuration of either world: the Real World columns over its Real World trials, the Ideal
    World columns over the Ideal World trials of the same configuration but n, the bootstrap-error columns over
    its pairs; each with its count (real_seeds, ideal_seeds, seeds)."""
    real = _by(w.real, ["configuration", "ideal_configuration", *w.keys], [*REAL_COLUMNS, "num_parameters"], "real")
    ideal = _by(w.ideal, ["ideal_configuration", "configuration", *w.ideal_keys], [*IDEAL_COLUMNS, "num_parameters"],
                "ideal")
    if real is None and ideal is None:
        return pd.DataFrame()
    if real is not None:
        real["converged_seeds"] = w.real.groupby("configuration").converged_at.count().reindex(real.configuration).values
    configs = _join_worlds(real, ideal, w)
    pairs = _by(w.pairs, ["configuration"], PAIR_COLUMNS, "pair")
    if pairs is not None:
        configs = configs.merge(pairs, on="configuration", how="left").merge(
            _averaged_curve_stats(w.pairs, curve_of, threshold), on="configuration", how="left")
    for count in (*COUNTS.values(), "converged_seeds"):
        configs[count] = (configs[count].fillna(0) if count in configs else 0)
        configs[count] = configs[count].astype(int)
    absent = [f"{c}_{stat}" for c in (*REAL_COLUMNS, *IDEAL_COLUMNS, *PAIR_COLUMNS) for stat in ("mean", "std")] + \
        [f"curve_{f}" for f in PairStats.__dataclass_fields__]
    configs = configs.assign(**{c: float("nan") for c in absent if c not in configs})  # a world without trials
    return configs.sort_values(w.keys, kind="stable", na_position="last", ignore_index=True) if w.keys else configs


def _join_worlds(real: pd.DataFrame | None, ideal: pd.DataFrame | None, w: Worlds) -> pd.DataFrame:
    """The Real World's configurations with their Ideal World columns, then the Ideal World's configurations
    that no Real World trial shares (their Real World columns empty)."""
    if real is None:
        return ideal
    if ideal is None:
        return real
    columns = [c for c in ideal if c not in ("configuration", *w.ideal_keys)]
    configs = real.merge(ideal[columns], on="ideal_configuration", how="left", suffixes=("", "_ideal"))
    for stat in ("mean", "std"):  # the model's size: the Real World's trials', else the Ideal World's
        configs[f"num_parameters_{stat}"] = configs[f"num_parameters_{stat}"].fillna(configs.pop(f"num_parameters_{stat}_ideal"))
    alone = ideal[~ideal.ideal_configuration.isin(real.ideal_configuration)]
    return pd.concat([configs, alone], ignore_index=True) if len(alone) else configs


def _averaged_curve_stats(pairs: pd.DataFrame, curve_of: dict, threshold: float) -> pd.DataFrame:
    """PairStats of each configuration's seed-averaged curves (columns 'curve_<field>'): the expected
    bootstrap error, without the seed-to-seed jitter that the per-seed statistics also contain. A seed
    listed twice (a bootstrap resample) weighs twice."""
    rows = []
    for cfg, g in pairs.groupby("configuration", sort=False):
        real = pd.concat([curve_of[t] for t in g.real]).groupby("step")[[TEST_SOFT, TRAIN_ERR]].mean().reset_index()
        ideal = pd.concat([curve_of[t] for t in g.ideal]).groupby("step")[[TEST_SOFT]].mean().reset_index()
        rows.append({"configuration": cfg, **{f"curve_{k}": v for k, v in vars(pair_stats(real, ideal, threshold)).items()}})
    return pd.DataFrame(rows)


def _fits(w: Worlds, curve_of: dict) -> pd.DataFrame:
    """One power law per Ideal World configuration (its full configuration: one trial per seed), on every
    seed's (samples seen, test soft error), with a bootstrap interval over its seeds, the method, and a
    hold-out of the last decade (fits.power_law_row)."""
    rows = []
    for cfg, trials in (w.ideal.groupby("ideal_configuration", sort=False) if len(w.ideal) else []):
        curves = [curve_of[t] for t in trials.trial]
        if any("samples_seen" not in c for c in curves) or not sum(len(c) for c in curves):
            continue
        fit = power_law_row([(c.samples_seen.to_numpy(), c[TEST_SOFT].to_numpy()) for c in curves])
        if fit is None:
            continue
        rows.append({"configuration": cfg, "seeds": len(trials), **fit})
    return pd.DataFrame(rows)
