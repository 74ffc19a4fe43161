"""A sweep trial's state on disk, shared by function trials and DDP workers.

Everything a trial needs to continue lives in its run directory, beside metrics.csv:
`last.ckpt`, replaced atomically at every evaluation (after that evaluation's row is written),
and `summary.json` once it has finished. Tune's own checkpoints are not used: Tune prunes and
snapshots them asynchronously, and a driver killed between the two leaves its experiment state
pointing at a checkpoint that no longer exists.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from twoworlds.launch import config
from twoworlds.results.records import atomic_write

CKPT_FILE = "last.ckpt"
FINISHED = ("completed", "diverged")


def run_dir(cfg: DictConfig) -> Path:
    return Path(cfg.out_dir) / cfg.study / cfg.name


def same_config(cfg: DictConfig) -> bool:
    """Whether the run directory holds a run of exactly this config (so its files may be reused)."""
    path = run_dir(cfg) / "config.yaml"
    if not path.exists():
        return False
    stored = OmegaConf.to_container(OmegaConf.load(path))
    stored.pop("provenance", None)
    return stored == config.to_plain(cfg)


def finished_summary(cfg: DictConfig) -> dict | None:
    """The summary of an earlier, finished run of exactly this config, if there is one.

    Tune snapshots its experiment state now and then; a trial that finished after the last
    snapshot would otherwise be re-run on --resume.
    """
    path = run_dir(cfg) / "summary.json"
    if not (path.exists() and same_config(cfg)):
        return None
    summary = json.loads(path.read_text())
    return summary if summary.get("status") in FINISHED else None


def resume_checkpoint(cfg: DictConfig) -> str | None:
    ckpt = run_dir(cfg) / CKPT_FILE
    return str(ckpt) if ckpt.exists() and same_config(cfg) else None


def checkpointing_reporter(cfg: DictConfig, report: Callable[[dict], None]):
    """An EvaluationCallback `report`: checkpoint into the run directory, then `report(row)`.

    Every rank calls it (Lightning's save_checkpoint is collective; rank 0 writes the file).
    """
    ckpt = run_dir(cfg) / CKPT_FILE

    def checkpoint_and_report(trainer, row: dict) -> None:
        # save_checkpoint is collective; rank 0 writes the file, so rank 0 renames it
        atomic_write(ckpt, lambda tmp: trainer.save_checkpoint(str(tmp)), replace=trainer.is_global_zero)
        report({k: float(v) for k, v in row.items()})

    return checkpoint_and_report


def final_report(summary: dict, **extra) -> dict:
    """The last result a trial reports to Tune."""
    return {**summary["final"], "status": summary["status"], "steps_done": summary["steps_done"],
            "done": True, **extra}


def finish(cfg: DictConfig) -> None:
    """A finished run's checkpoint has done its job."""
    (run_dir(cfg) / CKPT_FILE).unlink(missing_ok=True)
