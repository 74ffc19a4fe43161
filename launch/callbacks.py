"""The evaluation callback: metrics at the eval schedule's steps, divergence checks, progress.

Nothing here touches the host between evaluations except the divergence check every
`check_every` steps (one scalar sync), so the training loop runs at full speed.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import pytorch_lightning as pl
from twoworlds.launch.config import EarlyStopConfig
from twoworlds.launch.recorder import RunRecorder
from twoworlds.lightning_modules.classification import ClassificationModule
from twoworlds.lightning_modules.metrics import (
    TEST_SOFT_ERROR,
    TRAIN_ERROR,
    TRAIN_FLOPS,
    TRAIN_SOFT_ERROR,
    WEIGHT_MOVEMENT,
    is_final_metric,
)
from twoworlds.results.formats import duration

ROW_FIELDS = ("step", "epoch", "samples_seen", TRAIN_FLOPS, "lr", "wall_time", WEIGHT_MOVEMENT)


def tensorboard_scalars(row: dict) -> dict:
    """The columns of an evaluation row that also go to TensorBoard: the metrics, lr, train_flops and
    the weight movement."""
    return {k: v for k, v in row.items() if is_final_metric(k) or k in ("lr", TRAIN_FLOPS)}


class EvaluationCallback(pl.Callback):
    def __init__(self, eval_steps: list[int], recorder: RunRecorder, *, label: str, n: int | None,
                 batch_size: int, eval_batch_size: int, check_every: int, progress: bool, flops_per_sample: int,
                 report: Callable[[pl.Trainer, dict], None] | None = None,
                 early_stop: EarlyStopConfig | None = None):
        self.eval_steps = set(eval_steps)
        self.recorder, self.label = recorder, label
        self.n, self.batch_size, self.eval_batch_size = n, batch_size, eval_batch_size
        self.check_every, self.progress = check_every, progress
        self.report = report  # extra sink for each row (Ray Tune uses it)
        self.flops_per_sample = flops_per_sample  # training FLOPs per sample, forward + backward
        self.status = "running"
        self.last_row: dict = {}
        self._t0 = 0.0
        self._wall_offset = 0.0  # wall time before a resume
        self.early_stop = early_stop if n is not None and early_stop and early_stop.train_error_below > 0 else None
        self.stopped_early_at: int | None = None
        self._below = 0  # consecutive evaluations under the early-stop threshold

    def on_train_start(self, trainer: pl.Trainer, pl_module: ClassificationModule) -> None:
        self._t0 = time.perf_counter()

    # Saved in checkpoints, so a resumed run's wall_time continues instead of restarting at 0.
    def state_dict(self) -> dict:
        return {"wall_time": self.last_row.get("wall_time", 0.0), "below": self._below}

    def load_state_dict(self, state: dict) -> None:
        self._wall_offset = float(state.get("wall_time", 0.0))
        self._below = int(state.get("below", 0))

    def on_train_batch_end(self, trainer, pl_module: ClassificationModule, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        is_eval = step in self.eval_steps
        if is_eval or step % self.check_every == 0:
            finite = pl_module.take_loss_check()
            if trainer.strategy.reduce_boolean_decision(not finite, all=False):
                self._diverged(trainer, step, "training loss became NaN/inf")
                return
        if is_eval:
            row = self.evaluate(trainer, pl_module, step)
            if trainer.strategy.reduce_boolean_decision(not _finite(row), all=False):
                self._diverged(trainer, step, "evaluation loss became NaN/inf")
            elif self.early_stop is not None:
                self._check_converged(trainer, row, step)

    def _check_converged(self, trainer: pl.Trainer, row: dict, step: int) -> None:
        # The train error is a synced metric, so every DDP rank takes the same decision.
        below = row.get(TRAIN_ERROR, 1.0) < self.early_stop.train_error_below
        self._below = self._below + 1 if below else 0
        if self._below >= self.early_stop.patience and step < trainer.max_steps:
            self.stopped_early_at = step
            trainer.should_stop = True
            if trainer.is_global_zero:
                print(f"[{self.label}] converged: train error < {self.early_stop.train_error_below:g} for "
                      f"{self._below} evaluations; stopping early at step {step:,}", flush=True)

    def evaluate(self, trainer, pl_module: ClassificationModule, step: int) -> dict:
        samples = step * self.batch_size
        row = {
            "step": step,
            "epoch": samples / self.n if self.n else float("nan"),
            "samples_seen": samples,
            TRAIN_FLOPS: samples * self.flops_per_sample,
            "lr": trainer.optimizers[0].param_groups[0]["lr"],
            "wall_time": self._wall_offset + time.perf_counter() - self._t0,
            WEIGHT_MOVEMENT: pl_module.weight_movement(),
        }
        for split, (x, y) in trainer.datamodule.eval_sets.items():
            row.update(pl_module.evaluate(split, x, y, self.eval_batch_size, trainer.datamodule.eval_transform))
        self.last_row = row
        if trainer.is_global_zero:
            self.recorder.add_row(row)
            if pl_module.logger is not None:
                pl_module.logger.log_metrics(tensorboard_scalars(row), step=step)
            if self.progress:
                self._print_progress(row, trainer.max_steps)
        # After the row is on disk: a checkpoint taken by `report` at step s implies row s is kept.
        if self.report is not None:  # on every rank: Ray Train expects a report from each worker
            self.report(trainer, row)
        return row

    def _diverged(self, trainer: pl.Trainer, step: int, why: str) -> None:
        self.status = "diverged"
        self.diverged_at, self.diverged_why = step, why
        trainer.should_stop = True
        if trainer.is_global_zero:
            print(f"[{self.label}] diverged at step {step:,}: {why}; stopping (logged rows are kept)",
                  file=sys.stderr, flush=True)

    def _print_progress(self, row: dict, max_steps: int) -> None:
        step, wall = row["step"], row["wall_time"]
        rate = step / wall if wall > 0 else float("nan")
        eta = (max_steps - step) / rate if rate > 0 else float("nan")
        test = row.get(TEST_SOFT_ERROR, float("nan"))
        train = row.get(TRAIN_SOFT_ERROR)
        train_txt = f"  train soft err {train:.4f}" if train is not None else ""
        print(f"[{self.label}] step {step:>7,}/{max_steps:,} ({100 * step / max_steps:3.0f}%)  "
              f"test soft err {test:.4f}{train_txt}  {rate:,.0f} steps/s  eta {duration(eta)}", flush=True)


def _finite(row: dict) -> bool:
    return all(v == v and abs(v) != float("inf") for k, v in row.items() if k.endswith("/loss"))
