"""The report's plot kinds, as PNG files (matplotlib, Agg backend: no display needed).

    (a) curves:   per configuration, test soft error of both worlds and the Real World's train soft
                  error against steps (log x; or samples, FLOPs, wall time: analysis.X_AXES), mean over
                  seeds ± std: the paper's Figure 1
    (b) scatter:  Real against Ideal World test soft error, every pair and evaluation step, with y = x
    (c) heatmaps: over two configuration axes (width × depth, batch size × n, ...): bootstrap error at
                  convergence, the Ideal World's steps to the target error, the Real World's final error
    (d) speed:    the Ideal World's test error at a fixed budget (a step, a FLOP count, a wall time)
                  against the Real World's final test error, one point per configuration
                  (optimization speed against generalization)
    (e) predictor: per configuration, the Ideal World's test error at the Real World's convergence step
                  against the Real World's final test error, y = x and a ±band (the paper's Figure 2)
    (f) model size: final test 0/1 and soft errors of both worlds, and the bootstrap error, against width,
                  with the interpolation threshold (double descent); when the width varies
    (g) weight movement: |w - w0| / |w0| against steps per configuration (lazy against rich training)
    (h) effective data: D_eff/n against epochs and the data-repetition law (repetition_plot.py)
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter, LogLocator, NullFormatter
from twoworlds.results.analysis import TEST_SOFT, TRAIN_SOFT, X_AXES, XAxis, align, independent_keys

PANELS_PER_FIGURE = 12
MAX_FACETS = 4  # rows of heatmaps (values of the keys besides the two axes)
_WORLD_STYLE = {"real": dict(color="tab:blue", ls="-"), "ideal": dict(color="tab:orange", ls="--"),
                "train": dict(color="tab:green", ls=":")}
# The report's look, applied while a plot is drawn and saved (`styled`), never to matplotlib's global state.
STYLE = {"figure.dpi": 110, "savefig.dpi": 110, "axes.grid": True, "grid.alpha": 0.3, "axes.titlesize": 10,
         "axes.labelsize": 9, "legend.fontsize": 8, "xtick.labelsize": 8, "ytick.labelsize": 8}


def styled(plot):
    """Draw `plot` in the report's style (matplotlib.rc_context: nothing changes for a user's own figures)."""

    @functools.wraps(plot)
    def drawn(*args, **kwargs):
        with matplotlib.rc_context(STYLE):
            return plot(*args, **kwargs)

    return drawn


def subplots(*args, figsize=None, constrained_layout=False, **kwargs):
    """Like pyplot.subplots, without pyplot: a Figure of its own, so no backend is switched at import and there
    is nothing to close (savefig picks the PNG canvas itself)."""
    fig = Figure(figsize=figsize, constrained_layout=constrained_layout)
    return fig, fig.subplots(*args, **kwargs)


def colormap(name: str):
    return matplotlib.colormaps[name]


@dataclass
class Panel:
    """One configuration as plots (a) and (g) draw it: every trial of each world (worlds.py)."""

    name: str  # the configuration
    title: str  # e.g. 'mlp n=64  (2 seeds)'
    real: pd.DataFrame  # its Real World trials: trial, converged_at, stopped_early_at (may be empty)
    ideal: list[str]  # its Ideal World trials (may be empty)


def save(fig, path: Path) -> Path:
    fig.savefig(path, bbox_inches="tight")
    return path


def _band(ax, curves: pd.DataFrame, trials: list[str], column: str, label: str, style: dict,
          x: str = "step") -> None:
    """Mean over the trials (seeds) of `column` at each step, with a ± std band when there are several,
    drawn at the seeds' mean `x` of that step (the step itself, samples, FLOPs or wall time)."""
    sub = curves[curves.trial.isin(trials)].dropna(subset=[column])
    if not len(sub):
        return
    g = sub.groupby("step")
    mean, std, xs = g[column].mean(), g[column].std(ddof=1).fillna(0.0), g[x].mean().to_numpy(float)
    ax.plot(xs, mean.to_numpy(), label=label, lw=1.6, **style)
    if len(trials) > 1:
        ax.fill_between(xs, (mean - std).to_numpy(), (mean + std).to_numpy(), color=style["color"], alpha=0.15,
                        lw=0)


