"""Running a sweep on Ray Tune: one Tune function trial per trial config.

- `workers == 1`: the trial runs Lightning directly in its Tune actor (actors are reused, so the
  torch/Lightning imports and Ray start-up are paid once per actor, not once per trial).
- `workers > 1`: the trial starts a Ray Train `TorchTrainer` whose workers run Lightning DDP with
  `RayDDPStrategy` (Ray >= 2.5x "Train V2": Tuner(TorchTrainer) no longer works).
- Every evaluation reaches Tune, and writes a checkpoint into the trial's run directory
  (launch/trial_state.py), so a trial that raises is retried from its last evaluation, not from
  step 0. A diverged trial ends normally with status 'diverged' (no retry).
- Tune's experiment state lives in <out_dir>/<study>/_tune; `--resume` restores it: finished
  trials are kept, unfinished and errored ones continue from their checkpoints.
"""

from __future__ import annotations

import copy
import logging
import os
import sys
import time
import uuid
from pathlib import Path

import ray
from omegaconf import OmegaConf
from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
from ray.tune.search import BasicVariantGenerator
from twoworlds.launch import compat, config, trial_state
from twoworlds.launch.config import ConfigError
from twoworlds.launch.logs import show_library_logs
from twoworlds.launch.ray_start import DDP_TRIAL_CPU, connect
from twoworlds.launch.sweep_spec import Sweep
from twoworlds.lightning_modules.metrics import TEST_SOFT_ERROR
from twoworlds.results.formats import duration

__all__ = ["connect", "run_sweep", "trial_fn"]  # connect: re-exported (launch/ray_start.py)

TUNE_DIR = "_tune"
FAULT_ENV = "TWOWORLDS_INJECT_FAILURE"  # "<trial name>:<step>": raise once at that step (tests)


# ---------------------------------------------------------------------------------------------
# inside a trial (a Ray actor)
# ---------------------------------------------------------------------------------------------


def trial_fn(params: dict) -> None:
    """The Tune function trainable: one trial config, run to the end or to divergence."""
    import torch
    from twoworlds.launch.run import run_trial

    params = params["trial"]
    quiet_ray_logs()
    cfg = config.merge(config.schema(), params["cfg"])
    finished = trial_state.finished_summary(cfg)
    if finished is not None:  # e.g. it ended just before the driver was killed: keep, don't re-run
        tune.report(trial_state.final_report(finished, kept=True))
        return
    torch.set_num_threads(max(1, int(params.get("threads", 1))))
    run_id = params.get("run_id")  # this experiment's: only its own checkpoints are read (trial_state.py)
    summary = run_trial(cfg, report=trial_state.checkpointing_reporter(cfg, tune.report, run_id),
                        extra_callbacks=fault_callbacks(cfg.name),
                        ckpt_path=trial_state.resume_checkpoint(cfg, run_id))
    trial_state.finish(cfg)
    tune.report(trial_state.final_report(summary))


def quiet_ray_logs() -> None:
    """Ray logs a line per report ("Checkpoint successfully created", "Reporting training result"); the
    library's own lines (launch/logs.py) are shown, as the CLI shows them."""
    for name in ("ray.tune", "ray.train"):
        logging.getLogger(name).setLevel(logging.WARNING)
    compat.quiet_train_v2_reports()
    show_library_logs()


def fault_callbacks(trial: str) -> list:
    """With FAULT_ENV="<trial>:<step>", a callback that raises once at that step of that trial, on
    every rank: how the tests exercise retry-from-checkpoint for real. Empty otherwise."""
    if not os.environ.get(FAULT_ENV):
        return []
    import pytorch_lightning as pl

    target, _, step = os.environ[FAULT_ENV].rpartition(":")

    class Fault(pl.Callback):
        def on_train_batch_end(self, trainer, *args):
            marker = Path(trainer.logger.log_dir) / f".fault-injected-{trainer.global_rank}"
            if trial == target and trainer.global_step == int(step) and not marker.exists():
                marker.touch()
                raise RuntimeError(f"injected failure at step {step} ({FAULT_ENV})")

    return [Fault()]


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
        eta = duration(elapsed / finished * (self.total - finished) if finished else float("nan"))
        print(f"[sweep {self.name}] {len(self.done)}/{self.total} done ({len(self.diverged)} diverged), "
              f"{len(self.running)} running, {len(self.failed)} failed, {self.errors} retried | "
              f"elapsed {duration(elapsed)}, left ~{eta} | {what}", file=self.stream, flush=True)

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
        err = (trial.last_result or {}).get(TEST_SOFT_ERROR)
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
    looked_up = trial.config["trial"]  # a name (or, in an experiment started before names, the whole config)
    return looked_up if isinstance(looked_up, str) else looked_up["name"]


