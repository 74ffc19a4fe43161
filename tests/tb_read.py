"""Read a trial's TensorBoard event files back with TensorBoard's own reader.

The report reads metrics.csv (written by launch/recorder.py); these readers are the independent
check that what TensorBoard shows (the curves, and the HPARAMS tab's config and final metrics)
says the same, read through the same code TensorBoard uses rather than through our own writer.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import api_pb2
from tensorboard.plugins.hparams import metadata as hparams_metadata


def _load(trial_dir: str | Path) -> EventAccumulator:
    acc = EventAccumulator(str(trial_dir), size_guidance={"scalars": 0})  # 0: keep every point
    acc.Reload()  # every events.out.tfevents.* file in the directory, in order
    return acc


def read_scalars(trial_dir: str | Path) -> pd.DataFrame:
    """Every scalar point of one trial: columns step, tag, value (float32 values, as stored)."""
    acc = _load(trial_dir)
    rows = [(e.step, tag, e.value) for tag in acc.Tags()["scalars"] for e in acc.Scalars(tag)]
    return pd.DataFrame(rows, columns=["step", "tag", "value"])


def read_hparams(trial_dir: str | Path) -> dict:
    """What the HPARAMS tab shows for one trial: {'hparams': {key: value}, 'metrics': {tag: value},
    'status': 'STATUS_SUCCESS' | 'STATUS_FAILURE' | ... (None without a session end)}.

    hparams come from the session start info; metrics are the tags the trial's experiment summary
    declares, each with its last scalar value (NaN when none was logged), as the hparams plugin does;
    status from the session end info. Empty dicts when the trial logged no hparams.
    """
    acc = _load(trial_dir)
    try:
        content = acc.PluginTagToContent(hparams_metadata.PLUGIN_NAME)
    except KeyError:  # no hparams logged
        content = {}
    hparams, metrics, status = {}, {}, None
    if hparams_metadata.SESSION_START_INFO_TAG in content:
        start = hparams_metadata.parse_session_start_info_plugin_data(
            content[hparams_metadata.SESSION_START_INFO_TAG])
        hparams = {k: getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
    if hparams_metadata.SESSION_END_INFO_TAG in content:
        end = hparams_metadata.parse_session_end_info_plugin_data(content[hparams_metadata.SESSION_END_INFO_TAG])
        status = api_pb2.Status.Name(end.status)
    if hparams_metadata.EXPERIMENT_TAG in content:
        experiment = hparams_metadata.parse_experiment_plugin_data(content[hparams_metadata.EXPERIMENT_TAG])
        scalars = set(acc.Tags()["scalars"])
        for info in experiment.metric_infos:
            tag = info.name.tag
            metrics[tag] = acc.Scalars(tag)[-1].value if tag in scalars else math.nan
    return {"hparams": hparams, "metrics": metrics, "status": status}
