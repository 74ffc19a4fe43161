"""Finite image and array sources read from files: CIFAR-10, CIFAR-5m and the user's own arrays.

All three are finite pools: pool ids are `[0, pool_size)` and test ids the range right after it,
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

import importlib.util
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import torch
from twoworlds.datamodules.sources import DataConfig, Source, register_source

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_DIR = "cifar-10-batches-py"
CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST = "test_batch"
CIFAR5M_URL = "https://github.com/preetum/cifar5m"
CIFAR5M_PARTS = tuple(f"part{i}.npz" for i in range(6))
CIFAR5M_TEST_MAX = 10_000

# The standard CIFAR-10 per-channel statistics of x / 255 (used for CIFAR-5m too).
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)

STATS_MAX = 50_000  # arrays source: mean/std from at most this many pool images


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
            raise KeyError(f"{path} has no array '{key}' (it holds: "
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
    with np.load(path, allow_pickle=False) as archive:
        return archive[key]


def _npz_keys(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as zf:
            return [n.removesuffix(".npy") for n in zf.namelist()]
    except zipfile.BadZipFile:
        raise ValueError(f"{path} is not an .npz archive (np.savez writes one: a zip of .npy arrays)") from None


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


# ---------------------------------------------------------------------------------------------
# CIFAR-10 (python version)
# ---------------------------------------------------------------------------------------------


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """`_codecs.encode` as protocol-2 pickles of bytes use it (Python 3 writers), and nothing else."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode({type(text).__name__}, {encoding!r}) is not a bytes literal")
    return text.encode("latin1")


