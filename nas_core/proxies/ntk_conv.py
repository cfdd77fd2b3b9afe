"""Convolutions for the TE-NAS NTK: the same forward, a backward that is fast on few channels on the CPU.

The NTK takes one backward pass per sample (72 at the reference's batch) through a proxy net with 3 to
12 channels. On such shapes oneDNN's convolution backward is slow for the input gradient: on this
project's 2-core AMD EPYC (AVX-512, torch 2.13), batch 72 of 3x32x32, a 3->9 3x3 conv's input gradient
took 8.8 ms natively, against 2.5 ms for the same numbers as a forward convolution with the kernel
flipped and its channel axes swapped, while the weight gradient alone took 0.8 ms. A 1x1 conv's whole
backward took 1.6 ms, against 0.4 ms as matrix products (``python bench/bench_tenas.py --convs``).

So on the CPU, :func:`conv2d` computes the input gradient of a stride-1 conv with few channels as that
forward convolution and asks ``convolution_backward`` for the weight gradient only (wider convs, where
oneDNN's own backward is as fast, keep it), and 1x1 convs are a matrix product over
the channel axis (autograd's own backward is then matrix products too). Strided convs and other devices
take ``F.conv2d`` unchanged (cuDNN has no such gap). Forward values are ``F.conv2d``'s up to float
rounding; tests compare the gradients with autograd's.

Where :mod:`nas_core.proxies.cpu_kernels` could be built (a C++ compiler on the machine), 3x3 convs of padding 1
(stride 1 or 2) and 1x1 convs on float32 planes 4 to 64 wide run forward and backward on those kernels
instead: 2-10x faster than oneDNN per conv on these shapes, the whole NTK net's conv backward 3.1x faster
than PyTorch's and 2.1x than the flipped-kernel path above (24.0 ms against 11.5 ms per pass,
``bench/bench_tenas.py --convs``). The proxy cells' batch norms (:func:`batch_norm`) and exclude-pad pools
(:func:`avg_pool_3x3_exclude_pad`) take their backward from those kernels too. The PyTorch paths remain
the fallback; tests compare every kernel with PyTorch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

import nas_core.proxies.cpu_kernels as cpu_kernels
import nas_core.spaces.nb201_arch as nb201

#: the flipped-kernel input gradient is taken for convs of at most these input / output channels: measured
#: here, it won 1.1-2.2x on 3->3, 3->6, 3->9, 6->6 and 6->12 and lost 5-10% on 6->18 and on every 12->N
#: (``bench/bench_tenas.py --convs``)
MAX_FLIPPED_IN = 6
MAX_FLIPPED_OUT = 12


class _Conv2dFastInputGrad(torch.autograd.Function):
    """Stride-1, dilation-1, ungrouped conv without bias; backward as described in the module doc."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, padding: int) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, w)
        ctx.padding = padding
        return F.conv2d(x, w, None, 1, padding)

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        x, w = ctx.saved_tensors
        p = ctx.padding
        gx = gw = None
        if ctx.needs_input_grad[0]:
            k = w.shape[-1]
            gx = F.conv2d(g, w.flip(2, 3).transpose(0, 1), None, 1, k - 1 - p)
        if ctx.needs_input_grad[1]:
            gw = torch.ops.aten.convolution_backward(
                g, x, w, None, [1, 1], [p, p], [1, 1], False, [0, 0], 1, [False, True, False]
            )[1]
        return gx, gw, None


def _batched(t: torch.Tensor) -> bool:
    """Under vmap (autograd's ``is_grads_batched`` uses the legacy one) a tensor has no raw storage."""
    f = torch._C._functorch
    return f.is_legacy_batchedtensor(t) or f.is_batchedtensor(t) or f.is_functorch_wrapped_tensor(t)


def _pytorch_backward(ctx, g: torch.Tensor, x: torch.Tensor, w: torch.Tensor, stride: int, padding: int):
    """Input and weight gradients by PyTorch, as asked for: for vmapped cotangents, which have no raw pointers."""
    mask = [bool(ctx.needs_input_grad[0]), bool(ctx.needs_input_grad[1]), False]
    s, p = [stride, stride], [padding, padding]
    return tuple(torch.ops.aten.convolution_backward(g, x, w, None, s, p, [1, 1], False, [0, 0], 1, mask)[:2])


