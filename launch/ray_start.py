"""Starting a local Ray instance for a sweep, or joining a cluster, and refusing a sweep no node can hold.

Nothing here imports Ray at import time: a local instance's switches (token auth, loopback only: launch/compat.py)
are environment variables that Ray reads when it is imported, so they are set first, then Ray is imported.
"""

from __future__ import annotations

import os
import socket
import sys
import time

from twoworlds.launch import compat
from twoworlds.launch.config import ConfigError
from twoworlds.launch.recorder import source_root
from twoworlds.launch.sweep_spec import Sweep

# Set when Ray starts (never at import), in this process and so in a local instance's; the user's environment wins.
# Our trials write their own TensorBoard events under runs/<study>/<trial>, and Tune's default loggers would add a
# second copy of every scalar under _tune/; its new console output would interleave with the sweep's progress
# lines. A task given no GPU keeps CUDA_VISIBLE_DEVICES as it is: Ray's default from 2.60 on, chosen explicitly so
# that every supported Ray behaves alike (and Ray < 2.60 does not warn about its coming change at every start).
DRIVER_ENV = {"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1", "RAY_AIR_NEW_OUTPUT": "0",
              "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1", "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0"}
# Every Ray process of a sweep gets these (the user's environment wins). Tune waits 2 s for a finished function
# trial's thread before reusing its actor; a loaded machine misses that, and the trial then never starts.
# Ray Train's controller polls its workers every 2 s, at each start-up step and at the end of a DDP trial.
TRIAL_DEFAULTS = {"TUNE_FUNCTION_THREAD_TIMEOUT_S": "60", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}
DDP_TRIAL_CPU = 0.01  # the Tune trial that starts a TorchTrainer only waits on it


def connect(sweep: Sweep, address: str | None = None, num_cpus: int | None = None) -> bool:
    """Join `address` (or RAY_ADDRESS), else start a local instance; then refuse (ConfigError) a sweep whose
    trials no node can hold, before any trial starts. Returns whether the instance is a local one."""
    local = init_ray(address, sweep, num_cpus)
    check_fits(sweep, local)
    return local


def init_ray(address: str | None, sweep: Sweep, num_cpus: int | None = None) -> bool:
    """Join `address` (or RAY_ADDRESS), else start a local instance sized for one trial at least.
    Returns whether the instance is a local one this process started."""
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        return False
    for key, value in DRIVER_ENV.items():  # read by Tune when the sweep starts (the user's environment wins)
        os.environ.setdefault(key, value)
    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        compat.local_ray_env()  # token auth, loopback only: set before Ray is imported, which reads them
    import ray
    env = {"env_vars": {**{k: os.environ.get(k, v) for k, v in TRIAL_DEFAULTS.items()},
                        **{k: v for k, v in os.environ.items() if k.startswith("TWOWORLDS_") or k == "PYTHONPATH"}}}
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


def join_cluster(address: str, runtime_env: dict) -> None:
    """ray.init(address) retries for minutes where nothing listens: check the port first, and turn Ray's
    connection and token errors into one line naming the address."""
    import ray
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
    import ray
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
