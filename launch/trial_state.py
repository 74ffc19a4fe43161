"""A sweep trial's state on disk, shared by function trials and DDP workers.

Everything a trial needs to continue lives in its run directory, beside metrics.csv:
`last.ckpt`, replaced atomically at every evaluation (after that evaluation's row is written),
and `summary.json` once it has finished. Tune's own checkpoints are not used: Tune prunes and
snapshots them asynchronously, and a driver killed between the two leaves its experiment state
pointing at a checkpoint that no longer exists.

A directory holds the results of one config (its hash is in config.yaml's provenance and in
summary.json): a run of another config under the same name is refused before anything is written.
`last.ckpt.owner` names the sweep experiment (its `run_id`) that wrote `last.ckpt`; a trial only
continues from a checkpoint its own experiment wrote (a Tune retry, or `--resume`), never from one
it finds, and loads it with `weights_only=True` (launch/run.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig
from twoworlds.launch import config
from twoworlds.launch.config import ConfigError
from twoworlds.launch.recorder import RunRecorder, last_row
from twoworlds.lightning_modules.metrics import is_final_metric
from twoworlds.results.records import atomic_write, read_config_file, read_json_file

CKPT_FILE = "last.ckpt"
OWNER_FILE = "last.ckpt.owner"
FINISHED = ("completed", "diverged")
_SHOWN_KEYS = 4  # differing keys named per trial in a refusal


def run_dir(cfg: DictConfig) -> Path:
    return Path(cfg.out_dir) / cfg.study / cfg.name


def stored_config(cfg: DictConfig) -> dict | None:
    """The resolved config recorded in the trial's directory (None: no run there yet)."""
    path = run_dir(cfg) / "config.yaml"
    if not path.exists():
        return None
    try:
        return read_config_file(path)
    except ValueError as e:
        raise ConfigError(f"{e}; delete that trial directory to re-run it") from None


def same_config(cfg: DictConfig) -> bool:
    """Whether the run directory holds a run of this config (same config hash: its files may be reused)."""
    stored = stored_config(cfg)
    return stored is not None and config.config_hash(stored) == config.config_hash(cfg)


def conflict(cfg: DictConfig) -> str | None:
    """'<dir> (key: old -> new, ...)' when the trial's directory holds a run of another config."""
    stored = stored_config(cfg)
    if stored is None or config.config_hash(stored) == config.config_hash(cfg):
        return None
    diff = config.config_diff(stored, config.to_plain(cfg))
    more = f", and {len(diff) - _SHOWN_KEYS} more" if len(diff) > _SHOWN_KEYS else ""
    return f"{run_dir(cfg)} ({'; '.join(diff[:_SHOWN_KEYS])}{more})"


def refuse_conflicts(cfgs: list[DictConfig]) -> None:
    """Refuse, before anything is written, to run a config whose trial directory holds another config's
    results: one message listing every conflicting trial, old -> new."""
    found = [c for c in (conflict(cfg) for cfg in cfgs) if c]
    if not found:
        return
    which = "the trial directory" if len(found) == 1 else f"{len(found)} trial directories"
    these = "that trial directory" if len(found) == 1 else "those trial directories"
    raise ConfigError(f"{which} {', '.join(found)} already {'holds' if len(found) == 1 else 'hold'} results of "
                      f"another config (old -> new). A directory never mixes two configs: use a new study name "
                      f"(study=... for a run; name: in a sweep file) or delete {these} to re-run")


def writable_dir(path: Path) -> Path:
    """Create `path` (and its parents), or a one-line ConfigError saying why it cannot be written."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK):
            raise PermissionError(13, "not writable")
    except OSError as e:
        raise ConfigError(f"cannot write to {path}: {e.strerror or e}; set out_dir= to a writable "
                          "directory") from None
    return path


def read_summary(path: Path) -> dict | None:
    """summary.json as a dict; None when absent or unreadable (a run cut off while writing it is
    re-run, never trusted)."""
    try:
        return read_json_file(path)
    except (OSError, ValueError):
        return None


def finished_summary(cfg: DictConfig) -> dict | None:
    """The summary of an earlier, finished run of exactly this config, if there is one.

    Tune snapshots its experiment state now and then; a trial that finished after the last
    snapshot would otherwise be re-run on --resume.
    """
    if not same_config(cfg):
        return None
    summary = read_summary(run_dir(cfg) / "summary.json")
    return summary if summary and summary.get("status") in FINISHED else None


def resume_checkpoint(cfg: DictConfig, run_id: str | None) -> str | None:
    """last.ckpt, when this sweep experiment (`run_id`) wrote it: a retry or a `--resume`. A checkpoint
    found in the directory but written by anyone else is never read."""
    ckpt, owner = run_dir(cfg) / CKPT_FILE, run_dir(cfg) / OWNER_FILE
    if not (run_id and ckpt.exists() and owner.exists() and owner.read_text() == run_id):
        return None
    return str(ckpt) if same_config(cfg) else None


def checkpointing_reporter(cfg: DictConfig, report: Callable[[dict], None], run_id: str | None = None):
    """An EvaluationCallback `report`: checkpoint into the run directory, then `report(row)`.

    Every rank calls it (Lightning's save_checkpoint is collective; rank 0 writes the file).
    """
    ckpt, owner = run_dir(cfg) / CKPT_FILE, run_dir(cfg) / OWNER_FILE

    def checkpoint_and_report(trainer, row: dict) -> None:
        # save_checkpoint is collective; rank 0 writes the file, so rank 0 renames it
        atomic_write(ckpt, lambda tmp: trainer.save_checkpoint(str(tmp)), replace=trainer.is_global_zero)
        if trainer.is_global_zero and run_id and not (owner.exists() and owner.read_text() == run_id):
            owner.write_text(run_id)  # after the checkpoint: an owner never vouches for a stranger's file
        report({k: float(v) for k, v in row.items()})

    return checkpoint_and_report


def mark_interrupted(cfg: DictConfig) -> bool:
    """A trial cut off by an interrupted sweep (Tune stopped it before it wrote its own summary, or wrote
    'running'): summary.json says 'interrupted', with the last row it logged. Returns whether it was marked."""
    d = run_dir(cfg)
    summary = read_summary(d / "summary.json") or {}
    if not (d / "config.yaml").exists() or summary.get("status", "running") != "running":
        return False
    last = last_row(d / "metrics.csv")
    recorder = RunRecorder(d)
    recorder.enable(True)
    recorder.write_summary({
        "trial": cfg.name, "study": cfg.study, "world": cfg.world, "n": cfg.n if cfg.world == "real" else None,
        "pair_key": config.pair_key(cfg), "config_hash": config.config_hash(cfg), "status": "interrupted",
        "steps": cfg.steps, "steps_done": int(last.get("step", 0)),
        "final": {k: v for k, v in last.items() if is_final_metric(k)}})
    return True


def final_report(summary: dict, **extra) -> dict:
    """The last result a trial reports to Tune."""
    return {**summary["final"], "status": summary["status"], "steps_done": summary["steps_done"],
            "done": True, **extra}


def finish(cfg: DictConfig) -> None:
    """A finished run's checkpoint has done its job."""
    (run_dir(cfg) / CKPT_FILE).unlink(missing_ok=True)
    (run_dir(cfg) / OWNER_FILE).unlink(missing_ok=True)