class _Conv3x3Native(torch.autograd.Function):
    """3x3, padding 1 on :mod:`nas_core.proxies.cpu_kernels`. Stride 1: the forward, the input gradient (the forward
    kernel on the flipped, transposed weight) and the weight gradient (from the padded input kept from the
    forward, so the 72 passes of an NTK pad it once). Stride 2 (even planes): forward by PyTorch; the backward
    is that of the stride-1 conv whose output is subsampled, i.e. with the output gradient spread over a zero
    plane at the even positions. Three quarters of its products are then with zeros, still 1.3-1.7x faster than
    oneDNN's backward here (``bench/bench_tenas.py --convs``)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, stride: int) -> torch.Tensor:  # type: ignore[override]
        xp = cpu_kernels.pad1(x.detach())
        wd = w.detach().contiguous()
        # the input gradient's weight, flipped and transposed once for all the backward passes
        ctx.save_for_backward(xp, wd, wd.flip(2, 3).transpose(0, 1).contiguous())
        ctx.stride = stride
        return cpu_kernels.conv3x3(xp, wd) if stride == 1 else F.conv2d(x.detach(), wd, None, stride, 1)

    @staticmethod
    @once_differentiable
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        xp, w, w_flipped = ctx.saved_tensors
        if _batched(g):
            return (*_pytorch_backward(ctx, g, xp[:, :, 1:-1, 1:-1], w, ctx.stride, 1), None)
        if ctx.stride == 2:
            n, _, hp, wp = xp.shape
            spread = g.new_zeros(n, g.shape[1], hp - 2, wp - 2)
            spread[:, :, ::2, ::2] = g
            g = spread
        gx = gw = None
        if ctx.needs_input_grad[0]:
            gx = cpu_kernels.conv3x3(cpu_kernels.pad1(g), w_flipped)
        if ctx.needs_input_grad[1]:
            gw = cpu_kernels.conv3x3_weight_grad(xp, g)
        return gx, gw, None


class _Conv1x1Native(torch.autograd.Function):
    """1x1 conv on :mod:`nas_core.proxies.cpu_kernels`: forward and input gradient are the same channel mix (by
    ``w`` and its transpose), the weight gradient a dot product per weight."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        xd, wd = x.detach().contiguous(), w.detach().contiguous()
        ctx.save_for_backward(xd, wd)
        return cpu_kernels.conv1x1(xd, wd)

    @staticmethod
    @once_differentiable
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        x, w = ctx.saved_tensors
        gx = gw = None
        if _batched(g):
            return _pytorch_backward(ctx, g, x, w, 1, 0)
        if ctx.needs_input_grad[0]:
            gx = cpu_kernels.conv1x1(g, w, transpose=True)
        if ctx.needs_input_grad[1]:
            gw = cpu_kernels.conv1x1_weight_grad(x, g).view(w.shape)
        return gx, gw


class _BatchNormNative(torch.autograd.Function):
    """Batch norm on batch statistics: PyTorch's forward, :mod:`nas_core.proxies.cpu_kernels`' backward (two passes over
    the data for dx and dgamma together; PyTorch's takes a third for dgamma, 1.8x slower here on 9 x 32 x 32)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:  # type: ignore[override]
        xd, wd = x.detach(), weight.detach()
        y, mean, invstd = torch.native_batch_norm(xd, wd, bias.detach(), None, None, True, 0.0, eps)
        ctx.save_for_backward(xd, wd, mean, invstd)
        ctx.eps = eps
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        x, w, mean, invstd = ctx.saved_tensors
        need = ctx.needs_input_grad
        if _batched(g):
            dx, dw, db = torch.ops.aten.native_batch_norm_backward(
                g, x, w, None, None, mean, invstd, True, ctx.eps, [bool(need[0]), bool(need[1]), bool(need[2])]
            )
            return dx, dw, db, None
        dx, dw, db = cpu_kernels.batch_norm_backward(g, x, mean, invstd, w, (need[0], need[1], need[2]))
        return dx, dw, db, None


def batch_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``F.batch_norm(x, None, None, weight, bias, True, 0.0, eps)`` (batch statistics), fast backward on the CPU."""
    if weight.dtype == torch.float32 and cpu_kernels.usable(x):
        return _BatchNormNative.apply(x, weight, bias, eps)
    return F.batch_norm(x, None, None, weight, bias, True, 0.0, eps)


