"""Training-loader throughput on CIFAR-shaped data with augmentation level 2, side by side:

- `tensor`: the framework's tensor backend (uint8 images on the device, batches by indexing,
  pad-4 crop + flip + normalization on whole batches);
- `ffcv`: the framework's FFCV backend (the same batches streamed from a .beton file, the same
  batch augmentation);
- `DataLoader`: the usual baseline, a torch Dataset with per-sample transforms (pad-4 random crop,
  flip, to float, normalize) and DataLoader worker processes.

All three produce normalized, augmented float batches of the same size from the same images; the
time to write the .beton once is excluded. Targets on 2 CPU cores: tensor >= 10x and ffcv >= 3x
the DataLoader.

    python benchmarks/loader_throughput.py [--images 20000] [--batches 150] [--workers 2]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from cli_args import arguments
from twoworlds.datamodules import DataConfig, build_source
from twoworlds.datamodules.datamodule import TensorBatches, WorldDataModule
from twoworlds.datamodules.worlds import WorldPlan

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


class PerSampleDataset(torch.utils.data.Dataset):
    """What a CIFAR training script usually does, one image at a time (torchvision-style)."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.x, self.y = x, y
        self.mean = torch.tensor(MEAN).view(3, 1, 1)
        self.std = torch.tensor(STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        img = torch.from_numpy(np.ascontiguousarray(self.x[i])).permute(2, 0, 1)  # HWC -> CHW
        img = torch.nn.functional.pad(img, (4, 4, 4, 4))
        top, left = np.random.randint(0, 9, size=2)
        img = img[:, top:top + 32, left:left + 32]
        if np.random.rand() < 0.5:
            img = img.flip(2)
        return (img.float() / 255 - self.mean) / self.std, int(self.y[i])


def rate(batches, count: int, batch_size: int) -> float:
    """Samples/s over `count` batches, after 5 warm-up batches (worker start, numba compile)."""
    it = iter(batches)
    for _ in range(5):
        next(it)
    start = time.perf_counter()
    for _ in range(count):
        x = next(it)[0]
    x.sum().item()  # make sure the last batch was really produced
    return count * batch_size / (time.perf_counter() - start)


def main() -> None:
    args = arguments(__doc__, images=(int, 20000, ""), batches=(int, 150, ""), batch_size=(int, 128, ""),
                     workers=(int, 2, "DataLoader / FFCV worker processes"))
    tmp = Path(tempfile.mkdtemp(prefix="loader_throughput_"))
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (args.images, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, args.images)
    np.savez(tmp / "cifar_like.npz", x=x, y=y, x_test=x[:100], y_test=y[:100])
    source = build_source("arrays", DataConfig(data_dir=str(tmp), npz="cifar_like.npz"))
    steps = args.batches + 10
    plan = WorldPlan.for_source(source, "real", args.images, steps, args.batch_size, seed=0)
    dm = WorldDataModule(source, plan, augment=2)
    dm.setup("fit")
    results = {"tensor": rate(TensorBatches(dm), args.batches, args.batch_size)}
    try:
        from twoworlds.datamodules.ffcv_loader import FFCVBatches, write_pool_beton
        path = write_pool_beton(source, tmp / "cache", params={"npz": "cifar_like.npz"})
        results["ffcv"] = rate(FFCVBatches(dm, path, num_workers=args.workers), args.batches, args.batch_size)
    except (ImportError, ValueError) as e:
        print(f"ffcv skipped: {e}")
    loader = torch.utils.data.DataLoader(PerSampleDataset(x, y), batch_size=args.batch_size, shuffle=True,
                                         num_workers=args.workers, persistent_workers=True)
    results["DataLoader"] = rate(_forever(loader), args.batches, args.batch_size)
    base = results["DataLoader"]
    print(f"{args.images:,} CIFAR-shaped uint8 images, batch {args.batch_size}, augmentation level 2, "
          f"{torch.get_num_threads()} torch threads, {args.workers} workers")
    print(f"{'loader':<11} {'samples/s':>11} {'x DataLoader':>13} {'target':>7}")
    targets = {"tensor": 10.0, "ffcv": 3.0}
    for name, r in results.items():
        t = targets.get(name)
        verdict = "" if t is None else ("PASS" if r / base >= t else "FAIL")
        print(f"{name:<11} {r:>11,.0f} {r / base:>13.1f} {'' if t is None else f'>= {t:g}':>7} {verdict}")


def _forever(loader):
    while True:
        yield from loader


if __name__ == "__main__":
    main()
