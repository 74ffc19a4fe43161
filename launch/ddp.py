"""DDP trials (`resources.workers > 1`): a Ray Train TorchTrainer started from inside the Tune trial.

Ray >= 2.5x ("Train V2") no longer accepts Tuner(TorchTrainer); the Tune function trial builds the
TorchTrainer itself and `TuneReportCallback` forwards the workers' reports to Tune. Each worker runs
the same `run_trial` with Lightning's `RayDDPStrategy` (gloo on CPU, nccl on GPU). The world switch
gives every rank its own contiguous slice of each global batch, so the invariants hold across ranks.
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
    import torch
    from ray.train.lightning import RayDDPStrategy, RayLightningEnvironment, prepare_trainer
    from twoworlds.launch.run import run_trial
    from twoworlds.launch.sweep import fault_callbacks, quiet_ray_logs

    quiet_ray_logs()
    torch.set_num_threads(max(1, int(p["cpu"])))
    cfg = config.merge(config.schema(), p["cfg"])
    summary = run_trial(cfg, strategy=RayDDPStrategy(), plugins=[RayLightningEnvironment()],
                        report=trial_state.checkpointing_reporter(cfg, ray.train.report, p.get("run_id")),
                        extra_callbacks=fault_callbacks(cfg.name),
                        ckpt_path=trial_state.resume_checkpoint(cfg, p.get("run_id")), prepare=prepare_trainer)
    if ray.train.get_context().get_world_rank() == 0:
        trial_state.finish(cfg)
    ray.train.report(trial_state.final_report(summary))