class _ExcludePadPoolNative(torch.autograd.Function):
    """NB201's exclude-pad 3x3 average pool (box sum times 1/count) on :mod:`nas_core.proxies.cpu_kernels`; its backward
    is the box sum of the gradient times 1/count, one kernel call each way."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, inv_count: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(inv_count)
        return cpu_kernels.box3x3(x.detach(), post=inv_count)

    @staticmethod
    @once_differentiable
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        (inv_count,) = ctx.saved_tensors
        if _batched(g):
            return nb201.box_sum_3x3(g * inv_count), None
        return cpu_kernels.box3x3(g, pre=inv_count), None


def avg_pool_3x3_exclude_pad(x: torch.Tensor) -> torch.Tensor:
    """:func:`nas_core.spaces.nb201_arch.avg_pool_3x3_exclude_pad`, on the native kernels for NCHW float32 on the
    CPU."""
    if x.is_contiguous() and cpu_kernels.usable(x):
        return _ExcludePadPoolNative.apply(x, nb201.exclude_pad_inv_count(x))
    return nb201.avg_pool_3x3_exclude_pad(x)


def _native(x: torch.Tensor, w: torch.Tensor) -> bool:
    return w.dtype == x.dtype and cpu_kernels.supports(x)


def conv2d(x: torch.Tensor, w: torch.Tensor, padding: int = 0, stride: int = 1) -> torch.Tensor:
    """``F.conv2d(x, w, None, stride, padding)`` (square kernel, no bias), with the fast CPU backward."""
    k = w.shape[-1]
    if w.shape[-2] == k and k == 3 and padding == 1 and stride in (1, 2) and _native(x, w):
        if stride == 1 or x.shape[-2] % 2 == 0:
            return _Conv3x3Native.apply(x, w, stride)
    if w.shape[-2] == k == 1 and padding == 0 and stride == 1 and _native(x, w):
        return _Conv1x1Native.apply(x, w)
    if x.device.type != "cpu" or stride != 1 or w.shape[-2] != k or padding > k - 1:
        # (padding > k - 1: the input gradient's forward conv would need a negative padding)
        return F.conv2d(x, w, None, stride, padding)
    if k == 1:
        return _conv1x1(x, w)
    if w.shape[1] > MAX_FLIPPED_IN or w.shape[0] > MAX_FLIPPED_OUT:
        return F.conv2d(x, w, None, stride, padding)
    return _Conv2dFastInputGrad.apply(x, w, padding)


def _conv1x1(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """A 1x1 conv without bias (``w``: out x in x 1 x 1) as a matrix product over the channel axis (NCHW)."""
    n, c, h, wd = x.shape
    # bmm with the weight expanded over the batch keeps every tensor NCHW-contiguous, forward and backward
    # (a broadcast matmul folds the batch into the rows and returns a channels-last view, which makes the
    # BN after it and the gradients before it slow)
    return torch.bmm(w.view(1, w.shape[0], c).expand(n, -1, -1), x.reshape(n, c, h * wd)).view(n, w.shape[0], h, wd)


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` whose forward goes through :func:`conv2d` when it can (no bias, groups or dilation)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plain = self.bias is None and self.groups == 1 and self.dilation == (1, 1) and self.padding_mode == "zeros"
        if not plain or len(set(self.padding)) != 1 or len(set(self.stride)) != 1:
            return super().forward(x)
        return conv2d(x, self.weight, int(self.padding[0]), int(self.stride[0]))


def use_fast_convs(model: nn.Module) -> nn.Module:
    """Switch every plain ``nn.Conv2d`` of ``model`` to :class:`Conv2d` in place (same parameters and names)."""
    for m in model.modules():
        if type(m) is nn.Conv2d:
            m.__class__ = Conv2d
    return model
