"""The world switch as a LightningDataModule, with the `tensor` loader backend.

The `tensor` backend keeps data where the model runs and draws batches by indexing: no DataLoader,
no worker processes. The Real World's n samples are materialized on the device once; in the Ideal
World an unbounded source generates each batch from its fresh ids as the step comes.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytorch_lightning as pl
import torch
from twoworlds.datamodules import rng
from twoworlds.datamodules.augment import prepare_images
from twoworlds.datamodules.sources import Source
from twoworlds.datamodules.worlds import WorldPlan, rank_slice
from twoworlds.lightning_modules.metrics import TEST, TRAIN

from twoworlds.errors import ConfigError

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # (x, y, ids)


class TensorBatches:
    """An iterable of this rank's (x, y, ids) batches for steps `start_step`..`steps - 1`."""

    def __init__(self, dm: WorldDataModule, start_step: int = 0):
        self.dm, self.start_step = dm, start_step

    def __len__(self) -> int:
        return self.dm.plan.steps - self.start_step

    def __iter__(self) -> Iterator[Batch]:
        dm = self.dm
        if dm.real is not None:  # index the materialized n samples by position
            x, y, ids = dm.real
            on_cpu = dm.device.type == "cpu"
            for step, positions in enumerate(dm.plan.real_positions(self.start_step), start=self.start_step):
                pos = rank_slice(positions, dm.rank, dm.world_size)
                pos = pos if on_cpu else pos.to(dm.device, non_blocking=True)
                # index_select, not x[pos]: advanced indexing is ~20x slower on uint8 image rows
                yield dm.train_transform(x.index_select(0, pos), step), y.index_select(0, pos), ids.index_select(0, pos)
        else:
            for step, ids in dm.plan.batches(self.start_step):
                x, y, ids = dm.fetch(rank_slice(ids, dm.rank, dm.world_size))
                yield dm.train_transform(x, step), y, ids


class WorldDataModule(pl.LightningDataModule):
    """Serves one run's training batches and its evaluation sets.

    Evaluation sets: `test` (the source's test range, in both worlds), the source's extra test
    sets (e.g. `test_cifar10` beside CIFAR-5m) and, in the Real World, `train` (the n training
    samples themselves, without augmentation: invariant 6). Under DDP each rank evaluates its own
    shard; the metrics sync across ranks.

    Image sources stay uint8 until the batch is on the device; there `train_transform` augments
    (level `augment`, randomness a function of (seed, step)) and normalizes, and `eval_transform`
    only normalizes.
    """

    def __init__(self, source: Source, plan: WorldPlan, train_eval_size: int | None = None,
                 augment: int = 0, channels_last: bool = False, loader: str = "tensor",
                 cache_dir: str | None = None, cache_params: dict | None = None):
        super().__init__()
        if augment and not getattr(source, "is_image", False):
            raise ConfigError(f"augment={augment} needs an image source; {source.name} is not one (use augment=0)")
        self.source, self.plan = source, plan
        self.train_eval_size = train_eval_size
        self.augment, self.channels_last = augment, channels_last
        # The backend serving training batches ("tensor" or "ffcv", already chosen: see loaders.py).
        self.loader, self.cache_dir, self.cache_params = loader, cache_dir, cache_params or {}
        self.beton = None
        self.device = torch.device("cpu")
        self.rank, self.world_size = 0, 1
        self.real: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self.eval_sets: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        if loader == "ffcv":
            from twoworlds.datamodules.ffcv_loader import FFCV_MISSING, check_bounded, ffcv_available
            if not ffcv_available():
                raise ConfigError(FFCV_MISSING)
            check_bounded(source)  # refuses unbounded pools up front

    def place(self, device: torch.device, rank: int = 0, world_size: int = 1) -> WorldDataModule:
        """Where this run trains: the device batches and evaluation sets live on, and this process's
        DDP rank among `world_size` (each takes its own slice of every global batch). Before `setup`."""
        self.device, self.rank, self.world_size = torch.device(device), rank, world_size
        return self

    def setup(self, stage: str | None = None) -> None:
        """Materialize the Real World's n samples and the evaluation sets on the device; with the ffcv
        loader, write (or verify) the pool's .beton, under a lock, so concurrent ranks write it once."""
        if self.plan.world == "real" and self.real is None:
            ids = self.plan.real_subset()
            x, y = self.source.get(ids)
            self.real = (x.to(self.device), y.to(self.device), ids.to(self.device))
        self.eval_sets = self._build_eval_sets()
        if self.loader == "ffcv" and self.beton is None:
            from twoworlds.datamodules.ffcv_loader import write_pool_beton
            self.beton = write_pool_beton(self.source, self.cache_dir, self.cache_params)

    def eval_split_names(self) -> list[str]:
        extra = list(self.source.extra_test_sets()) if hasattr(self.source, "extra_test_sets") else []
        return [TEST, *extra] + ([TRAIN] if self.plan.world == "real" else [])

    def _build_eval_sets(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        test_ids = self.source.test_ids()[self.rank::self.world_size]
        x, y = self.source.get(test_ids)
        sets = {TEST: (x.to(self.device), y.to(self.device))}
        extra = self.source.extra_test_sets() if hasattr(self.source, "extra_test_sets") else {}
        for name, (ex, ey) in extra.items():
            sets[name] = (ex[self.rank::self.world_size].to(self.device), ey[self.rank::self.world_size].to(self.device))
        if self.real is not None:
            rx, ry, _ = self.real
            keep = slice(self.rank, self.train_eval_size, self.world_size)
            sets[TRAIN] = (rx[keep], ry[keep])
        return sets

    def fetch(self, ids: torch.Tensor) -> Batch:
        """(x, y, ids) on the device for these pool ids, generated or read by the source."""
        x, y = self.source.get(ids)
        dev = self.device
        return x.to(dev, non_blocking=True), y.to(dev, non_blocking=True), ids.to(dev)

    def train_transform(self, x: torch.Tensor, step: int) -> torch.Tensor:
        if not getattr(self.source, "is_image", False):
            return x
        gen = torch.Generator(device=x.device).manual_seed(rng.block_seed(self.plan.seed, rng.Stream.AUGMENT, step))
        return prepare_images(x, self.source.mean, self.source.std, self.augment, gen, self.channels_last)

    def eval_transform(self, x: torch.Tensor) -> torch.Tensor:
        if not getattr(self.source, "is_image", False):
            return x
        return prepare_images(x, self.source.mean, self.source.std, 0, None, self.channels_last)

    def train_dataloader(self, start_step: int = 0):
        """This rank's (x, y, ids) batches for steps `start_step`..`steps - 1` (a resumed run starts
        midway and continues the same id schedule)."""
        if self.loader == "ffcv":
            from twoworlds.datamodules.ffcv_loader import FFCVBatches
            return FFCVBatches(self, self.beton, start_step)
        return TensorBatches(self, start_step)
