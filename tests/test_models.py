"""fastsmooth.models: shapes at the papers' input sizes, parameter counts, key layouts compatible
with the authors' code, and checkpoint loading in every accepted format."""
import collections
import re
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from fastsmooth import models
from fastsmooth.models import CheckpointError, CohenCifarResNet, NormalizeLayer, build, load_checkpoint


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.fixture(scope="module")
def resnet50_6ch() -> nn.Module:
    return build("imagenet_resnet50_6ch").eval()


def trained_like(net: nn.Module, shape) -> nn.Module:
    """Give BatchNorm non-trivial running statistics, so a round trip that lost them would show."""
    torch.manual_seed(1)
    net.train()
    with torch.no_grad():
        net(torch.rand(*shape))
    return net.eval()


# --- registry -------------------------------------------------------------------------------

def test_available_lists_every_paper_network():
    assert set(models.available()) >= {"mnist_cnn", "cifar_resnet18", "imagenet_resnet50",
                                       "imagenet_resnet50_6ch", "wrn40_2", "cifar_resnet110",
                                       "cohen_cifar_resnet110", "cohen_imagenet_resnet50"}


def test_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError, match="unknown model 'resnet9000'.*cifar_resnet18.*wrn40_2"):
        build("resnet9000")


def test_build_passes_kwargs():
    net = build("cifar_resnet18", in_channels=3, num_classes=100)
    assert net.conv1.in_channels == 3 and net.linear.out_features == 100


# --- shapes at the papers' input sizes, parameter counts ------------------------------------

@pytest.mark.parametrize("name, shape, classes, params", [
    ("mnist_cnn", (2, 2, 28, 28), 10, 3_320_922),
    ("cifar_resnet18", (2, 6, 32, 32), 10, 11_175_690),   # kuangliu ResNet18 11,173,962 + 3*64*9
    ("wrn40_2", (2, 3, 32, 32), 10, 2_243_546),
    ("cifar_resnet110", (2, 3, 32, 32), 10, 1_730_714),
])
def test_small_networks_shapes_and_sizes(name, shape, classes, params):
    net = build(name).eval()
    assert n_params(net) == params
    with torch.no_grad():
        out = net(torch.rand(*shape))
    assert out.shape == (shape[0], classes) and torch.isfinite(out).all()


def test_resnet50_parameter_counts(resnet50_6ch):
    assert n_params(build("imagenet_resnet50")) == 25_557_032          # torchvision resnet50
    assert n_params(resnet50_6ch) == 25_557_032 + 3 * 64 * 7 * 7        # 6-channel stem: +9408
    assert n_params(build("cohen_imagenet_resnet50")) == 25_557_032


@pytest.mark.parametrize("size", [299, 224])  # ImageNet patch smoothing / l0 ablation
def test_resnet50_6ch_forward(resnet50_6ch, size):
    with torch.no_grad():
        out = resnet50_6ch(torch.rand(1, 6, size, size))
    assert out.shape == (1, 1000) and torch.isfinite(out).all()


# --- key layouts of the authors' code --------------------------------------------------------

def test_state_dict_keys_match_reference_layouts():
    mnist = set(build("mnist_cnn").state_dict())
    assert mnist == {f"{i}.{p}" for i in (0, 2, 5, 7, 9) for p in ("weight", "bias")}

    r18 = set(build("cifar_resnet18").state_dict())
    assert {"conv1.weight", "bn1.running_mean", "layer2.0.shortcut.0.weight", "layer2.0.shortcut.1.weight",
            "layer4.1.bn2.bias", "linear.weight"} <= r18
    assert not any(k.startswith("layer1.0.shortcut") for k in r18)  # identity shortcut: no params

    r50 = set(build("imagenet_resnet50").state_dict())
    assert len(r50) == 320  # same count as torchvision's resnet50().state_dict()
    assert {"conv1.weight", "layer1.0.downsample.0.weight", "layer1.0.downsample.1.running_var",
            "layer4.2.conv3.weight", "layer4.2.bn3.weight", "fc.weight", "fc.bias"} <= r50
    assert build("imagenet_resnet50").layer2[0].conv2.stride == (2, 2)  # v1.5: stride on the 3x3

    wrn = set(build("wrn40_2").state_dict())
    assert {"conv1.weight", "block1.layer.0.bn1.weight", "block1.layer.0.convShortcut.weight",
            "block3.layer.5.conv2.weight", "bn1.weight", "fc.weight"} <= wrn
    assert "block1.layer.1.convShortcut.weight" not in wrn

    r110 = set(build("cifar_resnet110").state_dict())
    assert {"conv1.weight", "layer2.0.downsample.0.weight", "layer3.17.bn2.weight", "fc.bias"} <= r110
    cohen = set(build("cohen_cifar_resnet110").state_dict())
    assert cohen == {"1." + k for k in r110}  # NormalizeLayer adds no keys, like Cohen's


