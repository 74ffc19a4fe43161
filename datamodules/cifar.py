"""CIFAR-10 (the python-version batch files) and CIFAR-5m (six .npz parts), finite image sources
on the file machinery of `files.py`."""

from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path

import numpy as np
import torch
from twoworlds.datamodules.files import FileSource, _npz_keys, _npz_memmap
from twoworlds.datamodules.sources import DataConfig, register_source

from twoworlds.errors import DataError

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
        raise DataError(f"{path} is not a CIFAR-10 python batch ({e}); delete it and unpack "
                         f"{CIFAR10_URL} again") from None
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise DataError(f"{path} is not a CIFAR-10 python batch: data {data.shape}, {len(labels)} labels")
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
        raise DataError(
            f"data.download=true fetches CIFAR-10 with torchvision, which is not installed. Download "
            f"{CIFAR10_URL} (MD5 {CIFAR10_MD5}) yourself and unpack it into {data_dir.resolve()} "
            f"(it creates {data_dir.resolve() / CIFAR10_DIR}).") from None
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        torchvision.datasets.CIFAR10(root=str(data_dir), train=True, download=True)
    except Exception as err:  # network errors, bad checksum: one clean line for the CLI
        raise DataError(f"downloading CIFAR-10 from {CIFAR10_URL} into {data_dir.resolve()} failed: {err}") from err


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
            raise DataError(f"cifar10: missing {', '.join(str(p.resolve()) for p in missing)}. "
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
            raise DataError(
                f"cifar5m: missing {', '.join(str(p.resolve()) for p in missing)}. CIFAR-5m is "
                f"part0.npz..part5.npz (arrays X: N x 32 x 32 x 3 uint8, Y: labels) from {CIFAR5M_URL}; "
                f"put all six in {self.data_dir.resolve()} or point data.data_dir at them.")
        self._arrays, self._labels = [], []
        self._opened = [("npz", p, "X") for p in paths]
        self.files = paths
        for p in paths:
            keys = _npz_keys(p)
            if "X" not in keys or "Y" not in keys:
                raise DataError(f"cifar5m: {p.resolve()} must hold arrays X and Y, it holds {', '.join(keys)}")
            x, y = _npz_memmap(p, "X"), np.asarray(_npz_memmap(p, "Y"))
            if x.ndim != 4 or x.shape[1:] != (32, 32, 3) or x.dtype != np.uint8 or len(y) != len(x):
                raise DataError(f"cifar5m: {p.resolve()} holds X {x.dtype} {x.shape} and {len(y)} labels; "
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
