"""The data side's typed config and choice lists, torch-free so that the run schema
(launch/config.py) loads in a fraction of a second. sources.py, corruptions.py, worlds.py,
loaders.py and augment.py read them; launch/config.py validates them (and owns the messages).

Layering: `lightning_modules` is the bottom package; `datamodules` may import its metric names
and registry, never the reverse; `results` and `launch` sit above both.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from twoworlds.errors import ConfigError, DataError  # noqa: F401  (DataError: re-exported)
from twoworlds.identity import CACHE_KEY, hashed, role

WORLDS = ("real", "ideal")
LOADERS = ("tensor", "ffcv", "auto")  # auto: tensor when the pool fits in memory, else ffcv (loaders.py)
AUGMENT_LEVELS = (0, 1, 2, 3)  # image sources: none, flip, pad-4 crop + flip, reflect-pad crop + flip (augment.py)
PIXELS = ("none", "shuffled", "random", "gaussian")  # input corruptions (corruptions.py)


@dataclass
class DataConfig:
    """Source parameters. `seed` fixes the pool's *content*; the run seed (order, init) is separate."""

    seed: int = 0
    test_size: int = 4000  # samples in the held-out test set
    pool_size: int | None = None  # cap the training pool at this many ids (None: the source's own pool)
    # teacher source only: Gaussian input shape, number of classes, hidden width of the teacher net
    teacher_shape: list[int] = field(default_factory=lambda: [1, 32])
    teacher_classes: int = 4
    teacher_width: int = 32
    # file sources (datamodules/cifar.py, arrays.py)
    data_dir: str = "data"  # where dataset files live; relative paths are relative to the working directory
    download: bool = False  # cifar10 only: fetch the dataset with torchvision when it is missing
    x_file: str = ""  # arrays source: .npy inputs (N, ...) and labels (N,), relative to data_dir unless absolute
    y_file: str = ""
    test_x_file: str = ""  # arrays source: optional .npy test split
    test_y_file: str = ""
    npz: str = ""  # arrays source: one .npz with x/X, y/Y and optional x_test/X_test, y_test/Y_test
    test_fraction: float = 0.1  # arrays source without a test split: seeded holdout fraction
    # arrays source: the number of classes K (labels must be < K); unset, K = max label + 1 and a
    # class below it without a sample is refused. Other sources: must equal the source's own K.
    num_classes: int | None = None
    cache_dir: str = field(default="", metadata=role(config_hash=False))  # loader=ffcv: where pool .beton files are written once (empty: <data_dir>/ffcv-cache)


@dataclass
class CorruptConfig:
    """Which corruptions a run applies; all keyed by data.seed, identical in both worlds."""

    label_noise: float = field(default=0.0, metadata=role(name=True))  # probability in [0, 1) that a label is replaced by one of the K-1 *other* classes
    random_labels: bool = field(default=False, metadata=role(name=True))  # every label uniform over the K classes
    # none | shuffled (one permutation of positions for all samples) | random (one per sample)
    # | gaussian (Gaussian noise with the data's per-position mean and std); applies to every split
    pixels: str = field(default="none", metadata=role(name=True))
    test: bool = field(default=False, metadata=role(name=True))  # label corruptions also apply to the test sets (by default: training pool only)


def is_active(cfg: CorruptConfig) -> bool:
    return cfg.label_noise > 0 or bool(cfg.random_labels) or cfg.pixels != "none"


def check(cfg: CorruptConfig) -> None:
    """A ConfigError naming the key and the fix."""
    if not 0 <= cfg.label_noise < 1:
        raise ConfigError(f"corrupt.label_noise={cfg.label_noise} must be in [0, 1) "
                         f"(the probability that a label is replaced by another class)")
    if cfg.label_noise > 0 and cfg.random_labels:
        raise ConfigError(f"corrupt.label_noise={cfg.label_noise} and corrupt.random_labels=true both replace "
                         f"labels; keep one (corrupt.label_noise=0 or corrupt.random_labels=false)")
    if cfg.test and not (cfg.label_noise > 0 or cfg.random_labels):
        raise ConfigError("corrupt.test=true applies the label corruptions to the test sets, but none is on; set "
                         "corrupt.label_noise or corrupt.random_labels=true, or leave corrupt.test=false")


def tag(cfg: CorruptConfig) -> str:
    """A short trial-name suffix for the active corruptions ('' when none), e.g. 'noise0.2-shuffledpixels'."""
    parts = []
    if cfg.label_noise > 0:
        parts.append(f"noise{cfg.label_noise:g}")
    if cfg.random_labels:
        parts.append("randlabels")
    if cfg.test and parts:
        parts.append("testlabels")
    if cfg.pixels != "none":
        parts.append(f"{cfg.pixels}pixels")
    return "-".join(parts)


def cache_params(data, corrupt) -> dict:
    """What a pool's .beton content depends on beyond the source itself: the data config and the corruptions
    (written into the file), by the rule of twoworlds/identity.py (clean runs keep the key they had before
    corruptions existed). `data`, `corrupt`: the run config's sections (DictConfig or dict)."""
    params = hashed(DataConfig, _plain(data), CACHE_KEY, "data")
    corrupted = hashed(CorruptConfig, _plain(corrupt), CACHE_KEY, "corrupt")
    if corrupted:
        params["corrupt"] = corrupted
    return params


def _plain(section) -> dict:
    if isinstance(section, dict):
        return section
    from omegaconf import OmegaConf
    return OmegaConf.to_container(section, resolve=True)
