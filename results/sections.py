"""The report's sections, in order: each renders part of an `Analysis` (tables.py) as document blocks,
with narrate.py's sentences and plots.py's PNGs (written into the report folder).

A section is a function (Analysis, out_dir) -> list[Block], empty when it has nothing to show; SECTIONS
lists them in the order of the report, so a new section is one function and one line there.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from twoworlds.lightning_modules.metrics import final_name
from twoworlds.results import narrate, plots
from twoworlds.results.analysis import TEST_SOFT, TRAIN_ERR, X_AXES, fmt_pm
from twoworlds.results.claim_spec import DEFAULT_BAND
from twoworlds.results.document import Block
from twoworlds.results.fits import LEVEL, METHODS
from twoworlds.results.formats import pct as _pct
from twoworlds.results.repetition_report import repetition_blocks
from twoworlds.results.scores import score_predictor
from twoworlds.results.size import size_groups
from twoworlds.results.tables import Analysis
from twoworlds.results.worlds import COUNTS, kind_of


def _steps(v: float) -> str:
    return "—" if v != v else f"{v:,.0f}"


def _pm(c: pd.DataFrame, col: str, **kw) -> list[str]:
    """Column `col` of a configurations table as 'mean ± std' per row (formats.fmt_pm), over the count of
    its own trials (worlds.COUNTS: Real World trials, Ideal World trials or pairs)."""
    counts = c[COUNTS[kind_of(col)]]
    return [fmt_pm(m, s, int(k), **kw) for m, s, k in zip(c[f"{col}_mean"], c[f"{col}_std"], counts, strict=True)]


def _seed_counts(c: pd.DataFrame) -> list[str]:
    """"2" where each world has that many seeds and all pair up, else Real/Ideal/paired: "3/2/2"."""
    return [str(p) if r == i == p else f"{r}/{i}/{p}"
            for r, i, p in zip(c.real_seeds, c.ideal_seeds, c.seeds, strict=True)]


_SEEDS_NOTE = " Seeds: one count where both worlds have it and every trial has its twin, else Real/Ideal/paired."


def _seeds_note(c: pd.DataFrame) -> str:
    return _SEEDS_NOTE if ((c.real_seeds != c.seeds) | (c.ideal_seeds != c.seeds)).any() else ""


def _paired_note(a: Analysis) -> str:
    note = narrate.pairing(a)
    return f" {note}" if note else ""


def header(a: Analysis, out: Path) -> list[Block]:
    return [Block("h1", f"Study '{a.study.name}': Real World vs Ideal World"), Block("p", narrate.intro(a))]


def nothing_to_compare(a: Analysis, out: Path) -> list[Block]:
    if len(a.pairs):
        return []
    if not len(a.configs):
        return [Block("p", "No Real/Ideal pair has logged rows yet, so there is nothing to compare; the trial "
                           "table below shows what exists.")]
    return [Block("p", "No Real/Ideal pair has logged rows yet, so there is no bootstrap error; the sections below "
                       "show each world on its own.")]


def findings(a: Analysis, out: Path) -> list[Block]:
    return [Block("h2", "Findings"), Block("list", narrate.statements(a))] if len(a.configs) else []


def claims(a: Analysis, out: Path) -> list[Block]:
    if not a.verdicts:
        return []
    blocks = [Block("h2", "Claims checked on this run")]
    m = a.study.manifest
    if "claims_from" in m:  # `report --claims FILE`: restated after the run
        same = m["claims"] == m["stored_claims"]
        blocks.append(Block("p", f"The claims as written in {m['claims_from']} now (`--claims`), "
                                 + ("the same as those stored with this run." if same else
                                    "not those stored with this run (its sweep.json): restated after it ran.")))
    return blocks + [Block("list", [v.line() for v in a.verdicts])]


def summary_table(a: Analysis) -> pd.DataFrame:
    c = a.configs
    pm = lambda col, **kw: _pm(c, col, **kw)  # noqa: E731
    table = pd.DataFrame({
        "configuration": c.configuration, "seeds": _seed_counts(c),
        "Real converged at step": [f"{_steps(m)} ({int(k)}/{int(n)})" if n else "—" for m, k, n in
                                   zip(c.converged_at_mean, c.converged_seeds, c.real_seeds, strict=True)],
        **{name: pm(col, digits=2, sign=col.startswith("gap")) for col, name in (
            ("max_gap_before", "max |bootstrap err| before"), ("mean_gap_before", "mean |bootstrap err| before"),
            ("gap_at_convergence", "bootstrap err at convergence"), ("gap_final", "bootstrap err, last step"),
            ("real_final", "Real test soft err, last"), ("ideal_final", "Ideal test soft err, last"))},
        f"Ideal steps to {a.target:.0%}": pm("ideal_steps_to_target", scale=1, digits=0, unit=""),
    })
    cut = a.worlds.real.dropna(subset=["stopped_early_at"]) if len(a.worlds.real) else []
    if len(cut):  # early_stop: where each configuration's Real World curves were cut
        steps = cut.groupby("configuration").stopped_early_at.apply(lambda s: ", ".join(f"{v:,.0f}" for v in s))
        table.insert(3, "Real stopped early at", [steps.get(k, "—") for k in c.configuration])
    return table


def summary(a: Analysis, out: Path) -> list[Block]:
    if not len(a.configs):
        return []
    return [Block("h2", "Summary by configuration"), Block("table", summary_table(a)),
            Block("p", "Errors are test soft errors (1 − softmax probability of the true class), mean ± std "
                       "over seeds; the bootstrap error is Real minus Ideal at the same step. Converged: "
                       f"first evaluation with Real World train 0/1 error < {a.threshold:.0%} (seeds that "
                       "converged in brackets). Max and mean |bootstrap error| are taken over the "
                       "evaluations up to convergence (all of them when the Real World did not "
                       "converge); the mean starts where learning has begun (the Ideal World's test "
                       "error 10% below its first value), since both worlds agree trivially before."
                       + _seeds_note(a.configs) + _paired_note(a))]


def panels(a: Analysis) -> list[plots.Panel]:
    """Plots (a) and (g): each configuration with every trial of each world."""
    out = []
    for rd in a.configs.to_dict("records"):
        cfg = rd["configuration"]
        real, ideal = a.trials_of(cfg)
        r, i, p = rd["real_seeds"], rd["ideal_seeds"], rd["seeds"]
        seeds = (f"  ({p} seeds)" if p > 1 else "") if r == i == p else f"  ({r} Real, {i} Ideal, {p} paired seeds)"
        rows = a.worlds.real[a.worlds.real.trial.isin(real)] if real else pd.DataFrame()
        out.append(plots.Panel(cfg, cfg + seeds, rows, ideal))
    return out


def _not_placed(a: Analysis, keys: list[str]) -> str:
    placed = plots.heatmap_placed(keys, a.configs)
    left = [c for c in a.configs.configuration if c not in set(placed.configuration)]
    return f" Not placed on its axes (no value of a key there): {', '.join(left)}." if left else ""


def plot_section(a: Analysis, out: Path) -> list[Block]:
    if not len(a.configs):
        return []
    curves = a.study.curves
    blocks = [Block("h2", "Plots")]
    axis = X_AXES[a.x]
    for i, path in enumerate(plots.plot_curves(panels(a), curves, out, x=axis)):
        blocks.append(Block("image", path, f"(a{'' if i == 0 else i + 1}) Test soft error of both worlds and the "
                                           f"Real World's train soft error against {axis.noun} (the paper's Figure 1 "
                                           "has steps)."))
    if len(a.pairs):
        only = f" (the {len(a.pairs)} pairs only)" if narrate.pairing(a) else ""
        blocks.append(Block("image", plots.plot_scatter(a.pairs, curves, out),
                            f"(b) Real against Ideal World test soft error at every evaluation step of every pair{only}."))
    panels_c = [("gap_at_convergence_mean", "bootstrap error at convergence", "{:+.3f}"),
                ("ideal_steps_to_target_mean", f"Ideal World steps to {a.target:.0%} test soft err", "{:,.0f}"),
                ("real_final_mean", "Real World final test soft error", "{:.3f}")]
    keys = a.worlds.shown + [k for k in a.keys if k not in a.worlds.shown]  # the labels' keys lay out the axes
    where = " A dash: the configuration has no pair (bootstrap error) or no trial of that world." if (
        narrate.pairing(a) or not len(a.pairs)) else ""
    blocks.append(Block("image", plots.plot_heatmaps(a.configs, keys, out, panels_c),
                        "(c) Per configuration, mean over seeds. Bootstrap error at the Real World's convergence "
                        f"step (at the last step where it did not converge).{where}{_not_placed(a, keys)}"))
    budget = axis.budget.format(a.budget)
    blocks.append(Block("image", plots.plot_speed(a.configs, out, budget),
                        f"(d) Optimization speed (Ideal World test soft error at {budget}) against "
                        "generalization (Real World test soft error at the last step); error bars: std over seeds."))
    return blocks


def predictor_band(a: Analysis) -> float:
    """The ± band of plot (e): the study's ideal_predicts_real claim's, else DEFAULT_BAND."""
    for c in a.study.manifest.get("claims") or []:
        if c.get("kind") == "ideal_predicts_real" and "band" in c:
            return float(c["band"])
    return DEFAULT_BAND


def _without_pairs(a: Analysis) -> str:
    left = list(a.configs.configuration[a.configs.seeds == 0])
    return f" Configurations without a Real/Ideal pair are not in it: {', '.join(left)}." if left else ""


def predictor(a: Analysis, out: Path) -> list[Block]:
    """Plot (e) and a sentence: how well the Ideal World at the Real World's convergence step predicts
    the Real World's final error, over the configurations with pairs (from 3 on)."""
    if not len(a.pairs):
        return []
    band = predictor_band(a)
    score = score_predictor(a.configs, band)
    if score is None:
        return []
    return [Block("h2", "The Deep Bootstrap predictor"),
            Block("p", "Predictor: the Real World's final test soft error ≈ the Ideal World's test soft error at the "
                       f"step where the Real World converged (the paper's Figure 2); {score.sentence()}. Hollow "
                       "markers: configurations whose Real World did not converge in every seed (predicted from the "
                       "last step)." + _without_pairs(a)),
            Block("image", plots.plot_predictor(a.configs, out, band, score),
                  f"(e) One point per configuration, mean ± std over seeds; y = x and a ±{_pct(band)} band.")]


