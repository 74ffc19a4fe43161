"""The run schema: typed dataclasses merged with YAML files and `key=value` overrides by OmegaConf.

Struct mode is on, so a misspelt key is an error; `ConfigError` names the key and the nearest
valid ones instead of OmegaConf's traceback.

This module imports no torch, Lightning or pandas (tests/test_package.py checks it), so `twoworlds
keys`, `--dry-run` and every config error answer at once: the sections' dataclasses and choice lists
come from the torch-free `lightning_modules.config` and `datamodules.config`, and this module owns
the messages for them.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException
from twoworlds.datamodules import config as data_config
from twoworlds.datamodules.config import AUGMENT_LEVELS, LOADERS, PIXELS, WORLDS, CorruptConfig, DataConfig
from twoworlds.lightning_modules.config import OPTIMIZERS, SCHEDULES, OptimConfig
from twoworlds.lightning_modules.registry import did_you_mean
from twoworlds.results.records import (
    RunRecord,
    flatten,  # noqa: F401  (re-exported: config.flatten, as tests/test_tensorboard.py reads it)
    yaml_problem,
)

from twoworlds.errors import ConfigError
from twoworlds.identity import CONFIG_HASH, PAIR_KEY, flat_items, hashed, keys_with, role


@dataclass
class ModelConfig:
    name: str = field(default="mlp", metadata=role(name=True))  # a network family of lightning_modules.networks
    # mlp: hidden units; cnn/resnet: first stage's channels; vit: embedding dim
    width: int = field(default=128, metadata=role(name=True))
    depth: int = field(default=3, metadata=role(name=True))  # mlp: hidden layers; cnn: conv stages; resnet: 10 | 18 | 34; vit: blocks
    patch_size: int = field(default=4, metadata=role(name=True))  # vit only
    # Lazy training (Chizat and Bach): the output becomes alpha * (f(x) - f0(x)), f0 the network as
    # initialized, and the learning rate lr / alpha**2 for sgd (lr / alpha for adamw, whose steps do not
    # grow with the gradient). Large alpha: weights barely move (the NTK regime). null: the plain network.
    output_scale: float | None = field(default=None, metadata=role(name=True))


@dataclass
class EarlyStopConfig:
    """Stop a Real World run whose curve has converged: its train 0/1 error has stayed below
    `train_error_below` for `patience` evaluations in a row (the rest would only plateau). The
    Ideal World ignores it and always runs its full budget. 0 turns it off. Read by launch/loop.py."""

    train_error_below: float = 0.0
    patience: int = 3  # consecutive evaluations


@dataclass
class EvalConfig:
    points: int = 40  # about this many evaluations, log-spaced in steps, last step always
    dense: int = 10  # the first `dense` steps are all evaluated
    batch_size: int = 2048  # evaluation chunk size (memory only; no effect on the numbers)
    train_size: int | None = None  # Real World train metrics on the first this-many of the n (None: all n)


# The bookkeeping keys (study, name, out_dir, check_every, progress) come first, from results/records.py, which
# the report reads without this module. Each key says where it goes (twoworlds/identity.py): the pair key leaves
# out the pairing axes (world, n) and what changes how the numbers are computed but not what is trained (device;
# eval only picks steps and chunk sizes).
@dataclass
class RunConfig(RunRecord):
    world: str = field(default="real", metadata=role(name=True, pair_key=False))  # real | ideal | both (the pair)
    n: int = field(default=4000, metadata=role(name=True, pair_key=False))  # Real World training-set size (the Ideal World ignores it)
    steps: int = 2000  # optimizer steps, identical in both worlds
    batch_size: int = field(default=128, metadata=role(name=True))  # global batch (split over DDP workers)
    seed: int = field(default=0, metadata=role(name=True))  # run seed: initial weights, sample order, Real World subset
    source: str = "mnist1d"
    loader: str = "tensor"  # tensor | ffcv | auto (tensor when the pool fits in memory, else ffcv)
    device: str = field(default="auto", metadata=role(pair_key=False))  # auto | cpu | cuda
    precision: str = "32-true"  # 32-true | bf16-mixed | 16-mixed (16-mixed needs a GPU)
    augment: int = 0  # image sources: 0 none, 1 flip, 2 pad-4 crop + flip, 3 reflect-pad crop + flip
    channels_last: bool = False  # image sources: NHWC memory format (faster convolutions on GPUs)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig, metadata=role(pair_key=False))
    early_stop: EarlyStopConfig = field(default_factory=EarlyStopConfig)  # Real World only: launch/loop.py
    corrupt: CorruptConfig = field(default_factory=CorruptConfig)  # Zhang et al. (2017): datamodules/corruptions.py


CHOICES = {
    "world": (*WORLDS, "both"),
    "loader": LOADERS,
    "device": ("auto", "cpu", "cuda"),
    "precision": ("32-true", "bf16-mixed", "16-mixed"),
    "augment": AUGMENT_LEVELS,
    "optim.name": OPTIMIZERS,
    "optim.schedule": SCHEDULES,
    "corrupt.pixels": PIXELS,
}


def schema() -> DictConfig:
    cfg = OmegaConf.structured(RunConfig)
    OmegaConf.set_struct(cfg, True)
    return cfg


def all_keys(cfg: DictConfig | None = None, prefix: str = "") -> list[str]:
    """Every dotted key of the schema, e.g. 'optim.lr'."""
    cfg = schema() if cfg is None else cfg
    keys = []
    for k in cfg:
        path = f"{prefix}{k}"
        keys.append(path)
        if isinstance(cfg[k], DictConfig):
            keys.extend(all_keys(cfg[k], path + "."))
    return keys


def unknown_key_error(key: str, where: str = "") -> ConfigError:
    hint = did_you_mean(key, all_keys()) or " Run `twoworlds keys` for the full list."
    return ConfigError(f"unknown config key '{key}'{where}.{hint}")


def _key_of(exc: OmegaConfBaseException) -> str:
    return str(getattr(exc, "full_key", "") or getattr(exc, "key", "") or "?")


def merge(base: DictConfig, other, where: str = "") -> DictConfig:
    """OmegaConf.merge with errors that name the key (and the source of the value)."""
    try:
        if isinstance(other, list):
            return OmegaConf.merge(base, OmegaConf.from_dotlist(other))
        return OmegaConf.merge(base, other)
    except ConfigKeyError as e:
        raise unknown_key_error(_key_of(e), where) from None
    except OmegaConfBaseException as e:
        msg = str(e).splitlines()[0]
        raise ConfigError(f"bad value for '{_key_of(e)}'{where}: {msg}") from None


def parse_overrides(overrides: list[str]) -> list[str]:
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"'{item}' is not a key=value override (e.g. model.width=256)")
    return overrides


def load(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """Schema defaults, then the YAML file (if any), then `key=value` overrides; validated."""
    cfg = schema()
    if path is not None:
        path = Path(path)
        cfg = merge(cfg, read_yaml(path), f" in {path}")
    cfg = merge(cfg, parse_overrides(list(overrides)), " on the command line")
    validate(cfg)
    return cfg


def read_yaml(path: Path) -> DictConfig:
    """A YAML mapping from a file, or a one-line ConfigError naming the file and the line."""
    if not path.is_file():
        raise ConfigError(f"config file '{path}' not found")
    refuse_duplicate_keys(path.read_text(), path)
    try:
        doc = OmegaConf.load(path)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {yaml_problem(e)}") from None
    if not isinstance(doc, DictConfig):
        raise ConfigError(f"{path} must hold a mapping of config keys to values (key: value lines)")
    return doc


def refuse_duplicate_keys(text: str, path: Path) -> None:
    """A mapping that gives one key twice is refused, naming the key and both lines: PyYAML (and OmegaConf) would
    keep the last value without a word. Text that is not valid YAML is left to the loader that follows."""
    try:
        nodes = [yaml.compose(text, Loader=yaml.SafeLoader)]
    except yaml.YAMLError:
        return
    while nodes:
        node = nodes.pop()
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value != "<<":
                    line = key.start_mark.line + 1
                    if key.value in seen:
                        raise ConfigError(f"{path}: key '{key.value}' is given twice in one mapping (lines "
                                          f"{seen[key.value]} and {line}); keep one")
                    seen[key.value] = line
                nodes.append(value)
        elif isinstance(node, yaml.SequenceNode):
            nodes.extend(node.value)


def check_name(key: str, value: str) -> None:
    """Study and trial names are directory names under out_dir: never a path that could leave it."""
    if not value or value in (".", "..") or "/" in value or "\\" in value or ".." in value:
        raise ConfigError(f"{key}={value!r} must be a plain directory name (no '/', '\\' or '..'; not empty): "
                          f"outputs go to <out_dir>/<study>/<name>/")


SEED_MAX = 2**32 - 1  # numpy's and Lightning's seed range


def validate(cfg: DictConfig) -> None:
    """Every value's own checks and the combinations that cannot run, each a one-line ConfigError naming the key."""
    check_values(dict(flat_items(to_plain(cfg))))


