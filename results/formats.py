"""How numbers are printed, in the report, the claims and the progress lines: one formatter per
kind of number. Plain Python (no pandas), so launch/ prints with it during training too."""

from __future__ import annotations

PCT_DIGITS = 2  # decimals of an error rate printed as a percentage


def fmt_pm(mean: float, std: float, seeds: int, scale: float = 100.0, digits: int = 1, unit: str = "%",
           sign: bool = False) -> str:
    """'1.8% ± 0.3%' (or '1.8%' for one seed; '+1.8%' with sign); NaN prints as '—'."""
    if mean != mean:
        return "—"
    text = f"{mean * scale:{'+' if sign else ''}.{digits}f}{unit}"
    return f"{text} ± {std * scale:.{digits}f}{unit}" if seeds > 1 else text


def pct(v: float) -> str:
    """An error rate as a percentage, e.g. 0.0123 -> '1.23%'; NaN prints as '—'."""
    return fmt_pm(v, 0.0, 1, digits=PCT_DIGITS)


def points(d: float) -> str:
    """A signed difference of error rates in points (1 point = 0.01), e.g. 0.031 -> '+3.1 points'."""
    return f"{100 * d:+.1f} points"


def duration(seconds: float) -> str:
    """Seconds as H:MM:SS, e.g. 3725 -> '1:02:05'; NaN (unknown) prints as '?'."""
    if seconds != seconds:
        return "?"
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
