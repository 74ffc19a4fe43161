"""Plot (h) of the report's effective-data section (repetition_report.py), in the style of plots.py:
D_eff/n against epochs per group of configurations that differ only in n, with the law fitted to it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from twoworlds.results.plots import colormap, save, styled, subplots
from twoworlds.results.repetition import law


@styled
def plot_effective_data(steps: pd.DataFrame, laws: pd.DataFrame, points: pd.DataFrame, out_dir: Path,
                        error_words: str) -> Path:
    """(h): per group of configurations differing only in n (columns), D_eff/n against epochs on log
    axes, a line per n (seed mean; band: the 95% bootstrap interval over seeds), the line y = epochs
    (every repeat as good as a fresh sample), the law fitted over every n (black) and its ceiling
    1 + R* (dotted). ▲ on the top edge: evaluations where a seed's Real World beat everything its Ideal
    World reached (D_eff undefined: beyond the Ideal World's budget). Below: the law's residuals,
    log(D_eff/n) − log(law), at each seed's fitted evaluations."""
    groups = list(dict.fromkeys(steps.group))
    fig, axes = subplots(2, len(groups), squeeze=False, figsize=(4.6 * len(groups) + 0.6, 7.4), sharex="col",
                             constrained_layout=True, height_ratios=(2.4, 1))
    for col, g in enumerate(groups):
        ax, res = axes[0, col], axes[1, col]
        sub = steps[steps.group == g]
        ns = sorted(sub.n.unique())
        cmap = colormap("viridis")
        colour = {n: cmap(0.9 * i / max(1, len(ns) - 1)) for i, n in enumerate(ns)}
        hi_x = sub.epochs.max()
        lo_x = max(sub.epochs[sub.epochs > 0].min(), 1e-2)
        for n in ns:
            s = sub[(sub.n == n) & (sub.epochs > 0)].sort_values("epochs")
            ax.plot(s.epochs, s.d_eff_over_n_mean, color=colour[n], lw=1.5, label=f"n = {n:,.0f}")
            ax.fill_between(s.epochs, s.d_eff_over_n_lo, s.d_eff_over_n_hi, color=colour[n], alpha=0.18, lw=0)
            below = s[s.below > 0]
            if len(below):
                ax.scatter(below.epochs, np.full(len(below), 1.0), transform=ax.get_xaxis_transform(), marker="^",
                           color=colour[n], s=28, clip_on=False, zorder=5)
            p = points[(points.group == g) & (points.n == n) & points.fitted]
            fitted = laws[laws.group == g]
            if len(fitted) and fitted.r_star.iloc[0] == fitted.r_star.iloc[0]:
                r = np.log(p.d_eff / p.n) - np.log(law(p.epochs, fitted.r_star.iloc[0]))
                res.scatter(p.epochs, r, s=8, color=colour[n], alpha=0.7)
        e = np.logspace(np.log10(lo_x), np.log10(hi_x), 200)
        ax.plot(e, e, color="grey", ls="--", lw=1, label="y = epochs (repeats as good as fresh)")
        fitted = laws[laws.group == g]
        title = g
        if len(fitted) and fitted.r_star.iloc[0] == fitted.r_star.iloc[0]:
            r_star = fitted.r_star.iloc[0]
            words = "∞ (no saturation seen)" if np.isinf(r_star) else f"{r_star:.3g}"
            ax.plot(e, law(e, r_star), color="black", lw=1.6, label=f"law fitted over every n, R* = {words}")
            if np.isfinite(r_star):
                ax.axhline(1 + r_star, color="black", ls=":", lw=1, label=f"ceiling 1 + R* = {1 + r_star:.3g}")
            lo, hi = fitted.r_star_lo.iloc[0], fitted.r_star_hi.iloc[0]
            if lo == lo:
                title += f"\nR* = {words}, 95% interval [{lo:.3g}, {hi:.3g}]"
        ax.set(xscale="log", yscale="log", title=title, ylabel=f"D_eff / n ({error_words})")  # x: shared below
        ax.legend(fontsize=7, loc="upper left")
        res.axhline(0, color="black", lw=0.8)
        res.set(xlabel="epochs (D / n)", ylabel="log(D_eff/n) − log(law)",
                title="residuals of the fitted law (each seed's evaluations)")
    fig.suptitle("(h) Effective data: the fresh samples a Real World's repeated ones were worth", fontsize=11)
    return save(fig, out_dir / "h_effective_data.png")
