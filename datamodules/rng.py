"""Index-addressable random numbers: every draw is a pure function of (seed, sample id, stream).

This is what makes sources *index-addressable* (docs/invariants.md): sample i can be generated alone, in any
batch, on any DDP rank, and it is always the same sample. There is no generator state to carry
around, so the Ideal World can generate each batch on the fly from its fresh ids.

Two mechanisms, for two costs:
- `hash_bits` / `uniform` / `normal`: a counter-based hash per (sample, slot). Exact
  per id at any access pattern, on CPU or GPU; about 150k samples/s per 150 values on 2 cores, so use
  it for a few values per sample (labels, corruption decisions).
- `block_draw`: ids are grouped in blocks of `BLOCK` consecutive ids; each block's values come from
  one `torch.Generator` seeded by (seed, stream, block). Sample i is row i % BLOCK of its block, so
  it is still a pure function of (seed, i), whatever else is in the batch. Bulk noise runs at
  torch's native speed (several 100k samples/s for 150 values), best for consecutive ids, which is
  how the worlds draw from unbounded pools.

The hash is `lowbias32` (Chris Wellons' hash-prospector), a well-mixed 32-bit integer hash, run in
int64 tensor arithmetic with explicit 32-bit masks so it gives the same bits on CPU and GPU.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable

import torch

BLOCK = 1024  # ids per generator block in `block_draw`


@enum.unique  # a value given twice is an error at import, never an alias
class Stream(enum.IntEnum):
    """The rng streams, so that independent uses of the same (seed, id) never share random bits. Every number a run
    computes depends on these values: never change or reuse one; a new use takes a new value."""

    INPUT = 1  # generated inputs (sources.py: teacher)
    LABEL = 2  # reserved (once the teacher's labels; unused, never to be given to another use)
    TEACHER = 3  # the teacher network's weights
    # corruptions.py: label decisions, the one shared pixel permutation, per-sample permutations, Gaussian inputs,
    # and the pool sample their mean/std is estimated on (an extra test set adds a salt >= 2**24 to the first three)
    CORRUPT_LABEL = 4
    CORRUPT_SHUFFLE = 5
    CORRUPT_PIXELS = 6
    CORRUPT_GAUSSIAN = 7
    CORRUPT_STATS = 8
    MNIST1D = 11  # MNIST-1D's per-sample draws (mnist1d.py)
    SUBSET = 101  # worlds.py: the Real World's n ids,
    EPOCH = 102  # its order in each epoch,
    IDEAL = 103  # and the Ideal World's order of the pool
    AUGMENT = 104  # augmentation randomness of step s: a function of (run seed, s) (datamodule.py)

_M32 = 0xFFFFFFFF
_INV_2_24 = 1.0 / (1 << 24)


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 on the low 32 bits of an int64 tensor (in place where it can)."""
    x = x & _M32
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _M32
    return x ^ (x >> 16)


def sample_keys(seed: int, ids: torch.Tensor, stream: int) -> torch.Tensor:
    """One 32-bit key per sample id; `stream` separates independent uses (labels, noise, corruption...)."""
    ids = ids.to(torch.int64)
    lo = _mix32(ids ^ _mix32(torch.tensor(seed * 0x9E3779B1 + stream, dtype=torch.int64)))
    # Fold in the high bits of the id so that ids above 2**32 do not alias low ones.
    return _mix32(lo + _mix32(ids >> 32) * 0x85EBCA6B)


def hash_bits(seed: int, ids: torch.Tensor, stream: int, n: int) -> torch.Tensor:
    """(len(ids), n) int64 of 32 random bits each: slot j of sample i, a pure function of (seed, i, stream, j)."""
    keys = sample_keys(seed, ids, stream)
    slots = torch.arange(n, dtype=torch.int64, device=ids.device) * 0x27D4EB2F
    return _mix32(keys[:, None] ^ slots[None, :])


def uniform(seed: int, ids: torch.Tensor, stream: int, n: int) -> torch.Tensor:
    """(len(ids), n) float32 uniform in [0, 1), 24 bits of resolution."""
    return (hash_bits(seed, ids, stream, n) >> 8).to(torch.float32) * _INV_2_24


def normal(seed: int, ids: torch.Tensor, stream: int, n: int) -> torch.Tensor:
    """(len(ids), n) float32 standard normal (Box-Muller, both outputs used)."""
    half = (n + 1) // 2
    u = uniform(seed, ids, stream, 2 * half)
    u1 = u[:, :half].clamp_(min=_INV_2_24)  # keeps log() finite
    radius = torch.sqrt(-2.0 * torch.log(u1))
    angle = (2.0 * math.pi) * u[:, half:]
    return torch.cat([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)[:, :n]


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


def block_seed(seed: int, stream: int, block: int) -> int:
    """The torch.Generator seed of one block (63 bits, so manual_seed takes it)."""
    return _splitmix64(_splitmix64(_splitmix64(seed) ^ stream) ^ block) >> 1


def block_draw(
    seed: int,
    ids: torch.Tensor,
    stream: int,
    draw: Callable[[torch.Generator], tuple[torch.Tensor, ...]],
) -> tuple[torch.Tensor, ...]:
    """Per-sample random tensors for `ids`, generated a block of BLOCK ids at a time on the CPU.

    `draw(gen)` must return tensors whose first dimension is BLOCK, always drawn in the same order
    from `gen`. The result holds, for each id, its row of its block's draw.
    """
    ids = ids.to("cpu", torch.int64)
    blocks = torch.div(ids, BLOCK, rounding_mode="floor")
    unique, inverse = torch.unique(blocks, return_inverse=True)
    rows = ids - blocks * BLOCK
    parts: list[tuple[torch.Tensor, ...]] = []
    for b in unique.tolist():
        gen = torch.Generator().manual_seed(block_seed(seed, stream, b))
        parts.append(draw(gen))
    return tuple(torch.stack(group)[inverse, rows] for group in zip(*parts, strict=True))
