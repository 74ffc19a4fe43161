"""How run records are written and read back: atomic writes, flat dotted config keys, and which
run keys are bookkeeping rather than config (`RunRecord`, declared with twoworlds/identity.py).

Layering: `lightning_modules` (recipe, networks, metric names, the registry type) is the bottom
package; `datamodules` may use it; `results` may use both; `launch` sits on top and may use all
three. Nothing imports upwards (tests/test_package.py checks it). This module imports nothing
heavy, so launch/ writes its run files with it and results/ reads them with the same rules.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from twoworlds.errors import UserError
from twoworlds.identity import bookkeeping, keys_with

_log = logging.getLogger(__name__)


class RecordError(UserError, ValueError):
    """A run record that cannot be read: a torn, malformed or foreign file, named in the message (ValueError
    too: callers phrase what it means for them by catching that)."""


# Written by `twoworlds sweep` beside the trials: the sweep file, its overrides and the expected trial names.
MANIFEST = "sweep.json"


@dataclass
class RunRecord:
    """The run keys that say where a trial's files go and how it reports, not what it trains: never a column
    of the report's tables, never part of the pair key. The run schema (launch/config.py RunConfig) extends it."""

    study: str = field(default="default", metadata=bookkeeping())  # outputs go to <out_dir>/<study>/<name>/
    # trial name; empty: derived from the config (e.g. mlp-w128-d3-bs128-real-n4000-s0)
    name: str = field(default="", metadata=bookkeeping())
    out_dir: str = field(default="runs", metadata=bookkeeping())
    # steps between divergence checks (one host sync each); in the config hash: it decides when a run stops
    check_every: int = field(default=50, metadata=bookkeeping(config_hash=True))
    progress: bool = field(default=True, metadata=bookkeeping())  # print a progress line at evaluations
    # Sweep trials: seconds of training between checkpoints (taken at evaluations; 0: at every one). A retried
    # trial redoes at most this much; a small trial never pays for a checkpoint (launch/loop.py).
    checkpoint_every_s: float = field(default=30.0, metadata=bookkeeping())


BOOKKEEPING_KEYS = keys_with(RunRecord, "bookkeeping")


def atomic_write(path: Path, write: Callable[[Path], object], replace: bool = True) -> Path:
    """`write(tmp)` into a temporary file beside `path`, then rename it onto `path`, so a reader
    never sees a half-written file. `replace=False` leaves the rename to another caller (e.g. the
    one DDP rank that owns the file, after every rank took part in writing it).

    The temporary name carries the process id: two processes writing the same file at once (a sweep
    driver marking a cut-off trial `interrupted` while the trial itself records the same) each rename
    their own whole file, and the last one wins; a shared name let one rename the other's file away
    and fail with FileNotFoundError."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        if replace:
            os.replace(tmp, path)
    except BaseException:  # a full disk, an interrupt: no temporary file is left behind
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def flatten(d: dict, prefix: str = "") -> dict:
    """{'optim': {'lr': 0.1}} -> {'optim.lr': 0.1}; lists become strings (TensorBoard hparams, tables)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = str(v) if isinstance(v, list) else v
    return out


def read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    """metrics.csv's header and its complete rows, as strings.

    A torn last row (no line end, or the wrong number of fields: a write cut short by a crash) is
    dropped with a logged warning naming the file; any other malformed row raises RecordError naming the file.
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
            _log.warning("%s: dropped its torn last row (line %d: %r), a write cut short", path, number,
                         line.strip()[:40])
        else:
            raise RecordError(f"{path} is malformed: line {number} has {len(fields)} fields, the header "
                             f"{len(header)} (delete that trial directory to re-run it)")
    return header, rows


def last_row(path: Path) -> dict[str, float]:
    """The last complete row of a metrics.csv, as numbers ({} when there is none)."""
    if not Path(path).exists():
        return {}
    header, rows = read_rows(path)
    return {k: float(v) for k, v in zip(header, rows[-1], strict=True) if v != ""} if rows else {}


def yaml_problem(e: yaml.YAMLError) -> str:
    """PyYAML's multi-line message as one line: what is wrong, and where."""
    mark = getattr(e, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{getattr(e, 'problem', None) or str(e).splitlines()[0]}{where}"


def read_config_file(path: Path) -> dict:
    """A trial's config.yaml as a mapping; RecordError naming the file when it is not valid YAML or
    holds no mapping (callers phrase the way out: launch refuses the run, the report the study)."""
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as e:
        raise RecordError(f"{path} is not valid YAML ({yaml_problem(e)})") from None
    if not isinstance(doc, dict):
        raise RecordError(f"{path} holds no config mapping")
    return doc


def read_json_file(path: Path) -> dict:
    """A run record's JSON object (summary.json, sweep.json); RecordError naming the file when it is not
    valid JSON or holds no object (callers decide what an unreadable record means for them)."""
    try:
        doc = json.loads(Path(path).read_text())
    except ValueError as e:
        raise RecordError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(doc, dict):
        raise RecordError(f"{path} holds no JSON object")
    return doc
