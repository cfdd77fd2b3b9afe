"""The native NTK convolutions (nas_core.proxies.cpu_kernels): built for real, equal to PyTorch's, a clean fallback."""

from __future__ import annotations

import logging
import platform
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from nas_core.proxies import NTKNet, batched_ntk_rows, cpu_kernels, init_proxy, ntk_conv, per_sample_ntk_rows
from nas_core.spaces import nb201_arch as nb201

needs_compiler = pytest.mark.skipif(cpu_kernels._compiler() is None, reason="no C++ compiler on this machine")


@pytest.fixture
def fresh_build(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """A cache of its own and no loaded library: the next ``library()`` builds from the source."""
    monkeypatch.setenv("NAS_KERNEL_CACHE", str(tmp_path / "kernels"))
    monkeypatch.setattr(cpu_kernels, "_state", {})
    return tmp_path / "kernels"


@needs_compiler
def test_the_kernels_build_into_the_cache_and_load_from_it(fresh_build: Path) -> None:
    lib = cpu_kernels.library()
    assert lib is not None and lib.nk_lanes() in (4, 8, 16)
    built = list(fresh_build.glob("cpu_kernels-*.so"))
    assert len(built) == 1
    stamp = built[0].stat().st_mtime_ns
    cpu_kernels._state.clear()  # as a new process: found in the cache, not built again
    assert cpu_kernels.library() is not None
    assert [p.stat().st_mtime_ns for p in fresh_build.glob("cpu_kernels-*.so")] == [stamp]


@needs_compiler
@pytest.mark.parametrize(
    ("c_in", "c_out", "k", "stride", "size"),
    [
        (3, 9, 3, 1, 32),
        (6, 18, 3, 1, 16),
        (12, 36, 3, 1, 8),
        (5, 3, 3, 1, 4),
        (3, 6, 3, 2, 32),
        (6, 12, 3, 2, 16),
        (3, 9, 1, 1, 32),
        (12, 24, 1, 1, 8),
        (5, 7, 1, 1, 16),
    ],
)
def test_native_convs_equal_pytorch_values_and_gradients(c_in, c_out, k, stride, size) -> None:
    gen = torch.Generator().manual_seed(c_in * 100 + c_out + k + stride)
    x = torch.randn(6, c_in, size, size, generator=gen)
    w = torch.randn(c_out, c_in, k, k, generator=gen)
    xa, wa = x.clone().requires_grad_(), w.clone().requires_grad_()
    xb, wb = x.clone().requires_grad_(), w.clone().requires_grad_()
    pad = k // 2
    ya = ntk_conv.conv2d(xa, wa, pad, stride)
    yb = F.conv2d(xb, wb, None, stride, pad)
    assert "Native" in type(ya.grad_fn).__name__  # the kernels ran, not the fallback
    assert ya.shape == yb.shape and ya.is_contiguous()
    torch.testing.assert_close(ya, yb, rtol=1e-5, atol=1e-4)
    g = torch.randn(yb.shape, generator=gen)
    for a, b in zip(torch.autograd.grad(ya, [xa, wa], g), torch.autograd.grad(yb, [xb, wb], g)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-3)


@needs_compiler
def test_only_the_weight_gradient_when_the_input_needs_none() -> None:
    x = torch.randn(4, 3, 16, 16)
    w = torch.randn(6, 3, 3, 3, requires_grad=True)
    (gw,) = torch.autograd.grad(ntk_conv.conv2d(x, w, 1).sum(), [w])
    (ref,) = torch.autograd.grad(F.conv2d(x, w, None, 1, 1).sum(), [w])
    torch.testing.assert_close(gw, ref, rtol=1e-4, atol=1e-3)


@needs_compiler
def test_ntk_rows_at_32x32_equal_those_of_pytorch_convs_and_of_the_batched_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every NTK row of the proxy net on CIFAR-sized inputs (all three kernels and both stride-2 convs run),
    against plain ``F.conv2d`` and against the vmap-batched backward (where the kernels fall back)."""
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    w = torch.softmax(torch.randn(6, 5, generator=torch.Generator().manual_seed(1)), -1)
    w[1, 2] = 0.0  # a pruned 1x1

    def net_and_params() -> tuple[NTKNet, list[torch.Tensor]]:
        torch.manual_seed(0)
        net = NTKNet(10, 3)
        init_proxy(net, "kaiming", "fan_out")
        return net, [p for name, p in net.named_parameters() if "weight" in name]

    net, params = net_and_params()
    fast = per_sample_ntk_rows(net(x, w).sum(1), params)
    batched = batched_ntk_rows(net(x, w).sum(1), params)
    monkeypatch.setattr(ntk_conv, "conv2d", lambda x, w, padding=0, stride=1: F.conv2d(x, w, None, stride, padding))
    plain_bn = lambda x, w, b, eps=1e-5: F.batch_norm(x, None, None, w, b, True, 0.0, eps)  # noqa: E731
    monkeypatch.setattr(ntk_conv, "batch_norm", plain_bn)
    monkeypatch.setattr(ntk_conv, "avg_pool_3x3_exclude_pad", nb201.avg_pool_3x3_exclude_pad)
    net, params = net_and_params()
    plain = per_sample_ntk_rows(net(x, w).sum(1), params)
    assert fast.shape == plain.shape == batched.shape
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(batched, plain, rtol=1e-4, atol=1e-5)


@needs_compiler
@pytest.mark.parametrize("shape", [(6, 9, 32, 32), (5, 4, 3, 3), (7, 12, 8, 8)])
def test_batch_norm_backward_equals_pytorch(shape: tuple[int, ...]) -> None:
    """dx, dgamma and dbeta of the batch-statistics BN (planes of 9 pixels: the kernel's scalar tail)."""
    gen = torch.Generator().manual_seed(shape[1])
    x = torch.randn(shape, generator=gen) * 3 + 2
    gamma, beta = torch.rand(shape[1], generator=gen) + 0.5, torch.randn(shape[1], generator=gen)
    g = torch.randn(shape, generator=gen)
    ins_a = [t.clone().requires_grad_() for t in (x, gamma, beta)]
    ins_b = [t.clone().requires_grad_() for t in (x, gamma, beta)]
    ya = ntk_conv.batch_norm(*ins_a)
    yb = F.batch_norm(ins_b[0], None, None, ins_b[1], ins_b[2], True, 0.0, 1e-5)
    assert "Native" in type(ya.grad_fn).__name__
    torch.testing.assert_close(ya, yb)
    for a, b in zip(torch.autograd.grad(ya, ins_a, g), torch.autograd.grad(yb, ins_b, g)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    (dgamma,) = torch.autograd.grad(ntk_conv.batch_norm(*ins_a), [ins_a[1]], g)  # dgamma only
    yb = F.batch_norm(ins_b[0], None, None, ins_b[1], ins_b[2], True, 0.0, 1e-5)
    torch.testing.assert_close(dgamma, torch.autograd.grad(yb, [ins_b[1]], g)[0], rtol=1e-4, atol=1e-4)


@needs_compiler
@pytest.mark.parametrize("shape", [(6, 3, 32, 32), (4, 12, 8, 8), (3, 2, 7, 9), (2, 1, 1, 5)])
def test_exclude_pad_pool_equals_pytorch(shape: tuple[int, ...]) -> None:
    """NB201's 3x3 average pool without the padding in the count, forward and backward (odd sizes: the tails)."""
    gen = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(shape, generator=gen, requires_grad=True)
    g = torch.randn(shape, generator=gen)
    ya = ntk_conv.avg_pool_3x3_exclude_pad(x)
    yb = F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
    assert "Native" in type(ya.grad_fn).__name__
    torch.testing.assert_close(ya, yb)
    torch.testing.assert_close(torch.autograd.grad(ya, x, g)[0], torch.autograd.grad(yb, x, g)[0])
    cl = x.detach().contiguous(memory_format=torch.channels_last)  # not NCHW: the space's own pool
    torch.testing.assert_close(ntk_conv.avg_pool_3x3_exclude_pad(cl), yb.detach())


@needs_compiler
@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 instruction sets")
@pytest.mark.parametrize(("march", "lanes"), [("x86-64", 4), ("haswell", 8)])
def test_builds_for_older_cpus_compute_the_same(
    march: str, lanes: int, fresh_build: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SSE2 (4 lanes) and AVX2 (8 lanes) builds a machine without AVX-512 gets: same numbers as PyTorch."""
    monkeypatch.setattr(
        cpu_kernels, "FLAGS", tuple(f"-march={march}" if f == "-march=native" else f for f in cpu_kernels.FLAGS)
    )
    lib = cpu_kernels.library()
    assert lib is not None and lib.nk_lanes() == lanes
    gen = torch.Generator().manual_seed(lanes)
    for c_in, c_out, k, stride, size in [(3, 9, 3, 1, 32), (6, 12, 3, 2, 16), (5, 7, 1, 1, 8), (4, 4, 3, 1, 4)]:
        x = torch.randn(3, c_in, size, size, generator=gen, requires_grad=True)
        w = torch.randn(c_out, c_in, k, k, generator=gen, requires_grad=True)
        ya, yb = ntk_conv.conv2d(x, w, k // 2, stride), F.conv2d(x, w, None, stride, k // 2)
        assert "Native" in type(ya.grad_fn).__name__
        torch.testing.assert_close(ya, yb, rtol=1e-5, atol=1e-4)
        g = torch.randn(yb.shape, generator=gen)
        for a, b in zip(torch.autograd.grad(ya, [x, w], g), torch.autograd.grad(yb, [x, w], g)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-3)
    x = torch.randn(4, 6, 8, 8, generator=gen, requires_grad=True)
    gamma = torch.rand(6, generator=gen).requires_grad_()
    beta = torch.zeros(6, requires_grad=True)
    g = torch.randn(4, 6, 8, 8, generator=gen)
    ga = torch.autograd.grad(ntk_conv.batch_norm(x, gamma, beta), [x, gamma, beta], g)
    gb = torch.autograd.grad(F.batch_norm(x, None, None, gamma, beta, True, 0.0, 1e-5), [x, gamma, beta], g)
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    y = ntk_conv.avg_pool_3x3_exclude_pad(x)
    torch.testing.assert_close(y, F.avg_pool2d(x, 3, 1, 1, count_include_pad=False))


@pytest.mark.parametrize("how", ["switched off", "compiler fails"])
def test_without_kernels_the_convs_fall_back_to_pytorch(
    how: str, fresh_build: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    if how == "switched off":
        monkeypatch.setenv("NAS_CPU_KERNELS", "0")
    else:
        monkeypatch.setenv("CXX", "false")  # a "compiler" that fails
    with caplog.at_level(logging.INFO, logger="nas_core.proxies.cpu_kernels"):
        assert cpu_kernels.library() is None
    if how == "compiler fails":
        assert "native NTK kernels unavailable" in caplog.text
        assert not list(fresh_build.glob("*.so"))  # no half-built file left behind
    x = torch.randn(2, 3, 16, 16, requires_grad=True)
    w = torch.randn(6, 3, 3, 3, requires_grad=True)
    y = ntk_conv.conv2d(x, w, 1)
    assert "Native" not in type(y.grad_fn).__name__
    assert type(ntk_conv.batch_norm(x, torch.ones(3), torch.zeros(3)).grad_fn).__name__ == "NativeBatchNormBackward0"
    assert "Native" not in type(ntk_conv.avg_pool_3x3_exclude_pad(x).grad_fn).__name__
    torch.testing.assert_close(y, F.conv2d(x, w, None, 1, 1))
    y.sum().backward()
    assert x.grad is not None and w.grad is not None
