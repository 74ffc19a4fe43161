"""Running a sweep on Ray Tune: one Tune function trial per trial config.

- `workers == 1`: the trial runs the training loop (launch/loop.py) directly in its Tune actor (actors are
  reused, so the torch/Lightning imports and Ray start-up are paid once per actor, not once per trial).
- `workers > 1`: the trial starts a Ray Train `TorchTrainer` whose workers run the same loop under DDP over
  the process group Ray Train starts (Ray >= 2.5x "Train V2": Tuner(TorchTrainer) no longer works).
- A trial checkpoints into its run directory at evaluations, at most every `checkpoint_every_s` seconds
  (launch/trial_state.py), so a trial that raises is retried from its last checkpoint, not from step 0,
  with the same numbers. A diverged trial ends normally with status 'diverged' (no retry).
- Tune hears from a running trial at most every REPORT_EVERY_S seconds and at its end; every evaluation is
  in the trial's metrics.csv and TensorBoard events.
- Tune's experiment state lives in <out_dir>/<study>/_tune; `--resume` restores it: finished
  trials are kept, unfinished and errored ones continue from their checkpoints.
"""
from __future__ import annotations

import copy
import logging
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

from twoworlds.errors import UserError

__all__ = ["connect", "run_sweep", "trial_fn"]  # connect: re-exported (launch/ray_start.py)

TUNE_DIR = "_tune"
REPORT_EVERY_S = 30.0  # seconds between a running trial's intermediate results to Tune (see `every`)


# ---------------------------------------------------------------------------------------------
# inside a trial (a Ray actor)
# ---------------------------------------------------------------------------------------------


def trial_fn(params: dict) -> None:
    """The Tune function trainable: one trial config, run to the end or to divergence."""
    import torch

    params = params["trial"]
    quiet_ray_logs()
    cfg = config.merge(config.schema(), params["cfg"])
    finished = trial_state.finished_summary(cfg)
    if finished is not None:  # e.g. it ended just before the driver was killed: keep, don't re-run
        tune.report(trial_state.final_report(finished, kept=True))
        return
    torch.set_num_threads(max(1, int(params.get("threads", 1))))
    run_trial_reporting(cfg, params.get("run_id"), tune.report)


def run_trial_reporting(cfg, run_id: str | None, report, device=None, ddp: bool = False) -> None:
    """run_trial in a sweep: checkpoints in the run directory owned by this sweep experiment (`run_id`: only its
    own are read, trial_state.py), rows reported to Ray (at most one per REPORT_EVERY_S; every row under DDP),
    then the final report. A UserError (a checkpoint that is not one, a trial another process holds) ends the
    trial as failed with its one-line reason: retrying cannot help, so Tune does not. Under DDP it is raised
    instead: the other ranks wait in a collective, and only a failed worker makes Ray Train stop the group."""
    from twoworlds.launch.loop import Checkpoints
    from twoworlds.launch.run import run_trial

    try:
        # DDP ranks report every row: Ray Train pairs the ranks' reports, so all must report the same rows
        summary = run_trial(cfg, report=report if ddp else every(REPORT_EVERY_S, report),
                            checkpoints=Checkpoints(cfg.checkpoint_every_s, run_id),
                            resume_from=trial_state.resume_checkpoint(cfg, run_id), device=device)
    except UserError as e:
        if ddp:
            raise
        summary = trial_state.read_summary(trial_state.run_dir(cfg) / "summary.json") or {}
        report({**trial_state.final_report({"final": {}, "steps_done": 0, **summary, "status": "failed"}),
                "error": str(e)})
        return
    trial_state.finish(cfg)
    report(trial_state.final_report(summary))


def every(seconds: float, report):
    """`report`, passed at most one row per `seconds` (the first after `seconds` of training). A Tune function
    trial's report blocks until the driver has taken the result and resumed the trial: a round trip per row,
    about a tenth of a second each on two busy cores, seconds per small trial. Tune needs only the final result
    (run_trial_reporting sends it); every row is in metrics.csv and TensorBoard already."""
    last = time.perf_counter()

    def throttled(row: dict) -> None:
        nonlocal last
        if time.perf_counter() - last >= seconds:
            last = time.perf_counter()
            report(row)

    return throttled


def quiet_ray_logs() -> None:
    """Ray logs a line per report ("Checkpoint successfully created", "Reporting training result"); the
    library's own lines (launch/logs.py) are shown, as the CLI shows them."""
    for name in ("ray.tune", "ray.train"):
        logging.getLogger(name).setLevel(logging.WARNING)
    compat.quiet_train_v2_reports()
    show_library_logs()


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
        self.before, self.caught_up = 0, False

    def setup(self, **info):
        """At the start of Tuner.fit, also on --resume, where Tune restores this callback as it was pickled:
        the clock starts now (not at the interrupted run's start)."""
        self.start, self.running, self.caught_up = time.perf_counter(), set(), False

    def on_step_begin(self, iteration, trials, **info):
        """On --resume, the trials that ended before the interruption count as done (or failed) from the start;
        the time left is estimated from the trials this run finishes."""
        if self.caught_up:
            return
        self.caught_up = True
        self.done, self.failed, self.diverged = set(), set(), set()
        for t in trials:
            if t.status == "TERMINATED":
                self._ended(_name(t), (t.last_result or {}).get("status", "completed"))
        self.before = len(self.done) + len(self.failed)

    def _ended(self, name: str, status: str) -> None:
        """A trial that ended with a result: done, or failed when a UserError ended it (run_trial_reporting)."""
        self.running.discard(name)
        (self.failed if status == "failed" else self.done).add(name)
        if status == "diverged":
            self.diverged.add(name)

    def _line(self, what: str) -> None:
        elapsed = time.perf_counter() - self.start
        finished = len(self.done) + len(self.failed)
        here = finished - self.before  # finished by this run, which set the pace
        eta = duration(elapsed / here * (self.total - finished) if here else float("nan"))
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
        result = trial.last_result or {}
        err, status = result.get(TEST_SOFT_ERROR), result.get("status", "completed")
        self._ended(name, status)
        if status == "failed":  # its one-line reason
            self._line(f"failed {name}: {result.get('error', 'see its summary.json')}")
            return
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