def test_normalize_layer():
    layer = NormalizeLayer([0.5, 0.25], [0.5, 2.0])
    x = torch.rand(3, 2, 4, 5)
    expected = torch.stack([(x[:, 0] - 0.5) / 0.5, (x[:, 1] - 0.25) / 2.0], 1)
    torch.testing.assert_close(layer(x), expected)
    assert layer.state_dict() == {}
    with pytest.raises(ValueError, match="expects 2 channels"):
        layer(torch.rand(1, 3, 4, 4))


def test_cohen_wrapper_normalizes_before_the_network():
    built = build("cohen_cifar_resnet110")
    assert isinstance(built[0], NormalizeLayer) and n_params(built) == 1_730_714
    mean = torch.tensor(models.CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(models.CIFAR10_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(built[0].mean, mean)
    torch.testing.assert_close(built[0].std, std)
    torch.testing.assert_close(build("cohen_imagenet_resnet50")[0].std.flatten(), torch.tensor(models.IMAGENET_STD))
    wrapped = small_cohen()  # same wrapper around a shallower net, to keep the forward cheap
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(wrapped(x), wrapped[1]((x - mean) / std))


# --- checkpoint round trips ------------------------------------------------------------------

def small_resnet() -> CohenCifarResNet:
    """Cohen's CIFAR ResNet at depth 8: the same module types as ResNet-110 (BN, downsample
    shortcuts), 1/14 of the CPU time, which keeps the many round trips fast."""
    return CohenCifarResNet(depth=8).eval()


def small_cohen() -> nn.Sequential:
    return nn.Sequential(NormalizeLayer(models.CIFAR10_MEAN, models.CIFAR10_STD), small_resnet())


@pytest.fixture(scope="module")
def source():
    """A small CIFAR ResNet with non-default weights and BN statistics, its input, and its output."""
    net = trained_like(small_resnet(), (4, 3, 32, 32))
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        y = net(x)
    return net, x, y


def _wrap(fmt: str, net: nn.Module):
    state = net.state_dict()
    dp = nn.DataParallel(net).state_dict()  # CPU-only DataParallel still adds the module. prefix
    return {
        "raw": state,
        "dataparallel": dp,
        "net": {"net": dp, "acc": 93.2, "epoch": 199},                  # kuangliu / patch / l0 scripts
        "net_numpy_acc": {"net": state, "acc": np.float64(93.2), "epoch": np.int64(199)},
        "state_dict": {"state_dict": state},
        "model_state_dict": {"model_state_dict": dp, "epoch": 3},
        "old_bn": {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")},
    }[fmt]


@pytest.mark.parametrize("fmt", ["raw", "dataparallel", "net", "net_numpy_acc", "state_dict",
                                 "model_state_dict", "old_bn"])
@pytest.mark.parametrize("via_file", [True, False])
def test_round_trip(fmt, via_file, source, tmp_path):
    net, x, y = source
    obj = _wrap(fmt, net)
    if via_file:
        torch.save(obj, tmp_path / "ckpt.pth")
        obj = tmp_path / "ckpt.pth"
    fresh = small_resnet()
    result = load_checkpoint(fresh, obj)
    assert result.missing_keys == [] and result.unexpected_keys == []
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), y, rtol=0, atol=0)


def test_round_trip_cohen_format(source, tmp_path):
    """Cohen et al.: {'epoch', 'arch', 'state_dict' of Sequential(Normalize, DataParallel(net)), 'optimizer'}."""
    net, x, _ = source
    wrapped = nn.Sequential(NormalizeLayer(models.CIFAR10_MEAN, models.CIFAR10_STD), nn.DataParallel(net))
    optimizer = torch.optim.SGD(wrapped.parameters(), lr=0.1, momentum=0.9)
    ckpt = {"epoch": 90, "arch": "cifar_resnet110", "state_dict": wrapped.state_dict(),
            "optimizer": optimizer.state_dict()}
    assert "1.module.conv1.weight" in ckpt["state_dict"]
    torch.save(ckpt, tmp_path / "checkpoint.pth.tar")
    fresh = small_cohen()  # build("cohen_cifar_resnet110") has these keys at depth 110 (tested above)
    load_checkpoint(fresh, tmp_path / "checkpoint.pth.tar")
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), wrapped.eval()(x), rtol=0, atol=0)