def _x_at_step(curves: pd.DataFrame, trials: list[str], step: float, x: str) -> float:
    """The trials' mean `x` at `step` (interpolated between evaluations): where a step falls on the x-axis."""
    mean = curves[curves.trial.isin(trials)].groupby("step")[x].mean()
    return float(np.interp(step, mean.index.to_numpy(float), mean.to_numpy(float)))


def _log_x(ax, x: XAxis) -> None:
    """Log x-axis. Steps keep matplotlib's decade labels; samples, FLOPs and seconds get short
    engineering labels (500k, 2M, 1G; 200ms, 5s), at 1-2-5 when the panel spans few decades (the
    default labels every minor tick there, unreadably) and at decades otherwise."""
    ax.set_xscale("log")
    if x.column == "step":
        return
    lo, hi = ax.get_xlim()
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0,) if hi / lo > 1e3 else (1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(EngFormatter(unit="s" if x.column == "wall_time" else "", sep=""))
    ax.xaxis.set_minor_formatter(NullFormatter())


@styled
def plot_curves(panels: list[Panel], curves: pd.DataFrame, out_dir: Path, stem: str = "a_curves",
                x: XAxis = X_AXES["steps"]) -> list[Path]:
    """(a): one panel per configuration; several figures when there are many configurations."""
    col = x.column
    configs = panels
    paths = []
    for start in range(0, len(configs), PANELS_PER_FIGURE):
        chunk = configs[start:start + PANELS_PER_FIGURE]
        ncols = min(4, len(chunk))
        nrows = math.ceil(len(chunk) / ncols)
        fig, axes = subplots(nrows, ncols, figsize=(3.6 * ncols + 0.4, 3.0 * nrows + 0.6), squeeze=False,
                                 sharey=True, constrained_layout=True)
        for ax, panel in zip(axes.flat, chunk, strict=False):
            rows, real = panel.real, list(panel.real.trial) if len(panel.real) else []
            _band(ax, curves, real, TEST_SOFT, "Real World test", _WORLD_STYLE["real"], col)
            _band(ax, curves, panel.ideal, TEST_SOFT, "Ideal World test", _WORLD_STYLE["ideal"], col)
            _band(ax, curves, real, TRAIN_SOFT, "Real World train", _WORLD_STYLE["train"], col)
            cut = rows.trial[rows.stopped_early_at.notna()] if len(rows) else []
            if len(cut):  # Real World runs stopped early (early_stop): where their curves end
                last = curves[curves.trial.isin(cut)].sort_values("step").groupby("trial").tail(1)
                ax.scatter(last[col], last[TEST_SOFT], marker="x", s=40, color="tab:red", zorder=5,
                           label="Real World stopped early (converged)")
            conv = rows.converged_at.dropna() if len(rows) else []
            if len(conv):
                ax.axvline(_x_at_step(curves, real, conv.median(), col), color="gray", lw=0.8, alpha=0.7,
                           label="Real World train error < 1%")
            ax.set_title(panel.title)
            _log_x(ax, x)
            ax.set_xlabel(f"{x.label}, log scale")
            ax.set_ylim(bottom=0)
        for ax in axes[:, 0]:
            ax.set_ylabel("soft error (1 − p(true class))")
        for ax in list(axes.flat)[len(chunk):]:
            ax.set_visible(False)
        handles, labels = {}, {}
        for ax in axes.flat:  # the union of the panels' legend entries, each once
            for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
                handles.setdefault(lab, h)
        handles, labels = list(handles.values()), list(handles)
        fig.legend(handles, labels, loc="outside lower center", ncols=4, frameon=False)
        part = f" ({start // PANELS_PER_FIGURE + 1}/{math.ceil(len(configs) / PANELS_PER_FIGURE)})" \
            if len(configs) > PANELS_PER_FIGURE else ""
        fig.suptitle(f"Real vs Ideal World: test soft error against {x.noun}{part}", fontsize=11)
        suffix = f"_{start // PANELS_PER_FIGURE + 1}" if len(configs) > PANELS_PER_FIGURE else ""
        paths.append(save(fig, out_dir / f"{stem}{suffix}.png"))
    return paths


@styled
def plot_scatter(pairs: pd.DataFrame, curves: pd.DataFrame, out_dir: Path) -> Path:
    """(b): every pair and aligned evaluation step; colour = configuration."""
    fig, ax = subplots(figsize=(6.4, 5.4), constrained_layout=True)
    configs = list(dict.fromkeys(pairs.configuration))
    cmap = colormap("tab10" if len(configs) <= 10 else "tab20")
    hi = 0.0
    for k, cfg in enumerate(configs):
        xs, ys = [], []
        for p in pairs[pairs.configuration == cfg].itertuples():
            r, i = curves[curves.trial == p.real], curves[curves.trial == p.ideal]
            _, ry, ix = align(r.step, r[TEST_SOFT], i.step, i[TEST_SOFT])
            xs.append(ix)
            ys.append(ry)
        x, y = np.concatenate(xs), np.concatenate(ys)
        hi = max(hi, np.nanmax(x), np.nanmax(y))
        ax.scatter(x, y, s=12, alpha=0.6, color=cmap(k % cmap.N), label=cfg, edgecolors="none")
    hi = min(1.0, hi * 1.05) or 1.0
    ax.plot([0, hi], [0, hi], color="black", lw=1, ls="--", label="y = x (no bootstrap error)")
    ax.set(xlim=(0, hi), ylim=(0, hi), aspect="equal",
           xlabel="Ideal World test soft error (same step)", ylabel="Real World test soft error",
           title="Real vs Ideal World test soft error, all pairs and evaluation steps")
    ax.legend(loc="upper left", fontsize=7, ncols=1 if len(configs) <= 8 else 2)
    return save(fig, out_dir / "b_scatter.png")


_AXIS_PREFERENCE = [("model.width", "model.depth"), ("n", "batch_size"), ("steps", "batch_size")]


def heatmap_axes(keys: list[str], table: pd.DataFrame) -> tuple[str | None, str | None]:
    """(x, y) configuration keys for the heatmaps: width × depth or n × batch size when both vary,
    else the two keys with the most values (x the one with more); None when fewer keys vary."""
    keys = independent_keys(keys, table)
    for x, y in _AXIS_PREFERENCE:
        if x in keys and y in keys:
            return x, y
    ranked = sorted(keys, key=lambda k: -table[k].nunique())
    return (ranked + [None, None])[0], (ranked + [None, None])[1]


def _sort_values(values) -> list:
    try:
        return sorted(values, key=float)
    except (TypeError, ValueError):
        return sorted(values, key=str)


def heatmap_placed(keys: list[str], configs: pd.DataFrame) -> pd.DataFrame:
    """The configurations (c) can place: those with a value of every key it lays out (an Ideal World
    configuration that no Real World trial shares has no n)."""
    x, y = heatmap_axes(keys, configs)
    used = {x, y, *independent_keys(keys, configs)} - {None}
    return configs.dropna(subset=sorted(used))


@styled
def plot_heatmaps(configs: pd.DataFrame, keys: list[str], out_dir: Path, panels: list[tuple[str, str, str]]) -> Path:
    """(c): `configs` has one row per configuration (seed means); `panels` lists (column, title, format).
    Keys besides the two axes become rows of panels (one per value combination, at most 4); see
    heatmap_placed for the configurations it shows."""
    configs = heatmap_placed(keys, configs)
    x, y = heatmap_axes(keys, configs)
    rest = [k for k in independent_keys(keys, configs) if k not in (x, y)]
    facets = list(configs.groupby(rest, sort=True)) if rest else [((), configs)]
    facets = facets[:MAX_FACETS]  # the rest are in configurations.csv
    ncols = len(panels)
    xs = _sort_values(configs[x].unique()) if x else [None]
    ys = _sort_values(configs[y].unique()) if y else [None]
    fig, axes = subplots(len(facets), ncols, squeeze=False, constrained_layout=True,
                             figsize=(max(3.4, 0.9 * len(xs) + 1.9) * ncols, max(2.4, 0.55 * len(ys) + 1.6) * len(facets)))
    for row, (facet, sub) in enumerate(facets):
        facet = facet if isinstance(facet, tuple) else (facet,)
        facet_txt = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in zip(rest, facet, strict=True))
        for col, (column, title, fmt) in enumerate(panels):
            ax = axes[row, col]
            grid = np.full((len(ys), len(xs)), np.nan)
            for _, r in sub.iterrows():
                grid[ys.index(r[y]) if y else 0, xs.index(r[x]) if x else 0] = r[column]
            finite = grid[np.isfinite(grid)]
            im = ax.imshow(grid, cmap="viridis", aspect="auto", origin="lower",
                           vmin=finite.min() if finite.size else 0, vmax=finite.max() if finite.size else 1)
            for gi in range(len(ys)):
                for gj in range(len(xs)):
                    v = grid[gi, gj]
                    txt = "—" if not np.isfinite(v) else fmt.format(v)
                    bright = finite.size and np.isfinite(v) and v > (finite.min() + finite.max()) / 2
                    dark = np.isfinite(v) and not bright  # an empty cell is white: its dash in black
                    ax.text(gj, gi, txt, ha="center", va="center", fontsize=8, color="white" if dark else "black")
            ax.set_xticks(range(len(xs)), [str(v) for v in xs] if x else [""])
            ax.set_yticks(range(len(ys)), [str(v) for v in ys] if y else [""])
            ax.set_xlabel(x or "")
            ax.set_ylabel(y or "")
            ax.grid(False)
            ax.set_title(title + (f"\n{facet_txt}" if facet_txt else ""))
            fig.colorbar(im, ax=ax, shrink=0.85)
    fig.suptitle("Configurations: bootstrap error, optimization speed, generalization (mean over seeds)",
                 fontsize=11)
    return save(fig, out_dir / "c_heatmaps.png")


