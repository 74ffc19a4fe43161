"""Sources: index-addressable training pools with a test set beside them.

A source maps integer sample ids to (input, label). Sample i is a pure function of (source seed, i)
(docs/invariants.md), so the world switch can reason about *ids* alone: which ids a world draws, in which
order, on which rank. Training-pool ids and test ids are disjoint ranges:

    pool ids  [0, pool_size)                      (pool_size None = unbounded: [0, TEST_OFFSET))
    test ids  [test_offset, test_offset + test_size)

Sources are built by name from a registry; an unknown name lists the known ones.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from twoworlds.datamodules import rng
from twoworlds.datamodules.config import DataConfig
from twoworlds.lightning_modules.registry import Registry

from twoworlds.errors import ConfigError

# Unbounded pools use ids [0, TEST_OFFSET); their test ids start here. 2**40 ids is far more than
# any step budget (39,000 steps x 128 is 5e6).
TEST_OFFSET = 1 << 40



class Source:
    """Base class: a pool of ids plus a test range. Subclasses implement `get`."""

    name: str = "?"
    input_shape: tuple[int, ...]
    num_classes: int
    pool_size: int | None  # None: unbounded, generated on demand
    test_size: int
    test_offset: int = TEST_OFFSET
    # Image sources: `get` returns x as uint8 (B, C, H, W); the loader normalizes with these
    # per-channel statistics (of x / 255) once the batch is on the device (datamodules/augment.py).
    is_image: bool = False
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def get(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x float32 of shape (len(ids), *input_shape), y int64) on the CPU; x uint8 when is_image."""
        raise NotImplementedError

    def extra_test_sets(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Named second evaluation sets {name: (x, y)} beside the test range (x uint8 when is_image)."""
        return {}

    def test_ids(self) -> torch.Tensor:
        return torch.arange(self.test_offset, self.test_offset + self.test_size, dtype=torch.int64)

    @property
    def pool_limit(self) -> int:
        """One past the largest pool id."""
        return self.test_offset if self.pool_size is None else self.pool_size


def _import_builtin_sources() -> None:
    """The source modules register themselves on import; they pull scipy, mnist1d and numpy file
    readers, so they are imported at the first lookup, not when the config schema loads."""
    from twoworlds.datamodules import arrays, cifar, mnist1d  # noqa: F401


SOURCES: Registry[Callable[[DataConfig], Source]] = Registry("source", load=_import_builtin_sources)
register_source = SOURCES.register


def build_source(name: str, cfg: DataConfig) -> Source:
    source = SOURCES[name](cfg)  # an unknown name lists the known ones
    source.name = name
    if cfg.num_classes is not None and cfg.num_classes != source.num_classes:
        raise ConfigError(f"data.num_classes={cfg.num_classes} but the {name} source has {source.num_classes} classes")
    if cfg.pool_size is not None:
        if cfg.pool_size < 1 or (source.pool_size is not None and cfg.pool_size > source.pool_size):
            have = "unbounded" if source.pool_size is None else f"{source.pool_size:,}"
            raise ConfigError(f"data.pool_size={cfg.pool_size:,} must be between 1 and the {name} pool ({have})")
        source.pool_size = cfg.pool_size
    return source


# ---------------------------------------------------------------------------------------------
# teacher: Gaussian inputs labelled by a fixed random network
# ---------------------------------------------------------------------------------------------


class TeacherSource(Source):
    """x ~ N(0, I) of `teacher_shape`; y = argmax of a fixed random tanh network of x.

    The teacher's logits are centred on a reference sample so that the classes are roughly
    balanced (a random net's argmax otherwise favours one or two classes).
    """

    def __init__(self, cfg: DataConfig):
        if cfg.teacher_classes < 2:
            raise ConfigError(f"data.teacher_classes must be >= 2, got {cfg.teacher_classes}")
        self.seed = cfg.seed
        self.input_shape = tuple(int(d) for d in cfg.teacher_shape)
        self.num_classes = cfg.teacher_classes
        self.pool_size = None
        self.test_size = cfg.test_size
        dim = int(torch.tensor(self.input_shape).prod())
        gen = torch.Generator().manual_seed(rng.block_seed(cfg.seed, rng.Stream.TEACHER, 0))
        self.teacher = nn.Sequential(nn.Flatten(), nn.Linear(dim, cfg.teacher_width), nn.Tanh(),
                                     nn.Linear(cfg.teacher_width, self.num_classes))
        with torch.no_grad():
            for p in self.teacher.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) / max(1, p.shape[-1]) ** 0.5 * 2)
            reference = torch.randn(4096, *self.input_shape, generator=gen)
            self.centre = self.teacher(reference).mean(0)
        self.teacher.requires_grad_(False)

    def get(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dim = int(torch.tensor(self.input_shape).prod())
        (x,) = rng.block_draw(self.seed, ids, rng.Stream.INPUT,
                              lambda g: (torch.randn(rng.BLOCK, dim, generator=g),))
        x = x.view(len(ids), *self.input_shape)
        with torch.no_grad():
            y = (self.teacher(x) - self.centre).argmax(1)
        return x, y


register_source("teacher")(TeacherSource)
