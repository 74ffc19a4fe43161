"""Metric names, written once and used by the module, the CSV, TensorBoard, Tune and the report.

Plain strings, no torch: results/ and launch/ import them without loading the training stack.
The metric that computes them is `classification.ClassificationErrors`.
"""

from __future__ import annotations

# Metric kinds taken on every evaluation set; a logged name is f"{set}/{kind}", e.g. "test/soft_error".
LOSS, ERROR, SOFT_ERROR = "loss", "error", "soft_error"
KINDS = (LOSS, ERROR, SOFT_ERROR)
TEST, TRAIN = "test", "train"  # evaluation sets: held-out test set; the Real World's n samples
# Cumulative training FLOPs at an evaluation: flops_per_sample × samples_seen (see flops.py for what counts).
TRAIN_FLOPS = "train_flops"
# Relative weight movement ||w - w0|| / ||w0|| over the network's trainable parameters, w0 their values at
# initialization: small in the lazy regime (model.output_scale >> 1), large when features are learned.
WEIGHT_MOVEMENT = "weight_movement"


def metric_name(split: str, kind: str) -> str:
    return f"{split}/{kind}"


# The names read most often, written once: the test and train 0/1 and soft errors.
TEST_ERROR, TEST_SOFT_ERROR = metric_name(TEST, ERROR), metric_name(TEST, SOFT_ERROR)
TRAIN_ERROR, TRAIN_SOFT_ERROR = metric_name(TRAIN, ERROR), metric_name(TRAIN, SOFT_ERROR)


# A trial's last evaluation, as the report's trial table and TensorBoard's HPARAMS tab name it:
# f"{FINAL}/{set}/{kind}", e.g. "final/test/soft_error".
FINAL = "final"


def is_final_metric(column: str) -> bool:
    """The evaluation-row columns a trial's summary keeps as its final metrics: '<set>/<kind>' and the
    weight movement (not the bookkeeping: step, samples, FLOPs, lr, wall time)."""
    return "/" in column or column == WEIGHT_MOVEMENT


def final_name(metric: str) -> str:
    """'test/soft_error' -> 'final/test/soft_error'."""
    return f"{FINAL}/{metric}"