_MARKERS = "osD^vP*Xph<>"


def _family_styles(configs: pd.DataFrame) -> list[tuple[str, object, bool]]:
    """(marker, colour, wrapped) per configuration of plots (d) and (e): colour = model family, marker =
    the configuration's rank within its family; `wrapped` once a family has used every marker."""
    fam = configs["model.name"].astype(str) if "model.name" in configs else pd.Series(["all"] * len(configs))
    families, seen, out = list(dict.fromkeys(fam)), {}, []
    for f in fam:
        k = seen[f] = seen.get(f, -1) + 1
        out.append((_MARKERS[k % len(_MARKERS)], colormap("tab10")(families.index(f) % 10), k >= len(_MARKERS)))
    return out


@styled
def plot_speed(configs: pd.DataFrame, out_dir: Path, budget: str) -> Path:
    """(d): one point per configuration: colour = family, marker = the rest of the configuration,
    named in the legend (labels next to points would collide where configurations share an Ideal twin).
    `budget` names where the Ideal World's error was taken ('step 1,000', '3.2e+12 training FLOPs');
    a configuration whose Ideal World curve does not cover it, or that lacks a world, has no point and says
    so in the legend."""
    fig, ax = subplots(figsize=(8.6, 5.4), constrained_layout=True)
    for r, (marker, colour, wrapped) in zip(configs.itertuples(), _family_styles(configs), strict=True):
        missing = no_point_reason(r)
        ax.errorbar(r.ideal_at_budget_mean, r.real_final_mean, xerr=r.ideal_at_budget_std, yerr=r.real_final_std,
                    fmt=marker, color=colour, label=r.configuration + missing, capsize=2, ms=7,
                    mfc="none" if wrapped else None)
    shown = configs.dropna(subset=["ideal_at_budget_mean", "real_final_mean"])
    shown = shown if len(shown) else configs
    ends = [shown[f"{c}_mean"] + sign * shown[f"{c}_std"] for c in ("ideal_at_budget", "real_final")
            for sign in (-1, 1)]
    lo, hi = np.nanmin([e.min() for e in ends]), np.nanmax([e.max() for e in ends])  # error bars included
    pad = 0.1 * (hi - lo) + 0.01
    lo, hi = max(0.0, lo - pad), hi + pad
    ax.plot([lo, hi], [lo, hi], color="black", lw=1, ls="--", label="y = x")
    ax.set(xlim=(lo, hi), ylim=(lo, hi), aspect="equal",
           xlabel=f"Ideal World test soft error at {budget}\n(optimization speed: lower is faster)",
           ylabel="Real World test soft error, last step\n(generalization)",
           title="Optimization speed against generalization")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, title="configuration", title_fontsize=8,
              ncols=1 if len(configs) <= 18 else 2)
    return save(fig, out_dir / "d_speed_vs_generalization.png")


