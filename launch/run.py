"""One run (a trial) from a resolved config, and a Real/Ideal pair with its comparison table."""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from twoworlds.datamodules import build_source
from twoworlds.datamodules.corruptions import corrupt_source, is_active
from twoworlds.datamodules.datamodule import WorldDataModule
from twoworlds.datamodules.loaders import choose_loader
from twoworlds.datamodules.worlds import WorldPlan
from twoworlds.launch.callbacks import ROW_FIELDS, EvaluationCallback
from twoworlds.launch.config import ConfigError, pair_key, trial_name
from twoworlds.launch.recorder import RunRecorder, provenance
from twoworlds.launch.tensorboard_log import TrialLogger, start_trial_log, write_trial_end
from twoworlds.lightning_modules.classification import ClassificationModule
from twoworlds.lightning_modules.flops import training_flops_per_sample
from twoworlds.lightning_modules.metrics import KINDS, SOFT_ERROR, TEST, TRAIN, metric_name
from twoworlds.lightning_modules.networks import build_network
from twoworlds.lightning_modules.schedules import eval_steps


def quiet_lightning() -> None:
    """Keep Lightning's start-up chatter (GPU available..., tips) out of the progress output."""
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LightningModule.*has no .*validation.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated.*")
    # A resumed run continues its id schedule through WorldDataModule.state_dict, which Lightning's
    # check for a resumable *dataloader* does not see.
    warnings.filterwarnings("ignore", message=".*resuming from a checkpoint that ended before the epoch ended.*")


def accelerator(device: str, precision: str = "32-true") -> str:
    if precision == "16-mixed" and not torch.cuda.is_available():
        raise ConfigError("precision=16-mixed needs a CUDA GPU; on CPU use bf16-mixed or 32-true")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda was asked for, but torch sees no CUDA GPU (use device=cpu or auto)")
    return "gpu" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu"


def build(cfg: DictConfig) -> tuple[ClassificationModule, WorldDataModule, WorldPlan]:
    """Source, world plan, network and module for this config. Raises before any training on a
    config that cannot run (unknown names, a pool too small for the step budget)."""
    try:
        source = corrupt_source(build_source(cfg.source, cfg.data), cfg.corrupt, cfg.data.seed)
        plan = WorldPlan.for_source(source, cfg.world, cfg.n, cfg.steps, cfg.batch_size, cfg.seed)
        pl.seed_everything(cfg.seed, workers=False, verbose=False)  # initial weights: invariant 5
        m = cfg.model
        net = build_network(m.name, source.input_shape, source.num_classes, m.width, m.depth, m.patch_size)
        net.flops_per_sample = training_flops_per_sample(net, source.input_shape, source.num_classes)
        if cfg.channels_last:
            net = net.to(memory_format=torch.channels_last)
        module = ClassificationModule(net, cfg.optim, cfg.steps)
        loader, why = choose_loader(cfg.loader, source, torch.device("cuda" if accelerator(
            cfg.device, cfg.precision) == "gpu" else "cpu"))
        if cfg.progress and cfg.loader == "auto":
            print(f"[loader] {loader}: {why}", flush=True)
        dm = WorldDataModule(source, plan, cfg.eval.train_size, cfg.augment, cfg.channels_last, loader,
                             cfg.data.cache_dir or str(Path(cfg.data.data_dir) / "ffcv-cache"), cache_params(cfg))
    except ValueError as e:  # unknown names, bad knobs, a pool too small: the config's fault
        raise ConfigError(str(e)) from None
    return module, dm, plan


def cache_params(cfg: DictConfig) -> dict:
    """What the pool's .beton content depends on beyond the source itself: the data config and,
    when any is on, the corruptions (written into the file). Clean runs keep their old cache key."""
    params = OmegaConf.to_container(cfg.data, resolve=True)
    if is_active(cfg.corrupt):
        params["corrupt"] = OmegaConf.to_container(cfg.corrupt, resolve=True)
    return params


