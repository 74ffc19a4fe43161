"""Tests for the network registry: every family on sequences and images, and the paper's parameter counts."""

import pytest
import torch
from twoworlds.lightning_modules.networks import (
    NETWORKS,
    build_network,
    count_parameters,
    register_network,
)

INPUT_SHAPES = {"seq": (1, 40), "image": (3, 32, 32)}
DEPTHS = {"mlp": 2, "cnn": 3, "resnet": 10, "vit": 2}
NUM_CLASSES = 10


def _build(name, input_shape, width=8, depth=None, patch_size=4):
    torch.manual_seed(0)
    depth = DEPTHS[name] if depth is None else depth
    return build_network(name, input_shape, NUM_CLASSES, width, depth, patch_size)


def test_registry_has_the_four_families():
    assert sorted(NETWORKS) == ["cnn", "mlp", "resnet", "vit"]


@pytest.mark.parametrize("kind", sorted(INPUT_SHAPES))
@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_forward_backward(name, kind):
    input_shape = INPUT_SHAPES[kind]
    net = _build(name, input_shape, width=16 if name == "vit" else 8)
    net.train()
    x = torch.randn(4, *input_shape)
    y = torch.randint(0, NUM_CLASSES, (4,))

    logits = net(x)
    assert logits.shape == (4, NUM_CLASSES)
    assert torch.isfinite(logits).all()

    torch.nn.functional.cross_entropy(logits, y).backward()
    for param_name, param in net.named_parameters():
        assert param.grad is not None, param_name
        assert torch.isfinite(param.grad).all(), param_name

    assert net.num_parameters == count_parameters(net) > 0


@pytest.mark.parametrize(
    ("name", "width", "depth", "expected"),
    [
        ("cnn", 16, 4, 99_210),
        ("cnn", 64, 4, 1_558_026),
        ("resnet", 16, 18, 700_762),
        ("resnet", 64, 18, 11_171_146),
    ],
)
def test_parameter_counts_match_the_paper(name, width, depth, expected):
    net = _build(name, (3, 32, 32), width=width, depth=depth)
    assert net.num_parameters == expected


@pytest.mark.parametrize("length", [4, 8])
def test_resnet_keeps_short_sequences_alive(length):
    net = _build("resnet", (1, length), depth=18)
    assert net(torch.randn(4, 1, length)).shape == (4, NUM_CLASSES)


@pytest.mark.parametrize(("width", "heads"), [(16, 1), (192, 3), (200, 2)])
def test_vit_heads_divide_width(width, heads):
    net = _build("vit", (1, 40), width=width, depth=1)
    assert net.blocks[0].self_attn.num_heads == heads


def test_count_parameters_skips_frozen():
    net = _build("mlp", (1, 40))
    total = count_parameters(net)
    head = net[-1]
    head.requires_grad_(False)
    assert count_parameters(net) == total - sum(p.numel() for p in head.parameters())


def test_unknown_network_lists_known_names():
    with pytest.raises(ValueError, match=r"unknown network 'x'; known: cnn, mlp, resnet, vit"):
        build_network("x", (1, 40), NUM_CLASSES, 8, 2)


def test_duplicate_registration_raises():
    with pytest.raises(ValueError, match="mlp"):
        register_network("mlp")(lambda *args: None)
    assert NETWORKS["mlp"].__name__ == "mlp"


def test_bad_resnet_depth_raises():
    with pytest.raises(ValueError, match=r"depth.*10, 18, 34.*12"):
        build_network("resnet", (3, 32, 32), NUM_CLASSES, 8, 12)


@pytest.mark.parametrize(("input_shape", "patch_size"), [((3, 32, 32), 5), ((1, 40), 3), ((1, 40), 0)])
def test_bad_vit_patch_size_raises(input_shape, patch_size):
    with pytest.raises(ValueError, match=rf"patch_size.*{patch_size}"):
        build_network("vit", input_shape, NUM_CLASSES, 16, 2, patch_size=patch_size)


@pytest.mark.parametrize(("knob", "kwargs"), [("width", {"width": 0}), ("depth", {"depth": 0})])
def test_non_positive_knobs_raise(knob, kwargs):
    args = {"width": 8, "depth": 2} | kwargs
    with pytest.raises(ValueError, match=knob):
        build_network("mlp", (1, 40), NUM_CLASSES, **args)
