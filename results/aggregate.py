"""Gather a study's trials into tidy tables.

Each trial directory (runs/<study>/<trial>/) is read from its own files: config.yaml (the resolved
config), metrics.csv (one row per evaluation: the primary source) and summary.json (status, final
metrics; absent while the trial is still running). A study that is running, or that has failed,
diverged or missing trials, still aggregates: those trials are listed, with the rows they logged.

    trials: one row per trial: trial, status, world, n, seed, pair_key, config values (dotted keys),
            flops_per_sample, ...
    curves: one row per (trial, evaluation step): the metrics.csv columns (train_flops included) plus
            the trial's config values
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from twoworlds.lightning_modules.metrics import final_name
from twoworlds.results.records import (
    BOOKKEEPING_KEYS,
    MANIFEST,
    atomic_write,
    flatten,
    read_config_file,
    read_json_file,
    read_rows,
)

from twoworlds.errors import UserError

# Trial-level columns kept from summary.json.
_SUMMARY_KEYS = ("status", "pair_key", "steps_done", "samples_seen", "distinct_samples_seen", "num_parameters", "num_classes",
                 "flops_per_sample", "wall_time", "error", "diverged_at_step", "diverged_reason", "resumed_from_step",
                 "stopped_early_at", "config_hash")


class StudyError(UserError, ValueError):
    """A study directory that cannot be reported, phrased for the person who typed the path (ValueError too:
    callers from before UserError catch that)."""


@dataclass
class Study:
    name: str
    path: Path
    trials: pd.DataFrame
    curves: pd.DataFrame
    config_keys: list[str]  # dotted config keys present as columns of both tables
    varying: list[str]  # config keys whose value differs between trials (seed and world included)
    missing: list[str] = field(default_factory=list)  # expected by the sweep file, no directory yet
    manifest: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)  # of the newest trial: git commit, versions

    def by_status(self, *statuses: str) -> list[str]:
        return sorted(self.trials.loc[self.trials.status.isin(statuses), "trial"])


def _read_trial(path: Path) -> tuple[dict, pd.DataFrame, dict]:
    doc = _read_config(path / "config.yaml")
    prov = doc.pop("provenance", {}) or {}
    doc.pop("config_hash", None)
    cfg = {k: v for k, v in flatten(doc).items() if k.split(".")[0] not in BOOKKEEPING_KEYS}
    summary_path = path / "summary.json"
    summary = _read_json(summary_path) if summary_path.exists() else {"status": "running"}
    row = {"trial": path.name, **cfg, **{k: summary.get(k) for k in _SUMMARY_KEYS}}
    for k, v in (summary.get("final") or {}).items():
        row[final_name(k)] = float(v)  # "nan"/"inf" strings of a diverged run become floats again
    metrics_path = path / "metrics.csv"
    curve = read_metrics(metrics_path) if metrics_path.exists() else pd.DataFrame()
    return row, curve, prov


def _read_config(path: Path) -> dict:
    try:
        return read_config_file(path)
    except ValueError as e:
        raise StudyError(f"{e}; fix or delete that trial directory") from None


def _read_json(path: Path) -> dict:
    try:
        return read_json_file(path)
    except ValueError as e:
        raise StudyError(f"{e}; fix or delete it") from None


def read_metrics(path: Path) -> pd.DataFrame:
    """A trial's metrics.csv as numbers: complete rows only (a torn last row is dropped with a warning,
    see launch/recorder.read_rows); a malformed file is a StudyError naming it."""
    try:
        header, rows = read_rows(path)
    except ValueError as e:
        raise StudyError(str(e)) from None
    df = pd.DataFrame(rows, columns=header)
    for column in df.columns:
        try:
            df[column] = pd.to_numeric(df[column].replace(["", "nan"], float("nan")))  # a diverged run's "nan"
        except (ValueError, TypeError):
            raise StudyError(f"{path} is malformed: column '{column}' holds a value that is not a number; "
                             "delete that trial directory to re-run it") from None
    return df


def load_study(study_dir: str | Path) -> Study:
    """Read every trial of runs/<study>/ (see the module docstring)."""
    path = Path(study_dir)
    if not path.is_dir():
        raise StudyError(f"no study directory at {path} (run `twoworlds sweep FILE` first; outputs go to "
                         "<out_dir>/<study name>/)")
    manifest_path = path / MANIFEST
    manifest = _read_json(manifest_path) if manifest_path.exists() else {}
    dirs = sorted(p for p in path.iterdir() if (p / "config.yaml").is_file())
    if not dirs:
        raise StudyError(f"{path} holds no trials yet (no <trial>/config.yaml); is it a study directory "
                         "like runs/quickstart?")
    rows, curves, prov = [], [], {}
    for d in dirs:
        row, curve, prov_d = _read_trial(d)
        rows.append(row)
        prov = prov_d or prov
        if len(curve):
            curves.append(curve.assign(trial=d.name))
    trials = pd.DataFrame(rows)
    config_keys = [c for c in trials.columns if c not in ("trial", *_SUMMARY_KEYS) and not c.startswith(final_name(""))]
    varying = [k for k in config_keys if trials[k].astype(str).nunique() > 1]
    cols = ["trial", *config_keys, "pair_key"]
    if curves:
        tidy = pd.concat(curves, ignore_index=True).merge(trials[cols], on="trial", how="left")
        first = ["trial", "step"]
        tidy = tidy[first + [c for c in tidy.columns if c not in first]]
    else:
        tidy = pd.DataFrame(columns=["trial", "step", *cols[1:]])
    expected = manifest.get("trials", [])
    missing = [t for t in expected if t not in set(trials.trial)]
    return Study(manifest.get("name", path.name), path, trials, tidy, config_keys, varying, missing, manifest, prov)


def write_tables(study: Study, out_dir: Path) -> dict[str, Path]:
    """The tidy tables as parquet and CSV (parquet keeps dtypes; CSV opens anywhere)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, df in (("curves", study.curves), ("trials", study.trials)):
        for ext in ("parquet", "csv"):
            write = (lambda tmp, df=df: df.to_parquet(tmp, index=False)) if ext == "parquet" else (
                lambda tmp, df=df: df.to_csv(tmp, index=False))
            paths[f"{name}.{ext}"] = atomic_write(out_dir / f"{name}.{ext}", write)
    return paths
