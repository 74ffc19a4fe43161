"""Tiny image datasets in the exact published file formats, for tests.

Images are learnable: class k is a bright 8 x 8 square at a class-specific cell of a 4 x 4 grid, in
a class-specific colour, on a noisy dark background. Everything is a function of the seed.

- `write_tiny_cifar10(dir)`: `<dir>/cifar-10-batches-py/data_batch_1..5`, `test_batch` and
  `batches.meta`, pickled dicts as in the python version of CIFAR-10 (b"batch_label", b"labels",
  b"data" N x 3072 uint8 in R, G, B planes of 32 x 32, b"filenames").
- `write_tiny_cifar5m(dir)`: `<dir>/part0.npz..part5.npz`, np.savez (uncompressed) with X (N x 32 x
  32 x 3 uint8, HWC) and Y (N labels).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

NUM_CLASSES = 10
LABEL_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]


def make_images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(x uint8 (n, 32, 32, 3) HWC, y int64 (n,)): class-dependent squares plus noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, NUM_CLASSES, n)
    x = rng.integers(0, 60, (n, 32, 32, 3)).astype(np.int64)
    for k in range(NUM_CLASSES):
        sel = y == k
        r, c = divmod(k, 4)  # cell of a 4 x 4 grid of 8 x 8 cells
        colour = np.array([200 + 5 * k, 255 - 15 * k, 120 + 12 * k])
        x[sel, 8 * r:8 * r + 8, 8 * c:8 * c + 8, :] = colour + rng.integers(-20, 1, (int(sel.sum()), 8, 8, 3))
    return np.clip(x, 0, 255).astype(np.uint8), y.astype(np.int64)


def _cifar10_batch(x: np.ndarray, y: np.ndarray, label: str, prefix: str) -> dict:
    return {
        b"batch_label": label.encode(),
        b"labels": [int(v) for v in y],
        b"data": np.ascontiguousarray(x.transpose(0, 3, 1, 2).reshape(len(x), 3 * 32 * 32)),
        b"filenames": [f"{prefix}_{i}.png".encode() for i in range(len(x))],
    }


def write_tiny_cifar10(directory: str | Path, per_batch: int = 100, seed: int = 0) -> Path:
    """Writes `<directory>/cifar-10-batches-py/` (5 train batches + test batch of `per_batch`); returns it."""
    root = Path(directory) / "cifar-10-batches-py"
    root.mkdir(parents=True, exist_ok=True)
    x, y = make_images(6 * per_batch, seed=seed)
    for b in range(5):
        rows = slice(b * per_batch, (b + 1) * per_batch)
        batch = _cifar10_batch(x[rows], y[rows], f"training batch {b + 1} of 5", f"train{b + 1}")
        with open(root / f"data_batch_{b + 1}", "wb") as f:
            pickle.dump(batch, f, protocol=2)
    rows = slice(5 * per_batch, 6 * per_batch)
    with open(root / "test_batch", "wb") as f:
        pickle.dump(_cifar10_batch(x[rows], y[rows], "testing batch 1 of 1", "test"), f, protocol=2)
    with open(root / "batches.meta", "wb") as f:
        pickle.dump({b"num_cases_per_batch": per_batch, b"label_names": LABEL_NAMES, b"num_vis": 3072}, f, protocol=2)
    return root


def read_tiny_cifar10(directory: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train x HWC, train y, test x HWC, test y) back from the files, independently of the source."""
    root = Path(directory) / "cifar-10-batches-py"
    out = []
    for names in ([f"data_batch_{b}" for b in range(1, 6)], ["test_batch"]):
        xs, ys = [], []
        for name in names:
            with open(root / name, "rb") as f:
                d = pickle.load(f, encoding="bytes")
            xs.append(d[b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            ys.append(np.array(d[b"labels"]))
        out += [np.concatenate(xs), np.concatenate(ys)]
    return tuple(out)


def write_tiny_cifar5m(directory: str | Path, per_part: int | list[int] = 300, seed: int = 0,
                       compressed: bool = False) -> list[Path]:
    """Writes `<directory>/part0.npz..part5.npz` (`per_part` images each, or a list of 6 sizes)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    sizes = [per_part] * 6 if isinstance(per_part, int) else list(per_part)
    save = np.savez_compressed if compressed else np.savez
    paths = []
    for k, n in enumerate(sizes):
        x, y = make_images(n, seed=seed * 1000 + 17 + k)
        path = directory / f"part{k}.npz"
        save(path, X=x, Y=y)
        paths.append(path)
    return paths
