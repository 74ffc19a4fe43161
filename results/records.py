"""How run records are written and read back: atomic writes, flat dotted config keys, and which
run keys are bookkeeping rather than config.

Layering: `lightning_modules` (recipe, networks, metric names, the registry type) is the bottom
package; `datamodules` may use it; `results` may use both; `launch` sits on top and may use all
three. Nothing imports upwards (tests/test_package.py checks it). This module imports nothing
heavy, so launch/ writes its run files with it and results/ reads them with the same rules.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

# Run keys that only say where a trial's files go and how it reports progress, not what it trains:
# never a column of the report's tables, never part of the pair key (launch/config.py).
BOOKKEEPING_KEYS = ("name", "study", "out_dir", "progress", "check_every")


def atomic_write(path: Path, write: Callable[[Path], object], replace: bool = True) -> Path:
    """`write(tmp)` into a temporary file beside `path`, then rename it onto `path`, so a reader
    never sees a half-written file. `replace=False` leaves the rename to another caller (e.g. the
    one DDP rank that owns the file, after every rank took part in writing it)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    if replace:
        os.replace(tmp, path)
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
