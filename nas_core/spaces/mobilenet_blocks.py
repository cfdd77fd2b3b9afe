"""Building blocks of the MobileNetV2-style space: the (mixed-kernel) inverted residual and MAC formulas.

One block class serves every genotype form. Its hidden (expanded) channels are split into groups, one per
kernel size, each group with its own depthwise kernel (MixConv-style channel groups). That is also exactly
the AtomNAS block: AtomNAS sums one branch per kernel size after each branch's own 1x1 projection, which
equals one projection over the concatenated hidden channels; a branch's expand filters are rows of the
shared 1x1 expansion and its BN channels are a slice of the shared BN. So a plain MBConv is the
one-group case, an AtomNAS supernet block is the three-group case at full width, and shrinking atoms
means slicing contiguous channel ranges of ``conv_expand``/``bn_expand``/``dw[i]``/``bn_dw``/``conv_project``.

The MAC formulas here are written from the layer shapes alone (no hooks), so tests can check thop's count
against them and the search strategies can price a block (ProxylessNAS's expected MACs, AtomNAS's
per-atom cost) without running it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

KERNELS: tuple[int, ...] = (3, 5, 7)


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to a multiple of ``divisor`` without losing more than 10%, as MobileNetV2 does."""
    min_value = divisor if min_value is None else min_value
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return int(new)


def conv_out(size: int, stride: int) -> int:
    """Spatial size after a same-padded odd-kernel convolution (padding k // 2) with ``stride``."""
    return (size - 1) // stride + 1


def init_weights(model: nn.Module) -> None:
    """MobileNetV2's reference initialisation (ProxylessNAS's ``he_fout`` too): kaiming fan-out convs, unit BN,
    small-normal classifier."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def activation(name: str) -> nn.Module:
    """ReLU6 (MobileNetV2, ProxylessNAS) or ReLU (AtomNAS's reference)."""
    if name == "relu6":
        return nn.ReLU6(inplace=True)
    if name == "relu":
        return nn.ReLU(inplace=True)
    raise ValueError(f"unknown activation {name!r}; use 'relu6' or 'relu'")


class InvertedResidual(nn.Module):
    """1x1 expand + BN + act, depthwise kxk per kernel group + BN + act, 1x1 project + BN, residual if shapes match.

    ``groups`` is ``((kernel, hidden_channels), ...)`` in increasing kernel order. ``expand=False`` (expansion
    ratio 1) drops the expansion conv, as MobileNetV2's first block does; then the only group must have
    ``c_in`` channels.
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        stride: int,
        groups: Sequence[tuple[int, int]],
        expand: bool = True,
        act: str = "relu6",
    ) -> None:
        super().__init__()
        groups = tuple((int(k), int(h)) for k, h in groups)
        if not groups or any(h < 1 or k not in KERNELS for k, h in groups):
            raise ValueError(f"bad kernel groups {groups!r}")
        hidden = sum(h for _, h in groups)
        if not expand and (len(groups) != 1 or hidden != c_in):
            raise ValueError("a block without expansion has one kernel group of c_in channels")
        self.c_in, self.c_out, self.stride = c_in, c_out, stride
        self.kernels = tuple(k for k, _ in groups)
        self.hidden = tuple(h for _, h in groups)
        self.use_residual = stride == 1 and c_in == c_out
        if expand:
            self.conv_expand: nn.Conv2d | None = nn.Conv2d(c_in, hidden, 1, bias=False)
            self.bn_expand: nn.BatchNorm2d | None = nn.BatchNorm2d(hidden)
            self.act_expand: nn.Module | None = activation(act)
        else:
            self.conv_expand = self.bn_expand = self.act_expand = None
        self.dw = nn.ModuleList(nn.Conv2d(h, h, k, stride, k // 2, groups=h, bias=False) for k, h in groups)
        self.bn_dw = nn.BatchNorm2d(hidden)
        self.act_dw = activation(act)
        self.conv_project = nn.Conv2d(hidden, c_out, 1, bias=False)
        self.bn_project = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if self.conv_expand is not None:
            h = self.act_expand(self.bn_expand(self.conv_expand(h)))
        if len(self.dw) == 1:
            h = self.dw[0](h)
        else:
            h = torch.cat([conv(part) for conv, part in zip(self.dw, h.split(list(self.hidden), dim=1))], dim=1)
        h = self.bn_project(self.conv_project(self.act_dw(self.bn_dw(h))))
        return x + h if self.use_residual else h

    def extra_repr(self) -> str:
        mix = "+".join(f"k{k}:{h}" for k, h in zip(self.kernels, self.hidden))
        return f"{self.c_in}->{self.c_out}, stride={self.stride}, {mix}, residual={self.use_residual}"


# --------------------------------------------------------------------------------------------- MAC formulas


def block_macs(
    c_in: int,
    c_out: int,
    stride: int,
    groups: Sequence[tuple[int, int]],
    expand: bool,
    in_hw: tuple[int, int],
) -> int:
    """MACs of one inverted residual (convs only, paper convention) for an input of spatial size ``in_hw``.

    Expansion: c_in*hidden*H*W; depthwise: k*k*h per output pixel per group; projection: hidden*c_out per
    output pixel. A mixed block costs exactly the sum of its single-kernel groups.
    """
    h_in, w_in = in_hw
    h_out, w_out = conv_out(h_in, stride), conv_out(w_in, stride)
    hidden = sum(h for _, h in groups)
    macs = c_in * hidden * h_in * w_in if expand else 0
    macs += sum(k * k * h for k, h in groups) * h_out * w_out
    macs += hidden * c_out * h_out * w_out
    return int(macs)


def atom_macs(c_in: int, c_out: int, stride: int, kernel: int, in_hw: tuple[int, int]) -> int:
    """MACs of one hidden channel (one AtomNAS atom) of a kernel-``kernel`` group: its expand row, depthwise
    filter and projection column."""
    return block_macs(c_in, c_out, stride, ((kernel, 1),), True, in_hw)


def conv_macs(c_in: int, c_out: int, kernel: int, stride: int, in_hw: tuple[int, int], groups: int = 1) -> int:
    """MACs of a plain same-padded convolution."""
    h_out, w_out = conv_out(in_hw[0], stride), conv_out(in_hw[1], stride)
    return int(c_out * (c_in // groups) * kernel * kernel * h_out * w_out)
