"""The NTK's convolutions (nas_core.proxies.ntk_conv): F.conv2d's values and autograd's gradients, other backward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nas_core.proxies import NTKNet, init_proxy, ntk_conv, per_sample_ntk_rows


@pytest.mark.parametrize(
    ("c_in", "c_out", "k", "padding", "stride"),
    [
        (3, 9, 3, 1, 1),
        (6, 3, 1, 0, 1),
        (4, 5, 5, 2, 1),
        (3, 4, 3, 0, 1),
        (3, 6, 3, 1, 2),
        (2, 3, 3, 3, 1),
        (12, 36, 3, 1, 1),
    ],
)
@pytest.mark.parametrize("input_grad", [True, False])
def test_conv2d_values_and_gradients_equal_pytorch(c_in, c_out, k, padding, stride, input_grad) -> None:
    gen = torch.Generator().manual_seed(c_in * 100 + k)
    x = torch.randn(5, c_in, 9, 9, generator=gen)
    w = torch.randn(c_out, c_in, k, k, generator=gen)
    xa, wa = x.clone().requires_grad_(input_grad), w.clone().requires_grad_()
    xb, wb = x.clone().requires_grad_(input_grad), w.clone().requires_grad_()
    ya = ntk_conv.conv2d(xa, wa, padding, stride)
    yb = F.conv2d(xb, wb, None, stride, padding)
    assert ya.shape == yb.shape and ya.is_contiguous()
    assert torch.allclose(ya, yb, atol=1e-5)
    g = torch.randn(yb.shape, generator=gen)
    ga = torch.autograd.grad(ya, [xa, wa] if input_grad else [wa], g)
    gb = torch.autograd.grad(yb, [xb, wb] if input_grad else [wb], g)
    for a, b in zip(ga, gb):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-5)


def test_module_swap_keeps_parameters_and_leaves_other_convs_alone() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.Conv2d(4, 4, 3, bias=True))
    names = [n for n, _ in net.named_parameters()]
    ntk_conv.use_fast_convs(net)
    assert type(net[0]) is ntk_conv.Conv2d and type(net[1]) is ntk_conv.Conv2d
    assert [n for n, _ in net.named_parameters()] == names
    x = torch.randn(2, 3, 6, 6)
    ref = F.conv2d(F.conv2d(x, net[0].weight, None, 1, 1), net[1].weight, net[1].bias)
    assert torch.allclose(net(x), ref, atol=1e-5)  # the biased conv falls back to nn.Conv2d's forward


def test_ntk_rows_equal_those_of_the_plain_convolutions(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every per-sample gradient row of the proxy net, fast convolutions against PyTorch's own."""
    x = torch.randn(12, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    w = torch.softmax(torch.randn(6, 5, generator=torch.Generator().manual_seed(1)), -1)
    w[0, 2] = w[3, 3] = 0.0  # a pruned 1x1 and a pruned 3x3

    def rows() -> torch.Tensor:
        torch.manual_seed(0)
        net = NTKNet(10, 3)
        init_proxy(net, "kaiming", "fan_out")
        params = [p for name, p in net.named_parameters() if "weight" in name]
        return per_sample_ntk_rows(net(x, w).sum(1), params)

    fast = rows()
    monkeypatch.setattr(ntk_conv, "conv2d", lambda x, w, padding=0, stride=1: F.conv2d(x, w, None, stride, padding))
    plain = rows()
    assert fast.shape == plain.shape
    assert torch.allclose(fast, plain, rtol=1e-4, atol=1e-5)
