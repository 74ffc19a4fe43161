"""What a run leaves behind in runs/<study>/<trial>/: config.yaml (with provenance), metrics.csv
(one row per evaluation, flushed as it is written, so an interrupted run keeps every row) and
summary.json (final metrics, samples seen, wall time, status)."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from omegaconf import OmegaConf

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("torch", "pytorch-lightning", "torchmetrics", "ray", "numpy", "omegaconf", "mnist1d", "ffcv")
STATUSES = ("running", "completed", "diverged", "failed", "interrupted")


def git_commit() -> str:
    """The repository's commit, with '-dirty' when there are uncommitted changes; 'unknown' outside git."""
    try:
        run = lambda *a: subprocess.run(["git", *a], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5)  # noqa: E731
        head = run("rev-parse", "HEAD")
        if head.returncode:
            return "unknown"
        dirty = run("status", "--porcelain", "--untracked-files=no").stdout.strip()
        return head.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def provenance() -> dict:
    return {"git_commit": git_commit(), "versions": versions(), "argv": " ".join(sys.argv), "host": platform.node()}


def atomic_write_text(path: Path, text: str) -> Path:
    """Write to a temporary file beside `path`, then rename: a reader never sees a half-written file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "nan" / "inf": valid JSON, and a diverged run's numbers stay visible
    return value


def _csv_text(columns: list[str], rows: list[dict], header: bool = False) -> str:
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    """metrics.csv's header and its complete rows, as strings.

    A torn last row (no line end, or the wrong number of fields: a write cut short by a crash) is
    dropped with a warning naming the file; any other malformed row raises ValueError naming the file.
    """
    lines = Path(path).read_text().splitlines(keepends=True)
    if not lines or not lines[0].endswith("\n"):
        return [], []
    header = next(csv.reader([lines[0]]))
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        fields = next(csv.reader([line]), [])
        if line.endswith("\n") and len(fields) == len(header):
            rows.append(fields)
        elif number == len(lines):
            print(f"warning: {path}: dropped its torn last row (line {number}: {line.strip()[:40]!r}), "
                  "a write cut short", file=sys.stderr, flush=True)
        else:
            raise ValueError(f"{path} is malformed: line {number} has {len(fields)} fields, the header "
                             f"{len(header)} (delete that trial directory to re-run it)")
    return header, rows


def last_row(path: Path) -> dict[str, float]:
    """The last complete row of a metrics.csv, as numbers ({} when there is none)."""
    if not Path(path).exists():
        return {}
    header, rows = read_rows(path)
    return {k: float(v) for k, v in zip(header, rows[-1], strict=True) if v != ""} if rows else {}


class RunRecorder:
    """Writes one run's files. Only the global-zero rank writes."""

    def __init__(self, run_dir: Path):
        self.run_dir, self.enabled = Path(run_dir), False
        self.metrics_path = self.run_dir / "metrics.csv"
        self.rows: list[dict] = []
        self._columns: list[str] | None = None

    def enable(self, is_global_zero: bool) -> bool:
        """Turn writing on for the global-zero rank (known once the Trainer exists)."""
        self.enabled = is_global_zero
        if is_global_zero:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        return is_global_zero

    def write_config(self, cfg, extra: dict) -> None:
        if not self.enabled:
            return
        doc = OmegaConf.to_container(cfg, resolve=True)
        doc["provenance"] = extra
        atomic_write_text(self.run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(doc)))

    def start_metrics(self, columns: list[str], keep_until_step: int = 0) -> None:
        """Open metrics.csv with these columns; rows of steps <= keep_until_step survive a resume."""
        self._columns = columns
        if not self.enabled:
            return
        kept = []
        if keep_until_step and self.metrics_path.exists():
            header, rows = read_rows(self.metrics_path)
            kept = [r for r in (dict(zip(header, row, strict=True)) for row in rows)
                    if int(r["step"]) <= keep_until_step]
        atomic_write_text(self.metrics_path, _csv_text(columns, kept, header=True))

    def add_row(self, row: dict) -> None:
        self.rows.append(row)
        if not self.enabled:
            return
        line = _csv_text(self._columns, [row])
        with self.metrics_path.open("a", newline="") as f:
            f.write(line)  # the whole row and its line end in one write: a crash leaves it whole or torn
            f.flush()  # at its end, never a complete-looking number cut short (see read_rows)

    def write_summary(self, summary: dict) -> None:
        if not self.enabled:
            return
        atomic_write_text(self.run_dir / "summary.json",
                          json.dumps({k: _json_safe(v) for k, v in summary.items()}, indent=2) + "\n")
