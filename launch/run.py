"""One run (a trial) from a resolved config, checked and built before anything is written, then trained by
launch/loop.py; and a Real/Ideal pair with its comparison table."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from twoworlds.datamodules import build_source
from twoworlds.datamodules.config import WORLDS, cache_params
from twoworlds.datamodules.corruptions import corrupt_source
from twoworlds.datamodules.datamodule import WorldDataModule
from twoworlds.datamodules.loaders import choose_loader
from twoworlds.datamodules.worlds import WorldPlan
from twoworlds.launch import trial_state
from twoworlds.launch.config import ConfigError, check_name, trial_name
from twoworlds.launch.loop import Checkpoints, train
from twoworlds.lightning_modules.classification import ClassificationModule, OutputScaled
from twoworlds.lightning_modules.flops import training_flops_per_sample
from twoworlds.lightning_modules.metrics import TEST_SOFT_ERROR, TRAIN_SOFT_ERROR
from twoworlds.lightning_modules.networks import build_network


def accelerator(device: str, precision: str = "32-true") -> str:
    if precision == "16-mixed" and not torch.cuda.is_available():
        raise ConfigError("precision=16-mixed needs a CUDA GPU; on CPU use bf16-mixed or 32-true")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda was asked for, but torch sees no CUDA GPU (use device=cpu or auto)")
    return "gpu" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu"


def build(cfg: DictConfig) -> tuple[ClassificationModule, WorldDataModule, WorldPlan]:
    """Source, world plan, network and module for this config. Raises before any training on a
    config that cannot run (unknown names, a pool too small for the step budget)."""
    source = corrupt_source(build_source(cfg.source, cfg.data), cfg.corrupt, cfg.data.seed)
    plan = WorldPlan.for_source(source, cfg.world, cfg.n, cfg.steps, cfg.batch_size, cfg.seed)
    pl.seed_everything(cfg.seed, workers=False, verbose=False)  # initial weights: invariant 5
    m = cfg.model
    net = build_network(m.name, source.input_shape, source.num_classes, m.width, m.depth, m.patch_size)
    if m.output_scale is not None:  # lazy training: alpha * (f - f0), f0 counted in the FLOPs (forward only)
        net = OutputScaled(net, m.output_scale)
    net.flops_per_sample = training_flops_per_sample(net, source.input_shape, source.num_classes)
    if cfg.channels_last:
        net = net.to(memory_format=torch.channels_last)
    module = ClassificationModule(net, cfg.optim, cfg.steps, plan.id_range(), m.output_scale)
    loader, why = choose_loader(cfg.loader, source, torch.device("cuda" if accelerator(
        cfg.device, cfg.precision) == "gpu" else "cpu"))
    if cfg.progress and cfg.loader == "auto":
        print(f"[loader] {loader}: {why}", flush=True)
    dm = WorldDataModule(source, plan, cfg.eval.train_size, cfg.augment, cfg.channels_last, loader,
                         cfg.data.cache_dir or str(Path(cfg.data.data_dir) / "ffcv-cache"),
                         cache_params(cfg.data, cfg.corrupt))
    return module, dm, plan


@dataclass
class Prepared:
    """A trial checked and built; nothing trained or written yet."""

    cfg: DictConfig
    run_dir: Path
    module: ClassificationModule
    dm: WorldDataModule
    plan: WorldPlan


def preflight(cfg: DictConfig) -> Prepared:
    """Everything that can refuse a trial, before it writes a file: its name, a directory holding another
    config's results, and the build (a pool too small, unknown names)."""
    cfg = cfg.copy()
    OmegaConf.set_struct(cfg, True)
    cfg.name = trial_name(cfg)
    check_name("name", cfg.name)
    trial_state.refuse_conflicts([cfg])
    module, dm, plan = build(cfg)
    return Prepared(cfg, trial_state.run_dir(cfg), module, dm, plan)


def run_trial(cfg: DictConfig, *, report=None, checkpoints: Checkpoints | None = None,
              resume_from: str | None = None, device=None) -> dict:
    """Train one world for `steps` steps (launch/loop.py); write config.yaml, metrics.csv, events, summary.json.

    Returns the summary. A diverged run returns with status 'diverged'; a run that raises (or is
    interrupted) writes its summary with that status first, so its logged rows are never lost.
    `resume_from` (a retry or resume) is loaded with weights_only=True: a checkpoint is data, never code.
    """
    return train(preflight(cfg), report=report, checkpoints=checkpoints, resume_from=resume_from, device=device)


def run_pair(cfg: DictConfig) -> tuple[dict, dict]:
    """The Real World run and the Ideal World run of the same config, one after the other."""
    worlds = []
    for world in WORLDS:  # real, then ideal
        c = cfg.copy()
        c.world = world
        if cfg.name:
            c.name = f"{cfg.name}-{world}"
        worlds.append(c)
    prepared = [preflight(c) for c in worlds]  # both checked (pool size, directories) before either trains
    real = train(prepared.pop(0))  # popped: the Real World's data and model are freed before the Ideal World's
    return real, train(prepared.pop(0))


def comparison_table(real: dict, ideal: dict) -> str:
    """Step-by-step real vs ideal test soft error and their gap (the bootstrap error)."""
    key = TEST_SOFT_ERROR
    train_key = TRAIN_SOFT_ERROR
    ideal_by_step = {r["step"]: r for r in ideal["rows"]}
    lines = [f"Real World ({real['trial']}, n={real['n']:,}) vs Ideal World ({ideal['trial']})",
             f"{'step':>8} {'samples':>11} {'real test':>10} {'ideal test':>11} {'gap':>8} {'real train':>11}",
             "-" * 64]
    for r in real["rows"]:
        i = ideal_by_step.get(r["step"])
        if i is None:
            continue
        lines.append(f"{r['step']:>8,} {r['samples_seen']:>11,} {r[key]:>10.4f} {i[key]:>11.4f} "
                     f"{r[key] - i[key]:>+8.4f} {r.get(train_key, float('nan')):>11.4f}")
    lines.append("gap = real - ideal test soft error (the bootstrap error); soft error = mean(1 - p(true class))")
    lines.append(f"status: real {real['status']}, ideal {ideal['status']}; "
                 f"wall time {real['wall_time']:.1f}s + {ideal['wall_time']:.1f}s")
    return "\n".join(lines)
