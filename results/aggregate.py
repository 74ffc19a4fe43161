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

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

# Written by `twoworlds sweep` beside the trials: the sweep file and the expected trial names.
MANIFEST = "sweep.json"
# Config keys that say nothing about what was trained (and would make every trial "vary").
_NOT_CONFIG = ("name", "study", "out_dir", "progress", "check_every", "provenance")
# Trial-level columns kept from summary.json.
_SUMMARY_KEYS = ("status", "pair_key", "steps_done", "samples_seen", "distinct_samples_seen", "num_parameters", "num_classes",
                 "flops_per_sample", "wall_time", "error", "diverged_at_step", "diverged_reason", "resumed_from_step", "stopped_early_at")


class StudyError(ValueError):
    """A study directory that cannot be reported, phrased for the person who typed the path."""


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


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = str(v) if isinstance(v, list) else v
    return out


def _read_trial(path: Path) -> tuple[dict, pd.DataFrame, dict]:
    doc = yaml.safe_load((path / "config.yaml").read_text()) or {}
    prov = doc.pop("provenance", {}) or {}
    cfg = {k: v for k, v in flatten(doc).items() if k.split(".")[0] not in _NOT_CONFIG}
    summary_path = path / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {"status": "running"}
    row = {"trial": path.name, **cfg, **{k: summary.get(k) for k in _SUMMARY_KEYS}}
    for k, v in (summary.get("final") or {}).items():
        row[f"final/{k}"] = float(v)  # "nan"/"inf" strings of a diverged run become floats again
    metrics_path = path / "metrics.csv"
    curve = pd.read_csv(metrics_path) if metrics_path.exists() and metrics_path.stat().st_size else pd.DataFrame()
    return row, curve, prov


def load_study(study_dir: str | Path) -> Study:
    """Read every trial of runs/<study>/ (see the module docstring)."""
    path = Path(study_dir)
    if not path.is_dir():
        raise StudyError(f"no study directory at {path} (run `twoworlds sweep FILE` first; outputs go to "
                         "<out_dir>/<study name>/)")
    manifest_path = path / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
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
    config_keys = [c for c in trials.columns if c not in ("trial", *_SUMMARY_KEYS) and not c.startswith("final/")]
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
            p = out_dir / f"{name}.{ext}"
            tmp = p.with_suffix(p.suffix + ".tmp")
            df.to_parquet(tmp, index=False) if ext == "parquet" else df.to_csv(tmp, index=False)
            tmp.replace(p)
            paths[f"{name}.{ext}"] = p
    return paths