def no_point_reason(r) -> str:
    """Why plot (d) has no point for configuration `r` ('' when it has one)."""
    for world, count in (("Real", r.real_seeds), ("Ideal", r.ideal_seeds)):
        if not count:
            return f"  (no point: no {world} World trials)"
    reached = r.ideal_at_budget_mean == r.ideal_at_budget_mean  # not NaN
    return "" if reached else "  (no point: not every Ideal World seed reaches this budget)"


@styled
def plot_predictor(configs: pd.DataFrame, out_dir: Path, band: float, score) -> Path:
    """(e): the paper's scatter: per configuration, the Ideal World's test soft error at the step where
    its Real World converged (x) against the Real World's final test soft error (y), y = x and a ±band.
    Hollow markers: configurations whose Real World did not converge in every seed (taken at the last
    step). `score`: claims.PredictorScore of the same points, for the title."""
    fig, ax = subplots(figsize=(8.6, 5.4), constrained_layout=True)
    t = configs.dropna(subset=["ideal_at_convergence_mean", "paired_real_final_mean"])
    for r, (marker, colour, _) in zip(t.itertuples(), _family_styles(t), strict=True):
        converged = r.converged_seeds == r.real_seeds
        ax.errorbar(r.ideal_at_convergence_mean, r.paired_real_final_mean, xerr=r.ideal_at_convergence_std,
                    yerr=r.paired_real_final_std, fmt=marker, color=colour, capsize=2, ms=7, mfc=None if converged else "none",
                    label=r.configuration + ("" if converged else "  (not converged: last step)"))
    ends = [t[f"{c}_mean"] + s * t[f"{c}_std"] for c in ("ideal_at_convergence", "paired_real_final") for s in (-1, 1)]
    lo, hi = (np.nanmin([e.min() for e in ends]), np.nanmax([e.max() for e in ends])) if len(t) else (0.0, 1.0)
    pad = 0.1 * (hi - lo) + band + 0.005
    lo, hi = max(0.0, lo - pad), hi + pad
    line = np.array([lo, hi])
    ax.plot(line, line, color="black", lw=1, ls="--", label="y = x")
    ax.fill_between(line, line - band, line + band, color="grey", alpha=0.18, lw=0,
                    label=f"±{band * 100:.1f} points")
    ax.set(xlim=(lo, hi), ylim=(lo, hi), aspect="equal",
           xlabel="Ideal World test soft error at the Real World's convergence step",
           ylabel="Real World test soft error, last step")
    title = "Real World final error against the Ideal World at convergence"
    if score is not None:
        title += (f"\nmean |error| {score.mean_abs_error * 100:.2f} points, Spearman ρ = {score.rank_correlation:.2f}, "
                  f"{score.inside}/{score.configurations} within the band")
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, title="configuration", title_fontsize=8,
              ncols=1 if len(t) <= 18 else 2)
    return save(fig, out_dir / "e_predictor.png")


