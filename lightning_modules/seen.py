"""Which pool ids reached the training step: the evidence behind summary.json's `distinct_samples_seen`.

A bitmap (one bool per id) over the range the world plan draws from, kept on the device and set with
one `index_fill_` per step, so counting costs no host sync. Under DDP each rank marks its own ids
and the count is taken over the union of the ranks (an all-reduce), at the end and in every
checkpoint, which carries the bitmap bit-packed, so a resumed run keeps counting from where it was.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

MAX_IDS = 1 << 31  # a wider id range is not counted (its bitmap alone would take 2 GB)


class SeenIds:
    def __init__(self, lo: int, hi: int):
        self.lo, self.hi = int(lo), int(hi)
        self.counted = hi - lo <= MAX_IDS
        self.bits: torch.Tensor | None = None
        self._loaded: torch.Tensor | None = None  # from a checkpoint, until the first step's device is known

    def add(self, ids: torch.Tensor) -> None:
        if not self.counted:
            return
        if self.bits is None:
            self.bits = torch.zeros(self.hi - self.lo, dtype=torch.bool, device=ids.device)
            if self._loaded is not None:
                self.bits |= self._loaded.to(ids.device)
                self._loaded = None
        self.bits.index_fill_(0, ids - self.lo, True)

    def union(self, device: torch.device) -> torch.Tensor:
        """The bitmap OR-ed over DDP ranks (collective under DDP: every rank must call it)."""
        bits = self.bits if self.bits is not None else self._loaded
        if bits is None:
            bits = torch.zeros(self.hi - self.lo, dtype=torch.bool, device=device)
        if dist.is_initialized() and dist.get_world_size() > 1:
            flags = bits.to(device, torch.uint8)
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
            bits = flags > 0
        return bits

    def count(self, device: torch.device) -> int | None:
        """Distinct ids trained on over all ranks; None when the range is too wide to count."""
        return int(self.union(device).sum()) if self.counted else None

    def state(self, device: torch.device) -> dict:
        if not self.counted:
            return {}
        packed = np.packbits(self.union(device).cpu().numpy())
        return {"lo": self.lo, "hi": self.hi, "packed": torch.from_numpy(packed)}

    def load(self, state: dict) -> None:
        if not self.counted or not state:
            return
        if (int(state["lo"]), int(state["hi"])) != (self.lo, self.hi):
            raise ValueError(f"the checkpoint counts ids [{state['lo']}, {state['hi']}) but this run draws from "
                             f"[{self.lo}, {self.hi}): it belongs to another run")
        bits = np.unpackbits(state["packed"].numpy(), count=self.hi - self.lo).astype(bool)
        self._loaded = torch.from_numpy(bits)
        if self.bits is not None:
            self.bits |= self._loaded.to(self.bits.device)
            self._loaded = None