@pytest.mark.parametrize("name, shape", [("mnist_cnn", (2, 2, 28, 28)), ("wrn40_2", (2, 3, 32, 32))])
def test_round_trip_other_networks(name, shape, tmp_path):
    net = trained_like(build(name), shape)
    torch.save({"net": nn.DataParallel(net).state_dict(), "acc": 99.0, "epoch": 1}, tmp_path / "c.pth")
    fresh = build(name).eval()
    load_checkpoint(fresh, str(tmp_path / "c.pth"))
    x = torch.rand(*shape)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), net(x), rtol=0, atol=0)


# --- clear errors ----------------------------------------------------------------------------

def test_unknown_format_names_the_keys_found():
    with pytest.raises(CheckpointError, match=r"no state dict found.*'optim', 'weights'.*'state_dict', 'model_state_dict', 'net'"):
        load_checkpoint(build("mnist_cnn"), {"optim": {"lr": 0.1}, "weights": [1, 2]})
    with pytest.raises(CheckpointError, match="checkpoint is a list"):
        load_checkpoint(build("mnist_cnn"), [torch.zeros(1)])


def test_three_channel_checkpoint_into_six_channel_model_says_so():
    ckpt = build("cifar_resnet18", in_channels=3).state_dict()
    model = build("cifar_resnet18")  # 6 channels
    before = model.conv1.weight.clone()
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(model, {"net": ckpt})
    msg = str(info.value)
    assert "conv1.weight: checkpoint (64, 3, 3, 3) vs model (64, 6, 3, 3)" in msg
    assert "trained on 3-channel inputs but the model takes 6" in msg
    assert "in_channels=3" in msg
    assert torch.equal(model.conv1.weight, before)  # nothing loaded on failure


def test_class_count_mismatch_says_so():
    with pytest.raises(CheckpointError, match=r"9\.weight: checkpoint \(100, 100\) vs model \(10, 100\).*num_classes=100"):
        load_checkpoint(build("mnist_cnn"), build("mnist_cnn", num_classes=100).state_dict())


def test_key_mismatch_strict_and_cohen_hint(source):
    net, _, _ = source
    cohen_state = nn.Sequential(NormalizeLayer(models.CIFAR10_MEAN, models.CIFAR10_STD),
                                nn.DataParallel(net)).state_dict()
    with pytest.raises(CheckpointError, match="(?s)missing from checkpoint: conv1.weight.*cohen_architecture"):
        load_checkpoint(small_resnet(), cohen_state)


def test_non_strict_reports_missing_and_unexpected():
    state = build("mnist_cnn").state_dict()
    state.pop("9.bias")
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"(?s)missing from checkpoint: 9\.bias.*unexpected in checkpoint: extra\.weight"):
        load_checkpoint(build("mnist_cnn"), state)
    result = load_checkpoint(build("mnist_cnn"), state, strict=False)
    assert result.missing_keys == ["9.bias"] and result.unexpected_keys == ["extra.weight"]


class NotATensor:
    """A custom class: torch.load(weights_only=True) must refuse to unpickle it."""


def test_pickled_objects_need_explicit_opt_in(tmp_path):
    net = build("mnist_cnn")
    torch.save({"net": net.state_dict(), "args": NotATensor()}, tmp_path / "c.pth")
    with pytest.raises(CheckpointError, match="NotATensor.*allow_pickle=True"):
        load_checkpoint(build("mnist_cnn"), tmp_path / "c.pth")
    fresh = build("mnist_cnn")
    with pytest.warns(UserWarning, match="weights_only=False"):
        load_checkpoint(fresh, tmp_path / "c.pth", allow_pickle=True)
    assert torch.equal(fresh[0].weight, net[0].weight)
