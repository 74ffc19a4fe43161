"""Numbers that both the claims and the report compute from a configurations table: the highest interior
peak of a curve (model-wise double descent) and the Deep Bootstrap predictor's score."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from twoworlds.results.claim_spec import DEFAULT_BAND
from twoworlds.results.formats import pct as _pct


@dataclass
class Peak:
    """The best interior maximum of a curve: the one standing highest above both sides."""

    at: int  # index of the peak
    low: int  # index of the smallest value before it
    height: float  # min(value - value[low], value - value[-1])


def find_peak(values) -> Peak | None:
    """The interior point i (0 < i < last) maximizing min(v[i] - min(v[:i]), v[i] - v[-1]);
    None with fewer than 3 values. A curve without a bump gets a height <= 0."""
    v = [float(x) for x in values]
    best = None
    for i in range(1, len(v) - 1):
        low = min(range(i), key=lambda j: v[j])
        height = min(v[i] - v[low], v[i] - v[-1])
        if best is None or height > best.height:
            best = Peak(i, low, height)
    return best


def predictor_table(configs: pd.DataFrame) -> pd.DataFrame:
    """Per configuration with pairs: the predictor (Ideal World test soft error at the Real World's
    convergence step) and the truth (Real World final test soft error), means over the pairs, with their stds."""
    cols = ["configuration", "ideal_at_convergence_mean", "ideal_at_convergence_std", "paired_real_final_mean",
            "paired_real_final_std", "converged_seeds", "seeds"]
    t = configs[[c for c in cols if c in configs]].dropna(subset=["ideal_at_convergence_mean", "paired_real_final_mean"])
    return t.rename(columns={"ideal_at_convergence_mean": "predicted", "paired_real_final_mean": "truth"})


@dataclass
class PredictorScore:
    configurations: int
    mean_abs_error: float
    rank_correlation: float  # Spearman's rho
    inside: int  # configurations with |truth - predicted| <= band
    band: float

    def sentence(self) -> str:
        return (f"over {self.configurations} configurations: mean |Real final − Ideal at convergence| "
                f"{_pct(self.mean_abs_error)}, Spearman's rank correlation {self.rank_correlation:.3f}, "
                f"{self.inside} of {self.configurations} ({self.inside / self.configurations:.0%}) within "
                f"±{_pct(self.band)}")


def score_predictor(configs: pd.DataFrame, band: float = DEFAULT_BAND) -> PredictorScore | None:
    t = predictor_table(configs)
    if len(t) < 3:
        return None
    err = (t.truth - t.predicted).abs()
    rho = float(t.predicted.rank().corr(t.truth.rank()))
    return PredictorScore(len(t), float(err.mean()), rho, int((err <= band + 1e-12).sum()), band)
