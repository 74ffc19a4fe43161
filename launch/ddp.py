"""DDP trials (`resources.workers > 1`): a Ray Train TorchTrainer started from inside the Tune trial.

Ray >= 2.5x ("Train V2") no longer accepts Tuner(TorchTrainer); the Tune function trial builds the
TorchTrainer itself and `TuneReportCallback` forwards the workers' reports to Tune. Each worker runs
the same `run_trial` with Lightning's `RayDDPStrategy` (gloo on CPU, nccl on GPU). The world switch
gives every rank its own contiguous slice of each global batch, so the invariants hold across ranks.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import ray.train
from ray.train import ScalingConfig
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from launch import config

CKPT_FILE = "last.ckpt"


def ddp_trial_fn(params: dict) -> None:
    p = params["trial"]
    cfg = p["cfg"]
    storage = Path(cfg["out_dir"]) / cfg["study"] / "_train"
    trainer = TorchTrainer(
        _worker_loop, train_loop_config=p,
        scaling_config=ScalingConfig(num_workers=int(p["workers"]), use_gpu=p["gpu"] > 0,
                                     resources_per_worker={"CPU": p["cpu"], "GPU": p["gpu"]}),
        run_config=ray.train.RunConfig(storage_path=str(storage), name=p["name"],
                                       callbacks=[TuneReportCallback()]))
    trainer.fit()


def _report(trainer, row: dict) -> None:
    """Every rank reports (Train V2 expects all workers); rank 0 attaches the checkpoint."""
    with tempfile.TemporaryDirectory() as d:
        trainer.save_checkpoint(os.path.join(d, CKPT_FILE))  # collective; rank 0 writes
        ckpt = ray.train.Checkpoint.from_directory(d) if trainer.is_global_zero else None
        ray.train.report({k: float(v) for k, v in row.items()}, checkpoint=ckpt)


def _worker_loop(p: dict) -> None:
    import torch
    from ray.train.lightning import RayDDPStrategy, RayLightningEnvironment, prepare_trainer

    from launch.run import run_trial

    for name in ("ray.train", "ray.tune"):  # one "Reporting training result" line per evaluation
        logging.getLogger(name).setLevel(logging.WARNING)
    torch.set_num_threads(max(1, int(p["cpu"])))
    cfg = config.merge(config.schema(), p["cfg"])
    ckpt = ray.train.get_checkpoint()
    ckpt_path = str(Path(ckpt.to_directory()) / CKPT_FILE) if ckpt is not None else None
    summary = run_trial(cfg, strategy=RayDDPStrategy(), plugins=[RayLightningEnvironment()],
                        report=_report, ckpt_path=ckpt_path, prepare=prepare_trainer)
    ray.train.report({**summary["final"], "status": summary["status"], "steps_done": summary["steps_done"],
                      "done": True})
