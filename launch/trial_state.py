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

import json
import os
import socket
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig
from twoworlds.launch import config
from twoworlds.launch.config import ConfigError
from twoworlds.launch.recorder import RunRecorder, last_row, writing
from twoworlds.lightning_modules.metrics import is_final_metric
from twoworlds.results.records import atomic_write, atomic_write_text, read_config_file, read_json_file

from twoworlds.errors import UserError

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


CKPT_FORMAT = "twoworlds-checkpoint-1"  # launch/loop.py's state, saved with torch.save


def write_checkpoint(cfg: DictConfig, state: dict, run_id: str | None) -> None:
    """Replace last.ckpt with `state` (atomically), then name its owner: the sweep experiment `run_id`
    (after the file: an owner never vouches for a stranger's file). One rank writes it."""
    import torch

    d = run_dir(cfg)
    with writing(d / CKPT_FILE):
        atomic_write(d / CKPT_FILE, lambda tmp: torch.save({"format": CKPT_FORMAT, **state}, tmp))
        owner = d / OWNER_FILE
        if run_id and not (owner.exists() and owner.read_text() == run_id):
            atomic_write_text(owner, run_id)


def read_checkpoint(path: str | Path, device) -> dict:
    """A checkpoint's state, loaded as data (`weights_only=True`: a pickle payload fails, never runs), or a
    one-line UserError naming the file."""
    import pickle

    import torch

    fix = f"delete it (and {OWNER_FILE}) to run this trial again from step 0"
    try:
        with warnings.catch_warnings():  # a file not written by torch.save (another pickle protocol) warns first
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path} is not a checkpoint twoworlds can read ({first}); {fix}") from None
    if not isinstance(state, dict) or state.get("format") != CKPT_FORMAT:
        raise UserError(f"{path} was not written by this version of twoworlds (no '{CKPT_FORMAT}' format); {fix}")
    return state


# ---------------------------------------------------------------------------------------------
# one process runs a trial at a time
# ---------------------------------------------------------------------------------------------

LOCK_FILE = "trial.lock"


@contextmanager
def holding(d: Path, run_id: str | None = None):
    """Hold trial directory `d` while this process runs it: a second run of the same trial (the same command
    twice, or a sweep started twice) is refused in one line, naming the owner, instead of interleaving its
    rows with the first's. The lock file says who holds it (pid, host, sweep experiment). A lock is stale, and
    taken over, when its process is gone from this host, when it is this process's own (an earlier attempt of a
    reused Ray actor), or when it is another host's lock of the same sweep experiment (Tune retries a trial
    only after its last attempt ended)."""
    path = Path(d) / LOCK_FILE
    me = {"pid": os.getpid(), "host": socket.gethostname(), "run_id": run_id, "since": time.time()}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _lock_owner(path)
            if owner is None or _stale(owner, me):
                path.unlink(missing_ok=True)
                continue
            raise UserError(f"trial {d} is being run by process {owner['pid']} on {owner['host']} (since "
                            f"{time.strftime('%H:%M:%S', time.localtime(owner.get('since', 0)))}): wait for it to "
                            f"finish; if that process is gone, delete {path}") from None
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(me))
        break
    else:
        raise UserError(f"could not take the lock {path}: other processes keep taking it; delete it and retry")
    try:
        yield
    finally:
        if _lock_owner(path) == me:
            path.unlink(missing_ok=True)


def _lock_owner(path: Path) -> dict | None:
    """The lock's owner; None when the file is gone, or unreadable and older than a few seconds (a process
    that died while writing it; a younger one may still be being written)."""
    try:
        owner = json.loads(path.read_text())
        return owner if isinstance(owner, dict) and {"pid", "host"} <= owner.keys() else None
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        try:
            young = time.time() - path.stat().st_mtime < 5
        except OSError:
            return None
        return {"pid": -1, "host": "?", "since": time.time()} if young else None


def _stale(owner: dict, me: dict) -> bool:
    if owner["host"] != me["host"]:
        return owner.get("run_id") is not None and owner.get("run_id") == me["run_id"]
    if owner["pid"] == me["pid"]:
        return True
    try:
        os.kill(owner["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


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
