"""One run (a trial) from a resolved config, and a Real/Ideal pair with its comparison table."""

from __future__ import annotations

import logging
import signal
import threading
import time
import warnings
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
from twoworlds.launch.callbacks import ROW_FIELDS, EvaluationCallback
from twoworlds.launch.config import ConfigError, check_name, config_hash, pair_key, trial_name
from twoworlds.launch.recorder import RunRecorder, last_row, provenance
from twoworlds.launch.tensorboard_log import (
    TrialLogger,
    earlier_event_files,
    start_trial_log,
    write_trial_end,
)
from twoworlds.lightning_modules.classification import ClassificationModule, OutputScaled
from twoworlds.lightning_modules.flops import training_flops_per_sample
from twoworlds.lightning_modules.metrics import (
    KINDS,
    TEST_SOFT_ERROR,
    TRAIN_SOFT_ERROR,
    is_final_metric,
    metric_name,
)
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
    quiet_lightning()
    cfg = cfg.copy()
    OmegaConf.set_struct(cfg, True)
    cfg.name = trial_name(cfg)
    check_name("name", cfg.name)
    trial_state.refuse_conflicts([cfg])
    module, dm, plan = build(cfg)
    return Prepared(cfg, trial_state.run_dir(cfg), module, dm, plan)


class _TrialEvents(pl.Callback):
    """Starts metrics.csv once Lightning has restored a checkpoint (so the resumed step is known without
    loading the file a second time), and notes a Ctrl-C: Lightning catches KeyboardInterrupt inside
    `fit` and calls sys.exit(1), so an `except KeyboardInterrupt` around `fit` never sees it."""

    def __init__(self, recorder: RunRecorder, columns: list[str]):
        self.recorder, self.columns = recorder, columns
        self.earlier_logs = earlier_event_files(recorder.run_dir)  # before Lightning opens this attempt's file
        self.resumed_from_step, self.interrupted, self.log_started = 0, False, False

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        self.resumed_from_step = int(checkpoint.get("global_step", 0))

    def on_train_start(self, trainer, pl_module) -> None:  # not called when the checkpoint is at the last step
        self.recorder.start_metrics(self.columns, keep_until_step=self.resumed_from_step)
        if trainer.is_global_zero:  # this attempt's events file, holding the rows metrics.csv kept
            start_trial_log(trainer.logger, self.recorder.metrics_path, self.earlier_logs)
            self.log_started = True

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self.interrupted = isinstance(exception, KeyboardInterrupt)


def run_trial(cfg: DictConfig, *, strategy="auto", plugins=None, extra_callbacks=(), report=None,
              ckpt_path: str | None = None, prepare=None) -> dict:
    """Train one world for `steps` steps; write config.yaml, metrics.csv, events, summary.json.

    Returns the summary. A diverged run returns with status 'diverged'; a run that raises (or is
    interrupted) writes its summary with that status first, so its logged rows are never lost.
    `ckpt_path` (a retry or resume) is loaded with weights_only=True: a checkpoint is data, never code.
    """
    return train(preflight(cfg), strategy=strategy, plugins=plugins, extra_callbacks=extra_callbacks,
                 report=report, ckpt_path=ckpt_path, prepare=prepare)