# (f)'s panels: (title, lines); a line is (column, name, style, the count of its trials: worlds.COUNTS)
_SIZE_PANELS = [("final 0/1 error", [("real_final_error", "Real test", "real", "real_seeds"),
                                     ("ideal_final_error", "Ideal test", "ideal", "ideal_seeds"),
                                     ("real_final_train_error", "Real train", "train", "real_seeds")]),
                ("final test soft error", [("real_final", "Real test", "real", "real_seeds"),
                                           ("ideal_final", "Ideal test", "ideal", "ideal_seeds")]),
                ("bootstrap error (Real − Ideal), last step", [("gap_final_error", "0/1 error", "real", "seeds"),
                                                               ("gap_final", "soft error", "ideal", "seeds")])]


def _size_line(ax, sub: pd.DataFrame, column: str, name: str, style: str, count: str) -> bool:
    """One line of (f) over the widths that have its trials; the Real World's points without an Ideal World
    twin in every seed hollow. True when it drew hollow points."""
    has = sub[sub[count] > 0]
    if f"{column}_mean" not in has or has[f"{column}_mean"].isna().all():
        return False
    ax.errorbar(has.width, has[f"{column}_mean"], yerr=has[f"{column}_std"], label=name, marker="o",
                ms=4, capsize=2, lw=1.4, **_WORLD_STYLE[style])
    alone = has[~has.paired] if count == "real_seeds" else has.iloc[:0]
    if len(alone):
        ax.plot(alone.width, alone[f"{column}_mean"], ls="none", marker="o", ms=4, mfc="white",
                mec=_WORLD_STYLE[style]["color"], zorder=3)
    return bool(len(alone))


