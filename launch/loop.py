"""The training loop of one trial, top to bottom: what happens in a step.

    for x, y, ids in the world plan's batches:       the Real World reuses its n ids, the Ideal World never repeats one
        mark ids seen                               the evidence for summary.json's distinct_samples_seen
        loss = cross-entropy(model(x), y)            under torch.autocast for bf16-mixed / 16-mixed
        backward, optimizer step, lr step            the lr is a function of the step (invariant 1)
        every check_every steps: NaN/inf check       one host sync (the only one between evaluations)
        at an evaluation step:
            test (and train) metrics → the row       metrics.csv, TensorBoard, the progress line
            checkpoint                               sweep trials, at most every `checkpoint_every_s` seconds
            report                                   to Ray Tune / Ray Train, after the row is on disk
            early stop                               a converged Real World (early_stop.*)
    Ctrl-C, SIGTERM, Tune stopping the trial, an exception: summary.json says so, the rows are kept.

It drives Lightning's containers with plain PyTorch: `ClassificationModule` (network, loss, metrics,
optimizer and schedule) and `WorldDataModule` (the Real/Ideal switch, batches, evaluation sets), with
`torch.autocast`, `torch.amp.GradScaler` and `DistributedDataParallel` when Ray Train has started a process
group (launch/ddp.py). Lightning's Trainer calls dozens of hooks around every step, and Fabric's wrappers
cost about 0.1 ms a step (benchmarks/step_overhead.py: 5% of a 146k-parameter MLP's CPU step, 10-19% of the
quick-start's 32-wide MLP), where a scaling study runs thousands of small trials. Measured against a
hand-written loop, this one costs 1.02x per step (benchmarks/README.md).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from omegaconf import DictConfig
from torch.nn.parallel import DistributedDataParallel
from twoworlds.launch import trial_state
from twoworlds.launch.config import config_hash, pair_key
from twoworlds.launch.recorder import RunRecorder, WriteError, last_row, provenance
from twoworlds.launch.tensorboard_log import TrialEvents, tensorboard_scalars
from twoworlds.lightning_modules.metrics import (
    KINDS,
    TEST_SOFT_ERROR,
    TRAIN_ERROR,
    TRAIN_FLOPS,
    TRAIN_SOFT_ERROR,
    WEIGHT_MOVEMENT,
    is_final_metric,
    metric_name,
)
from twoworlds.lightning_modules.schedules import eval_steps
from twoworlds.results.formats import duration

if TYPE_CHECKING:
    from twoworlds.launch.run import Prepared

ROW_FIELDS = ("step", "epoch", "samples_seen", TRAIN_FLOPS, "lr", "wall_time", WEIGHT_MOVEMENT)
# A documented test hook (docs/failures.md): "<trial>:<step>" raises once at that step of that trial, on every
# rank, so the tests can watch a real retry continue from its checkpoint with the same numbers.
FAULT_ENV = "TWOWORLDS_FAULT_AT"


@dataclass
class Checkpoints:
    """A sweep trial's last.ckpt: written at an evaluation once `every_s` seconds of training have passed
    since the last one (0: at every evaluation), owned by the sweep experiment `run_id`. A checkpoint
    costs a few milliseconds; what it saves is the work since the last one when a trial is retried."""

    every_s: float
    run_id: str | None = None


def train(p: Prepared, *, report=None, checkpoints: Checkpoints | None = None, resume_from: str | None = None,
          device: torch.device | str | None = None) -> dict:
    """Train one world for `steps` steps; write config.yaml, metrics.csv, the events file and summary.json.

    `report(row)` receives every evaluation row once it is on disk (Ray Tune's or Ray Train's report).
    `resume_from`: a checkpoint to continue from (a retry or `--resume`), loaded as data, never code.
    Returns the summary (with `rows`). A diverged run returns with status 'diverged'; a run that raises or is
    interrupted writes its summary with that status first, so its logged rows are never lost.
    """
    cfg = p.cfg
    rank, world = _ranks()
    device = torch.device(device) if device is not None else _default_device(cfg)
    recorder = RunRecorder(trial_state.writable_dir(p.run_dir))  # an unwritable out_dir: one line, nothing trained
    recorder.enable(rank == 0)
    lock = trial_state.holding(p.run_dir, checkpoints and checkpoints.run_id) if rank == 0 else contextlib.nullcontext()
    with lock:  # a second run of this trial is refused while this one runs
        recorder.write_config(cfg, {**provenance(), "config_hash": config_hash(cfg)})
        return _train(p, _Run(cfg, rank, world, device, recorder, report, checkpoints), resume_from)


def _train(p: Prepared, run: _Run, resume_from: str | None) -> dict:
    cfg, module, dm = p.cfg, p.module, p.dm
    summary = _first_summary(p)
    start = time.perf_counter()
    try:
        module.to(run.device)
        dm.place(run.device, run.rank, run.world).setup("fit")
        # the network, called directly (the module's forward is one call layer more); under DDP wrapped so that
        # gradients are averaged over ranks. Checkpoints save the module, which holds the same network.
        model = DistributedDataParallel(module.net) if run.world > 1 else module.net
        opt, sched = _optimizer(module)
        autocast, scaler = _precision(cfg.precision, run.device)
        step = run.resume(resume_from, module, opt, sched, scaler)
        run.open_files(dm, step)
        evaluate_at, fault_at = set(eval_steps(cfg.steps, cfg.eval.points, cfg.eval.dense)), _fault_step(cfg.name)
        check_every, steps = cfg.check_every, cfg.steps  # plain ints: a config lookup costs ~10 us a step
        seen, loss_sum = module.seen, module.loss_acc
        module.train()
        run.clock_start()
        for x, y, ids in dm.train_dataloader(start_step=step):
            if seen is not None:
                seen.add(ids)
            with autocast:
                loss = module.loss(model(x), y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # fp16 loss scaling under 16-mixed; a plain backward otherwise
            scaler.step(opt)
            scaler.update()
            sched.step()
            loss_sum.add_(loss.detach())  # summed on the device: no host sync per step
            step += 1
            run.steps_done = step
            if step == fault_at:
                run.inject_fault(step)
            if (step in evaluate_at or step % check_every == 0) and run.any(module.take_loss_check()):
                run.diverged(step, "training loss became NaN/inf")
                break
            if step not in evaluate_at:
                continue
            row = run.evaluate(module, dm, opt, step)
            if run.any(not _finite(row)):
                run.diverged(step, "evaluation loss became NaN/inf")
                break
            stop = run.converged(row, step)
            run.last_step_done = stop or step == steps  # an interrupt from here on cannot undo the run
            run.checkpoint(module, opt, sched, scaler, step)
            if run.report is not None:  # on every rank: Ray Train expects a report from each worker
                run.report({k: float(v) for k, v in row.items()})
            if stop:
                break
        run.status = "completed" if run.status == "running" else run.status
    except Exception as e:
        run.status, run.error = "failed", f"{type(e).__name__}: {e}"
        raise
    except BaseException:  # stopped from outside: Ctrl-C, SIGTERM, or Tune stopping the trial
        run.status = "completed" if run.last_step_done else "interrupted"
        raise
    finally:
        run.finish(summary, p, time.perf_counter() - start)
    summary["rows"] = run.recorder.rows
    return summary


# ---------------------------------------------------------------------------------------------
# the state of one run: files, clock, divergence, early stop, checkpoints
# ---------------------------------------------------------------------------------------------


class _Run:
    def __init__(self, cfg: DictConfig, rank: int, world: int, device: torch.device, recorder: RunRecorder,
                 report, checkpoints: Checkpoints | None):
        self.cfg, self.rank, self.world, self.device = cfg, rank, world, device
        self.recorder, self.report, self.checkpoints = recorder, report, checkpoints
        self.events = TrialEvents(recorder.run_dir) if rank == 0 else None
        self.status, self.error = "running", None
        self.last_row: dict = {}
        self.resumed_from_step = self.steps_done = 0
        self.last_step_done = False
        self.wall_offset = 0.0  # training seconds before a resume: wall_time continues across attempts
        self.below = 0  # consecutive evaluations under the early-stop threshold
        self.stopped_early_at = self.diverged_at = self.diverged_why = None
        self.t0 = self.last_checkpoint = time.perf_counter()

    # -- start ------------------------------------------------------------------------------
    def resume(self, path: str | None, module, opt, sched, scaler) -> int:
        """Load a checkpoint's state into the module, optimizer, schedule and scaler; the step to continue from."""
        if path is None:
            return 0
        state = trial_state.read_checkpoint(path, self.device)
        module.load_state_dict(state["module"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        if module.seen is not None:
            module.seen.load(state["seen_ids"])
        self.wall_offset, self.below = float(state["wall_time"]), int(state["below"])
        self.resumed_from_step = self.steps_done = int(state["step"])
        return self.steps_done

    def open_files(self, dm, step: int) -> None:
        """metrics.csv with the rows up to `step` kept (a resume), and this attempt's events file."""
        columns = list(ROW_FIELDS) + [metric_name(s, k) for s in dm.eval_split_names() for k in KINDS]
        self.recorder.start_metrics(columns, keep_until_step=step)
        if self.events is not None:
            self.events.start(self.recorder.metrics_path)

    def clock_start(self) -> None:
        self.t0 = self.last_checkpoint = time.perf_counter()

    # -- every evaluation -------------------------------------------------------------------
    def evaluate(self, module, dm, opt, step: int) -> dict:
        """The row of evaluation step `step`, written to metrics.csv and TensorBoard (rank 0)."""
        cfg, samples = self.cfg, step * self.cfg.batch_size
        row = {"step": step, "epoch": samples / cfg.n if cfg.world == "real" else float("nan"),
               "samples_seen": samples, TRAIN_FLOPS: samples * module.net.flops_per_sample,
               "lr": opt.param_groups[0]["lr"], "wall_time": self.wall_offset + time.perf_counter() - self.t0,
               WEIGHT_MOVEMENT: module.weight_movement()}
        for split, (x, y) in dm.eval_sets.items():
            row.update(module.evaluate(split, x, y, cfg.eval.batch_size, dm.eval_transform))
        self.last_row = row
        if self.rank == 0:
            self.recorder.add_row(row)  # one write, flushed: an interrupted run keeps every row
            self.events.scalars(tensorboard_scalars(row), step)
            if cfg.progress:
                _print_progress(f"{cfg.world} {cfg.name}", row, cfg.steps)
        return row

    def converged(self, row: dict, step: int) -> bool:
        """Early stop of a Real World run whose train error has stayed under the bound for `patience` evaluations
        (a synced metric: every DDP rank decides the same)."""
        es = self.cfg.early_stop
        if self.cfg.world != "real" or es.train_error_below <= 0:
            return False
        self.below = self.below + 1 if row.get(TRAIN_ERROR, 1.0) < es.train_error_below else 0
        if self.below < es.patience or step >= self.cfg.steps:
            return False
        self.stopped_early_at = step
        if self.rank == 0:
            print(f"[{self.cfg.world} {self.cfg.name}] converged: train error < {es.train_error_below:g} for "
                  f"{self.below} evaluations; stopping early at step {step:,}", flush=True)
        return True

    def checkpoint(self, module, opt, sched, scaler, step: int) -> None:
        """last.ckpt after the row of `step` is on disk (so a checkpoint at step s implies row s is kept). Not at
        the last step: the trial is then finished and its checkpoint deleted."""
        c = self.checkpoints
        if c is None or self.last_step_done or time.perf_counter() - self.last_checkpoint < c.every_s:
            return
        seen = module.seen.state(self.device) if module.seen is not None else {}  # collective under DDP
        if self.rank == 0:
            state = {"step": step, "module": module.state_dict(), "optimizer": opt.state_dict(),
                     "scheduler": sched.state_dict(), "scaler": scaler.state_dict(), "seen_ids": seen,
                     "wall_time": self.last_row["wall_time"], "below": self.below}
            trial_state.write_checkpoint(self.cfg, state, c.run_id)
        self.last_checkpoint = time.perf_counter()

    def diverged(self, step: int, why: str) -> None:
        self.status, self.diverged_at, self.diverged_why = "diverged", step, why
        if self.rank == 0:
            print(f"[{self.cfg.world} {self.cfg.name}] diverged at step {step:,}: {why}; stopping (logged rows "
                  "are kept)", file=sys.stderr, flush=True)

    def any(self, flag) -> bool:
        """Whether `flag` holds on any DDP rank (one host sync; a collective under DDP)."""
        t = torch.as_tensor(flag, dtype=torch.float32, device=self.device)
        if self.world > 1:
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t)

    def inject_fault(self, step: int) -> None:
        marker = self.recorder.run_dir / f".fault-injected-{self.rank}"
        if not marker.exists():
            marker.touch()
            raise RuntimeError(f"injected failure at step {step} ({FAULT_ENV})")

    # -- the end ----------------------------------------------------------------------------
    def finish(self, summary: dict, p: Prepared, wall_time: float) -> None:
        """summary.json and the end of the events file, whatever happened. A write that fails here (a full disk)
        must not hide why the run stopped: it is reported, and the first exception goes on."""
        last = self.last_row or last_row(self.recorder.metrics_path)  # a run that evaluated nothing: rows on disk
        summary.update(status=self.status, resumed_from_step=self.resumed_from_step, steps=self.cfg.steps,
                       steps_done=max(self.steps_done, int(last.get("step", 0))), batch_size=self.cfg.batch_size,
                       wall_time=wall_time, final={k: v for k, v in last.items() if is_final_metric(k)})
        summary["samples_seen"] = summary["steps_done"] * self.cfg.batch_size
        summary["distinct_samples_seen"] = self._distinct_seen(p.module)
        for key in ("stopped_early_at", "error"):
            if getattr(self, key) is not None:
                summary[key] = getattr(self, key)
        if self.status == "diverged":
            summary["diverged_at_step"], summary["diverged_reason"] = self.diverged_at, self.diverged_why
        try:
            self.recorder.write_summary(summary)
            if self.events is not None:
                self.events.end(self.cfg, summary, p.dm.eval_split_names(), last)
        except WriteError:
            if self.status not in ("failed", "interrupted"):  # nothing else went wrong: this is the failure
                raise
            # else the exception on its way out says why the run stopped (a full disk: this same error)

    def _distinct_seen(self, module) -> int | None:
        """Distinct pool ids that reached the training step, counted (not derived from the plan); None when the
        plan's id range is too wide to count, or when a DDP run failed (a rank may be gone: no all-reduce)."""
        if module.seen is None or (self.world > 1 and self.status == "failed"):
            return None
        return module.seen.count(self.device)


def _first_summary(p: Prepared) -> dict:
    cfg = p.cfg
    return {"trial": cfg.name, "study": cfg.study, "world": cfg.world, "n": cfg.n if cfg.world == "real" else None,
            "pair_key": pair_key(cfg), "config_hash": config_hash(cfg), "num_parameters": p.module.net.num_parameters,
            "flops_per_sample": p.module.net.flops_per_sample, "num_classes": p.dm.source.num_classes,
            "status": "running"}


# ---------------------------------------------------------------------------------------------
# devices, ranks, precision, the optimizer
# ---------------------------------------------------------------------------------------------


def _ranks() -> tuple[int, int]:
    """(rank, world size): a DDP process group started by Ray Train (launch/ddp.py), or one process."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _default_device(cfg: DictConfig) -> torch.device:
    use_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    return torch.device("cuda", torch.cuda.current_device()) if use_cuda else torch.device("cpu")


def _optimizer(module):
    conf = module.configure_optimizers()
    return conf["optimizer"], conf["lr_scheduler"]["scheduler"]


def _precision(precision: str, device: torch.device):
    """(autocast context, gradient scaler) of `precision`: 32-true trains in float32; bf16-mixed and 16-mixed
    run the forward pass under torch.autocast; 16-mixed scales the loss (GradScaler), the others pass through."""
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    return autocast, torch.amp.GradScaler(device.type, enabled=precision == "16-mixed")


def _fault_step(name: str) -> int | None:
    target, _, step = os.environ.get(FAULT_ENV, "").rpartition(":")
    return int(step) if target == name and step.isdigit() else None


def _finite(row: dict) -> bool:
    return all(v == v and abs(v) != float("inf") for k, v in row.items() if k.endswith("/loss"))


def _print_progress(label: str, row: dict, max_steps: int) -> None:
    step, wall = row["step"], row["wall_time"]
    rate = step / wall if wall > 0 else float("nan")
    eta = (max_steps - step) / rate if rate > 0 else float("nan")
    train = row.get(TRAIN_SOFT_ERROR)
    train_txt = f"  train soft err {train:.4f}" if train is not None else ""
    print(f"[{label}] step {step:>7,}/{max_steps:,} ({100 * step / max_steps:3.0f}%)  "
          f"test soft err {row.get(TEST_SOFT_ERROR, float('nan')):.4f}{train_txt}  {rate:,.0f} steps/s  "
          f"eta {duration(eta)}", flush=True)