def check_values(v: dict) -> None:
    """`validate` on a flat {dotted key: value} view of a resolved config."""
    check_name("study", v["study"])
    if v["name"]:
        check_name("name", v["name"])
    for key, value in v.items():  # nan/inf make no sense for any number here (a learning rate, a fraction, a scale)
        if type(value) is float and not math.isfinite(value) or type(value) is list and not all(
                math.isfinite(x) for x in value if type(x) is float):
            raise ConfigError(f"{key}={value} must be a finite number")
    for key, allowed in CHOICES.items():
        if v[key] not in allowed:
            raise ConfigError(f"{key}={v[key]} is not one of: {', '.join(str(a) for a in allowed)}")
    for key in ("n", "steps", "batch_size", "check_every", "eval.points", "eval.batch_size", "data.test_size",
                "model.width", "model.depth"):
        if v[key] < 1:
            raise ConfigError(f"{key} must be >= 1, got {v[key]}")
    for key in ("seed", "data.seed"):
        if v[key] < 0:
            raise ConfigError(f"{key} must be >= 0, got {v[key]}")
        if v[key] > SEED_MAX:
            raise ConfigError(f"{key} must be <= {SEED_MAX} (numpy's seed range), got {v[key]}")
    if v["model.output_scale"] is not None and not v["model.output_scale"] > 0:
        raise ConfigError(f"model.output_scale={v['model.output_scale']} must be > 0 (the lazy-training scale "
                          "alpha), or null for the plain network")
    if not v["checkpoint_every_s"] >= 0:
        raise ConfigError(f"checkpoint_every_s must be >= 0 (seconds; 0: at every evaluation), got {v['checkpoint_every_s']}")
    _check_optim(v)
    if not 0 <= v["early_stop.train_error_below"] < 1 or v["early_stop.patience"] < 1:
        raise ConfigError(f"early_stop.train_error_below={v['early_stop.train_error_below']} must be in [0, 1) "
                          f"(0: off) and early_stop.patience={v['early_stop.patience']} at least 1")
    if v["source"] == "teacher" and (len(v["data.teacher_shape"]) not in (2, 3)
                                     or min(v["data.teacher_shape"]) < 1 or v["data.teacher_width"] < 1):
        raise ConfigError(f"data.teacher_shape={v['data.teacher_shape']} must be 2 or 3 sizes >= 1 (e.g. [1, 32]) "
                          f"and data.teacher_width={v['data.teacher_width']} at least 1")
    data_config.check(CorruptConfig(**{k.removeprefix("corrupt."): x for k, x in v.items() if k.startswith("corrupt.")}))


