"""Verification of the FFCV cache: content digests of source files, and the .beton's own checksum.

- `file_digest`: SHA-256 of a source file's whole content, hashed once per version of the file and
  recorded in `<cache>/digests/<hash of the path>.json` with the file's size and mtime (a changed
  size or mtime means a rehash).
- `seal`: hashes a freshly written .beton and moves it into place with its sidecar `<file>.sha256`
  (`sha256sum -c` format) and a stamp `<file>.verified` (size, mtime, digest at the last check).
- `problem`: why an existing .beton cannot be used (no sidecar, or a digest that differs), or None;
  a file whose size and mtime match its stamp is not rehashed.
- `locked`: an exclusive flock on `<file>.lock` around writing and checking, so concurrent trials
  (and DDP ranks) write a pool once and never read a half-checked file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
from pathlib import Path

from twoworlds.errors import DataError

log = logging.getLogger(__name__)
HASH_CHUNK = 16 << 20  # bytes read at a time while hashing


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _stat_key(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _write_json(path: Path, doc: dict) -> None:
    # a per-process temporary name: trials write the same digest record concurrently, unlocked
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def file_digest(path: Path, cache_dir: str | Path) -> str:
    """SHA-256 of a source file's whole content, hashed once per (path, size, mtime) and recorded."""
    path = Path(path).resolve()
    record = Path(cache_dir).expanduser() / "digests" / f"{hashlib.sha1(str(path).encode()).hexdigest()[:16]}.json"
    before = {"path": str(path), **_stat_key(path)}
    known = _read_json(record)
    if known.get("sha256") and {k: known.get(k) for k in before} == before:
        return known["sha256"]
    if before["size"] >= 1 << 30:
        log.info(f"ffcv: hashing {path} ({before['size'] / 2**30:.1f} GiB; once per version of the file)")
    digest = _sha256(path)
    if {"path": str(path), **_stat_key(path)} != before:
        raise DataError(f"{path} changed while it was being hashed; run again once it is complete")
    record.parent.mkdir(parents=True, exist_ok=True)
    _write_json(record, {**before, "sha256": digest})
    return digest


def companion(beton: Path, suffix: str) -> Path:
    return beton.with_name(beton.name + suffix)


@contextlib.contextmanager
def locked(beton: Path):
    """Holds an exclusive lock on `<beton>.lock`: one process at a time writes or checks the file."""
    beton.parent.mkdir(parents=True, exist_ok=True)
    with open(companion(beton, ".lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def seal(tmp: Path, final: Path) -> None:
    """Hash the written file, then move it into place with its sidecar and verified-stamp."""
    digest = _sha256(tmp)
    sidecar = companion(final, ".sha256")
    _write_json(companion(final, ".verified"), {})  # no stale stamp survives a rewrite
    side_tmp = sidecar.with_name(f"{sidecar.name}.tmp-{os.getpid()}")
    side_tmp.write_text(f"{digest}  {final.name}\n")
    os.replace(side_tmp, sidecar)
    os.replace(tmp, final)
    _write_json(companion(final, ".verified"), {**_stat_key(final), "sha256": digest})


def problem(final: Path) -> str | None:
    """Why the existing `final` cannot be used, or None when it matches its sidecar checksum.
    A file whose size and mtime are those recorded at its last check is not rehashed."""
    sidecar = companion(final, ".sha256")
    if not sidecar.is_file():
        return "has no checksum"
    want = (sidecar.read_text().split() or [""])[0]
    stamp = {**_stat_key(final), "sha256": want}
    if _read_json(companion(final, ".verified")) == stamp:
        return None
    if _sha256(final) != want:
        return "failed its checksum"
    _write_json(companion(final, ".verified"), stamp)
    return None


def discard(final: Path, inode: int | None = None) -> None:
    """Delete the .beton and its checksum files (only the file with this inode, when given: a
    concurrent rebuild may already have replaced it)."""
    with contextlib.suppress(FileNotFoundError):
        if inode is not None and final.stat().st_ino != inode:
            return
    for path in (final, companion(final, ".sha256"), companion(final, ".verified")):
        path.unlink(missing_ok=True)