def model_size(a: Analysis, out: Path) -> list[Block]:
    groups = size_groups(a)
    if not groups:
        return []
    t = pd.concat([g.table for g in groups])
    table = pd.DataFrame({
        "configuration": t.configuration, "parameters": [f"{p:,.0f}" for p in t.num_parameters_mean],
        "Real train err, last": _pm(t, "real_final_train_error", digits=2),
        **{name: _pm(t, col, digits=2, sign=col.startswith("gap"))
           for col, name in (("real_final_error", "Real test 0/1 err"), ("ideal_final_error", "Ideal test 0/1 err"),
                             ("gap_final_error", "bootstrap 0/1 err"), ("real_final", "Real test soft err"),
                             ("ideal_final", "Ideal test soft err"))}})
    hollow = " Hollow: Real World widths without an Ideal World twin in every seed; each line spans the widths " \
        "with its trials (the bootstrap error: with pairs)." if not t.paired.all() or (t.ideal_seeds == 0).any() else ""
    return [Block("h2", "Model size"), Block("list", narrate.size_sentences(a, groups)), Block("table", table),
            Block("image", plots.plot_model_size(t, out, {g.name: g.threshold for g in groups}),
                  "(f) Final errors against width, mean ± std over seeds. Dotted: the interpolation threshold."
                  + hollow)]


