"""Finite sources read from files: the shared machinery of `cifar.py` (CIFAR-10, CIFAR-5m) and
`arrays.py` (the user's own arrays).

All of them are finite pools: pool ids are `[0, pool_size)` and test ids the range right after it,
`[pool_size, pool_size + test_size)` (`test_offset = pool_size`, fixed at construction, so capping
the pool with `data.pool_size` never moves the test range). Sample i is a pure function of the files
and (for `arrays` without a test split) `cfg.seed`.

Image sources return x as uint8 (B, C, H, W) and set `is_image`, `mean` and `std` (per channel, of
x / 255): images stay uint8 until they reach the device, where `datamodules.augment.prepare_images`
augments and normalizes them. Float arrays come back as float32 and are used as they are.

Large files are never read whole: `.npy` files are opened with `np.load(mmap_mode="r")`, and members
of `.npz` archives stored without compression (np.savez, which the published CIFAR-5m parts use)
are memory-mapped in place by `_npz_memmap`. `get` gathers only the rows asked for.

`data.test_size` caps every test set (and the CIFAR-10 evaluation set of cifar5m); set
`data.test_size=10000` for the full CIFAR test sets.
"""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import numpy as np
import torch
from twoworlds.datamodules.sources import Source

from twoworlds.errors import DataError

# ---------------------------------------------------------------------------------------------
# file helpers
# ---------------------------------------------------------------------------------------------


def _resolve(data_dir: str | Path, name: str) -> Path:
    """`name` relative to data_dir unless absolute (data_dir itself relative to the working directory)."""
    path = Path(name).expanduser()
    return path if path.is_absolute() else Path(data_dir).expanduser() / path


def _npz_memmap(path: str | Path, key: str) -> np.ndarray:
    """Member `key` of an .npz archive, memory-mapped when it is stored uncompressed.

    np.savez stores each array as `<key>.npy` with ZIP_STORED, so its bytes lie contiguously in the
    archive: after the member's local file header (30 bytes + file name + extra field) comes the
    .npy header, then the raw data, which `np.memmap` maps read-only. Compressed members (np.savez_
    compressed), object arrays or unknown .npy versions fall back to reading the member whole.
    """
    path = Path(path)
    with zipfile.ZipFile(path) as zf:
        try:
            info = zf.getinfo(f"{key}.npy")
        except KeyError:
            raise DataError(f"{path} has no array '{key}' (it holds: "
                           f"{', '.join(n.removesuffix('.npy') for n in zf.namelist())})") from None
    if info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 0x1:
        with open(path, "rb") as f:
            f.seek(info.header_offset)
            local = f.read(30)
            if local[:4] == b"PK\x03\x04":
                name_len, extra_len = struct.unpack("<HH", local[26:30])
                f.seek(info.header_offset + 30 + name_len + extra_len)
                version = np.lib.format.read_magic(f)
                header = {(1, 0): np.lib.format.read_array_header_1_0,
                          (2, 0): np.lib.format.read_array_header_2_0}.get(version)
                if header is not None:
                    shape, fortran, dtype = header(f)
                    if not dtype.hasobject:
                        return np.memmap(path, dtype=dtype, mode="r", offset=f.tell(), shape=shape,
                                         order="F" if fortran else "C")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return archive[key]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{path}: array '{key}' cannot be read ({why}); write it with np.savez from numeric "
                        "arrays") from None


def read_npy(path: Path, key: str) -> np.ndarray:
    """A .npy file, memory-mapped; a one-line DataError naming the key and the file when numpy cannot read it (an
    object array: nothing in a data file is unpickled; a file cut short; not a .npy file at all)."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{key}={Path(path).resolve()} is not a readable .npy array ({why}); write it with "
                        "np.save from a numeric array") from None


def _npz_keys(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as zf:
            return [n.removesuffix(".npy") for n in zf.namelist()]
    except zipfile.BadZipFile:
        raise DataError(f"{path} is not an .npz archive (np.savez writes one: a zip of .npy arrays)") from None


def _gather(arrays: list[np.ndarray], which: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Row rows[i] of arrays[which[i]] for every i, reading each array in ascending row order."""
    first = arrays[int(which[0])] if len(which) else arrays[0]
    out = np.empty((len(rows), *first.shape[1:]), dtype=first.dtype)
    for k in np.unique(which):
        sel = np.flatnonzero(which == k)
        r = rows[sel]
        order = np.argsort(r, kind="stable")
        out[sel[order]] = arrays[int(k)][r[order]]
    return out


def _open(desc: tuple) -> np.ndarray:
    """Re-open an array from its descriptor: ("npz", path, key) or ("npy", path)."""
    if desc[0] == "npz":
        return _npz_memmap(desc[1], desc[2])
    return np.load(desc[1], mmap_mode="r", allow_pickle=False)


def _as_ids(ids: torch.Tensor) -> np.ndarray:
    return torch.as_tensor(ids).to("cpu", torch.int64).numpy()


class FileSource(Source):
    """A finite pool backed by row-addressable arrays. Subclasses set `_arrays`, `_labels`,
    `_layout` and implement `_locate(ids) -> (which array, row)` for valid ids.

    Pickling (Ray, DDP spawn) does not copy memory-mapped arrays: the state keeps how each was
    opened (`_opened`: a descriptor for `_open`, or None for in-memory arrays) and reopens it.
    """

    _arrays: list[np.ndarray]
    _opened: list[tuple | None]
    _labels: list[np.ndarray]  # int64, one per array
    _layout: str  # "hwc" (uint8 images, stored HWC), "chw" (uint8 images, stored CHW), "float"
    files: list[Path]  # every file the samples are read from (the FFCV cache hashes their content)

    def _locate(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_arrays"] = [None if isinstance(a, np.memmap) and o is not None else a
                            for a, o in zip(self._arrays, self._opened, strict=True)]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._arrays = [_open(o) if a is None else a for a, o in zip(self._arrays, self._opened, strict=True)]

    def _check_ids(self, ids: np.ndarray) -> None:
        test = ids >= self.test_offset
        bad = (ids < 0) | (test & (ids >= self.test_offset + self.test_size))
        if bad.any():
            raise IndexError(f"{self.name}: ids {ids[bad][:5].tolist()} are outside the pool [0, {self.test_offset:,}) "
                             f"and the test range [{self.test_offset:,}, {self.test_offset + self.test_size:,})")

    def get(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ids = _as_ids(ids)
        self._check_ids(ids)
        which, rows = self._locate(ids)
        x = self._convert(_gather(self._arrays, which, rows))
        y = np.empty(len(ids), dtype=np.int64)
        for k in np.unique(which):
            sel = which == k
            y[sel] = self._labels[int(k)][rows[sel]]
        return x, torch.from_numpy(y)

    def _convert(self, x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(x)
        if self._layout == "hwc":
            return t.permute(0, 3, 1, 2).contiguous()
        if self._layout == "chw":
            return t
        return t.float().view(len(x), *self.input_shape)