@styled
def plot_model_size(table: pd.DataFrame, out_dir: Path, threshold_width: dict) -> Path:
    """(f): against width, per group of the other keys (rows): the final test 0/1 error of both worlds
    with the Real World's train error; the final test soft error of both worlds; the bootstrap error
    (Real minus Ideal) in both. Each line over the widths with its trials (the bootstrap error's: with
    pairs); hollow: Real World points without an Ideal World twin (`table.paired`). Dotted: the
    interpolation threshold (`threshold_width[group]`)."""
    groups = list(dict.fromkeys(table.group))
    fig, axes = subplots(len(groups), 3, squeeze=False, figsize=(13, 3.4 * len(groups)), constrained_layout=True)
    for row, g in enumerate(groups):
        sub = table[table.group == g].sort_values("width")
        for col, (title, lines) in enumerate(_SIZE_PANELS):
            ax = axes[row, col]
            hollow = [_size_line(ax, sub, *line) for line in lines]
            if any(hollow):
                ax.plot([], [], ls="none", marker="o", ms=4, mfc="white", mec="black", label="no Ideal World twin")
            if col == 2:
                ax.axhline(0, color="black", lw=0.8)
            if threshold_width.get(g) is not None:
                ax.axvline(threshold_width[g], color="grey", ls=":", lw=1.2, label="interpolation threshold")
            ax.set_xscale("log", base=2)
            ax.set_xticks(list(sub.width), [f"{w:g}" for w in sub.width])
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set(xlabel="width", title=title + (f"\n{g}" if g != "all" else ""))
            ax.legend(fontsize=7)
    fig.suptitle("Model size: final errors against width (mean ± std over seeds)", fontsize=11)
    return save(fig, out_dir / "f_model_size.png")


@styled
def plot_weight_movement(panels: list[Panel], curves: pd.DataFrame, out_dir: Path,
                         x: XAxis = X_AXES["steps"]) -> Path:
    """(g): relative weight movement |w - w0| / |w0| against steps, per configuration (mean over
    seeds; Real World solid, Ideal World dashed), log-log."""
    fig, ax = subplots(figsize=(8.6, 5.0), constrained_layout=True)
    configs = panels
    cmap = colormap("tab10" if len(configs) <= 10 else "tab20")
    for k, panel in enumerate(panels):
        cfg = panel.name
        for world, ls, trials in (("real", "-", panel.real.trial if len(panel.real) else []), ("ideal", "--", panel.ideal)):
            c = curves[curves.trial.isin(trials)].dropna(subset=["weight_movement"])
            c = c[c.weight_movement > 0]
            if not len(c):
                continue
            g = c.groupby("step")
            ax.plot(g[x.column].mean(), g.weight_movement.mean(), ls=ls, lw=1.5, color=cmap(k % cmap.N),
                    label=f"{cfg} ({world})")
    _log_x(ax, x)
    ax.set_yscale("log")
    ax.set(xlabel=x.label, ylabel="|w − w₀| / |w₀|", title="Relative weight movement (mean over seeds)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, ncols=1 if 2 * len(configs) <= 20 else 2)
    return save(fig, out_dir / "g_weight_movement.png")

