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

import logging
import os
import socket
import sys
import time
import uuid
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
from twoworlds.launch import config, trial_state  # noqa: E402
from twoworlds.launch.config import ConfigError  # noqa: E402
from twoworlds.launch.recorder import source_root  # noqa: E402
from twoworlds.launch.sweep_spec import Sweep  # noqa: E402
from twoworlds.lightning_modules.metrics import (
    TEST_SOFT_ERROR,  # noqa: E402,
)
from twoworlds.results.formats import duration  # noqa: E402

from twoworlds.errors import UserError  # noqa: E402

TUNE_DIR = "_tune"
# Every Ray process of a sweep gets these (the user's environment wins). Tune waits 2 s for a finished function
# trial's thread before reusing its actor; a loaded machine misses that, and the trial then never starts.
# Ray Train's controller polls its workers every 2 s, at each start-up step and at the end of a DDP trial.
TRIAL_ENV = {k: os.environ.get(k, v) for k, v in {"TUNE_FUNCTION_THREAD_TIMEOUT_S": "60",
                                                  "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}.items()}
DDP_TRIAL_CPU = 0.01  # the Tune trial that starts a TorchTrainer only waits on it
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
    """Ray logs a line per report ("Checkpoint successfully created", "Reporting training result")."""
    for name in ("ray.tune", "ray.train"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:  # Train V2 names this logger after its file path, outside the "ray.train" tree
        from ray.train.v2._internal.execution import context
        logging.getLogger(context.__file__).setLevel(logging.WARNING)
    except ImportError:
        pass


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
        result = trial.last_result or {}
        err, status = result.get(TEST_SOFT_ERROR), result.get("status", "completed")
        if status == "failed":  # a UserError ended it (run_trial_reporting): its one-line reason
            self.failed.add(name)
            self.done.discard(name)
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
    return trial.config["trial"]["name"]


def connect(sweep: Sweep, address: str | None = None, num_cpus: int | None = None) -> bool:
    """Join `address` (or RAY_ADDRESS), else start a local instance; then refuse (ConfigError) a sweep whose
    trials no node can hold, before any trial starts. Returns whether the instance is a local one."""
    local = init_ray(address, sweep, num_cpus)
    check_fits(sweep, local)
    return local


def init_ray(address: str | None, sweep: Sweep, num_cpus: int | None = None) -> bool:
    """Join `address` (or RAY_ADDRESS), else start a local instance sized for one trial at least.
    Returns whether the instance is a local one this process started."""
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    env = {"env_vars": {**TRIAL_ENV, **{k: v for k, v in os.environ.items()
                                        if k.startswith("TWOWORLDS_") or k == "PYTHONPATH"}}}
    # Workers of a source checkout import twoworlds from it; a wheel install is importable anyway.
    repo = source_root()
    env["env_vars"]["PYTHONPATH"] = os.pathsep.join(filter(None, [repo and str(repo), env["env_vars"].get("PYTHONPATH")]))
    if address:
        join_cluster(address, env)
        return False
    r = sweep.resources
    need = r.workers * r.cpu + (DDP_TRIAL_CPU if r.workers > 1 else 0)
    cores = os.cpu_count() or 1
    cpus = num_cpus or max(cores, int(need + 0.999) + (1 if r.workers > 1 else 0))
    if num_cpus is None and r.workers * r.cpu > cores:
        print(f"warning: a trial takes {r.workers * r.cpu:g} CPUs (resources: cpu {r.cpu:g} x workers {r.workers}) and this "
              f"machine has {cores} cores: the local Ray instance counts {cpus} CPUs so that it can run, and the "
              "trials oversubscribe the cores (slower); --num-cpus sets the count", file=sys.stderr, flush=True)
    loopback_only_with_token()
    # DDP trials need the dashboard's state API: without it Ray Train's placement-group cleaner
    # cannot see that a finished TorchTrainer is done, its CPUs are never released, and the next
    # DDP trial waits forever for workers. Function trials start faster without it.
    dashboard_port = _free_loopback_port() if r.workers > 1 else None
    env["env_vars"].setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")  # one process less per DDP trial;
    # a local instance has no node that can be preempted
    if dashboard_port:  # the cleaner finds the state API at "auto", which fails as soon as a second Ray instance
        # runs on this machine (another sweep, a `ray start`): the cleaner dies and later DDP trials time out
        # waiting for CPUs. Name our own API server to every process of the instance instead.
        env["env_vars"]["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{dashboard_port}"
    ray.init(num_cpus=cpus, include_dashboard=r.workers > 1, dashboard_host="127.0.0.1", dashboard_port=dashboard_port,
             runtime_env=env, log_to_driver=True, configure_logging=False)
    return True


def _free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def loopback_only_with_token() -> None:
    """A local instance serves this sweep alone: token auth on whatever Ray's default or the environment says,
    and every Ray server (GCS, raylet, workers, agents, dashboard) bound to 127.0.0.1, not to all interfaces.
    Ray reads both switches when it is imported, so the values it cached are refreshed here too."""
    # Ray's own switch for "this node is 127.0.0.1" (its macOS/Windows default), and its token mode; child
    # processes inherit both from the environment
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ["RAY_AUTH_MODE"] = "token"
    try:  # this process read both when it imported ray: refresh what it cached (Ray 2.60's internals)
        from ray._private import ray_constants
        from ray._private.authentication.authentication_token_setup import _enable_token_auth
    except ImportError as e:  # another Ray: refuse rather than start an instance that may listen openly
        raise ConfigError(f"this Ray ({ray.__version__}) lacks what twoworlds uses to keep a local instance on "
                          f"127.0.0.1 with token auth ({e}); install ray 2.60") from None
    ray_constants.ENABLE_RAY_CLUSTER = False
    _enable_token_auth()  # ray.init then creates ~/.ray/auth_token if there is none


def join_cluster(address: str, runtime_env: dict) -> None:
    """ray.init(address) retries for minutes where nothing listens: check the port first, and turn Ray's
    connection and token errors into one line naming the address."""
    how = ("start one with `ray start --head` (then --address <head-ip>:6379) or `ray up launch/cluster/<file>.yaml`, "
           "or leave out --address and RAY_ADDRESS for a local instance")
    host, _, port = address.split("://")[-1].rpartition(":")
    if port.isdigit() and not _listens(host, int(port)):
        raise ConfigError(f"no Ray cluster at --address/RAY_ADDRESS {address} (nothing listens there): {how}")
    try:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=True, configure_logging=False)
    except (ConnectionError, ray.exceptions.AuthenticationError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"could not join the Ray cluster at {address}: {first} (a token-auth cluster needs "
                          "RAY_AUTH_MODE=token and its token: launch/cluster/README.md); or {how}") from None


def _listens(host: str, port: int, seconds: float = 5.0) -> bool:
    """Whether a TCP connection to host:port opens within `seconds` (a head that is still starting gets them)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection((host, port), timeout=2).close()
            return True
        except OSError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)


def check_fits(sweep: Sweep, local: bool) -> None:
    """Tune would wait forever for resources no node has: refuse, naming the resource and what the nodes have.
    Only nodes alive now count (an autoscaling cluster must start such a node before the sweep)."""
    r = sweep.resources
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    have = [n["Resources"] for n in nodes]
    short = next((k for k, ask in (("gpu", r.gpu), ("cpu", r.cpu))
                  if ask and not any(h.get(k.upper(), 0) >= ask for h in have)), None)
    fits = sum(min(h.get("CPU", 0) // r.cpu, h.get("GPU", 0) // r.gpu if r.gpu else r.workers) for h in have)
    if short is None and fits >= r.workers:
        return
    what = "a trial" if r.workers == 1 else f"each of a trial's {r.workers} DDP workers"
    key = f"resources.{short}={getattr(r, short):g}" if short else f"resources.workers={r.workers}"
    where = "the local Ray instance" if local else "the Ray cluster's nodes up now"
    fix = ("a larger --num-cpus" if short != "gpu" else "a machine or a cluster (--address) with GPUs") if local \
        else "nodes that have it (an autoscaling cluster: start them before the sweep)"
    listing = "; ".join(f"{n.get('NodeManagerAddress', '?')}: {_fmt_res(n['Resources'])}" for n in nodes)
    raise ConfigError(f"{key} in {sweep.path}: {what} needs CPU {r.cpu:g}, GPU {r.gpu:g}, more than {where} "
                      f"can hold (cluster: {_fmt_res(ray.cluster_resources())}; nodes: {listing}); no trial was "
                      f"started. Lower it, or use {fix}")


def _fmt_res(res: dict) -> str:
    return f"CPU {res.get('CPU', 0):g}, GPU {res.get('GPU', 0):g}"


def trainable_for(sweep: Sweep):
    r = sweep.resources
    if r.workers > 1:
        from twoworlds.launch.ddp import ddp_trial_fn
        return tune.with_resources(ddp_trial_fn, {"CPU": DDP_TRIAL_CPU})
    return tune.with_resources(trial_fn, {"CPU": r.cpu, "GPU": r.gpu})


def concurrent_trials(sweep: Sweep) -> int:
    """How many trials fit the (local, fixed-size) instance at once. Tune would otherwise start DDP trials whose
    TorchTrainer then waits for workers that cannot be placed (and counts them as running)."""
    r, total = sweep.resources, ray.cluster_resources()
    fits = [total.get("CPU", 0) // (r.workers * r.cpu + (DDP_TRIAL_CPU if r.workers > 1 else 0))]
    if r.gpu:
        fits.append(total.get("GPU", 0) // (r.workers * r.gpu))
    return max(1, int(min(fits)))


def param_space(sweep: Sweep, out_dir: Path) -> dict:
    run_id = uuid.uuid4().hex  # kept in Tune's state: the same on --resume, new for a fresh sweep
    configs = []
    for t in sweep.trials:
        plain = config.to_plain(t.cfg)
        plain["out_dir"] = str(out_dir)  # absolute: trials run with another working directory
        plain["progress"] = False  # the sweep prints one progress line per trial event instead
        configs.append({"name": t.name, "cfg": plain, "threads": max(1, int(sweep.resources.cpu)),
                        "workers": sweep.resources.workers, "cpu": sweep.resources.cpu,
                        "gpu": sweep.resources.gpu, "run_id": run_id})
    return {"trial": tune.grid_search(configs)}


def run_sweep(sweep: Sweep, *, address: str | None = None, resume: bool = False,
              num_cpus: int | None = None, local: bool | None = None) -> list[dict]:
    """Run (or resume) every trial of the sweep; returns the last reported metrics of each trial.
    `local`: what `connect` returned, when the caller connected already."""
    out_dir = Path(OmegaConf.select(sweep.trials[0].cfg, "out_dir")).resolve()
    experiment = out_dir / sweep.name / TUNE_DIR
    if local is None:
        local = connect(sweep, address, num_cpus)
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
        # reused actors spare function trials their imports; a DDP trial's actor only waits on its TorchTrainer
        tune_config = tune.TuneConfig(reuse_actors=sweep.resources.workers == 1, trial_name_creator=_name,
                                      trial_dirname_creator=_name,
                                      # a cluster may autoscale: only a local instance is fixed in size
                                      max_concurrent_trials=concurrent_trials(sweep) if local else None)
        tuner = tune.Tuner(trainable, param_space=param_space(sweep, out_dir), tune_config=tune_config,
                           run_config=run_config)
    results = tuner.fit()
    # Tune returns normally after Ctrl-C, having stopped the trials it cut off before they wrote a summary.
    if any(r.error is None and not (r.metrics or {}).get("done") for r in results):
        for t in sweep.trials:  # only those started and never finished have no summary, or a 'running' one
            trial_state.mark_interrupted(t.cfg)
        raise KeyboardInterrupt
    return [r.metrics or {} for r in results]