def weight_movement(a: Analysis, out: Path) -> list[Block]:
    """Plot (g), for runs that logged the relative weight movement, with a table of its final values."""
    c = a.configs
    logged = [f"{world}_weight_movement_mean" for world in ("real", "ideal")]
    if not len(c) or not any(col in c and c[col].notna().any() for col in logged):
        return []
    fmt = lambda m, s, k: "—" if m != m else (f"{m:.3g} ± {s:.2g}" if k > 1 else f"{m:.3g}")  # noqa: E731
    table = pd.DataFrame({"configuration": c.configuration, "seeds": _seed_counts(c), **{
        f"{world} |w − w₀| / |w₀|, last": [fmt(m, s, k) for m, s, k in
                                          zip(c[f"{world.lower()}_weight_movement_mean"],
                                              c[f"{world.lower()}_weight_movement_std"],
                                              c[f"{world.lower()}_seeds"], strict=True)]
        for world in ("Real", "Ideal")}})
    note = [Block("p", _seeds_note(c).strip())] if _seeds_note(c) else []
    return [Block("h2", "Weight movement"), Block("table", table), *note,
            Block("image", plots.plot_weight_movement(panels(a), a.study.curves, out, X_AXES[a.x]),
                  "(g) Relative weight movement |w − w₀| / |w₀| of the trainable parameters from their initial values "
                  "(small: lazy training, the network stays near its linearization; large: features are learned).")]


