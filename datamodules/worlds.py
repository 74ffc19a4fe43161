"""The world switch: which pool ids each optimizer step trains on, in the Real or the Ideal World.

Everything here is about *ids*, so each invariant of docs/invariants.md can be tested on ids alone:

- Ideal World: step s trains on global batch `ideal_ids[s*B:(s+1)*B]`, T*B distinct pool ids in
  all (invariant 2). Unbounded pools take a consecutive run of fresh ids (samples are i.i.d. by
  construction); finite pools a seeded permutation, refused up front when T*B exceeds the pool.
- Real World: n distinct pool ids fixed by (seed, n) (invariant 3). The training stream is the
  concatenation of one seeded permutation of the n per epoch, cut into batches of B, so every
  epoch visits each of the n exactly once and every batch is full, as in the Ideal World.
- Test ids come from the source's test range, disjoint from the pool by construction (invariant 4).
- All of it is a function of (seed, n, steps, B) only (invariant 5).
- Under DDP every rank computes the same global batch and takes its own contiguous slice, so ranks
  never overlap and the union over ranks is exactly the single-process batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from twoworlds.datamodules import rng
from twoworlds.datamodules.config import WORLDS
from twoworlds.datamodules.sources import Source

from twoworlds.errors import ConfigError

# Unbounded pools: each run seed draws from its own window of 2**32 consecutive ids, so runs with
# different seeds see different data. 256 windows fit below the test range.
_WINDOW_BITS = 32


class PoolTooSmallError(ConfigError):
    """A finite pool cannot feed the Ideal World T*B distinct samples, or the Real World n."""


def _generator(seed: int, stream: int, salt: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(rng.block_seed(seed, stream, salt))


def _window(seed: int) -> int:
    return (seed % 256) << _WINDOW_BITS


@dataclass(frozen=True)
class WorldPlan:
    """The id schedule of one run: `batch_ids(step)` is the global batch of optimizer step `step`."""

    world: str
    pool_limit: int  # one past the largest pool id
    finite: bool
    n: int
    steps: int
    batch_size: int
    seed: int

    @classmethod
    def for_source(cls, source: Source, world: str, n: int, steps: int, batch_size: int, seed: int) -> WorldPlan:
        assert world in WORLDS, world  # launch/config.py validates the choice
        for key, value in (("n", n), ("steps", steps), ("batch_size", batch_size)):
            if value < 1:
                raise ValueError(f"{key} must be >= 1, got {value}")
        plan = cls(world, source.pool_limit, source.pool_size is not None, n, steps, batch_size, seed)
        plan.check_pool(source.name)
        return plan

    @property
    def samples_seen(self) -> int:
        return self.steps * self.batch_size

    def id_range(self) -> tuple[int, int]:
        """[lo, hi): every pool id this plan can draw (the range `distinct_samples_seen` is counted over)."""
        if self.finite:
            return 0, self.pool_limit
        return _window(self.seed), _window(self.seed) + (self.n if self.world == "real" else self.samples_seen)

    def check_pool(self, source_name: str = "source") -> None:
        """Refuse, before any training, a finite pool too small for this run (invariant 2)."""
        if not self.finite:
            if self.samples_seen > 1 << _WINDOW_BITS or self.n > 1 << _WINDOW_BITS:
                raise PoolTooSmallError(f"steps x batch_size = {self.samples_seen:,} exceeds 2**32 ids per seed window")
            return
        if self.world == "ideal" and self.samples_seen > self.pool_limit:
            raise PoolTooSmallError(
                f"the Ideal World needs steps x batch_size = {self.steps:,} x {self.batch_size:,} = "
                f"{self.samples_seen:,} distinct samples, but the {source_name} pool holds only "
                f"{self.pool_limit:,}. Lower steps to at most {self.pool_limit // self.batch_size:,} "
                f"at this batch size, or use a larger pool; samples are never recycled.")
        if self.world == "real" and self.n > self.pool_limit:
            raise PoolTooSmallError(
                f"the Real World asks for n = {self.n:,} samples, but the {source_name} pool holds "
                f"only {self.pool_limit:,}.")

    # --- Real World -------------------------------------------------------------------------
    def real_subset(self) -> torch.Tensor:
        """The n distinct pool ids of the Real World, fixed by (seed, n)."""
        if not self.finite:
            return _window(self.seed) + torch.arange(self.n, dtype=torch.int64)
        perm = torch.randperm(self.pool_limit, generator=_generator(self.seed, rng.Stream.SUBSET))
        return perm[: self.n]

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """Positions 0..n-1 into the subset, in the order epoch `epoch` visits them."""
        return torch.randperm(self.n, generator=_generator(self.seed, rng.Stream.EPOCH, epoch))

    def real_positions(self, start_step: int = 0):
        """Yields, for each step from `start_step`, the positions (into the subset) of its global batch."""
        B, n = self.batch_size, self.n
        pos = start_step * B  # position in the concatenated per-epoch stream
        epoch = pos // n
        order, buffer = self.epoch_order(epoch), None
        offset = pos - epoch * n
        for _ in range(start_step, self.steps):
            parts, need = [], B
            while need:
                take = min(need, n - offset)
                parts.append(order[offset:offset + take])
                offset, need = offset + take, need - take
                if offset == n:
                    epoch, offset = epoch + 1, 0
                    order = self.epoch_order(epoch)
            buffer = parts[0] if len(parts) == 1 else torch.cat(parts)
            yield buffer

    # --- Ideal World ------------------------------------------------------------------------
    def ideal_ids(self) -> torch.Tensor | None:
        """All T*B Ideal World ids in step order for a finite pool (None for unbounded pools)."""
        if not self.finite:
            return None
        perm = torch.randperm(self.pool_limit, generator=_generator(self.seed, rng.Stream.IDEAL))
        return perm[: self.samples_seen]

    def ideal_batch(self, step: int, ids: torch.Tensor | None) -> torch.Tensor:
        B = self.batch_size
        if ids is not None:
            return ids[step * B:(step + 1) * B]
        return _window(self.seed) + step * B + torch.arange(B, dtype=torch.int64)

    # --- both ---------------------------------------------------------------------------------
    def batches(self, start_step: int = 0):
        """Yields (step, global batch ids) for every step from `start_step` to `steps - 1`."""
        if self.world == "real":
            subset = self.real_subset()
            for step, positions in enumerate(self.real_positions(start_step), start=start_step):
                yield step, subset[positions]
        else:
            ids = self.ideal_ids()
            for step in range(start_step, self.steps):
                yield step, self.ideal_batch(step, ids)


def rank_slice(batch: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """This rank's contiguous share of a global batch (the batch size must divide evenly)."""
    if world_size == 1:
        return batch
    if len(batch) % world_size:
        raise ConfigError(f"batch_size {len(batch)} is not divisible by the {world_size} DDP workers")
    per = len(batch) // world_size
    return batch[rank * per:(rank + 1) * per]
