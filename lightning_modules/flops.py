"""Training FLOPs per sample of a network, counted once before training.

What is counted (torch.utils.flop_counter.FlopCounterMode on one forward and backward pass of the
cross-entropy loss, the training step's graph):
- matrix multiplies (Linear layers, attention) and convolutions, at 2 FLOPs per multiply-add
  (a Linear of in -> out costs 2·in·out per sample forward; a convolution 2·Cin·Cout·k·L_out, k the
  kernel's size in elements, L_out the output positions);
- backward: the weight gradient of every layer and the input gradient of every layer except the
  first (its input needs no gradient, so autograd skips it): about 3× the forward pass;
- attention through PyTorch's math kernels (the fused CPU kernel is not in the counter's table).
Not counted: bias additions, normalization, activations, pooling, softmax, the loss, the optimizer
update, and evaluation passes. For the networks here these are a few percent at most.

The pass runs on the meta device, on a copy: shapes only, no arithmetic, no random numbers drawn,
the network itself (weights, BatchNorm statistics) untouched.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

_BATCH = 2  # BatchNorm in training mode needs more than one sample; the count is linear in the batch


def training_flops_per_sample(net: nn.Module, input_shape: tuple[int, ...], num_classes: int) -> int:
    """FLOPs of one training step's forward and backward pass, per sample (see the module docstring)."""
    meta = copy.deepcopy(net).to("meta").train()
    x = torch.zeros(_BATCH, *input_shape, device="meta")
    y = torch.zeros(_BATCH, dtype=torch.long, device="meta")
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
        F.cross_entropy(meta(x), y).backward()
    total = counter.get_total_flops()
    if total % _BATCH:  # every counted op is linear in the batch; anything else would be a new kind of op
        raise AssertionError(f"FLOP count {total} of a batch of {_BATCH} does not split per sample")
    return total // _BATCH