def _check_optim(v: dict) -> None:
    """What torch's optimizers would refuse at the first step, or what silently cannot train, refused here."""
    if v["optim.lr"] <= 0:
        raise ConfigError(f"optim.lr must be > 0, got {v['optim.lr']}")
    if not 0 <= v["optim.momentum"] < 1:
        raise ConfigError(f"optim.momentum={v['optim.momentum']} must be in [0, 1)")
    if v["optim.nesterov"] and v["optim.momentum"] <= 0:
        raise ConfigError("optim.nesterov=true needs optim.momentum > 0")
    if v["optim.weight_decay"] < 0:
        raise ConfigError(f"optim.weight_decay={v['optim.weight_decay']} must be >= 0")
    betas = v["optim.betas"]
    if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
        raise ConfigError(f"optim.betas={betas} must be two numbers in [0, 1) (AdamW's decay rates, e.g. [0.9, 0.999])")
    if not all(0 < m < 1 for m in v["optim.milestones"]):
        raise ConfigError(f"optim.milestones={v['optim.milestones']} must be fractions of steps in (0, 1)")
    if v["optim.gamma"] <= 0:
        raise ConfigError(f"optim.gamma={v['optim.gamma']} must be > 0 (the step schedule's factor)")
    if not 0 <= v["optim.warmup_steps"] < v["steps"]:
        raise ConfigError(f"optim.warmup_steps={v['optim.warmup_steps']} must be in [0, steps={v['steps']})")