def trainable_for(sweep: Sweep, out_dir: Path):
    """The Tune trainable: each trial's config comes from one table in Ray's object store (`tune.with_parameters`),
    looked up by the trial's name, so Tune's own state holds only names. (With the configs in the search space, Tune
    deep-copies all of them for every trial it makes: a 10,000-trial sweep never got to its first trial.)"""
    r = sweep.resources
    if r.workers > 1:
        from twoworlds.launch.ddp import ddp_trial_fn
        fn, resources = ddp_trial_fn, {"CPU": DDP_TRIAL_CPU}
    else:
        fn, resources = trial_fn, {"CPU": r.cpu, "GPU": r.gpu}

    def trial(params: dict, configs: dict) -> None:
        looked_up = params["trial"]
        if isinstance(looked_up, str):  # a name; an experiment started before the table held its config itself
            looked_up = {**configs[looked_up], "run_id": params["run_id"]}
        fn({"trial": looked_up})

    trial.__name__ = fn.__name__
    return tune.with_resources(tune.with_parameters(trial, configs=trial_configs(sweep, out_dir)), resources)


def concurrent_trials(sweep: Sweep) -> int:
    """How many trials fit the (local, fixed-size) instance at once. Tune would otherwise start DDP trials whose
    TorchTrainer then waits for workers that cannot be placed (and counts them as running)."""
    r, total = sweep.resources, ray.cluster_resources()
    fits = [total.get("CPU", 0) // (r.workers * r.cpu + (DDP_TRIAL_CPU if r.workers > 1 else 0))]
    if r.gpu:
        fits.append(total.get("GPU", 0) // (r.workers * r.gpu))
    return max(1, int(min(fits)))


def trial_configs(sweep: Sweep, out_dir: Path) -> dict[str, dict]:
    """What each trial process receives, by trial name."""
    configs = {}
    for t in sweep.trials:
        plain = copy.deepcopy(t.plain)  # not t.cfg: a typed config per trial would cost seconds in a large sweep
        plain["out_dir"] = str(out_dir)  # absolute: trials run with another working directory
        plain["progress"] = False  # the sweep prints one progress line per trial event instead
        configs[t.name] = {"name": t.name, "cfg": plain, "threads": max(1, int(sweep.resources.cpu)),
                           "workers": sweep.resources.workers, "cpu": sweep.resources.cpu, "gpu": sweep.resources.gpu}
    return configs


def param_space(sweep: Sweep, max_concurrent: int = 0) -> tuple[dict, BasicVariantGenerator]:
    """Tune's search space and the generator of its trials: one trial per name, each name a preset point (Tune
    copies its search space for every trial it makes, so that space holds no list of all the trials). `run_id`
    is kept in Tune's state: the same on --resume, new for a fresh sweep (trial_state.py)."""
    points = [{"trial": t.name} for t in sweep.trials]
    generator = BasicVariantGenerator(points_to_evaluate=points, max_concurrent=max_concurrent)
    return {"trial": {}, "run_id": uuid.uuid4().hex}, generator


def run_sweep(sweep: Sweep, *, local: bool, resume: bool = False) -> list[dict]:
    """Run (or resume) every trial of the sweep on the Ray instance `connect` reached (`local`: what it
    returned); returns the last reported metrics of each trial."""
    out_dir = Path(OmegaConf.select(sweep.trials[0].cfg, "out_dir")).resolve()
    experiment = out_dir / sweep.name / TUNE_DIR
    trainable = trainable_for(sweep, out_dir)
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
        # reused actors spare function trials their imports; a DDP trial's actor only waits on its TorchTrainer
        # a cluster may autoscale: only a local instance is fixed in size (0: no limit)
        space, trials = param_space(sweep, max_concurrent=concurrent_trials(sweep) if local else 0)
        tune_config = tune.TuneConfig(search_alg=trials, num_samples=len(sweep.trials),
                                      reuse_actors=sweep.resources.workers == 1, trial_name_creator=_name,
                                      trial_dirname_creator=_name)
        tuner = tune.Tuner(trainable, param_space=space, tune_config=tune_config,
                           run_config=run_config)
    results = tuner.fit()
    # Tune returns normally after Ctrl-C, having stopped the trials it cut off before they wrote a summary.
    if any(r.error is None and not (r.metrics or {}).get("done") for r in results):
        for t in sweep.trials:  # only those started and never finished have no summary, or a 'running' one
            if t.run_dir.is_dir():  # never started: nothing to mark (and no typed config to make)
                trial_state.mark_interrupted(t.cfg)
        raise KeyboardInterrupt
    return [r.metrics or {} for r in results]
