"""Running a sweep on Ray Tune: one Tune function trial per trial config.

- `workers == 1`: the trial runs Lightning directly in its Tune actor (actors are reused, so the
  torch/Lightning imports and Ray start-up are paid once per actor, not once per trial).
- `workers > 1`: the trial starts a Ray Train `TorchTrainer` whose workers run Lightning DDP with
  `RayDDPStrategy` (Ray >= 2.5x "Train V2": Tuner(TorchTrainer) no longer works).
- Every evaluation reaches Tune, and writes a checkpoint into the trial's run directory, so a trial
  that raises is retried from its last evaluation, not from step 0. A diverged trial ends
  normally with status 'diverged' (no retry).
- Tune's experiment state lives in <out_dir>/<study>/_tune; `--resume` restores it: finished
  trials are kept, unfinished and errored ones continue from their checkpoints.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from functools import partial
from pathlib import Path

# Our trials write their own TensorBoard events under runs/<study>/<trial>; Tune's default
# loggers would add a second copy of every scalar under _tune/.
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")

import ray  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from ray import tune  # noqa: E402
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback  # noqa: E402

from launch import config  # noqa: E402
from launch.config import ConfigError  # noqa: E402
from launch.sweep_spec import Sweep  # noqa: E402
from lightning_modules.metrics import SOFT_ERROR, TEST, metric_name  # noqa: E402

CKPT_FILE = "last.ckpt"
TUNE_DIR = "_tune"
FAULT_ENV = "TWOWORLDS_INJECT_FAILURE"  # "<trial name>:<step>": raise once at that step (tests)


# ---------------------------------------------------------------------------------------------
# inside a trial (a Ray actor)
# ---------------------------------------------------------------------------------------------


def trial_fn(params: dict) -> None:
    """The Tune function trainable: one trial config, run to the end or to divergence."""
    import torch

    from launch.run import run_trial

    params = params["trial"]
    for name in ("ray.tune", "ray.train"):  # "Checkpoint successfully created" x 40 per trial
        logging.getLogger(name).setLevel(logging.WARNING)
    cfg = config.merge(config.schema(), params["cfg"])
    finished = _finished_summary(cfg)
    if finished is not None:  # e.g. it ended just before the driver was killed: keep, don't re-run
        tune.report({**finished["final"], "status": finished["status"], "steps_done": finished["steps_done"],
                     "done": True, "kept": True})
        return
    torch.set_num_threads(max(1, int(params.get("threads", 1))))
    run_dir = Path(cfg.out_dir) / cfg.study / cfg.name
    ckpt = run_dir / CKPT_FILE  # written at every evaluation, so a retry or --resume continues there
    ckpt_path = str(ckpt) if ckpt.exists() and _same_config(run_dir, cfg) else None
    callbacks = [_FaultInjection(cfg.name)] if os.environ.get(FAULT_ENV) else []
    summary = run_trial(cfg, report=partial(_report_with_checkpoint, ckpt), extra_callbacks=callbacks,
                        ckpt_path=ckpt_path)
    ckpt.unlink(missing_ok=True)  # finished: the checkpoint has done its job
    final = {k: v for k, v in summary["final"].items()}
    tune.report({**final, "status": summary["status"], "steps_done": summary["steps_done"], "done": True})


def _finished_summary(cfg) -> dict | None:
    """The summary of an earlier, finished run of exactly this config in its run directory, if any.

    Tune snapshots its experiment state now and then; a trial that finished after the last
    snapshot would otherwise be re-run from its last checkpoint on --resume.
    """
    run_dir = Path(cfg.out_dir) / cfg.study / cfg.name
    summary_path = run_dir / "summary.json"
    if not (summary_path.exists() and _same_config(run_dir, cfg)):
        return None
    summary = json.loads(summary_path.read_text())
    return summary if summary.get("status") in ("completed", "diverged") else None


def _same_config(run_dir: Path, cfg) -> bool:
    """Whether run_dir holds a run of exactly this config (so its files may be reused)."""
    config_path = run_dir / "config.yaml"
    if not config_path.exists():
        return False
    stored = OmegaConf.to_container(OmegaConf.load(config_path))
    stored.pop("provenance", None)
    return stored == config.to_plain(cfg)


def _clean(row: dict) -> dict:
    return {k: float(v) for k, v in row.items()}


def _report_with_checkpoint(ckpt: Path, trainer, row: dict) -> None:
    """Checkpoint into the run directory (atomically), then report the row to Tune.

    The checkpoint lives beside metrics.csv rather than in Tune's storage: Tune's own copies are
    pruned and snapshotted asynchronously, and a driver killed between the two leaves its state
    pointing at a checkpoint that no longer exists.
    """
    tmp = ckpt.with_suffix(".tmp")
    trainer.save_checkpoint(str(tmp))
    os.replace(tmp, ckpt)
    tune.report(_clean(row))


class _FaultInjection:
    """Raises once at a chosen step of a chosen trial, to test retry-from-checkpoint for real."""

    def __new__(cls, trial: str):
        import pytorch_lightning as pl

        target, _, step = os.environ[FAULT_ENV].rpartition(":")

        class Fault(pl.Callback):
            def on_train_batch_end(self, trainer, *args):
                marker = Path(trainer.logger.log_dir) / ".fault-injected"
                if trial == target and trainer.global_step == int(step) and not marker.exists():
                    marker.touch()
                    raise RuntimeError(f"injected failure at step {step} ({FAULT_ENV})")

        return Fault()


# ---------------------------------------------------------------------------------------------
# the driver
# ---------------------------------------------------------------------------------------------


class SweepProgress(tune.Callback):
    """One line per trial event: done / running / failed / diverged, and the estimated time left."""

    def __init__(self, sweep: Sweep, stream=sys.stdout):
        self.total, self.name, self.stream = len(sweep.trials), sweep.name, stream
        self.start = time.perf_counter()
        self.done, self.failed, self.diverged, self.errors = set(), set(), set(), 0
        self.running: set[str] = set()

    def _line(self, what: str) -> None:
        elapsed = time.perf_counter() - self.start
        finished = len(self.done) + len(self.failed)
        eta = "?" if not finished else _fmt(elapsed / finished * (self.total - finished))
        print(f"[sweep {self.name}] {len(self.done)}/{self.total} done ({len(self.diverged)} diverged), "
              f"{len(self.running)} running, {len(self.failed)} failed, {self.errors} retried | "
              f"elapsed {_fmt(elapsed)}, left ~{eta} | {what}", file=self.stream, flush=True)

    def on_trial_start(self, iteration, trials, trial, **info):
        self.running.add(_name(trial))
        self._line(f"started {_name(trial)}")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get("status") == "diverged":
            self.diverged.add(_name(trial))

    def on_trial_complete(self, iteration, trials, trial, **info):
        name = _name(trial)
        self.running.discard(name)
        self.done.add(name)
        err = (trial.last_result or {}).get(metric_name(TEST, SOFT_ERROR))
        status = (trial.last_result or {}).get("status", "completed")
        self._line(f"{status} {name}" + (f" (test soft error {err:.4f})" if err is not None else ""))

    def on_trial_error(self, iteration, trials, trial, **info):
        name = _name(trial)
        self.running.discard(name)
        self.failed.add(name)
        self._line(f"FAILED {name}: see {trial.path}/error.txt")

    def on_trial_recover(self, iteration, trials, trial, **info):
        self.errors += 1
        self._line(f"retrying {_name(trial)} from its last checkpoint")


def _name(trial) -> str:
    return trial.config["trial"]["name"]


def _fmt(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def init_ray(address: str | None, sweep: Sweep, num_cpus: int | None = None) -> None:
    """Join `address` (or RAY_ADDRESS), else start a local instance sized for one trial at least."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    env = {"env_vars": {k: v for k, v in os.environ.items() if k.startswith("TWOWORLDS_") or k == "PYTHONPATH"}}
    repo = str(Path(__file__).resolve().parent.parent)
    env["env_vars"]["PYTHONPATH"] = os.pathsep.join(filter(None, [repo, env["env_vars"].get("PYTHONPATH")]))
    if address:
        ray.init(address=address, runtime_env=env, log_to_driver=True, configure_logging=False)
        return
    need = sweep.resources.workers * sweep.resources.cpu + (0.01 if sweep.resources.workers > 1 else 0)
    cpus = num_cpus or max(os.cpu_count() or 1, int(need + 0.999) + (1 if sweep.resources.workers > 1 else 0))
    ray.init(num_cpus=cpus, include_dashboard=False, runtime_env=env, log_to_driver=True,
             configure_logging=False)


