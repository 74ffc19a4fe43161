"""DDP trials (`resources.workers > 1`): a Ray Train TorchTrainer started from inside the Tune trial.

Ray >= 2.5x ("Train V2") no longer accepts Tuner(TorchTrainer); the Tune function trial builds the
TorchTrainer itself and `TuneReportCallback` forwards the workers' reports to Tune. Each worker runs
the same `run_trial`, whose loop wraps the network in DistributedDataParallel over the process group Ray
Train started (gloo on CPU, nccl on GPU). The world switch gives every rank its own contiguous slice of each
global batch, so the invariants hold across ranks.
Checkpoints and the finished-trial check are the same as for function trials (launch/trial_state.py).
"""

from __future__ import annotations

from pathlib import Path

import ray.train
from ray import tune
from ray.train import ScalingConfig
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback
from twoworlds.launch import config, trial_state


def ddp_trial_fn(params: dict) -> None:
    from twoworlds.launch.sweep import quiet_ray_logs

    quiet_ray_logs()
    p = params["trial"]
    finished = trial_state.finished_summary(config.merge(config.schema(), p["cfg"]))
    if finished is not None:  # finished before the driver was killed: keep, don't re-run
        tune.report(trial_state.final_report(finished, kept=True))
        return
    cfg = p["cfg"]
    trainer = TorchTrainer(
        _worker_loop, train_loop_config=p,
        scaling_config=ScalingConfig(num_workers=int(p["workers"]), use_gpu=p["gpu"] > 0,
                                     resources_per_worker={"CPU": p["cpu"], "GPU": p["gpu"]}),
        run_config=ray.train.RunConfig(storage_path=str(Path(cfg["out_dir"]) / cfg["study"] / "_train"),
                                       name=p["name"], callbacks=[TuneReportCallback()]))
    trainer.fit()


def _worker_loop(p: dict) -> None:
    """One DDP rank: Ray Train has started the process group (gloo on CPU, nccl on GPU) before this runs; the
    training loop (launch/loop.py) finds it, wraps the network in DistributedDataParallel and takes this rank's
    slice of every global batch."""
    import torch
    from ray.train.torch import get_device
    from twoworlds.launch.sweep import quiet_ray_logs, run_trial_reporting

    quiet_ray_logs()
    torch.set_num_threads(max(1, int(p["cpu"])))
    cfg = config.merge(config.schema(), p["cfg"])
    run_trial_reporting(cfg, p.get("run_id"), ray.train.report, device=get_device(), ddp=True)
