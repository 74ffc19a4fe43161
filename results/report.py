"""`twoworlds report runs/<study>`: tables, analysis, plots and the study report.

Writes into runs/<study>/report/: curves.{parquet,csv} (one row per trial and evaluation step, with the
D_eff columns), trials.{parquet,csv}, pairs.csv, configurations.csv, power_laws.csv, with effective data
effective_data.csv, repetition_law.csv and repetition_holdout.csv, the PNG plots, report.md and a
self-contained index.html (images embedded). Every file is written whole or not at all (atomic_write).

The work is split by kind: tables.py computes (an `Analysis`), narrate.py words it, sections.py and
plots.py render it; this module reads the study and writes the files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from twoworlds.results.aggregate import StudyError, load_study, write_tables
from twoworlds.results.analysis import CONVERGED_BELOW
from twoworlds.results.claims import Verdict
from twoworlds.results.document import to_html, to_markdown
from twoworlds.results.records import atomic_write, atomic_write_text
from twoworlds.results.repetition import repetition_error, with_effective_data
from twoworlds.results.repetition_report import tables_of
from twoworlds.results.sections import SECTIONS
from twoworlds.results.tables import Analysis, analyse

__all__ = ["Analysis", "Report", "analyse", "build_report"]


@dataclass
class Report:
    index: Path  # the self-contained index.html
    verdicts: list[Verdict]  # the sweep file's claims, checked on this run

    @property
    def failed(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.holds is not True]


def restated_claims(manifest: dict, study: str, sweep_file: str | Path) -> dict:
    """The run's manifest with the claims of `sweep_file` as written now (a claim restated after the run); the
    report says where they came from. Refused when the file is another study's (not `study`, nor the study of
    which `study` is a seed set or the smoke variant)."""
    from twoworlds.launch.sweep_spec import load_sweep
    sweep = load_sweep(sweep_file)
    if study != sweep.name and not study.startswith(f"{sweep.name}-"):
        raise StudyError(f"--claims {sweep_file} holds the claims of study '{sweep.name}', not of '{study}'; "
                         f"give that study's own sweep file")
    return {**manifest, "claims": sweep.claims, "claims_from": str(sweep.path),
            "stored_claims": manifest.get("claims") or []}


def _write_csv(path: Path, df: pd.DataFrame) -> Path:
    return atomic_write(path, lambda tmp: df.to_csv(tmp, index=False))


def build_report(study_dir: str | Path, *, target: float | None = None, budget: float | None = None,
                 threshold: float = CONVERGED_BELOW, out_dir: str | Path | None = None, x: str = "steps",
                 claims_from: str | Path | None = None) -> Report:
    """Write the report of runs/<study>/ (see the module docstring). `x`: the x-axis of plots (a)
    and (d), a key of X_AXES; `budget`: plot (d)'s budget in that unit
    (a step, a sample count, FLOPs or seconds; the CLI's --budget, alias --speed-step). `claims_from`: a sweep
    file (or shipped study name) whose claims, as written now, are checked instead of those stored with the run."""
    study = load_study(study_dir)
    if claims_from is not None:
        study.manifest = restated_claims(study.manifest, study.name, claims_from)
    out = Path(out_dir) if out_dir else study.path / "report"
    out.mkdir(parents=True, exist_ok=True)
    error = repetition_error(study.manifest.get("claims") or [])
    study.curves = with_effective_data(study.trials, study.curves, study.config_keys, error)  # the D_eff columns
    write_tables(study, out)
    a = analyse(study, target, budget, threshold, x)
    if len(a.configs):
        for name, df in (("pairs", a.pairs), ("configurations", a.configs), ("power_laws", a.fits),
                         *tables_of(a.repetition).items()):
            _write_csv(out / f"{name}.csv", df)
    blocks = [block for section in SECTIONS for block in section(a, out)]
    atomic_write_text(out / "report.md", to_markdown(blocks, out))
    index = atomic_write_text(out / "index.html", to_html(blocks, f"twoworlds report: {study.name}"))
    return Report(index, a.verdicts)
