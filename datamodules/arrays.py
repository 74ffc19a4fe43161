"""The `arrays` source: the user's own data from .npz / .npy files (see `files.py` for how files are read)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from twoworlds.datamodules.files import FileSource, _npz_keys, _npz_memmap, _resolve, read_npy
from twoworlds.datamodules.sources import DataConfig, register_source

from twoworlds.errors import ConfigError, DataError

STATS_MAX = 50_000  # arrays source: mean/std from at most this many pool images


# ---------------------------------------------------------------------------------------------
# arrays: the user's own data from .npz / .npy files
# ---------------------------------------------------------------------------------------------


def _first_key(keys: list[str], *names: str) -> str | None:
    return next((n for n in names if n in keys), None)


FINITE_CHUNK = 64 << 20  # bytes of x checked at a time (memory-mapped files can be large)
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _finite(x: np.ndarray, path: Path, key: str) -> np.ndarray:
    """x itself; a DataError naming the file and the first row with a NaN, an inf, or a value that
    turns into inf as float32 (a data error, not a run that "diverges at step 1")."""
    if not np.issubdtype(x.dtype, np.inexact) or not len(x):
        return x
    rows = max(1, FINITE_CHUNK // max(1, x[:1].nbytes))
    for start in range(0, len(x), rows):
        chunk = np.asarray(x[start:start + rows]).reshape(min(rows, len(x) - start), -1)
        ok = (np.abs(chunk) <= FLOAT32_MAX).all(1)  # False for NaN too
        if not ok.all():
            row = start + int(np.argmin(ok))
            raise DataError(f"arrays: {Path(path).resolve()} ({key}) has a non-finite value (NaN, inf, or beyond "
                             f"float32) in row {row:,}; fix or drop that sample")
    return x


def _num_classes(labels: list[np.ndarray], files: dict[str, Path], given: int | None) -> int:
    """K = data.num_classes when given (every label below it), else max label + 1, refused when a
    class below the largest label has no sample (one stray label 1000 would make 1001 classes)."""
    named = [(what, lab) for what, lab in zip(("y", "test y"), labels, strict=False) if len(lab)]
    what, lab = max(named, key=lambda p: int(p[1].max()))
    top, row = int(lab.max()), int(lab.argmax())
    where = f"label {top} in row {row:,} of {what} ({Path(files[what]).resolve()})"
    if given is not None:
        if top >= given:
            raise DataError(f"arrays: {where} is not below data.num_classes={given}; fix the label or raise data.num_classes")
        return given
    counts = np.bincount(np.concatenate([lab for _, lab in named]), minlength=top + 1)
    empty = np.flatnonzero(counts == 0)
    if len(empty):
        shown = ", ".join(str(int(k)) for k in empty[:5]) + (f", ... ({len(empty):,} in all)" if len(empty) > 5 else "")
        raise DataError(f"arrays: {where} implies {top + 1:,} classes, but classes {shown} have no sample; "
                         f"fix the labels, or set data.num_classes={top + 1} if that many classes is intended")
    return top + 1


@register_source("arrays")
class ArraySource(FileSource):
    """The user's arrays: `data.npz=<file>` (x/X, y/Y, optional x_test/X_test, y_test/Y_test) or
    `data.x_file=… data.y_file=…` (.npy, optional test_x_file/test_y_file), relative to data_dir.

    uint8 x of shape (N, H, W, C) with C in 1..4 are images (served CHW, `is_image`, mean/std from
    at most 50,000 pool images); uint8 (N, C, H, W) with C in 1..4 are taken as already CHW. Anything
    else is float features of shape (N, *shape), served float32 with input_shape = shape ((1, D) for
    (N, D)). Without a test split the last `test_fraction` of a seeded permutation (cfg.seed) of the
    samples is the test set; pool and test ids keep file order within each.
    """

    def __init__(self, cfg: DataConfig):
        data_dir = Path(cfg.data_dir).expanduser()
        x, y, tx, ty, self._opened, files = self._load(cfg, data_dir)
        self.files = sorted(set(files.values()))
        if len(x) != len(y):
            raise DataError(f"arrays: x holds {len(x):,} samples but y holds {len(y):,} labels")
        if tx is not None and len(tx) != len(ty):
            raise DataError(f"arrays: the test x holds {len(tx):,} samples but the test y holds {len(ty):,} labels")
        if tx is not None and tx.shape[1:] != x.shape[1:]:
            raise DataError(f"arrays: test x samples have shape {tx.shape[1:]}, training samples {x.shape[1:]}")
        if len(x) == 0:
            raise DataError("arrays: x holds no samples")
        labels = [self._labels_of(y, "y")] + ([self._labels_of(ty, "test y")] if ty is not None else [])
        self.num_classes = _num_classes(labels, files, cfg.num_classes)

        self._layout = self._layout_of(x, files["x"])
        sample = x.shape[1:]
        if self._layout == "hwc":
            self.input_shape = (sample[2], sample[0], sample[1])
        elif self._layout == "chw":
            self.input_shape = tuple(sample)
        else:
            self.input_shape = (1, sample[0]) if len(sample) == 1 else tuple(sample)
        self.is_image = self._layout != "float"

        if tx is not None:  # pool = all of x, test = the given split
            self._arrays, self._labels = [x, tx], labels
            self.pool_rows = None
            test_rows, n_test = None, len(tx)
        else:  # seeded holdout of the last test_fraction of a permutation
            self._opened = self._opened[:1]
            if not 0 < cfg.test_fraction < 1:
                raise ConfigError(f"data.test_fraction must be in (0, 1) when there is no test split, got {cfg.test_fraction}")
            n_test = int(round(cfg.test_fraction * len(x)))
            if n_test < 1 or n_test >= len(x):
                raise ConfigError(f"data.test_fraction={cfg.test_fraction} of {len(x):,} samples leaves "
                                 f"{n_test:,} test samples; pool and test set both need at least one")
            perm = np.random.default_rng(cfg.seed).permutation(len(x))
            self.pool_rows = np.sort(perm[: len(x) - n_test])
            test_rows = np.sort(perm[len(x) - n_test:])
            self._arrays, self._labels = [x], labels
        self.test_rows = test_rows
        self.pool_size = len(x) if self.pool_rows is None else len(self.pool_rows)
        self.test_offset = self.pool_size
        self.test_size = min(cfg.test_size, n_test)
        if self.test_size < 1:
            raise ConfigError("arrays: the test set is empty (data.test_size must be >= 1)")
        if self.is_image:
            self.mean, self.std = self._channel_stats()

    # --- loading ----------------------------------------------------------------------------
    @staticmethod
    def _load(cfg: DataConfig, data_dir: Path):
        if cfg.npz and (cfg.x_file or cfg.y_file):
            raise ConfigError("arrays: give either data.npz or data.x_file/data.y_file, not both")
        if cfg.npz:
            path = _resolve(data_dir, cfg.npz)
            if not path.is_file():
                raise DataError(f"arrays: data.npz file {path.resolve()} does not exist")
            keys = _npz_keys(path)
            kx, ky = _first_key(keys, "x", "X"), _first_key(keys, "y", "Y")
            if kx is None or ky is None:
                raise DataError(f"arrays: {path.resolve()} must hold x (or X) and y (or Y); it holds {', '.join(keys)}")
            ktx, kty = _first_key(keys, "x_test", "X_test"), _first_key(keys, "y_test", "Y_test")
            if (ktx is None) != (kty is None):
                raise DataError(f"arrays: {path.resolve()} holds only one of x_test/y_test; give both or neither")
            x, y = _npz_memmap(path, kx), np.asarray(_npz_memmap(path, ky))
            opened = [("npz", path, kx), ("npz", path, ktx)]
            files = {"x": path, "y": path, "test x": path, "test y": path}
            if ktx is None:
                return _finite(x, path, "x"), y, None, None, opened, files
            tx = _finite(_npz_memmap(path, ktx), path, ktx)
            return _finite(x, path, kx), y, tx, np.asarray(_npz_memmap(path, kty)), opened, files
        if not (cfg.x_file and cfg.y_file):
            raise ConfigError("the arrays source needs data.npz=<file.npz> or data.x_file=<x.npy> data.y_file=<y.npy> "
                             f"(relative to data.data_dir={cfg.data_dir} unless absolute)")
        if bool(cfg.test_x_file) != bool(cfg.test_y_file):
            raise ConfigError("arrays: give both data.test_x_file and data.test_y_file, or neither")
        names = {"data.x_file": cfg.x_file, "data.y_file": cfg.y_file}
        if cfg.test_x_file:
            names.update({"data.test_x_file": cfg.test_x_file, "data.test_y_file": cfg.test_y_file})
        paths = {key: _resolve(data_dir, name) for key, name in names.items()}
        missing = [f"{key}={p.resolve()}" for key, p in paths.items() if not p.is_file()]
        if missing:
            raise DataError(f"arrays: missing {', '.join(missing)}")
        arrays = {key: read_npy(p, key) for key, p in paths.items()}
        opened = [("npy", paths["data.x_file"]), ("npy", paths.get("data.test_x_file"))]
        files = {what: paths[f"data.{key}"] for what, key in (("x", "x_file"), ("y", "y_file"),
                 ("test x", "test_x_file"), ("test y", "test_y_file")) if f"data.{key}" in paths}
        for key in ("data.x_file", "data.test_x_file"):
            if key in arrays:
                _finite(arrays[key], paths[key], key)
        return (arrays["data.x_file"], np.asarray(arrays["data.y_file"]),
                arrays.get("data.test_x_file"),
                None if "data.test_y_file" not in arrays else np.asarray(arrays["data.test_y_file"]), opened, files)

    @staticmethod
    def _labels_of(y: np.ndarray, what: str) -> np.ndarray:
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1:
            raise DataError(f"arrays: {what} must be one label per sample, got shape {y.shape}")
        if not (np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_):
            raise DataError(f"arrays: {what} labels must be integers (class indices), got dtype {y.dtype}")
        y = y.astype(np.int64)
        if len(y) and y.min() < 0:
            raise DataError(f"arrays: {what} labels must be >= 0, got {int(y.min())}")
        return y

    @staticmethod
    def _layout_of(x: np.ndarray, path: Path) -> str:
        if x.dtype == np.uint8 and x.ndim == 4:
            if 1 <= x.shape[3] <= 4:
                return "hwc"
            if 1 <= x.shape[1] <= 4:
                return "chw"
        if x.ndim < 2:
            raise DataError(f"arrays: x ({Path(path).resolve()}) must be (N, ...) with one row per sample, got shape {x.shape}")
        if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
            raise DataError(f"arrays: x ({Path(path).resolve()}) must be numeric, got dtype {x.dtype}")
        if np.issubdtype(x.dtype, np.complexfloating):  # torch would drop the imaginary part with only a warning
            raise DataError(f"arrays: x ({Path(path).resolve()}) must hold real numbers, got dtype {x.dtype}; pass the "
                            "real and imaginary "
                            "parts as separate features if both matter")
        return "float"

    def _channel_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and std of x / 255 over at most STATS_MAX evenly spaced pool images."""
        take = np.unique(np.linspace(0, self.pool_size - 1, min(self.pool_size, STATS_MAX)).astype(np.int64))
        channels = self.input_shape[0]
        total = np.zeros(channels)
        square = np.zeros(channels)
        count = 0
        for start in range(0, len(take), 4096):
            x, _ = self.get(torch.from_numpy(take[start:start + 4096]))
            xs = x.to(torch.float64).div_(255).transpose(0, 1).reshape(channels, -1)
            total += xs.sum(1).numpy()
            square += (xs * xs).sum(1).numpy()
            count += xs.shape[1]
        mean = total / count
        std = np.sqrt(np.maximum(square / count - mean * mean, 0))
        std = np.where(std > 1e-6, std, 1.0)  # constant channels: leave the scale alone
        return tuple(float(m) for m in mean), tuple(float(s) for s in std)

    def _locate(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        test = ids >= self.test_offset
        local = np.where(test, ids - self.test_offset, ids)
        if self.test_rows is None:  # separate test arrays
            return test.astype(np.int64), local
        rows = np.where(test, self.test_rows[np.where(test, local, 0)], self.pool_rows[np.where(test, 0, local)])
        return np.zeros(len(ids), dtype=np.int64), rows
