"""Which loader backend serves the training batches: `tensor`, `ffcv`, or `auto` (chosen here).

`tensor` keeps data where the model runs and indexes it (no worker processes); `ffcv` streams a
finite pool from a `.beton` file for pools that do not fit in memory (CIFAR-5m is 15 GB).
"""

from __future__ import annotations

import os

import torch
from twoworlds.datamodules.config import LOADERS
from twoworlds.datamodules.sources import Source

ROOM = 0.5  # the pool may take at most this fraction of the free memory for `tensor`


def free_memory(device: torch.device) -> int:
    """Free bytes where the model runs: GPU memory on CUDA, available RAM on the CPU."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def pool_bytes(source: Source) -> int | None:
    if source.pool_size is None:
        return None
    x, _ = source.get(torch.zeros(1, dtype=torch.int64))
    return source.pool_size * x.element_size() * x[0].numel()


def choose_loader(requested: str, source: Source, device: torch.device) -> tuple[str, str]:
    """(backend, why) for `loader=requested`."""
    assert requested in LOADERS, requested  # launch/config.py validates the choice
    if requested != "auto":
        return requested, "asked for"
    need = pool_bytes(source)
    if need is None:
        return "tensor", f"the {source.name} pool is generated on demand"
    free = free_memory(device)
    gb = f"pool of {source.pool_size:,} samples is {need / 1e9:.2f} GB, {device.type} has {free / 1e9:.1f} GB free"
    if need <= ROOM * free:
        return "tensor", f"the {gb}: it fits with room to spare"
    from twoworlds.datamodules.ffcv_loader import ffcv_available
    if ffcv_available():
        return "ffcv", f"the {gb}: too large to hold, streamed from a .beton file"
    return "tensor", f"the {gb}, but FFCV is not installed: reading batches from the source's files"
