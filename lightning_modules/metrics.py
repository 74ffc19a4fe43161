"""Metric names (written once, used by the module, the CSV, TensorBoard, Tune and the report)
and the soft-error metric."""

from __future__ import annotations

import torch
from torchmetrics import Metric

# Metric kinds taken on every evaluation set; a logged name is f"{set}/{kind}", e.g. "test/soft_error".
LOSS, ERROR, SOFT_ERROR = "loss", "error", "soft_error"
KINDS = (LOSS, ERROR, SOFT_ERROR)
TEST, TRAIN = "test", "train"  # evaluation sets: held-out test set; the Real World's n samples
# Cumulative training FLOPs at an evaluation: flops_per_sample × samples_seen (see flops.py for what counts).
TRAIN_FLOPS = "train_flops"


def metric_name(split: str, kind: str) -> str:
    return f"{split}/{kind}"


class ClassificationErrors(Metric):
    """Cross-entropy, 0/1 error and soft error over all samples seen since the last reset.

    Soft error is the mean over samples of 1 - softmax probability of the true class: a smooth
    version of the 0/1 error, much less noisy on small test sets. The states are sums with
    `dist_reduce_fx="sum"`, so `compute()` gives the exact global means under DDP.
    """

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        for state in ("loss_sum", "error_sum", "soft_sum", "count"):
            self.add_state(state, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        logits = logits.float()
        log_p = torch.log_softmax(logits, dim=1)
        log_p_true = log_p.gather(1, target[:, None])[:, 0]
        self.loss_sum += -log_p_true.sum().double()
        self.error_sum += (logits.argmax(1) != target).sum().double()
        self.soft_sum += (1.0 - log_p_true.exp()).sum().double()
        self.count += target.numel()

    def compute(self) -> dict[str, torch.Tensor]:
        count = self.count.clamp(min=1)
        return {LOSS: self.loss_sum / count, ERROR: self.error_sum / count, SOFT_ERROR: self.soft_sum / count}