def to_plain(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)


def pair_key(cfg: DictConfig) -> str:
    """Hash of the resolved config without world and n: runs that share it are compared."""
    return _digest(hashed(RunConfig, to_plain(cfg), PAIR_KEY))


def in_trial_name() -> tuple[str, ...]:
    """The keys the default trial name shows (a sweep appends the varying keys it does not show)."""
    return keys_with(RunConfig, "name")


def hashed_config(plain: dict) -> dict:
    """A resolved config (as a plain dict) as far as it makes the config hash (twoworlds/identity.py)."""
    return hashed(RunConfig, {k: v for k, v in plain.items() if k != "provenance"}, CONFIG_HASH)


def _digest(d: dict) -> str:
    return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def config_hash(cfg: DictConfig | dict) -> str:
    """Hash of everything in the resolved config that changes a trial's numbers: a trial directory holds the
    results of one config hash, never a mix."""
    return _digest(hashed_config(cfg if isinstance(cfg, dict) else to_plain(cfg)))


def config_diff(old: dict, new: dict) -> list[str]:
    """'key: old -> new' for every hashed key whose value differs (dotted keys)."""
    a, b = flatten(hashed_config(old)), flatten(hashed_config(new))
    return [f"{k}: {a.get(k, '(absent)')} -> {b.get(k, '(absent)')}" for k in sorted(a.keys() | b.keys())
            if a.get(k, "(absent)") != b.get(k, "(absent)")]


class _Attrs:
    """Attribute access to a plain nested dict, as to a DictConfig (the sweep expands plain dicts)."""

    def __init__(self, d: dict):
        self._d = d

    def __getattr__(self, key: str):
        value = self._d[key]
        return _Attrs(value) if isinstance(value, dict) else value


def trial_name(cfg: DictConfig | dict) -> str:
    """A readable, deterministic name: family, knobs, batch, world (and n), seed."""
    if isinstance(cfg, dict):
        cfg = _Attrs(cfg)
    if cfg.name:
        return cfg.name
    m = cfg.model
    parts = [m.name, f"w{m.width}", f"d{m.depth}"]
    if m.name == "vit":
        parts.append(f"p{m.patch_size}")
    parts += [f"bs{cfg.batch_size}", cfg.world]
    if cfg.world == "real":
        parts.append(f"n{cfg.n}")
    parts.append(f"s{cfg.seed}")
    if data_config.tag(cfg.corrupt):  # a corrupted run never shares a run directory with the clean one
        parts.append(data_config.tag(cfg.corrupt))
    if m.output_scale is not None:  # lazy training: alpha in the name, e.g. cnn-w8-d3-bs64-real-n500-s0-a100
        parts.append(f"a{m.output_scale:g}")
    return "-".join(str(p) for p in parts)