class _CifarUnpickler(pickle.Unpickler):
    """Admits only what a CIFAR-10 batch holds: dicts, lists, bytes, str, ints (no globals needed)
    and numpy arrays through numpy's own reconstruct globals. Anything else (os.system, eval, any
    class) is refused before it is called."""

    _reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]
    ALLOWED = {("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # files pickled by numpy 1.x
               ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # numpy 2.x
               ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
               ("_codecs", "encode"): _latin1_encode}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refuses global {module}.{name}")
        return self.ALLOWED[(module, name)]


def _read_cifar10_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(x uint8 (N, 3, 32, 32), y int64) of one pickled CIFAR-10 batch, read without running code."""
    try:
        with open(path, "rb") as f:
            batch = _CifarUnpickler(f, encoding="bytes").load()
        if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
            raise pickle.UnpicklingError("no dict with b'data' and b'labels'")
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise ValueError(f"{path} is not a CIFAR-10 python batch ({e}); delete it and unpack "
                         f"{CIFAR10_URL} again") from None
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise ValueError(f"{path} is not a CIFAR-10 python batch: data {data.shape}, {len(labels)} labels")
    return data.reshape(-1, 3, 32, 32), labels


def _cifar10_missing(data_dir: Path) -> list[Path]:
    root = data_dir / CIFAR10_DIR
    return [root / name for name in (*CIFAR10_TRAIN, CIFAR10_TEST) if not (root / name).is_file()]


def _cifar10_help(data_dir: Path) -> str:
    where = data_dir.resolve()
    text = (f"Get the python version of CIFAR-10 from {CIFAR10_URL} (MD5 {CIFAR10_MD5}) and unpack it "
            f"into {where} (`tar -xzf cifar-10-python.tar.gz -C {where}` creates {where / CIFAR10_DIR}), "
            f"or point data.data_dir at the directory that holds {CIFAR10_DIR}/")
    if importlib.util.find_spec("torchvision") is not None:
        text += ", or pass data.download=true to fetch it with torchvision."
    else:
        text += " (data.download=true needs torchvision, which is not installed)."
    return text


def _download_cifar10(data_dir: Path) -> None:
    try:
        import torchvision  # optional dependency, imported only for the download
    except ImportError:
        raise ValueError(
            f"data.download=true fetches CIFAR-10 with torchvision, which is not installed. Download "
            f"{CIFAR10_URL} (MD5 {CIFAR10_MD5}) yourself and unpack it into {data_dir.resolve()} "
            f"(it creates {data_dir.resolve() / CIFAR10_DIR}).") from None
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        torchvision.datasets.CIFAR10(root=str(data_dir), train=True, download=True)
    except Exception as err:  # network errors, bad checksum: one clean line for the CLI
        raise ValueError(f"downloading CIFAR-10 from {CIFAR10_URL} into {data_dir.resolve()} failed: {err}") from err


def load_cifar10(data_dir: Path, train: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(x uint8 (N, 3, 32, 32), y int64): the 50,000 training images or the 10,000 test images."""
    root = data_dir / CIFAR10_DIR
    names = CIFAR10_TRAIN if train else (CIFAR10_TEST,)
    parts = [_read_cifar10_batch(root / name) for name in names]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


@register_source("cifar10")
class CIFAR10Source(FileSource):
    """CIFAR-10: pool = the 50,000 training images (in file order), test = the test batch."""

    is_image = True
    mean, std = CIFAR_MEAN, CIFAR_STD
    _layout = "chw"

    def __init__(self, cfg: DataConfig):
        data_dir = Path(cfg.data_dir).expanduser()
        missing = _cifar10_missing(data_dir)
        if missing and cfg.download:
            _download_cifar10(data_dir)
            missing = _cifar10_missing(data_dir)
        if missing:
            raise ValueError(f"cifar10: missing {', '.join(str(p.resolve()) for p in missing)}. "
                             + _cifar10_help(data_dir))
        x, y = load_cifar10(data_dir, train=True)
        tx, ty = load_cifar10(data_dir, train=False)
        self.files = [data_dir / CIFAR10_DIR / name for name in (*CIFAR10_TRAIN, CIFAR10_TEST)]
        self.input_shape = (3, 32, 32)
        self.num_classes = 10
        self.pool_size = len(x)
        self.test_offset = len(x)
        self.test_size = min(cfg.test_size, len(tx))
        self._arrays, self._labels, self._opened = [x, tx], [y, ty], [None, None]

    def _locate(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        test = ids >= self.test_offset
        return test.astype(np.int64), np.where(test, ids - self.test_offset, ids)


# ---------------------------------------------------------------------------------------------
# CIFAR-5m (Nakkiran et al. 2021): six .npz parts of ~1M DDPM-generated CIFAR-10-like images
# ---------------------------------------------------------------------------------------------


@register_source("cifar5m")
class CIFAR5mSource(FileSource):
    """CIFAR-5m: pool = parts 0-4 (memory-mapped), test = the first images of part 5.

    Pool id i lies in part `searchsorted(starts, i, 'right') - 1` at row `i - starts[part]`. When
    CIFAR-10 is present at `<data_dir>/cifar-10-batches-py`, `extra_test_sets` adds its test images
    as `test_cifar10` (the paper reports both).
    """

    is_image = True
    mean, std = CIFAR_MEAN, CIFAR_STD
    _layout = "hwc"

    def __init__(self, cfg: DataConfig):
        self.data_dir = Path(cfg.data_dir).expanduser()
        paths = [self.data_dir / name for name in CIFAR5M_PARTS]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise ValueError(
                f"cifar5m: missing {', '.join(str(p.resolve()) for p in missing)}. CIFAR-5m is "
                f"part0.npz..part5.npz (arrays X: N x 32 x 32 x 3 uint8, Y: labels) from {CIFAR5M_URL}; "
                f"put all six in {self.data_dir.resolve()} or point data.data_dir at them.")
        self._arrays, self._labels = [], []
        self._opened = [("npz", p, "X") for p in paths]
        self.files = paths
        for p in paths:
            keys = _npz_keys(p)
            if "X" not in keys or "Y" not in keys:
                raise ValueError(f"cifar5m: {p.resolve()} must hold arrays X and Y, it holds {', '.join(keys)}")
            x, y = _npz_memmap(p, "X"), np.asarray(_npz_memmap(p, "Y"))
            if x.ndim != 4 or x.shape[1:] != (32, 32, 3) or x.dtype != np.uint8 or len(y) != len(x):
                raise ValueError(f"cifar5m: {p.resolve()} holds X {x.dtype} {x.shape} and {len(y)} labels; "
                                 f"expected uint8 N x 32 x 32 x 3 and N labels")
            self._arrays.append(x)
            self._labels.append(y.astype(np.int64).reshape(-1))
        sizes = np.array([len(x) for x in self._arrays[:5]], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(sizes)])  # part k holds pool ids [starts[k], starts[k+1])
        self.input_shape = (3, 32, 32)
        self.num_classes = 10
        self.pool_size = int(self.starts[-1])
        self.test_offset = self.pool_size
        self.test_size = min(cfg.test_size, CIFAR5M_TEST_MAX, len(self._arrays[5]))
        self.cifar10_test_size = min(cfg.test_size, 10_000)
        self._cifar10: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def parts(self) -> list[np.ndarray]:
        """The six X arrays (np.memmap for uncompressed parts)."""
        return self._arrays

    def _locate(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        test = ids >= self.test_offset
        part = np.searchsorted(self.starts, ids, side="right") - 1
        which = np.where(test, 5, part)
        rows = np.where(test, ids - self.test_offset, ids - self.starts[np.minimum(part, 4)])
        return which, rows

    def extra_test_sets(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        if _cifar10_missing(self.data_dir):
            return {}
        if self._cifar10 is None:
            x, y = load_cifar10(self.data_dir, train=False)
            n = self.cifar10_test_size
            self._cifar10 = (torch.from_numpy(x[:n].copy()), torch.from_numpy(y[:n].copy()))
        return {"test_cifar10": self._cifar10}


# ---------------------------------------------------------------------------------------------
# arrays: the user's own data from .npz / .npy files
# ---------------------------------------------------------------------------------------------


def _first_key(keys: list[str], *names: str) -> str | None:
    return next((n for n in names if n in keys), None)


FINITE_CHUNK = 64 << 20  # bytes of x checked at a time (memory-mapped files can be large)
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _finite(x: np.ndarray, path: Path, key: str) -> np.ndarray:
    """x itself; a ValueError naming the file and the first row with a NaN, an inf, or a value that
    turns into inf as float32 (a data error, not a run that "diverges at step 1")."""
    if not np.issubdtype(x.dtype, np.inexact) or not len(x):
        return x
    rows = max(1, FINITE_CHUNK // max(1, x[:1].nbytes))
    for start in range(0, len(x), rows):
        chunk = np.asarray(x[start:start + rows]).reshape(min(rows, len(x) - start), -1)
        ok = (np.abs(chunk) <= FLOAT32_MAX).all(1)  # False for NaN too
        if not ok.all():
            row = start + int(np.argmin(ok))
            raise ValueError(f"arrays: {Path(path).resolve()} ({key}) has a non-finite value (NaN, inf, or beyond "
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
            raise ValueError(f"arrays: {where} is not below data.num_classes={given}; fix the label or raise data.num_classes")
        return given
    counts = np.bincount(np.concatenate([lab for _, lab in named]), minlength=top + 1)
    empty = np.flatnonzero(counts == 0)
    if len(empty):
        shown = ", ".join(str(int(k)) for k in empty[:5]) + (f", ... ({len(empty):,} in all)" if len(empty) > 5 else "")
        raise ValueError(f"arrays: {where} implies {top + 1:,} classes, but classes {shown} have no sample; "
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
            raise ValueError(f"arrays: x holds {len(x):,} samples but y holds {len(y):,} labels")
        if tx is not None and len(tx) != len(ty):
            raise ValueError(f"arrays: the test x holds {len(tx):,} samples but the test y holds {len(ty):,} labels")
        if tx is not None and tx.shape[1:] != x.shape[1:]:
            raise ValueError(f"arrays: test x samples have shape {tx.shape[1:]}, training samples {x.shape[1:]}")
        if len(x) == 0:
            raise ValueError("arrays: x holds no samples")
        labels = [self._labels_of(y, "y")] + ([self._labels_of(ty, "test y")] if ty is not None else [])
        self.num_classes = _num_classes(labels, files, cfg.num_classes)

        self._layout = self._layout_of(x)
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
                raise ValueError(f"data.test_fraction must be in (0, 1) when there is no test split, got {cfg.test_fraction}")
            n_test = int(round(cfg.test_fraction * len(x)))
            if n_test < 1 or n_test >= len(x):
                raise ValueError(f"data.test_fraction={cfg.test_fraction} of {len(x):,} samples leaves "
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
            raise ValueError("arrays: the test set is empty (data.test_size must be >= 1)")
        if self.is_image:
            self.mean, self.std = self._channel_stats()

    # --- loading ----------------------------------------------------------------------------
    @staticmethod
    def _load(cfg: DataConfig, data_dir: Path):
        if cfg.npz and (cfg.x_file or cfg.y_file):
            raise ValueError("arrays: give either data.npz or data.x_file/data.y_file, not both")
        if cfg.npz:
            path = _resolve(data_dir, cfg.npz)
            if not path.is_file():
                raise ValueError(f"arrays: data.npz file {path.resolve()} does not exist")
            keys = _npz_keys(path)
            kx, ky = _first_key(keys, "x", "X"), _first_key(keys, "y", "Y")
            if kx is None or ky is None:
                raise ValueError(f"arrays: {path.resolve()} must hold x (or X) and y (or Y); it holds {', '.join(keys)}")
            ktx, kty = _first_key(keys, "x_test", "X_test"), _first_key(keys, "y_test", "Y_test")
            if (ktx is None) != (kty is None):
                raise ValueError(f"arrays: {path.resolve()} holds only one of x_test/y_test; give both or neither")
            x, y = _npz_memmap(path, kx), np.asarray(_npz_memmap(path, ky))
            opened = [("npz", path, kx), ("npz", path, ktx)]
            files = {"x": path, "y": path, "test x": path, "test y": path}
            if ktx is None:
                return _finite(x, path, "x"), y, None, None, opened, files
            tx = _finite(_npz_memmap(path, ktx), path, ktx)
            return _finite(x, path, kx), y, tx, np.asarray(_npz_memmap(path, kty)), opened, files
        if not (cfg.x_file and cfg.y_file):
            raise ValueError("the arrays source needs data.npz=<file.npz> or data.x_file=<x.npy> data.y_file=<y.npy> "
                             f"(relative to data.data_dir={cfg.data_dir} unless absolute)")
        if bool(cfg.test_x_file) != bool(cfg.test_y_file):
            raise ValueError("arrays: give both data.test_x_file and data.test_y_file, or neither")
        names = {"data.x_file": cfg.x_file, "data.y_file": cfg.y_file}
        if cfg.test_x_file:
            names.update({"data.test_x_file": cfg.test_x_file, "data.test_y_file": cfg.test_y_file})
        paths = {key: _resolve(data_dir, name) for key, name in names.items()}
        missing = [f"{key}={p.resolve()}" for key, p in paths.items() if not p.is_file()]
        if missing:
            raise ValueError(f"arrays: missing {', '.join(missing)}")
        arrays = {key: np.load(p, mmap_mode="r", allow_pickle=False) for key, p in paths.items()}
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
            raise ValueError(f"arrays: {what} must be one label per sample, got shape {y.shape}")
        if not (np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_):
            raise ValueError(f"arrays: {what} labels must be integers (class indices), got dtype {y.dtype}")
        y = y.astype(np.int64)
        if len(y) and y.min() < 0:
            raise ValueError(f"arrays: {what} labels must be >= 0, got {int(y.min())}")
        return y

    @staticmethod
    def _layout_of(x: np.ndarray) -> str:
        if x.dtype == np.uint8 and x.ndim == 4:
            if 1 <= x.shape[3] <= 4:
                return "hwc"
            if 1 <= x.shape[1] <= 4:
                return "chw"
        if x.ndim < 2:
            raise ValueError(f"arrays: x must be (N, ...) with one row per sample, got shape {x.shape}")
        if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
            raise ValueError(f"arrays: x must be numeric, got dtype {x.dtype}")
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
