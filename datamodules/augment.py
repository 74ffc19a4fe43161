"""Batch-level image augmentation and normalization, run on the device after a uint8 batch arrives.

Image sources serve uint8 (B, C, H, W) batches; the loader moves them to the device and calls
`prepare_images`, which optionally augments (standard CIFAR recipes) and returns normalized float32.
Every operation is vectorized over the batch: a crop is a per-sample translation of the index grid,
a flip reverses the column index of the samples that flip, and both are one `torch.gather`.

Levels:
    0  none
    1  random horizontal flip (each sample, p = 0.5)
    2  zero-pad 4, random crop back to H x W, then the flip (torchvision RandomCrop(32, padding=4))
    3  reflect-pad 4, random crop, then the flip

Randomness: the flips and crop offsets of one call are drawn from `generator` (on the batch's
device: `torch.Generator(device=x.device)`), so a seeded generator advanced once per batch makes the
augmentation a function of (seed, batch index). Evaluation sets use level 0 (normalization only).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import torch
from torch import Tensor
from twoworlds.datamodules.config import AUGMENT_LEVELS as LEVELS

from twoworlds.errors import ConfigError

PAD = 4  # crop padding of levels 2 and 3


@lru_cache(maxsize=32)
def _stats(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device) -> tuple[Tensor, Tensor]:
    """(255 mean, 255 std) as (1, C, 1, 1) float32 on `device`, made once per device."""
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) * 255
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1) * 255
    return m.to(device), s.to(device)


def _as_tuple(v: Sequence[float] | Tensor | None, channels: int, what: str) -> tuple[float, ...] | None:
    if v is None:
        return None
    t = tuple(float(a) for a in (v.flatten().tolist() if isinstance(v, Tensor) else v))
    if len(t) != channels:
        raise ValueError(f"{what} has {len(t)} values for {channels} channels")
    return t


def normalize_images(x_uint8: Tensor, mean: Sequence[float] | None, std: Sequence[float] | None,
                     channels_last: bool = False) -> Tensor:
    """float32 (x / 255 - mean) / std per channel (mean/std None: skipped), on x's device."""
    channels = x_uint8.shape[1]
    mean_t, std_t = _as_tuple(mean, channels, "mean"), _as_tuple(std, channels, "std")
    x = x_uint8.float()
    m, s = _stats(mean_t or (0.0,) * channels, std_t or (1.0,) * channels, x.device)
    x = x.sub_(m).div_(s)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _reflect(k: Tensor, size: int) -> Tensor:
    """Index k in [-PAD, size + PAD) reflected into [0, size) (edge pixel not repeated)."""
    k = torch.where(k < 0, -k, k)
    return torch.where(k >= size, 2 * (size - 1) - k, k)


def augment_images(x: Tensor, level: int, generator: torch.Generator | None = None) -> Tensor:
    """The augmented batch, same dtype and shape as x (B, C, H, W); pixels only move (or become 0)."""
    assert level in LEVELS, level  # launch/config.py validates the choice (`augment`)
    if x.dim() != 4:
        raise ValueError(f"expected an image batch (B, C, H, W), got shape {tuple(x.shape)}")
    if level == 0:
        return x
    B, C, H, W = x.shape
    dev = x.device
    flip = torch.rand(B, generator=generator, device=dev) < 0.5
    if level == 1:
        return torch.where(flip[:, None, None, None], x.flip(3), x)
    if level == 3 and min(H, W) <= PAD:
        raise ConfigError(f"augment=3: reflect padding by {PAD} needs images larger than {PAD} pixels, got {H} x {W}")
    shift = torch.randint(-PAD, PAD + 1, (2, B), generator=generator, device=dev)  # (dy, dx) per sample
    i = torch.arange(H, device=dev)
    j = torch.arange(W, device=dev)
    # Output pixel (i, j) of a sample reads source pixel (i + dy, j' + dx), j' = W - 1 - j if it flips.
    rows = i[None, :] + shift[0][:, None]  # (B, H)
    cols = torch.where(flip[:, None], W - 1 - j[None, :], j[None, :]) + shift[1][:, None]  # (B, W)
    if level == 2:
        valid = ((rows >= 0) & (rows < H))[:, :, None] & ((cols >= 0) & (cols < W))[:, None, :]
        rows, cols = rows.clamp(0, H - 1), cols.clamp(0, W - 1)
    else:
        rows, cols = _reflect(rows, H), _reflect(cols, W)
    index = (rows[:, :, None] * W + cols[:, None, :]).view(B, 1, H * W).expand(B, C, H * W)
    out = x.reshape(B, C, H * W).gather(2, index).view(B, C, H, W)
    if level == 2:
        out = out.masked_fill_(~valid[:, None], 0)
    return out


def prepare_images(x_uint8: Tensor, mean: Sequence[float] | None, std: Sequence[float] | None, level: int = 0,
                   generator: torch.Generator | None = None, channels_last: bool = False) -> Tensor:
    """Augment (level 0-3, randomness from `generator` on the batch's device) and normalize a uint8
    (B, C, H, W) batch into float32 (x / 255 - mean) / std; optionally channels_last."""
    assert level in LEVELS, level  # launch/config.py validates the choice (`augment`)
    if x_uint8.dtype != torch.uint8:
        raise ValueError(f"prepare_images expects a uint8 image batch, got {x_uint8.dtype}")
    if x_uint8.dim() != 4:
        raise ValueError(f"expected an image batch (B, C, H, W), got shape {tuple(x_uint8.shape)}")
    return normalize_images(augment_images(x_uint8, level, generator), mean, std, channels_last)
