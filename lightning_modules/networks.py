"""Network registry: plain ``nn.Module`` factories for the Deep Bootstrap architectures.

Four families, each built by ``build_network(name, input_shape, num_classes, width, depth, patch_size)``:

- ``mlp``: ``depth`` hidden Linear -> BatchNorm -> ReLU layers of size ``width``, then a Linear head.
- ``cnn``: the paper's "mCNN", ``depth`` conv3x3 -> BN -> ReLU stages with ``width * 2**i`` channels,
  max-pooling between the inner stages, global max pool and a Linear head.
- ``resnet``: pre-activation ResNet-10/18/34 with base width ``width`` (Kuang Liu's ``PreActResNet``).
- ``vit``: a pre-norm Vision Transformer with embedding dim ``width``, ``depth`` blocks and patches of
  side ``patch_size``.

Every family accepts 1-D sequences ``(C, L)`` (e.g. MNIST-1D) and images ``(C, H, W)``; the same
architecture is built with 1-D or 2-D conv/BN/pool ops. For 32x32x3 inputs and 10 classes the parameter
counts equal the Deep Bootstrap paper's: mCNN c=16/64 -> 99,210 / 1,558,026 and PreActResNet-18
k=16/64 -> 700,762 / 11,171,146.

Factories are plain torch (no Lightning, no torchvision) so they can be reused and tested in isolation.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import torch
from torch import nn
from twoworlds.lightning_modules.registry import Registry

from twoworlds.errors import ConfigError

NETWORKS: Registry[Callable[..., nn.Module]] = Registry("network")

RESNET_BLOCKS: dict[int, tuple[int, int, int, int]] = {
    10: (1, 1, 1, 1),
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
}


register_network = NETWORKS.register  # decorator adding a factory under a name


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def build_network(
    name: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    width: int,
    depth: int,
    patch_size: int = 4,
) -> nn.Module:
    """Build a registered network and record its trainable parameter count as ``num_parameters``."""
    factory = NETWORKS[name]  # an unknown name lists the known ones
    input_shape = tuple(int(s) for s in input_shape)
    _check_common_knobs(input_shape, num_classes, width, depth)
    net = factory(input_shape, num_classes, width, depth, patch_size)
    net.num_parameters = count_parameters(net)
    return net


def _check_common_knobs(input_shape: tuple[int, ...], num_classes: int, width: int, depth: int) -> None:
    if len(input_shape) not in (2, 3) or min(input_shape) < 1:
        raise ValueError(f"input_shape must be (C, L) or (C, H, W) with positive sizes; got {input_shape}")
    for knob, value in (("num_classes", num_classes), ("width", width), ("depth", depth)):
        if value < 1:
            raise ValueError(f"{knob} must be a positive integer; got {value}")


# The ops of each family by input rank: (C, L) sequences take the 1-D ops, (C, H, W) images the 2-D ones.
_OPS = {
    2: dict(conv=nn.Conv1d, bn=nn.BatchNorm1d, max_pool=nn.MaxPool1d, global_max=nn.AdaptiveMaxPool1d,
            global_avg=nn.AdaptiveAvgPool1d),
    3: dict(conv=nn.Conv2d, bn=nn.BatchNorm2d, max_pool=nn.MaxPool2d, global_max=nn.AdaptiveMaxPool2d,
            global_avg=nn.AdaptiveAvgPool2d),
}


def _ops(input_shape: tuple[int, ...]) -> SimpleNamespace:
    return SimpleNamespace(**_OPS[len(input_shape)])


# --------------------------------------------------------------------------------------------------- MLP


@register_network("mlp")
def mlp(input_shape, num_classes, width, depth, patch_size=None) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    in_features = _prod(input_shape)
    for _ in range(depth):
        layers += [nn.Linear(in_features, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True)]
        in_features = width
    layers.append(nn.Linear(in_features, num_classes))
    return nn.Sequential(*layers)


def _prod(values) -> int:
    result = 1
    for v in values:
        result *= v
    return result


# --------------------------------------------------------------------------------------------------- mCNN


@register_network("cnn")
def cnn(input_shape, num_classes, width, depth, patch_size=None) -> nn.Module:
    ops = _ops(input_shape)
    layers: list[nn.Module] = []
    in_channels, size = input_shape[0], min(input_shape[1:])
    for i in range(depth):
        out_channels = width * 2**i
        layers += [
            ops.conv(in_channels, out_channels, kernel_size=3, padding=1),
            ops.bn(out_channels),
            nn.ReLU(inplace=True),
        ]
        # The paper pools after the inner stages only (2c and 4c at depth 4); tiny inputs stop pooling early.
        if 0 < i < depth - 1 and size >= 2:
            layers.append(ops.max_pool(2))
            size //= 2
        in_channels = out_channels
    layers += [ops.global_max(1), nn.Flatten(), nn.Linear(in_channels, num_classes)]
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------------------------------- ResNet


class PreActBlock(nn.Module):
    """BN -> ReLU -> conv3x3(stride) -> BN -> ReLU -> conv3x3, plus a (projected) shortcut."""

    def __init__(self, ops: SimpleNamespace, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.bn1 = ops.bn(in_channels)
        self.conv1 = ops.conv(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = ops.bn(out_channels)
        self.conv2 = ops.conv(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = ops.conv(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(x))
        # As in Kuang Liu's PreActBlock, a projection sees the pre-activated input; identity sees raw x.
        residual = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(torch.relu(self.bn2(out)))
        return out + residual


class PreActResNet(nn.Module):
    """3x3 stem, four stages of PreActBlocks (k, 2k, 4k, 8k channels; strides 1, 2, 2, 2), avg pool, Linear."""

    def __init__(self, input_shape, num_classes: int, width: int, blocks: tuple[int, ...]):
        super().__init__()
        ops = _ops(input_shape)
        self.stem = ops.conv(input_shape[0], width, 3, stride=1, padding=1, bias=False)
        stages: list[nn.Module] = []
        in_channels, size = width, min(input_shape[1:])
        for i, num_blocks in enumerate(blocks):
            out_channels = width * 2**i
            stride = _clamped_stride(2 if i > 0 else 1, size)
            size = _conv3_out(size, stride)
            for b in range(num_blocks):
                stages.append(PreActBlock(ops, in_channels, out_channels, stride if b == 0 else 1))
                in_channels = out_channels
        self.stages = nn.Sequential(*stages)
        # No final BN -> ReLU before pooling: Kuang Liu's PreActResNet (and the paper's counts) omit it.
        self.head = nn.Sequential(ops.global_avg(1), nn.Flatten(), nn.Linear(in_channels, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


def _conv3_out(size: int, stride: int) -> int:
    return (size - 1) // stride + 1


def _clamped_stride(stride: int, size: int) -> int:
    # Keeps very short sequences at length >= 2 instead of striding them down to a single position.
    return stride if _conv3_out(size, stride) >= 2 else 1


@register_network("resnet")
def resnet(input_shape, num_classes, width, depth, patch_size=None) -> nn.Module:
    if depth not in RESNET_BLOCKS:
        allowed = ", ".join(str(d) for d in sorted(RESNET_BLOCKS))
        raise ConfigError(f"model.depth: resnet depth must be one of {allowed}; got {depth}")
    return PreActResNet(input_shape, num_classes, width, RESNET_BLOCKS[depth])


# --------------------------------------------------------------------------------------------------- ViT


class ViT(nn.Module):
    def __init__(self, input_shape, num_classes: int, width: int, depth: int, patch_size: int):
        super().__init__()
        ops = _ops(input_shape)
        num_patches = _prod(s // patch_size for s in input_shape[1:])
        self.patch_embed = ops.conv(input_shape[0], width, kernel_size=patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, width))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        heads = _num_heads(width)
        # A plain Sequential of layers: nn.TransformerEncoder warns about nested tensors with norm_first.
        self.blocks = nn.Sequential(
            *(
                nn.TransformerEncoderLayer(
                    d_model=width,
                    nhead=heads,
                    dim_feedforward=4 * width,
                    dropout=0.0,
                    activation="gelu",
                    batch_first=True,
                    norm_first=True,
                )
                for _ in range(depth)
            )
        )
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        tokens = torch.cat([cls, tokens], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(tokens))[:, 0])


def _num_heads(width: int) -> int:
    # One head per 64 dims as in ViT-B, but it has to divide the embedding dim.
    heads = max(1, width // 64)
    while width % heads:
        heads -= 1
    return heads


@register_network("vit")
def vit(input_shape, num_classes, width, depth, patch_size=4) -> nn.Module:
    spatial = input_shape[1:]
    if patch_size < 1 or any(s % patch_size for s in spatial):
        raise ConfigError(
            f"model.patch_size: vit patch_size must be a positive divisor of the input's spatial size {spatial}; got {patch_size}"
        )
    return ViT(input_shape, num_classes, width, depth, patch_size)