def run_trial(cfg: DictConfig, *, strategy="auto", plugins=None, extra_callbacks=(), report=None,
              ckpt_path: str | None = None, prepare=None) -> dict:
    """Train one world for `steps` steps; write config.yaml, metrics.csv, events, summary.json.

    Returns the summary. A diverged run returns with status 'diverged'; a run that raises (or is
    interrupted) writes its summary with that status first, so its logged rows are never lost.
    """
    quiet_lightning()
    cfg = cfg.copy()
    OmegaConf.set_struct(cfg, True)
    name = trial_name(cfg)
    cfg.name = name
    run_dir = Path(cfg.out_dir) / cfg.study / name
    module, dm, plan = build(cfg)
    recorder = RunRecorder(run_dir)
    schedule = eval_steps(cfg.steps, cfg.eval.points, cfg.eval.dense)
    evaluator = EvaluationCallback(
        schedule, recorder, label=f"{cfg.world} {name}", n=cfg.n if cfg.world == "real" else None,
        batch_size=cfg.batch_size, eval_batch_size=cfg.eval.batch_size, check_every=cfg.check_every,
        flops_per_sample=module.net.flops_per_sample, progress=cfg.progress, report=report, early_stop=cfg.early_stop)
    logger = TrialLogger(save_dir=str(run_dir.parent), name=name, version="", default_hp_metric=False)
    trainer = pl.Trainer(
        accelerator=accelerator(cfg.device, cfg.precision), devices="auto" if plugins else 1, strategy=strategy,
        plugins=plugins, precision=cfg.precision, max_steps=cfg.steps, max_epochs=-1, logger=logger,
        callbacks=[evaluator, *extra_callbacks], enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, num_sanity_val_steps=0, limit_val_batches=0,
        use_distributed_sampler=False, log_every_n_steps=max(1, cfg.steps))
    if prepare is not None:  # e.g. ray.train.lightning.prepare_trainer for DDP workers
        trainer = prepare(trainer)
    is_zero = recorder.enable(trainer.is_global_zero)
    recorder.write_config(cfg, provenance())
    recorder.start_metrics(list(ROW_FIELDS) + [metric_name(s, k) for s in dm.eval_split_names() for k in KINDS],
                           keep_until_step=_resume_step(ckpt_path))
    if is_zero:
        start_trial_log(logger, recorder.metrics_path)
    summary = {"trial": name, "study": cfg.study, "world": cfg.world, "n": cfg.n if cfg.world == "real" else None,
               "pair_key": pair_key(cfg), "num_parameters": module.net.num_parameters,
               "flops_per_sample": module.net.flops_per_sample,
               "num_classes": dm.source.num_classes, "status": "running",
               "resumed_from_step": _resume_step(ckpt_path)}
    start = time.perf_counter()
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
        summary["status"] = "completed" if evaluator.status == "running" else evaluator.status
    except KeyboardInterrupt:
        summary["status"] = "interrupted"
        raise
    except Exception as e:
        summary["status"], summary["error"] = "failed", f"{type(e).__name__}: {e}"
        raise
    finally:
        steps_done = trainer.global_step
        summary.update(
            steps=cfg.steps, steps_done=steps_done, batch_size=cfg.batch_size,
            samples_seen=steps_done * cfg.batch_size,
            distinct_samples_seen=min(plan.distinct_samples, steps_done * cfg.batch_size),
            wall_time=time.perf_counter() - start,
            final={k: v for k, v in evaluator.last_row.items() if "/" in k})
        if evaluator.stopped_early_at is not None:
            summary["stopped_early_at"] = evaluator.stopped_early_at
        if summary["status"] == "diverged":
            summary["diverged_at_step"] = evaluator.diverged_at
            summary["diverged_reason"] = evaluator.diverged_why
        recorder.write_summary(summary)
        if is_zero:
            write_trial_end(logger, cfg, summary, dm.eval_split_names(), evaluator.last_row)
    summary["rows"] = evaluator.recorder.rows
    return summary


def _resume_step(ckpt_path: str | None) -> int:
    if not ckpt_path:
        return 0
    return int(torch.load(ckpt_path, map_location="cpu", weights_only=False).get("global_step", 0))


def run_pair(cfg: DictConfig) -> tuple[dict, dict]:
    """The Real World run and the Ideal World run of the same config, one after the other."""
    out = []
    for world in ("real", "ideal"):
        c = cfg.copy()
        c.world = world
        if cfg.name:
            c.name = f"{cfg.name}-{world}"
        out.append(run_trial(c))
    return out[0], out[1]


def comparison_table(real: dict, ideal: dict) -> str:
    """Step-by-step real vs ideal test soft error and their gap (the bootstrap error)."""
    key = metric_name(TEST, SOFT_ERROR)
    train_key = metric_name(TRAIN, SOFT_ERROR)
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