def trainable_for(sweep: Sweep):
    r = sweep.resources
    if r.workers > 1:
        from launch.ddp import ddp_trial_fn
        return tune.with_resources(ddp_trial_fn, {"CPU": 0.01})
    return tune.with_resources(trial_fn, {"CPU": r.cpu, "GPU": r.gpu})


def param_space(sweep: Sweep, out_dir: Path) -> dict:
    configs = []
    for t in sweep.trials:
        plain = config.to_plain(t.cfg)
        plain["out_dir"] = str(out_dir)  # absolute: trials run with another working directory
        plain["progress"] = False  # the sweep prints one progress line per trial event instead
        configs.append({"name": t.name, "cfg": plain, "threads": max(1, int(sweep.resources.cpu)),
                        "workers": sweep.resources.workers, "cpu": sweep.resources.cpu,
                        "gpu": sweep.resources.gpu})
    return {"trial": tune.grid_search(configs)}


def run_sweep(sweep: Sweep, *, address: str | None = None, resume: bool = False,
              num_cpus: int | None = None) -> list[dict]:
    """Run (or resume) every trial of the sweep; returns the last reported metrics of each trial."""
    out_dir = Path(OmegaConf.select(sweep.trials[0].cfg, "out_dir")).resolve()
    experiment = out_dir / sweep.name / TUNE_DIR
    init_ray(address, sweep, num_cpus)
    trainable = trainable_for(sweep)
    if resume:
        if not tune.Tuner.can_restore(str(experiment)):
            raise ConfigError(f"nothing to resume: no sweep state at {experiment} (run without --resume first)")
        print(f"[sweep {sweep.name}] resuming from {experiment}", flush=True)
        tuner = tune.Tuner.restore(str(experiment), trainable, resume_errored=True)
    else:
        run_config = tune.RunConfig(
            name=TUNE_DIR, storage_path=str(experiment.parent),
            failure_config=tune.FailureConfig(max_failures=sweep.max_failures),
            # result.json/progress.csv for Tune's own bookkeeping; no TensorBoard copy (see above)
            callbacks=[SweepProgress(sweep), JsonLoggerCallback(), CSVLoggerCallback()], verbose=0)
        tune_config = tune.TuneConfig(reuse_actors=True, trial_name_creator=_name, trial_dirname_creator=_name)
        tuner = tune.Tuner(trainable, param_space=param_space(sweep, out_dir), tune_config=tune_config,
                           run_config=run_config)
    results = tuner.fit()
    return [r.metrics or {} for r in results]
