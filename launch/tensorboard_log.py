"""A trial's TensorBoard events: one file per trial holding the curves, then the final metrics at
the last step and the HPARAMS session (config, FLOPs per sample, the trial's real status).

Written with torch's public `FileWriter` and `summary.scalar` (torch.utils.tensorboard). The HPARAMS
session is written by hand as three summaries (experiment, session start, session end) because
`SummaryWriter.add_hparams` writes them into a new sub-run and hard-codes the end status SUCCESS:
TensorBoard would show a second run per trial and every diverged or failed trial as successful.

A retried or resumed trial opens its events file with `TrialEvents.start`, which replays the rows
metrics.csv kept and deletes the earlier attempts' files: TensorBoard shows the first HPARAMS
session it reads in a run, so a failed attempt's would hide the final status.
"""

from __future__ import annotations

import time
from pathlib import Path

from omegaconf import DictConfig
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
from torch.utils.tensorboard import summary as tb_summary
from torch.utils.tensorboard.writer import FileWriter
from twoworlds.launch.config import flatten, to_plain
from twoworlds.launch.recorder import writing
from twoworlds.lightning_modules.metrics import (
    KINDS,
    TRAIN,
    TRAIN_FLOPS,
    WEIGHT_MOVEMENT,
    final_name,
    is_final_metric,
    metric_name,
)
from twoworlds.results.records import read_rows

# summary.json status -> the HPARAMS tab's session status; anything else is STATUS_UNKNOWN.
STATUS = {"completed": api_pb2.STATUS_SUCCESS, "diverged": api_pb2.STATUS_FAILURE,
          "failed": api_pb2.STATUS_FAILURE, "interrupted": api_pb2.STATUS_FAILURE,
          "running": api_pb2.STATUS_RUNNING}
_TRIAL_KEYS = ("status", "flops_per_sample")  # from summary.json, shown beside the config


def tensorboard_scalars(row: dict) -> dict:
    """The columns of an evaluation row that also go to TensorBoard: the metrics, lr, train_flops and
    the weight movement."""
    return {k: v for k, v in row.items() if is_final_metric(k) or k in ("lr", TRAIN_FLOPS)}


def earlier_event_files(run_dir: Path) -> set[Path]:
    """The events files already in a trial directory: earlier attempts', to be replaced by this one's."""
    return set(Path(run_dir).glob("events.out.tfevents.*"))


class TrialEvents:
    """One trial's events file (the global-zero rank writes it)."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.earlier = earlier_event_files(run_dir)  # taken before this attempt's file exists
        self.writer: FileWriter | None = None

    def start(self, metrics_csv: Path) -> None:
        """Open this attempt's events file with the rows metrics.csv kept from earlier attempts (those up
        to the checkpoint a resumed trial continues from; none for a fresh start or a missing file), then
        delete the earlier attempts' files: one file per trial, holding what metrics.csv holds."""
        with writing(self.run_dir / "events.out.tfevents.*"):
            self.writer = FileWriter(str(self.run_dir))
        if metrics_csv.exists():
            header, rows = read_rows(metrics_csv)  # the one reader of metrics.csv (complete rows only)
            for row in (dict(zip(header, values, strict=True)) for values in rows):
                self.scalars({k: float(v) for k, v in tensorboard_scalars(row).items() if v != ""}, int(row["step"]))
        self.writer.flush()
        for path in self.earlier:
            path.unlink(missing_ok=True)

    def scalars(self, values: dict[str, float], step: int) -> None:
        with writing(Path(self.writer.get_logdir()) / "events.out.tfevents.*"):  # the writer thread's errors, too
            for tag, value in values.items():
                self.writer.add_summary(tb_summary.scalar(tag, float(value)), step)

    def end(self, cfg: DictConfig, summary: dict, splits: list[str], last_row: dict) -> None:
        """Final metrics at the trial's last evaluated step (its last step when it has none), then the
        hparams session with the trial's status; closes the events file."""
        if self.writer is None:  # it failed before its first step: the file still records how it ended
            self.start(self.run_dir / "metrics.csv")
        step = int(last_row.get("step", summary.get("steps_done", 0)))
        final = final_metrics(summary.get("final") or {}, splits)
        self.scalars(final, step)
        hparams = {**flatten(to_plain(cfg)), **{k: summary.get(k) for k in _TRIAL_KEYS}}
        hparams = {k: _hparam_value(v) for k, v in hparams.items()}
        now = time.time()
        with writing(self.run_dir / "events.out.tfevents.*"):
            for part in (_experiment(hparams, list(final)),
                         _session_start(hparams, now - summary.get("wall_time", 0.0)), _session_end(summary["status"], now)):
                self.writer.add_summary(part, step)
            self.writer.close()


def final_metrics(final: dict, splits: list[str]) -> dict[str, float]:
    """The HPARAMS tab's metrics: 'final/<split>/<kind>' for every split a trial of this source can
    have, NaN where this trial has none (the Ideal World has no train set; a run that failed before
    its first evaluation has nothing). Every trial must declare the same metrics: TensorBoard takes
    the metric columns of the whole logdir from one trial's hparams summary, picked arbitrarily."""
    splits = splits if TRAIN in splits else [*splits, TRAIN]
    names = [metric_name(s, k) for s in splits for k in KINDS] + [WEIGHT_MOVEMENT]
    return {final_name(m): final.get(m, float("nan")) for m in names}


def _hparam_value(v) -> bool | float | str:
    """bool, number or string: the three kinds an hparam can hold. Lists arrive as their text
    ('[0.5, 0.75]', from config.flatten), None as 'None'."""
    if isinstance(v, bool | str):
        return v
    return float(v) if isinstance(v, int | float) else str(v)


_TYPES = {bool: api_pb2.DATA_TYPE_BOOL, float: api_pb2.DATA_TYPE_FLOAT64, str: api_pb2.DATA_TYPE_STRING}
_FIELDS = {bool: "bool_value", float: "number_value", str: "string_value"}


def _summary(tag: str, data: plugin_data_pb2.HParamsPluginData) -> Summary:
    return Summary(value=[Summary.Value(tag=tag, metadata=metadata.create_summary_metadata(data))])


def _experiment(hparams: dict, metric_tags: list[str]) -> Summary:
    infos = [api_pb2.HParamInfo(name=k, type=_TYPES[type(v)]) for k, v in hparams.items()]
    metrics = [api_pb2.MetricInfo(name=api_pb2.MetricName(tag=t)) for t in metric_tags]
    experiment = api_pb2.Experiment(hparam_infos=infos, metric_infos=metrics)
    return _summary(metadata.EXPERIMENT_TAG, plugin_data_pb2.HParamsPluginData(experiment=experiment))


def _session_start(hparams: dict, start_time: float) -> Summary:
    info = plugin_data_pb2.SessionStartInfo(start_time_secs=start_time)
    for k, v in hparams.items():
        setattr(info.hparams[k], _FIELDS[type(v)], v)
    return _summary(metadata.SESSION_START_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_start_info=info))


def _session_end(status: str, end_time: float) -> Summary:
    info = plugin_data_pb2.SessionEndInfo(status=STATUS.get(status, api_pb2.STATUS_UNKNOWN), end_time_secs=end_time)
    return _summary(metadata.SESSION_END_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_end_info=info))
