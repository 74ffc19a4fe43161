"""ClassificationModule: one recipe (loss, metrics, optimizer, schedule) around any network.

The network is a plain nn.Module from the registry. The training loop that drives this module is
launch/loop.py (one file, top to bottom); evaluation happens at the eval schedule's steps, on whole
tensors already on the device, through the same `_step` as training.
"""

from __future__ import annotations

import copy
from functools import partial

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import Metric
from twoworlds.lightning_modules.config import OPTIMIZERS, SCHEDULES, OptimConfig
from twoworlds.lightning_modules.metrics import ERROR, KINDS, LOSS, SOFT_ERROR, metric_name
from twoworlds.lightning_modules.schedules import lr_factor
from twoworlds.lightning_modules.seen import SeenIds

__all__ = ["ClassificationErrors", "ClassificationModule", "OptimConfig", "OutputScaled", "scaled_lr"]


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


class OutputScaled(nn.Module):
    """Chizat and Bach's lazy-training knob: alpha * (f(x) - f0(x)), f0 the network as initialized.

    f0 is a frozen copy taken at construction: its parameters never train, its BatchNorm statistics
    follow the same batches as f's (so at step 0 the output is exactly zero in train and eval mode).
    With the learning rate divided by alpha**2 (ClassificationModule does it for SGD), the function
    moves as fast for every alpha while the weights move ~1/alpha as far: large alpha is the lazy
    (linearized, NTK) regime, alpha ~ 1 the rich (feature-learning) one.
    """

    def __init__(self, net: nn.Module, alpha: float):
        super().__init__()
        if not alpha > 0:
            raise ValueError(f"model.output_scale={alpha} must be > 0 (or null: the plain network)")
        self.net, self.alpha = net, float(alpha)
        self.init = copy.deepcopy(net).requires_grad_(False)
        self.num_parameters = getattr(net, "num_parameters", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            f0 = self.init(x)
        return self.alpha * (self.net(x) - f0)


def scaled_lr(optim: OptimConfig, alpha: float | None) -> float:
    """The learning rate of a network with output scale alpha: lr / alpha**2 for SGD (Chizat and Bach:
    the function's motion is then independent of alpha); lr / alpha for Adam(W), whose update does not
    scale with the gradient's size (a gradient alpha times larger moves the weights no faster), so the
    same 1/alpha weight motion, hence the same function speed, needs lr / alpha."""
    if alpha is None:
        return optim.lr
    return optim.lr / alpha**2 if optim.name == "sgd" else optim.lr / alpha


class ClassificationModule(pl.LightningModule):
    def __init__(self, net: nn.Module, optim: OptimConfig, steps: int, id_range: tuple[int, int] | None = None,
                 output_scale: float | None = None):
        super().__init__()
        # launch/config.py validates both choices with a message for the person who typed them.
        assert optim.name in OPTIMIZERS and optim.schedule in SCHEDULES, (optim.name, optim.schedule)
        self.net, self.optim, self.steps = net, optim, steps
        self.errors = ClassificationErrors()
        # Sum of training losses since the last divergence check, kept on the device so that the
        # host never syncs on a training step.
        self.register_buffer("loss_acc", torch.zeros(()), persistent=False)
        # The pool ids that reached this step, [lo, hi) = the world plan's id range (None: not counted).
        self.seen = SeenIds(*id_range) if id_range is not None else None
        self.output_scale = output_scale  # alpha of OutputScaled (None: the plain network); divides the lr
        # The trainable weights at initialization, for the relative weight movement |w - w0| / |w0|. Not in
        # checkpoints: the initial weights are a function of the seed (invariant 5, docs/invariants.md), and a resumed
        # run builds this module, w0 included, before it loads the trained weights.
        w0 = [p.detach().reshape(-1) for p in self._trainable()]
        self.register_buffer("w0", torch.cat(w0).clone() if w0 else torch.zeros(0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    @staticmethod
    def loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The training objective: cross-entropy of the logits against the labels."""
        return F.cross_entropy(logits, y)

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self(x)
        return self.loss(logits, y), logits

    @torch.no_grad()
    def evaluate(self, split: str, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024,
                 transform=None) -> dict[str, float]:
        """Loss, 0/1 error and soft error on (x, y), synced over DDP ranks; the net is left as found.

        `transform` turns a stored chunk into model input (e.g. uint8 images -> normalized floats).
        """
        was_training = self.net.training
        self.net.eval()
        self.errors.reset()
        for start in range(0, len(y), batch_size):
            chunk = x[start:start + batch_size]
            _, logits = self._step(chunk if transform is None else transform(chunk), y[start:start + batch_size])
            self.errors.update(logits, y[start:start + batch_size])
        values = self.errors.compute()
        self.net.train(was_training)
        return {metric_name(split, k): float(values[k]) for k in KINDS}

    def _trainable(self) -> list[nn.Parameter]:
        return [p for p in self.net.parameters() if p.requires_grad]

    @torch.no_grad()
    def weight_movement(self) -> float:
        """|w - w0| / |w0| over the trainable parameters (one host sync; at evaluations only)."""
        moved, start = torch.zeros((), dtype=torch.float64, device=self.w0.device), 0
        for p in self._trainable():
            n = p.numel()
            moved += (p.detach().reshape(-1) - self.w0[start:start + n]).double().square().sum()
            start += n
        norm = self.w0.double().square().sum()
        return float((moved / norm).sqrt()) if norm > 0 else float("nan")

    def take_loss_check(self) -> torch.Tensor:
        """1 where a training loss since the last check was NaN/inf, else 0 (a device tensor: the caller
        syncs it, once, across DDP ranks too); restarts the sum."""
        bad = (~torch.isfinite(self.loss_acc)).to(torch.float32)
        self.loss_acc.zero_()
        return bad

    def configure_optimizers(self):
        o = self.optim
        decay, no_decay = [], []
        for p in self._trainable():  # not OutputScaled's frozen copy of the initial network
            # Norm scales and biases are not decayed: it only fights BatchNorm's scale invariance.
            (no_decay if p.ndim <= 1 else decay).append(p)
        groups = [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        lr = scaled_lr(o, self.output_scale)
        if o.name == "sgd":
            opt = torch.optim.SGD(groups, lr=lr, momentum=o.momentum, nesterov=o.nesterov)
        else:
            opt = torch.optim.AdamW(groups, lr=lr, betas=tuple(o.betas))
        factor = partial(lr_factor, steps=self.steps, schedule=o.schedule, warmup_steps=o.warmup_steps,
                         milestones=tuple(o.milestones), gamma=o.gamma)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}
