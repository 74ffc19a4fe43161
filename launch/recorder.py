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
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

from omegaconf import OmegaConf
from twoworlds.results.records import atomic_write_text, last_row, read_rows  # noqa: F401  (last_row: re-exported)

from twoworlds.errors import UserError

PACKAGES = ("twoworlds", "torch", "pytorch-lightning", "torchmetrics", "ray", "numpy", "omegaconf", "mnist1d", "ffcv")
STATUSES = ("running", "completed", "diverged", "failed", "interrupted")


def source_root() -> Path | None:
    """The source checkout this code runs from (the folder holding twoworlds/ and launch/), or None
    when it runs from an installed wheel (site-packages/twoworlds/launch/)."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "twoworlds" / "__init__.py").is_file() else None


def git_commit() -> str:
    """The checkout's commit, with '-dirty' when there are uncommitted changes; 'unknown' outside git
    and for a wheel install (whose version `versions()` records), even in a venv inside some repository."""
    root = source_root()
    if root is None:
        return "unknown"
    try:
        run = lambda *a: subprocess.run(["git", *a], cwd=root, capture_output=True, text=True, timeout=5)  # noqa: E731
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


# The command a person typed: a sweep's driver sets it, and Ray hands TWOWORLDS_* variables to every trial, whose
# own argv is a Ray worker's.
ARGV_ENV = "TWOWORLDS_ARGV"


def provenance() -> dict:
    argv = os.environ.get(ARGV_ENV) or " ".join(sys.argv)
    prov = {"git_commit": git_commit(), "versions": versions(), "argv": argv, "host": platform.node()}
    torch = sys.modules.get("torch")  # the trial process's thread count: float sums, so the last digits, depend on it
    if torch is not None:
        prov["torch_threads"] = torch.get_num_threads()
    return prov


def _json_safe(value):
    """Non-finite floats at any depth as "nan" / "inf" / "-inf": strict JSON, and a diverged run's
    numbers stay visible (readers turn them back with float())."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _csv_text(columns: list[str], rows: list[dict], header: bool = False) -> str:
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


class WriteError(UserError):
    """A run file could not be written (a full disk, a quota, a permission): one line naming the file."""


@contextmanager
def writing(path: Path):
    """Turn an OSError while writing `path` into a WriteError naming it (atomic_write has removed its
    temporary file by then)."""
    try:
        yield
    except OSError as e:
        raise WriteError(f"cannot write {path}: {e.strerror or e} (errno {e.errno}); free space or choose another "
                         "out_dir=, then run it again") from None


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
        with writing(self.run_dir / "config.yaml"):
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
        with writing(self.metrics_path):
            atomic_write_text(self.metrics_path, _csv_text(columns, kept, header=True))

    def add_row(self, row: dict) -> None:
        self.rows.append(row)
        if not self.enabled:
            return
        line = _csv_text(self._columns, [row])
        with writing(self.metrics_path), self.metrics_path.open("a", newline="") as f:
            f.write(line)  # the whole row and its line end in one write: a crash leaves it whole or torn
            f.flush()  # at its end, never a complete-looking number cut short (see read_rows)

    def write_summary(self, summary: dict) -> None:
        if not self.enabled:
            return
        with writing(self.run_dir / "summary.json"):
            atomic_write_text(self.run_dir / "summary.json",
                              json.dumps(_json_safe(summary), indent=2, allow_nan=False) + "\n")