def ideal_scaling(a: Analysis, out: Path) -> list[Block]:
    fits = a.fits
    if not len(fits):
        return []
    table = pd.DataFrame({
        "Ideal World configuration": fits.configuration, "seeds": fits.seeds,
        "exponent α (err ∝ samples^−α)": [f"{e:.3f} " + ("[—]" if lo != lo else f"[{lo:.3f}, {hi:.3f}]") for e, lo, hi
                                          in zip(fits.exponent, fits.exponent_lo, fits.exponent_hi, strict=True)],
        "prefactor": [f"{p:.3g}" for p in fits.prefactor], "R²": [f"{r:.3f}" for r in fits.r2],
        "samples fitted": [f"{lo:,.0f} – {hi:,.0f}" for lo, hi in zip(fits.samples_from, fits.samples_to, strict=True)],
        "held out: last decade": [f"{e:+.0%}" if e == e else "—" for e in fits.holdout_error]})
    return [Block("h2", "Scaling of the Ideal World"), Block("table", table),
            Block("p", f"Fitted by {METHODS[fits.method.iloc[0]]}: log(test soft error) against log(samples seen) "
                       "over the last two decades of samples, all seeds of an Ideal World configuration pooled. "
                       f"Brackets: {LEVEL:.0%} interval of the exponent from a bootstrap over seeds (whole Ideal "
                       "World trials resampled, every distinct resample enumerated; — with one seed). Held out: the "
                       "law fitted without the last decade of samples predicts the error at the last evaluation; "
                       "relative error against the seed mean measured there.")]


def effective_data(a: Analysis, out: Path) -> list[Block]:
    """What an epoch is worth: D_eff of every Real World trial with a D_eff twin, the data-repetition law, plot (h)."""
    return repetition_blocks(a.repetition, out)


def _paired_column(a: Analysis) -> list[str] | None:
    """Per trial: 'yes' (it has a twin), 'no', or '—' (no rows); None when every trial with rows has one."""
    w = a.worlds
    twin = dict(zip(w.real.trial, w.real.twin.notna(), strict=True)) if len(w.real) else {}
    twin |= dict(zip(w.ideal.trial, w.ideal.paired.astype(bool), strict=True)) if len(w.ideal) else {}
    if all(twin.values()):
        return None
    return [("yes" if twin[t] else "no") if t in twin else "—" for t in a.study.trials.trial]


def _trials_table(a: Analysis) -> pd.DataFrame:
    t = a.study.trials
    cols = {"trial": t.trial, "world": t.world, "status": t.status,
            "steps done": [_steps(v) for v in t.steps_done.astype(float)]}
    paired = _paired_column(a)
    if paired is not None:  # which trials the bootstrap error is measured on
        cols["has a twin"] = paired
    for key, name in ((final_name(TEST_SOFT), "test soft err"), (final_name(TRAIN_ERR), "train err")):
        if key in t:
            cols[name] = [_pct(v) for v in t[key].astype(float)]
    return pd.DataFrame(cols)


def _problems(a: Analysis) -> list[str]:
    study, t = a.study, a.study.trials
    items = [f"missing (expected by the sweep file, never started): {', '.join(study.missing)}"] if study.missing else []
    for status in ("running", "interrupted", "failed", "diverged"):
        for r in t[t.status == status].itertuples():
            extra = ""
            if status == "diverged":
                extra = f" at step {int(r.diverged_at_step):,} ({r.diverged_reason}); rows up to there are kept"
            elif status == "failed" and isinstance(r.error, str):
                extra = f": {r.error.splitlines()[0][:200]}"
            elif status == "running":
                extra = " (no summary.json yet: still running, or its process was killed; `--resume` finishes it)"
            items.append(f"{r.trial}: {status}{extra}")
    return items


def trials(a: Analysis, out: Path) -> list[Block]:
    return [Block("h2", "Trials"), Block("table", _trials_table(a)),
            Block("h2", "Missing, running, failed or diverged trials"),
            Block("list", _problems(a) or ["none: every trial completed"])]


def provenance(a: Analysis, out: Path) -> list[Block]:
    study, blocks = a.study, []
    if study.manifest.get("text"):
        m = study.manifest
        how = f"{m.get('file', '?')}" + (" (smoke variant)" if m.get("smoke") else "") + \
            (f", overrides: {' '.join(m['overrides'])}" if m.get("overrides") else "")
        blocks += [Block("h2", "Sweep file"), Block("p", how), Block("code", m["text"], "yaml")]
    prov = study.provenance
    if prov:
        versions = ", ".join(f"{k} {v}" for k, v in (prov.get("versions") or {}).items())
        blocks += [Block("h2", "Provenance"),
                   Block("list", [f"git commit: {prov.get('git_commit', 'unknown')}", f"versions: {versions}",
                                  f"host: {prov.get('host', '?')}", f"command: {prov.get('argv', '?')}"])]
    blocks.append(Block("p", "Tables beside this report: curves.parquet/.csv (one row per trial and evaluation "
                             "step, with the config values and the D_eff columns), trials.parquet/.csv, pairs.csv, "
                             "configurations.csv, power_laws.csv; with effective data: effective_data.csv, "
                             "repetition_law.csv, repetition_holdout.csv."))
    return blocks


SECTIONS = [header, nothing_to_compare, findings, claims, summary, plot_section, predictor, model_size, weight_movement,
            ideal_scaling, effective_data, trials, provenance]
