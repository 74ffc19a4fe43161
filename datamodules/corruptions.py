"""Data corruptions of Zhang et al., "Understanding deep learning requires rethinking generalization".

`CorruptedSource` wraps any source: its `get` reads the clean samples and corrupts them. Every
corruption is a pure function of (data.seed, sample id) through the counter hash of `rng`
(invariant 7 of docs/invariants.md), so a sample is corrupted the same way in every epoch, in every batch
composition, on every DDP rank, and in both worlds; the run seed plays no part. Because the
wrapper sits under both loader backends, the FFCV .beton is written from corrupted samples (its
cache key then holds the corruption settings: launch/run.py).

- labels (`label_noise`, `random_labels`): training pool only (ids below `test_offset`), unless
  `test`, which also corrupts the test range and the extra test sets.
- inputs (`pixels`): every split, since the paper changes the data distribution itself. Positions
  are those of the flattened sample; image sources keep a pixel's channels together and permute
  its H*W spatial positions, as in the paper.
"""

from __future__ import annotations

import zlib

import torch
from twoworlds.datamodules import rng
from twoworlds.datamodules.config import PIXELS, CorruptConfig, check, is_active, tag
from twoworlds.datamodules.sources import Source

from twoworlds.errors import ConfigError

__all__ = ["PIXELS", "CorruptConfig", "CorruptedSource", "check", "corrupt_source", "is_active", "tag"]
STATS_IDS = 10_000  # gaussian: per-position mean/std estimated on at most this many pool samples
_CHUNK = 4096  # samples read at a time while estimating


def corrupt_source(source: Source, cfg: CorruptConfig, data_seed: int) -> Source:
    """`source` itself when no corruption is on, else a `CorruptedSource` around it."""
    return CorruptedSource(source, cfg, data_seed) if is_active(cfg) else source


def _extra_salt(name: str) -> int:
    """Stream offset for an extra test set: its rows are keyed by row number, apart from pool ids."""
    return ((zlib.crc32(name.encode()) & 0xFFFF) | 0x10000) << 8


class CorruptedSource(Source):
    """`source` with corrupted labels and/or inputs; the same pool, test range and shapes."""

    def __init__(self, source: Source, cfg: CorruptConfig, data_seed: int):
        check(cfg)
        assert cfg.pixels in PIXELS, cfg.pixels  # launch/config.py validates the choice
        if (cfg.label_noise > 0 or cfg.random_labels) and source.num_classes < 2:
            raise ConfigError(f"label corruptions need at least 2 classes; {source.name} has {source.num_classes}")
        self.inner, self.seed = source, int(data_seed)
        self.label_noise, self.random_labels = float(cfg.label_noise), bool(cfg.random_labels)
        self.pixels, self.corrupt_test = str(cfg.pixels), bool(cfg.test)
        for key in ("name", "input_shape", "num_classes", "pool_size", "test_size", "test_offset",
                    "is_image", "mean", "std"):
            setattr(self, key, getattr(source, key))
        # Positions: (channels kept together, positions permuted) of one sample.
        shape = tuple(self.input_shape)
        numel = int(torch.tensor(shape).prod())
        self.channels = shape[0] if self.is_image else 1
        self.positions = numel // self.channels
        self.perm = None
        if self.pixels == "shuffled":  # one permutation for all samples: keyed by a single "id" 0
            bits = rng.hash_bits(self.seed, torch.zeros(1, dtype=torch.int64), rng.Stream.CORRUPT_SHUFFLE, self.positions)
            self.perm = bits[0].argsort(stable=True)
        self.stats = self._input_stats() if self.pixels == "gaussian" else None
        self._extra: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None

    def get(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.as_tensor(ids).to("cpu", torch.int64)
        x, y = self.inner.get(ids)
        relabel = torch.full((len(ids),), True) if self.corrupt_test else ids < self.test_offset
        return self._inputs(x, ids, 0), self._labels(y, ids, relabel, 0)

    def extra_test_sets(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        if self._extra is None:  # corrupted once: the datamodule asks several times
            self._extra = {}
            for name, (x, y) in self.inner.extra_test_sets().items():
                rows, salt = torch.arange(len(x), dtype=torch.int64), _extra_salt(name)
                relabel = torch.full((len(x),), self.corrupt_test)
                self._extra[name] = (self._inputs(x, rows, salt), self._labels(y, rows, relabel, salt))
        return self._extra

    # --- labels -------------------------------------------------------------------------------
    def _labels(self, y: torch.Tensor, ids: torch.Tensor, which: torch.Tensor, salt: int) -> torch.Tensor:
        """y with the samples in `which` relabelled (int64 in [0, K) either way)."""
        y = y.to(torch.int64)
        if not (self.label_noise > 0 or self.random_labels) or not bool(which.any()):
            return y
        k = self.num_classes
        u = rng.uniform(self.seed, ids, rng.Stream.CORRUPT_LABEL + salt, 2)
        if self.random_labels:
            new = (u[:, 1] * k).to(torch.int64).clamp_(max=k - 1)
        else:  # a shift of 1..K-1 classes: uniform over the other classes, never the clean label
            shift = 1 + (u[:, 1] * (k - 1)).to(torch.int64).clamp_(max=k - 2)
            new = torch.where(u[:, 0] < self.label_noise, (y + shift) % k, y)
        return torch.where(which, new, y)

    # --- inputs -------------------------------------------------------------------------------
    def _inputs(self, x: torch.Tensor, ids: torch.Tensor, salt: int) -> torch.Tensor:
        if self.pixels == "none":
            return x
        b = len(x)
        flat = x.reshape(b, self.channels, self.positions)
        if self.pixels == "shuffled":
            out = flat[:, :, self.perm]
        elif self.pixels == "random":  # argsort of 32-bit hashes: a uniform random permutation per id
            bits = rng.hash_bits(self.seed, ids, rng.Stream.CORRUPT_PIXELS + salt, self.positions)
            order = bits.argsort(dim=1, stable=True)
            out = flat.gather(2, order[:, None, :].expand(b, self.channels, self.positions))
        else:
            mean, std = self.stats
            z = rng.normal(self.seed, ids, rng.Stream.CORRUPT_GAUSSIAN + salt, mean.numel())
            out = z.mul_(std).add_(mean)
            if x.dtype == torch.uint8:  # keep the image pipeline's uint8 until the device
                out = out.round_().clamp_(0, 255)
            out = out.to(x.dtype)
        return out.reshape(x.shape)

    def _input_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-position mean and std (float32, flattened sample) of a fixed seeded sample of the pool."""
        limit = self.pool_limit
        if self.pool_size is None or limit <= STATS_IDS:
            # Unbounded pools are i.i.d. by construction, and generators (rng.block_draw) are fast
            # on consecutive ids and slow on scattered ones: the first ids are a fair sample.
            ids = torch.arange(min(limit, STATS_IDS), dtype=torch.int64)
        else:
            gen = torch.Generator().manual_seed(rng.block_seed(self.seed, rng.Stream.CORRUPT_STATS, 0))
            ids = torch.randint(limit, (STATS_IDS,), generator=gen).unique()  # sorted: file reads in order
        total = square = 0
        for start in range(0, len(ids), _CHUNK):
            x, _ = self.inner.get(ids[start:start + _CHUNK])
            x = x.reshape(len(x), -1).to(torch.float64)
            total, square = total + x.sum(0), square + (x * x).sum(0)
        mean = total / len(ids)
        std = (square / len(ids) - mean * mean).clamp_(min=0).sqrt_()
        return mean.float(), std.float()
