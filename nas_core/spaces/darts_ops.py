"""The DARTS candidate operations (``quark0/darts`` ``cnn/operations.py``), for both networks.

C in = C out everywhere; stride 2 only on the two cell-input edges of a reduction cell. The search
supernet builds them with non-affine BN that always normalises with batch statistics
(``track_running_stats=False``, as AutoDL's search models); the stand-alone network with affine BN.
Module layouts (``op.1.weight`` ...) mirror the reference so parameter counts match to the unit.

One deliberate extension: :class:`FactorizedReduce` pads odd inputs by one pixel (bottom/right)
before its shifted branch, so both halves give ceil(H/2) rows like every other stride-2 op; on even
inputs (every reference setting) it is exactly the reference op.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def bn(c: int, affine: bool) -> nn.BatchNorm2d:
    """Affine BN for stand-alone nets; for the search net non-affine, batch statistics only."""
    if affine:
        return nn.BatchNorm2d(c)
    return nn.BatchNorm2d(c, affine=False, track_running_stats=False)


class ReLUConvBN(nn.Module):
    def __init__(self, c_in: int, c_out: int, k: int, stride: int, pad: int, affine: bool = True) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False), nn.Conv2d(c_in, c_out, k, stride=stride, padding=pad, bias=False), bn(c_out, affine)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class DilConv(nn.Module):
    """ReLU, depthwise kxk (dilated), 1x1, BN."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int, pad: int, dilation: int, affine: bool = True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, k, stride=stride, padding=pad, dilation=dilation, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            bn(c_out, affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class SepConv(nn.Module):
    """Two stacked [ReLU, depthwise kxk, 1x1, BN]; only the first is strided."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int, pad: int, affine: bool = True) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, k, stride=stride, padding=pad, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_in, 1, bias=False),
            bn(c_in, affine),
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, k, stride=1, padding=pad, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            bn(c_out, affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


def shifted(x: torch.Tensor) -> torch.Tensor:
    """The input shifted by one pixel in H and W; odd sizes padded so the stride-2 conv gives ceil(H/2)."""
    h, w = x.shape[-2:]
    if h % 2 or w % 2:
        x = F.pad(x, (0, w % 2, 0, h % 2))
    return x[:, :, 1:, 1:]


class FactorizedReduce(nn.Module):
    """ReLU, two 1x1 stride-2 convs (the second on the input shifted by one pixel), concat, BN.

    The stride is applied by slicing the input (``x[:, :, ::2, ::2]``) before stride-1 convs: the same
    maths and parameters for a 1x1 kernel, and it avoids a heap corruption in PyTorch 2.13's oneDNN
    backward of channels-last stride-2 1x1 convs with a few input channels (PC-DARTS's C/K edges).
    """

    def __init__(self, c_in: int, c_out: int, affine: bool = True) -> None:
        super().__init__()
        if c_out % 2:
            raise ValueError(f"FactorizedReduce needs an even channel count, got {c_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, bias=False)
        self.bn = bn(c_out, affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        return self.bn(torch.cat([self.conv_1(x[:, :, ::2, ::2]), self.conv_2(shifted(x)[:, :, ::2, ::2])], dim=1))


class Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Zero(nn.Module):
    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class Pool(nn.Module):
    """3x3 max or average pool (average excludes padding); in the search net followed by a non-affine BN."""

    def __init__(self, kind: str, c: int, stride: int, search_bn: bool) -> None:
        super().__init__()
        self.kind = kind
        self.stride = stride
        if kind == "max":
            self.pool: nn.Module = nn.MaxPool2d(3, stride=stride, padding=1)
        else:
            self.pool = nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
        self.bn = bn(c, affine=False) if search_bn else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pool(x)
        return self.bn(y) if self.bn is not None else y


def make_op(name: str, c: int, stride: int, affine: bool, search: bool = False) -> nn.Module:
    """One candidate op of the DARTS space; ``search`` adds the extra BN after pools."""
    if name == "none":
        return Zero(stride)
    if name == "max_pool_3x3":
        return Pool("max", c, stride, search)
    if name == "avg_pool_3x3":
        return Pool("avg", c, stride, search)
    if name == "skip_connect":
        return Identity() if stride == 1 else FactorizedReduce(c, c, affine)
    if name == "sep_conv_3x3":
        return SepConv(c, c, 3, stride, 1, affine)
    if name == "sep_conv_5x5":
        return SepConv(c, c, 5, stride, 2, affine)
    if name == "dil_conv_3x3":
        return DilConv(c, c, 3, stride, 2, 2, affine)
    if name == "dil_conv_5x5":
        return DilConv(c, c, 5, stride, 4, 2, affine)
    raise ValueError(f"unknown DARTS op {name!r}")


def drop_path(x: torch.Tensor, prob: float) -> torch.Tensor:
    """Per-sample Bernoulli drop of a whole op output, rescaled by 1/keep (DARTS ``utils.drop_path``)."""
    if prob <= 0.0:
        return x
    keep = 1.0 - prob
    mask = torch.empty(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device).bernoulli_(keep)
    return x * (mask / keep)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """PC-DARTS / ShuffleNet shuffle: (N, g, C/g, H, W) -> swap the two channel axes -> flatten."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class AuxiliaryHead(nn.Module):
    """DARTS' CIFAR auxiliary classifier; built for an 8x8 input (smaller than 8x8 fails at its 2x2 conv)."""

    def __init__(self, c: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=False),  # the reference's is in place; harmless there, not when the head sits last
            nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False),
            nn.Conv2d(c, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))