def train(p: Prepared, *, strategy="auto", plugins=None, extra_callbacks=(), report=None,
          ckpt_path: str | None = None, prepare=None) -> dict:
    """run_trial for a Prepared trial."""
    cfg, name = p.cfg, p.cfg.name
    recorder = RunRecorder(trial_state.writable_dir(p.run_dir))  # an unwritable out_dir: one line, nothing trained
    evaluator = EvaluationCallback(
        eval_steps(cfg.steps, cfg.eval.points, cfg.eval.dense), recorder, label=f"{cfg.world} {name}",
        n=cfg.n if cfg.world == "real" else None, batch_size=cfg.batch_size, eval_batch_size=cfg.eval.batch_size,
        check_every=cfg.check_every, flops_per_sample=p.module.net.flops_per_sample,
        progress=cfg.progress, report=report, early_stop=cfg.early_stop)
    events = _TrialEvents(recorder, list(ROW_FIELDS) + [metric_name(s, k) for s in p.dm.eval_split_names()
                                                         for k in KINDS])
    trainer, logger = _trainer(cfg, p.run_dir, [evaluator, events, *extra_callbacks], strategy, plugins)
    if prepare is not None:  # e.g. ray.train.lightning.prepare_trainer for DDP workers
        trainer = prepare(trainer)
    is_zero = recorder.enable(trainer.is_global_zero)
    recorder.write_config(cfg, {**provenance(), "config_hash": config_hash(cfg)})
    summary = {"trial": name, "study": cfg.study, "world": cfg.world, "n": cfg.n if cfg.world == "real" else None,
               "pair_key": pair_key(cfg), "config_hash": config_hash(cfg),
               "num_parameters": p.module.net.num_parameters,
               "flops_per_sample": p.module.net.flops_per_sample, "num_classes": p.dm.source.num_classes,
               "status": "running"}
    start = time.perf_counter()
    collective = True  # False once a rank may have died: the end-of-run count then skips its all-reduce
    try:
        trainer.fit(p.module, datamodule=p.dm, ckpt_path=ckpt_path, weights_only=True)
        summary["status"] = "completed" if evaluator.status == "running" else evaluator.status
    except Exception as e:
        summary["status"], summary["error"], collective = "failed", f"{type(e).__name__}: {e}", False
        raise
    except BaseException:  # stopped from outside: Ctrl-C, or Tune stopping the trial (sys.exit in its report)
        summary["status"], collective = "interrupted", False
        if events.interrupted:  # Lightning turned the KeyboardInterrupt into sys.exit(1) (see _TrialEvents)
            _restore_sigint()
            raise KeyboardInterrupt from None
        raise
    finally:
        summary["resumed_from_step"] = events.resumed_from_step
        _write_summary(summary, p, trainer, evaluator, time.perf_counter() - start, collective)
        if is_zero:
            if not events.log_started:  # resumed at its last step: no training, so no on_train_start
                start_trial_log(logger, recorder.metrics_path, events.earlier_logs)
            write_trial_end(logger, cfg, summary, p.dm.eval_split_names(), evaluator.last_row)
    summary["rows"] = evaluator.recorder.rows
    return summary


def _trainer(cfg: DictConfig, run_dir: Path, callbacks: list, strategy,
             plugins) -> tuple[pl.Trainer, TrialLogger]:
    logger = TrialLogger(save_dir=str(run_dir.parent), name=cfg.name, version="", default_hp_metric=False)
    trainer = pl.Trainer(
        accelerator=accelerator(cfg.device, cfg.precision), devices="auto" if plugins else 1, strategy=strategy,
        plugins=plugins, precision=cfg.precision, max_steps=cfg.steps, max_epochs=-1, logger=logger,
        callbacks=callbacks, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, num_sanity_val_steps=0, limit_val_batches=0,
        use_distributed_sampler=False, log_every_n_steps=max(1, cfg.steps))
    return trainer, logger


def _write_summary(summary: dict, p: Prepared, trainer: pl.Trainer, evaluator: EvaluationCallback,
                   wall_time: float, collective: bool) -> None:
    cfg = p.cfg
    steps_done = trainer.global_step
    # a run resumed from its last step evaluates nothing: its final row is the last one on disk
    last = evaluator.last_row or (last_row(evaluator.recorder.metrics_path) if summary["resumed_from_step"] else {})
    summary.update(
        steps=cfg.steps, steps_done=steps_done, batch_size=cfg.batch_size,
        samples_seen=steps_done * cfg.batch_size,
        distinct_samples_seen=_distinct_seen(p.module, trainer, collective),
        wall_time=wall_time,
        final={k: v for k, v in last.items() if is_final_metric(k)})
    if evaluator.stopped_early_at is not None:
        summary["stopped_early_at"] = evaluator.stopped_early_at
    if summary["status"] == "diverged":
        summary["diverged_at_step"] = evaluator.diverged_at
        summary["diverged_reason"] = evaluator.diverged_why
    evaluator.recorder.write_summary(summary)


def _restore_sigint() -> None:
    """Lightning leaves SIGINT ignored after a Ctrl-C; give the next one back its KeyboardInterrupt
    (a notebook, or the second world of a pair)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _distinct_seen(module: ClassificationModule, trainer: pl.Trainer, collective: bool) -> int | None:
    """Distinct pool ids that reached the training step, counted (not derived from the plan); None
    when the plan's id range is too wide to count, or when a DDP run failed (no all-reduce then)."""
    if module.seen is None or (trainer.world_size > 1 and not collective):
        return None
    return module.seen.count(trainer.strategy)


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
